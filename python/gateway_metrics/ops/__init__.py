"""The operations kit: a Grafana dashboard, Prometheus recording and alerting rules.

Everything is described once, as data, in this module: each panel's title,
unit and queries, each recording rule and each alert with its threshold. The
dashboard JSON and the rule files are derived from it for the extra labels a
deployment configured, so the queries always match the families the
middleware emits.

Export them with ``python -m gateway_metrics ops export DIR`` or::

    from gateway_metrics import ops

    ops.export("ops-kit", extra_labels=["team"],
               thresholds=ops.Thresholds(cost_usd_per_hour=20.0))
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gateway_metrics._core import FAMILIES, check_extra_labels
from gateway_metrics.ops._yaml import dump

__all__ = [
    "PANELS",
    "Panel",
    "Thresholds",
    "alerting_rules",
    "dashboard",
    "export",
    "recording_rules",
]

#: Files ``export`` writes.
DASHBOARD_FILE = "gateway-metrics-dashboard.json"
RECORDING_RULES_FILE = "gateway-metrics-recording-rules.yml"
ALERTING_RULES_FILE = "gateway-metrics-alerting-rules.yml"

#: The Grafana dashboard schema version the JSON follows (Grafana 10.4 and 11).
SCHEMA_VERSION = 39
#: Selector of the request families: every template variable applies.
REQUEST_FILTER = 'job=~"$job",provider=~"$provider",model=~"$model"'
#: Selector of the families without provider and model labels.
JOB_FILTER = 'job=~"$job"'


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel and its legend."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """One dashboard panel: what it shows, in which unit, by which queries.

    ``expr`` strings use ``{filter}`` for the request families' selector (job,
    provider, model and the extra labels' variables) and ``{job}`` for the
    selector of the families without those labels; ``$__rate_interval`` and
    ``$__range`` are Grafana's.
    """

    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"
    width: int = 12


def _quantiles(family: str, by: str, quantiles: Sequence[float]) -> tuple[Query, ...]:
    rate = f"rate({family}_bucket" + "{{{filter}}}[$__rate_interval])"
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le, {by}) ({rate}))",
            f"p{round(q * 100)} " + "{{" + by + "}}",
        )
        for q in quantiles
    )


def _hit_ratio(window: str, selector: str, by: str = "cache_type") -> str:
    """Hits over lookups by cache type; a type without misses has the ratio 1, not none."""
    hits = f"sum by ({by}) (rate(ractogateway_cache_hits_total{selector}{window}))"
    misses = f"sum by ({by}) (rate(ractogateway_cache_misses_total{selector}{window}))"
    return f"{hits} / ({hits} + ({misses} or {hits} * 0))"


REQUESTS_RATE = "sum by (model) (rate(ractogateway_requests_total{{{filter}}}[$__rate_interval]))"

#: The dashboard's panels, in order (two per row of 24 columns).
#: The histograms the hand-made panels below show.
_SHOWN_ABOVE = frozenset(
    {
        "ractogateway_request_duration_seconds",
        "ractogateway_time_to_first_token_seconds",
        "ractogateway_time_per_output_token_seconds",
    }
)

PANELS: tuple[Panel, ...] = (
    Panel(
        "Request rate by model",
        "Requests per second, every status.",
        "reqps",
        (Query(REQUESTS_RATE, "{{model}}"),),
    ),
    Panel(
        "Error ratio by model",
        'Share of requests with status="error".',
        "percentunit",
        (
            Query(
                'sum by (model) (rate(ractogateway_requests_total{{{filter},status="error"}}'
                "[$__rate_interval])) / " + REQUESTS_RATE,
                "{{model}}",
            ),
        ),
    ),
    Panel(
        "Latency p50 / p95 / p99 by model",
        "Request duration quantiles from ractogateway_request_duration_seconds.",
        "s",
        _quantiles("ractogateway_request_duration_seconds", "model", (0.5, 0.95, 0.99)),
    ),
    Panel(
        "Time to first token p50 / p95 / p99 by model",
        "Streamed requests only (ractogateway_time_to_first_token_seconds).",
        "s",
        _quantiles("ractogateway_time_to_first_token_seconds", "model", (0.5, 0.95, 0.99)),
    ),
    Panel(
        "Time per output token p50 / p95 by model",
        "After the first token (ractogateway_time_per_output_token_seconds).",
        "s",
        _quantiles("ractogateway_time_per_output_token_seconds", "model", (0.5, 0.95)),
    ),
    Panel(
        "Tokens per second by type",
        "input includes cache_read and cache_write; output includes reasoning.",
        "short",
        (
            Query(
                "sum by (token_type) (rate(ractogateway_tokens_total{{{filter}}}"
                "[$__rate_interval]))",
                "{{token_type}}",
            ),
        ),
    ),
    Panel(
        "Cost per hour by model",
        "Estimated USD per hour at the current rate.",
        "currencyUSD",
        (
            Query(
                "sum by (model) (rate(ractogateway_cost_usd_total{{{filter}}}"
                "[$__rate_interval])) * 3600",
                "{{model}}",
            ),
        ),
    ),
    Panel(
        "Cost over the last day by model",
        "Estimated USD spent in the 24 hours before each point.",
        "currencyUSD",
        (
            Query(
                "sum by (model) (increase(ractogateway_cost_usd_total{{{filter}}}[1d]))",
                "{{model}}",
            ),
        ),
    ),
    Panel(
        "Unpriced requests by model",
        "Requests with tokens but no price: their cost is missing from the cost panels.",
        "reqps",
        (
            Query(
                "sum by (provider, model) (rate(ractogateway_unpriced_requests_total"
                "{{{filter}}}[$__rate_interval]))",
                "{{provider}} {{model}}",
            ),
        ),
    ),
    Panel(
        "Cache hit ratio by cache type",
        "Hits / (hits + misses) of the gateway's response caches.",
        "percentunit",
        (Query(_hit_ratio("[$__rate_interval]", "{{{job}}}"), "{{cache_type}}"),),
    ),
    Panel(
        "Top 10 tool calls",
        "Tool calls over the dashboard's time range.",
        "short",
        (
            Query(
                "topk(10, sum by (tool_name) (increase(ractogateway_tool_calls_total"
                "{{{job}}}[$__range])))",
                "{{tool_name}}",
            ),
        ),
        kind="bargauge",
    ),
    # Every other histogram a request feeds gets its quantiles, from the core's
    # family table: a family added there appears here.
    *(
        Panel(
            f"{name.removeprefix('ractogateway_').replace('_', ' ').capitalize()} "
            "p50 / p95 by model",
            f"{help_text} Observes {observes}.",
            "s",
            _quantiles(name, "model", (0.5, 0.95)),
        )
        for name, help_text, kind, _labels, _bounds, observes in FAMILIES
        if kind == "histogram" and name not in _SHOWN_ABOVE
    ),
    Panel(
        "Recordings folded into overflow series",
        "Per second, by family: label sets past max_series go to __overflow__ series.",
        "short",
        (
            Query(
                "sum by (family) (rate(ractogateway_overflow_requests_total{{{job}}}"
                "[$__rate_interval]))",
                "{{family}}",
            ),
        ),
    ),
)


@dataclass(frozen=True)
class Thresholds:
    """When the alerts fire. Every threshold is documented in docs/ops-kit.md.

    ``job_regex`` limits ``GatewayTargetDown`` to the scrape jobs of gateways
    (a regular expression, matched whole, as PromQL's ``=~`` does). Each
    threshold is a finite number, not negative; a bad one raises
    ``ValueError`` naming it.
    """

    error_ratio: float = 0.05
    latency_p95_s: float = 10.0
    time_to_first_token_p95_s: float = 5.0
    cost_usd_per_hour: float = 50.0
    job_regex: str = ".+"

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "job_regex":
                _check_regex(value)
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{field.name} must be a number, not {type(value).__name__}")
            elif not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{field.name} must be finite and not negative, got {value!r}")


def _check_regex(pattern: object) -> None:
    """Refuses a ``job_regex`` Prometheus would not compile, naming it.

    Prometheus compiles Go's RE2 syntax: Python's ``re`` checks the syntax
    they share, and the constructs RE2 lacks (look-around, back-references)
    are refused by name.
    """
    if not isinstance(pattern, str) or not pattern:
        raise TypeError("job_regex must be a non-empty str")
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"job_regex {pattern!r} is not a regular expression: {error}") from None
    if re.search(r"\(\?<?[=!]|\\[1-9]|\(\?P=", pattern):
        raise ValueError(
            f"job_regex {pattern!r} uses look-around or a back-reference, which "
            "Prometheus's regular expressions (RE2) do not have"
        )


def _promql_string(text: str) -> str:
    """``text`` as a double-quoted PromQL string literal (Go's escapes)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\t", "\\t") + '"'


def _by(extra_labels: Sequence[str]) -> str:
    return ", ".join(["job", "provider", "model", *extra_labels])


def recording_rules(extra_labels: Iterable[str] = ()) -> dict[str, Any]:
    """The recording rules, by job, provider, model and the extra labels."""
    by = _by(list(extra_labels))
    level = by.replace(", ", "_")
    requests = f"sum by ({by}) (rate(ractogateway_requests_total[5m]))"
    rules = [
        {"record": f"{level}:ractogateway_requests:rate5m", "expr": requests},
        {
            "record": f"{level}:ractogateway_requests_errors:ratio_rate5m",
            # Zero, not absent, while a model has no errors.
            "expr": f'(sum by ({by}) (rate(ractogateway_requests_total{{status="error"}}[5m]))'
            f" or {requests} * 0) / {requests}",
        },
    ]
    histograms = [
        ("ractogateway_request_duration_seconds", "request_duration_seconds", (0.5, 0.95, 0.99)),
        ("ractogateway_time_to_first_token_seconds", "time_to_first_token_seconds", (0.5, 0.95)),
        ("ractogateway_time_per_output_token_seconds", "time_per_output_token_seconds", (0.95,)),
    ]
    # The other histograms of the core's family table, at p95.
    histograms += [
        (name, name.removeprefix("ractogateway_"), (0.95,))
        for name, _help, kind, *_ in FAMILIES
        if kind == "histogram" and name not in _SHOWN_ABOVE
    ]
    rules.extend(
        {
            "record": f"{level}:ractogateway_{short}:p{round(quantile * 100)}_rate5m",
            "expr": f"histogram_quantile({quantile}, sum by (le, {by}) "
            f"(rate({family}_bucket[5m])))",
        }
        for family, short, quantiles in histograms
        for quantile in quantiles
    )
    rules += [
        {
            "record": f"{level}:ractogateway_cost_usd_per_hour:rate5m",
            "expr": f"sum by ({by}) (rate(ractogateway_cost_usd_total[5m])) * 3600",
        },
        {
            "record": f"{level}_token_type:ractogateway_tokens:rate5m",
            "expr": f"sum by ({by}, token_type) (rate(ractogateway_tokens_total[5m]))",
        },
        {
            "record": "job_tool_name:ractogateway_tool_calls:rate5m",
            "expr": "sum by (job, tool_name) (rate(ractogateway_tool_calls_total[5m]))",
        },
        {
            "record": "job_cache_type:ractogateway_cache_hit:ratio_rate5m",
            "expr": _hit_ratio("[5m]", "", by="job, cache_type"),
        },
    ]
    return {"groups": [{"name": "gateway-metrics.recording", "rules": rules}]}


def alerting_rules(
    thresholds: Thresholds | None = None, extra_labels: Iterable[str] = ()
) -> dict[str, Any]:
    """The alerting rules, reading the recording rules' series."""
    limits = thresholds or Thresholds()
    level = _by(list(extra_labels)).replace(", ", "_")

    def alert(name: str, expr: str, duration: str, severity: str, summary: str) -> dict[str, Any]:
        return {
            "alert": name,
            "expr": expr,
            "for": duration,
            "labels": {"severity": severity},
            "annotations": {"summary": summary},
        }

    rules = [
        alert(
            "GatewayErrorRatioHigh",
            f"{level}:ractogateway_requests_errors:ratio_rate5m > {limits.error_ratio}",
            "10m",
            "warning",
            "{{ $labels.model }} of {{ $labels.provider }} fails "
            "{{ $value | humanizePercentage }} of requests",
        ),
        alert(
            "GatewayLatencyP95High",
            f"{level}:ractogateway_request_duration_seconds:p95_rate5m > {limits.latency_p95_s}",
            "10m",
            "warning",
            "p95 latency of {{ $labels.model }} is {{ $value | humanizeDuration }}",
        ),
        alert(
            "GatewayTimeToFirstTokenHigh",
            f"{level}:ractogateway_time_to_first_token_seconds:p95_rate5m"
            f" > {limits.time_to_first_token_p95_s}",
            "10m",
            "warning",
            "p95 time to first token of {{ $labels.model }} is {{ $value | humanizeDuration }}",
        ),
        alert(
            "GatewayCostBurnHigh",
            f"sum by (job) ({level}:ractogateway_cost_usd_per_hour:rate5m)"
            f" > {limits.cost_usd_per_hour}",
            "15m",
            "warning",
            '{{ $labels.job }} spends {{ $value | printf "%.2f" }} USD per hour',
        ),
        alert(
            "GatewayUnpricedRequests",
            "sum by (job, provider, model) "
            "(increase(ractogateway_unpriced_requests_total[15m])) > 0",
            "0m",
            "info",
            "{{ $labels.model }} of {{ $labels.provider }} has no price: its cost is not counted",
        ),
        alert(
            "GatewayOverflowSeries",
            "sum by (job, family) (increase(ractogateway_overflow_requests_total[15m])) > 0",
            "0m",
            "warning",
            "{{ $labels.family }} reached max_series: new label sets go to __overflow__",
        ),
        alert(
            "GatewayTargetDown",
            f"up{{job=~{_promql_string(limits.job_regex)}}} == 0",
            "5m",
            "critical",
            "{{ $labels.instance }} of {{ $labels.job }} cannot be scraped",
        ),
    ]
    return {"groups": [{"name": "gateway-metrics.alerts", "rules": rules}]}


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


def export(
    directory: str | os.PathLike[str],
    *,
    extra_labels: Iterable[str] = (),
    thresholds: Thresholds | None = None,
) -> list[Path]:
    """Writes the dashboard and both rule files into ``directory``; returns their paths.

    ``extra_labels`` must be labels a middleware accepts (``ValueError``
    otherwise, naming the label). Each file is written to a new temporary
    file beside it and renamed over its name: a symbolic link planted there
    is replaced, never followed, and a reader never sees half a file.

    Example::

        ops.export("ops-kit", extra_labels=["team"])
    """
    if isinstance(extra_labels, (str, bytes)):
        raise TypeError("extra_labels must be an iterable of label names, not a str")
    extras = list(extra_labels)
    check_extra_labels(extras)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = {
        DASHBOARD_FILE: json.dumps(dashboard(extras), indent=2) + "\n",
        RECORDING_RULES_FILE: dump(recording_rules(extras)),
        ALERTING_RULES_FILE: dump(alerting_rules(thresholds, extras)),
    }
    paths = []
    for name, text in written.items():
        path = target / name
        _replace(path, text)
        paths.append(path)
    return paths


def _replace(path: Path, text: str) -> None:
    """Writes ``text`` to a fresh file in ``path``'s directory and renames it to ``path``."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
