"""The operations kit: rules checked and unit-tested by promtool, the dashboard
validated, and every query run against a real Prometheus scraping the demo."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jsonschema
import pytest
from gateway_metrics import ops
from gateway_metrics.ops._yaml import dump
from support import free_port, prometheus_server, samples_by_series

#: The subset of Grafana's dashboard schema (schemaVersion 39) the dashboard uses.
DASHBOARD_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "version": {"type": "integer"},
        "editable": {"type": "boolean"},
        "graphTooltip": {"type": "integer", "enum": [0, 1, 2]},
        "refresh": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "time": {
            "type": "object",
            "required": ["from", "to"],
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
        },
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "type"],
                        "properties": {
                            "name": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
                            "type": {"enum": ["query", "datasource", "custom", "interval"]},
                            "query": {"type": ["string", "object"]},
                            "datasource": {"$ref": "#/$defs/datasource"},
                            "refresh": {"enum": [0, 1, 2]},
                            "includeAll": {"type": "boolean"},
                            "multi": {"type": "boolean"},
                            "allValue": {"type": "string"},
                        },
                    },
                }
            },
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos", "targets", "fieldConfig"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "type": {"enum": ["timeseries", "bargauge", "stat", "table"]},
                    "title": {"type": "string", "minLength": 1},
                    "description": {"type": "string"},
                    "datasource": {"$ref": "#/$defs/datasource"},
                    "gridPos": {
                        "type": "object",
                        "required": ["h", "w", "x", "y"],
                        "properties": {
                            "h": {"type": "integer", "minimum": 1},
                            "w": {"type": "integer", "minimum": 1, "maximum": 24},
                            "x": {"type": "integer", "minimum": 0, "maximum": 23},
                            "y": {"type": "integer", "minimum": 0},
                        },
                    },
                    "fieldConfig": {
                        "type": "object",
                        "required": ["defaults"],
                        "properties": {
                            "defaults": {
                                "type": "object",
                                "required": ["unit"],
                                "properties": {"unit": {"type": "string", "minLength": 1}},
                            }
                        },
                    },
                    "targets": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["refId", "expr"],
                            "properties": {
                                "refId": {"type": "string", "pattern": "^[A-Z]$"},
                                "expr": {"type": "string", "minLength": 1},
                                "legendFormat": {"type": "string"},
                                "datasource": {"$ref": "#/$defs/datasource"},
                            },
                        },
                    },
                },
            },
        },
    },
    "$defs": {
        "datasource": {
            "type": "object",
            "required": ["type", "uid"],
            "properties": {"type": {"const": "prometheus"}, "uid": {"type": "string"}},
        }
    },
}

#: Every family the middleware emits; each must feed a panel and a rule or an alert.
FAMILIES = [
    "ractogateway_requests_total",
    "ractogateway_request_duration_seconds",
    "ractogateway_tokens_total",
    "ractogateway_cost_usd_total",
    "ractogateway_cache_hits_total",
    "ractogateway_cache_misses_total",
    "ractogateway_tool_calls_total",
    "ractogateway_time_to_first_token_seconds",
    "ractogateway_time_per_output_token_seconds",
    "ractogateway_overflow_requests_total",
    "ractogateway_unpriced_requests_total",
    "ractogateway_queue_time_seconds",
    "ractogateway_upstream_latency_seconds",
    "ractogateway_gateway_overhead_seconds",
]


def promtool(*args: str, cwd: Path) -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make deps` unpacks it into target/"
    result = subprocess.run(
        [binary, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_command_exports_three_files_that_promtool_accepts(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway_metrics",
            "ops",
            "export",
            str(tmp_path),
            "--extra-label",
            "team",
            "--cost-usd-per-hour",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    names = sorted(Path(line).name for line in result.stdout.split())
    assert names == sorted([ops.DASHBOARD_FILE, ops.RECORDING_RULES_FILE, ops.ALERTING_RULES_FILE])
    report = promtool(
        "check", "rules", ops.RECORDING_RULES_FILE, ops.ALERTING_RULES_FILE, cwd=tmp_path
    )
    # The reference's 12, and a p95 rule per histogram the family table adds
    # (queue, upstream, overhead; not the tokens per request, kept under the
    # GenAI names only).
    recording = sum(len(group["rules"]) for group in ops.recording_rules()["groups"])
    assert recording == 12 + 3
    assert f"SUCCESS: {recording} rules found" in report and "SUCCESS: 7 rules found" in report
    alerts = (tmp_path / ops.ALERTING_RULES_FILE).read_text()
    assert "job_provider_model_team:ractogateway_cost_usd_per_hour:rate5m) > 20.0" in alerts
    dashboard = json.loads((tmp_path / ops.DASHBOARD_FILE).read_text())
    assert [v["name"] for v in dashboard["templating"]["list"]] == [
        "datasource",
        "job",
        "provider",
        "model",
        "team",
    ]


def test_the_dashboard_follows_the_schema_and_covers_every_family():
    dashboard = ops.dashboard(["team"])
    jsonschema.validate(dashboard, DASHBOARD_SCHEMA)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    queries = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    rules = json.dumps(ops.recording_rules()) + json.dumps(ops.alerting_rules())
    for family in FAMILIES:
        assert family in queries, family
        assert family in rules, family
    for panel in dashboard["panels"]:
        assert panel["fieldConfig"]["defaults"]["unit"]
        for target in panel["targets"]:
            if "ractogateway_requests_total" in target["expr"]:
                assert 'team=~"$team"' in target["expr"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**dashboard, "panels": [{"id": 1}]}, DASHBOARD_SCHEMA)


def series(name: str, values: str, **labels: str) -> dict:
    text = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return {"series": f"{name}{{{text}}}", "values": values}


GW = {"job": "gw", "instance": "a:1"}
CHAT = {**GW, "operation": "chat", "provider": "openai"}


def histogram(family: str, model: str, bounds: dict[str, str]) -> list[dict]:
    """Bucket series of one label set: ``{le: values}``."""
    return [
        series(f"{family}_bucket", values, **CHAT, model=model, le=le)
        for le, values in bounds.items()
    ]


def alert(name: str, at: str, *expected: tuple[dict, str]) -> dict:
    return {
        "eval_time": at,
        "alertname": name,
        "exp_alerts": [
            {"exp_labels": labels, "exp_annotations": {"summary": summary}}
            for labels, summary in expected
        ],
    }


def test_every_alert_fires_on_its_cause_and_not_without(tmp_path):
    ops.export(tmp_path)
    slow = {"10": "0+0x40", "30": "0+10x40", "+Inf": "0+10x40"}
    fast = {"0.5": "0+10x40", "30": "0+10x40", "+Inf": "0+10x40"}
    slow_first = {"5": "0+0x40", "10": "0+10x40", "+Inf": "0+10x40"}
    duration = "ractogateway_request_duration_seconds"
    first_token = "ractogateway_time_to_first_token_seconds"
    requests = "ractogateway_requests_total"
    input_series = [
        series(requests, "0+90x40", **CHAT, model="bad", status="ok"),
        series(requests, "0+10x40", **CHAT, model="bad", status="error"),
        series(requests, "0+99x40", **CHAT, model="good", status="ok"),
        series(requests, "0+1x40", **CHAT, model="good", status="error"),
        *histogram(duration, "bad", slow),
        *histogram(duration, "good", fast),
        *histogram(first_token, "bad", slow_first),
        *histogram(first_token, "good", fast),
        series("ractogateway_cost_usd_total", "0+1x40", **GW, provider="openai", model="bad"),
        series("ractogateway_cost_usd_total", "0+0.5x40", **GW, provider="openai", model="good"),
        series(
            "ractogateway_cost_usd_total",
            "0+1x40",
            job="cheap",
            instance="b:1",
            provider="x",
            model="y",
        ),
        series(
            "ractogateway_unpriced_requests_total",
            "0 0 0 0 0 1 2 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3",
            **GW,
            provider="acme",
            model="new",
        ),
        series(
            "ractogateway_unpriced_requests_total", "5+0x40", **GW, provider="acme", model="old"
        ),
        series(
            "ractogateway_overflow_requests_total",
            "0 0 0 0 0 0 0 0 0 0 4 8",
            **GW,
            family="ractogateway_tool_calls",
        ),
        series("up", "1 1 1 0 0 0 0 0 0 0 0 0 0 0 0", job="gw", instance="down:1"),
        series("up", "1+0x40", job="gw", instance="a:1"),
    ]
    bad = {"job": "gw", "provider": "openai", "model": "bad"}
    tests = {
        "rule_files": [ops.RECORDING_RULES_FILE, ops.ALERTING_RULES_FILE],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "alert_rule_test": [
                    alert("GatewayErrorRatioHigh", "8m"),
                    alert(
                        "GatewayErrorRatioHigh",
                        "20m",
                        ({**bad, "severity": "warning"}, "bad of openai fails 10% of requests"),
                    ),
                    alert("GatewayLatencyP95High", "8m"),
                    alert(
                        "GatewayLatencyP95High",
                        "20m",
                        ({**bad, "severity": "warning"}, "p95 latency of bad is 29s"),
                    ),
                    alert("GatewayTimeToFirstTokenHigh", "8m"),
                    alert(
                        "GatewayTimeToFirstTokenHigh",
                        "20m",
                        (
                            {**bad, "severity": "warning"},
                            "p95 time to first token of bad is 9.75s",
                        ),
                    ),
                    alert("GatewayCostBurnHigh", "10m"),
                    alert(
                        "GatewayCostBurnHigh",
                        "25m",
                        ({"job": "gw", "severity": "warning"}, "gw spends 90.00 USD per hour"),
                        (
                            {"job": "cheap", "severity": "warning"},
                            "cheap spends 60.00 USD per hour",
                        ),
                    ),
                    alert("GatewayUnpricedRequests", "3m"),
                    alert(
                        "GatewayUnpricedRequests",
                        "8m",
                        (
                            {"job": "gw", "provider": "acme", "model": "new", "severity": "info"},
                            "new of acme has no price: its cost is not counted",
                        ),
                    ),
                    alert("GatewayOverflowSeries", "9m"),
                    alert(
                        "GatewayOverflowSeries",
                        "11m",
                        (
                            {
                                "job": "gw",
                                "family": "ractogateway_tool_calls",
                                "severity": "warning",
                            },
                            (
                                "ractogateway_tool_calls reached max_series: new label sets go to "
                                "__overflow__"
                            ),
                        ),
                    ),
                    alert("GatewayTargetDown", "6m"),
                    alert(
                        "GatewayTargetDown",
                        "10m",
                        (
                            {"job": "gw", "instance": "down:1", "severity": "critical"},
                            "down:1 of gw cannot be scraped",
                        ),
                    ),
                ],
            }
        ],
    }
    (tmp_path / "rules_test.yml").write_text(dump(tests))
    assert "SUCCESS" in promtool("test", "rules", "rules_test.yml", cwd=tmp_path)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def instantiate(expr: str, rate_interval: str) -> str:
    """A dashboard query with Grafana's variables as Grafana would fill them for "All"."""
    for variable in ("$provider", "$model", "$team"):
        expr = expr.replace(variable, ".*")
    return (
        expr.replace("$job", "gateway")
        .replace("$__rate_interval", rate_interval)
        .replace("$__range", "10m")
    )


@pytest.mark.integration
@pytest.mark.parametrize("namespace", ["ractogateway", "myapp"])
def test_a_real_prometheus_answers_every_panel_and_rule_from_the_demo(tmp_path, namespace):
    """Prometheus scrapes ``demo --serve`` every second with the kit's rules loaded.

    Every panel's query results over the run are drawn into a PNG: the
    picture in docs/ops-kit.md when ``GATEWAY_METRICS_OPS_IMAGE`` names it (``make
    ops-image``, with ``GATEWAY_METRICS_OPS_TRAFFIC_S`` seconds of traffic). Under
    a namespace of its own, the demo and the kit name every family under it.
    """
    traffic_s = float(os.environ.get("GATEWAY_METRICS_OPS_TRAFFIC_S", "8"))
    image = Path(os.environ.get("GATEWAY_METRICS_OPS_IMAGE") or tmp_path / "dashboard.png")
    kit = tmp_path / "kit"
    ops.export(kit, extra_labels=["team"], namespace=namespace)
    demo_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(kit / ops.RECORDING_RULES_FILE), str(kit / ops.ALERTING_RULES_FILE)],
        "scrape_configs": [
            {"job_name": "gateway", "static_configs": [{"targets": [f"127.0.0.1:{demo_port}"]}]}
        ],
    }
    demo_argv = [sys.executable, "-m", "gateway_metrics", "demo", "--duration", str(traffic_s)]
    demo_argv += ["--port", str(demo_port), "--serve", "--serve-seconds", "300"]
    demo_argv += ["--serve-rate", "0", "--namespace", namespace]
    with prometheus_server(tmp_path / "prometheus", config=config) as server:
        server.wait_ready()
        started = time.time()
        demo = subprocess.Popen(
            demo_argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "160"},
        )
        try:
            for line in demo.stdout:
                if line.startswith("Serving"):
                    break
            else:
                pytest.fail(f"the demo ended early: {demo.wait(10)}")
            recorded = scrape(demo_port)
            # Two scrapes after the traffic stopped, then every rule evaluated once more.
            time.sleep(3.0)
            rate_interval = f"{max(15, round(traffic_s))}s"
            check_panels_and_rules(server, kit, rate_interval, namespace)
            check_values(server, recorded, namespace)
            if namespace == "ractogateway":
                render_panels(server, kit, image, started, time.time())
                assert image.stat().st_size > 20_000
        finally:
            demo.terminate()
            demo.wait(timeout=30)


def query(server, expr: str) -> list[dict]:
    answer = server.get_json("/api/v1/query", query=expr)
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def check_panels_and_rules(server, kit: Path, rate_interval: str, namespace: str) -> None:
    dashboard = json.loads((kit / ops.DASHBOARD_FILE).read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = instantiate(target["expr"], rate_interval)
            result = query(server, expr)
            assert result, f"{panel['title']}: {expr} returned nothing"
            values = [float(r["value"][1]) for r in result]
            assert any(math.isfinite(v) and v > 0 for v in values), (panel["title"], values)
    recording = ops.in_namespace(ops.recording_rules(["team"]), namespace)
    for rule in recording["groups"][0]["rules"]:
        assert query(server, rule["record"]), f"recording rule {rule['record']} has no data"
    variables = server.get_json(
        "/api/v1/label/team/values", **{"match[]": f"{namespace}_requests_total"}
    )["data"]
    assert variables == ["research", "search", "support"]


def check_values(server, recorded: str, namespace: str) -> None:
    """Prometheus holds exactly what the demo's exporter served once traffic stopped."""
    expected = {
        (sample.replace(f"{namespace}_", "ractogateway_", 1), labels): value
        for (sample, labels), value in samples_by_series(
            recorded.replace(f'family="{namespace}_', 'family="ractogateway_')
        ).items()
    }

    def total(name: str, **labels: str) -> float:
        return sum(
            value
            for (sample, label_set), value in expected.items()
            if sample == name and labels.items() <= dict(label_set).items()
        )

    def promql(expr: str) -> float:
        [result] = query(server, expr.replace("ractogateway_", f"{namespace}_"))
        return float(result["value"][1])

    assert promql('sum(ractogateway_requests_total{job="gateway"})') == total(
        "ractogateway_requests_total"
    )
    for token_type in ("input", "output", "cache_read", "reasoning"):
        assert promql(
            f'sum(ractogateway_tokens_total{{job="gateway",token_type="{token_type}"}})'
        ) == total("ractogateway_tokens_total", token_type=token_type)
    assert promql('sum(ractogateway_tool_calls_total{job="gateway"})') == total(
        "ractogateway_tool_calls_total"
    )
    assert promql(
        'ractogateway_overflow_requests_total{family="ractogateway_tool_calls"}'
    ) == total("ractogateway_overflow_requests_total")
    assert (
        promql('sum(ractogateway_unpriced_requests_total{model="acme-internal-7b"})')
        == total("ractogateway_unpriced_requests_total", model="acme-internal-7b")
        > 0
    )
    assert math.isclose(
        promql('sum(ractogateway_cost_usd_total{job="gateway"})'),
        total("ractogateway_cost_usd_total"),
        rel_tol=1e-12,
    )


def render_panels(server, kit: Path, image: Path, start: float, end: float) -> None:
    """Every panel's queries over the run (rates over 10 s), laid out as the dashboard."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.loads((kit / ops.DASHBOARD_FILE).read_text())
    panels = dashboard["panels"]
    rows = math.ceil(len(panels) / 2)
    figure, axes = plt.subplots(rows, 2, figsize=(16, 3.2 * rows), constrained_layout=True)
    for axis, panel in zip(axes.flat, panels):
        for target in panel["targets"]:
            answer = server.get_json(
                "/api/v1/query_range",
                query=instantiate(target["expr"], "10s"),
                start=f"{start:.3f}",
                end=f"{end:.3f}",
                step="1",
            )
            for result in answer["data"]["result"]:
                points = [(float(t) - start, float(v)) for t, v in result["values"]]
                legend = target["legendFormat"]
                for name, value in result["metric"].items():
                    legend = legend.replace("{{" + name + "}}", value)
                axis.plot(*zip(*points), label=legend, linewidth=1.2)
        unit = panel["fieldConfig"]["defaults"]["unit"]
        axis.set_title(f"{panel['title']} [{unit}]", fontsize=10)
        axis.set_xlabel("seconds", fontsize=8)
        axis.tick_params(labelsize=8)
        axis.legend(fontsize=6, ncol=2, loc="upper left")
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle("gateway-metrics dashboard: the demo's traffic as Prometheus recorded it")
    image.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(image, dpi=80)
    plt.close(figure)


EXPORT = (sys.executable, "-m", "gateway_metrics", "ops", "export")


@pytest.mark.parametrize("job_regex", [r"gateway\.prod", r"gw-\d+", 'say "hi"|gw-7'])
def test_any_job_regex_the_command_takes_gives_alerts_promtool_loads_and_fires(tmp_path, job_regex):
    run = subprocess.run(
        [*EXPORT, str(tmp_path), "--job-regex", job_regex],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "SUCCESS: 7 rules found" in promtool(
        "check", "rules", ops.ALERTING_RULES_FILE, cwd=tmp_path
    )
    matching = {"gateway\\.prod": "gateway.prod", "gw-\\d+": "gw-12"}.get(job_regex, "gw-7")
    tests = {
        "rule_files": [ops.ALERTING_RULES_FILE],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    series("up", "0x10", job=matching, instance="a:1"),
                    series("up", "0x10", job="gatewayXprod", instance="b:1"),
                ],
                "alert_rule_test": [
                    alert(
                        "GatewayTargetDown",
                        "6m",
                        (
                            {"job": matching, "instance": "a:1", "severity": "critical"},
                            f"a:1 of {matching} cannot be scraped",
                        ),
                    )
                ],
            }
        ],
    }
    (tmp_path / "rules_test.yml").write_text(dump(tests))
    assert "SUCCESS" in promtool("test", "rules", "rules_test.yml", cwd=tmp_path)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--extra-label", "team-name", '--extra-label: "team-name" is not a Prometheus label'),
        ("--extra-label", "", "is not a Prometheus label name"),
        ("--extra-label", "model", "a label the families already have"),
        ("--job-regex", "gw-(", "--job-regex 'gw-(' is not a regular expression"),
        ("--job-regex", "(?!gw)", "look-around"),
        ("--error-ratio", "nan", "--error-ratio must be finite"),
        ("--cost-usd-per-hour", "-1", "--cost-usd-per-hour must be finite and not negative"),
    ],
)
def test_what_would_make_invalid_files_is_refused_naming_the_option(
    tmp_path, option, value, message
):
    run = subprocess.run(
        [*EXPORT, str(tmp_path), option, value],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert list(tmp_path.iterdir()) == []


def test_export_replaces_planted_links_and_never_writes_through_them(tmp_path):
    kit, victim = tmp_path / "kit", tmp_path / "victim.txt"
    kit.mkdir()
    victim.write_text("precious\n")
    for name in (ops.DASHBOARD_FILE, ops.RECORDING_RULES_FILE, ops.ALERTING_RULES_FILE):
        (kit / name).symlink_to(victim)
    paths = ops.export(kit)
    assert victim.read_text() == "precious\n"
    for path in paths:
        assert not path.is_symlink() and path.stat().st_size > 0
    assert sorted(p.name for p in kit.iterdir()) == sorted(p.name for p in paths)
