"""The Grafana dashboard built from the panels, with a variable per extra label."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway_metrics.ops.panels import PANELS

#: The Grafana dashboard schema version the JSON follows (Grafana 10.4 and 11).
SCHEMA_VERSION = 39
#: Selector of the request families: every template variable applies.
REQUEST_FILTER = 'job=~"$job",provider=~"$provider",model=~"$model"'
#: Selector of the families without provider and model labels.
JOB_FILTER = 'job=~"$job"'


def _datasource() -> dict[str, Any]:
    return {"type": "prometheus", "uid": "${datasource}"}


def _variable(name: str, depends: str) -> dict[str, Any]:
    """A multi-value variable of the values of label ``name`` under the earlier variables."""
    query = f"label_values(ractogateway_requests_total{{{depends}}}, {name})"
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": _datasource(),
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard(extra_labels: Iterable[str] = ()) -> dict[str, Any]:
    """The Grafana dashboard, with a template variable per extra label."""
    extras = list(extra_labels)
    request_filter = REQUEST_FILTER + "".join(f',{name}=~"${name}"' for name in extras)
    variables: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
        }
    ]
    depends = ""
    for name in ("job", "provider", "model", *extras):
        variables.append(_variable(name, depends))
        depends = f'{depends},{name}=~"${name}"'.lstrip(",")
    panels = []
    x = y = 0
    for index, panel in enumerate(PANELS, start=1):
        targets = [
            {
                "refId": chr(ord("A") + number),
                "datasource": _datasource(),
                "expr": query.expr.format(filter=request_filter, job=JOB_FILTER),
                "legendFormat": query.legend,
                "range": True,
            }
            for number, query in enumerate(panel.queries)
        ]
        panels.append(
            {
                "id": index,
                "type": panel.kind,
                "title": panel.title,
                "description": panel.description,
                "datasource": _datasource(),
                "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
                if panel.kind == "timeseries"
                else {"orientation": "horizontal", "displayMode": "gradient"},
                "targets": targets,
            }
        )
        x += panel.width
        if x >= 24:
            x, y = 0, y + 8
    return {
        "title": "LLM gateway (gateway-metrics)",
        "uid": "gateway-metrics",
        "description": "Requests, errors, latency, tokens, cost, caches and tools of "
        "LLM gateways metered by gateway-metrics.",
        "tags": ["llm", "gateway-metrics", "prometheus"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "refresh": "30s",
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": panels,
    }
