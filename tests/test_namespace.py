"""``namespace="myapp"``: every family named ``myapp_...`` in every path (text,
protobuf, the collector, batches, snapshots, both multi-process modes, OTLP,
remote write, Pushgateway, the ops kit); the default stays the reference's."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap

import pytest
from gateway_metrics import GatewayMetricsMiddleware, _core, ops
from gateway_metrics._otlp import OtlpTarget
from prometheus_client import CollectorRegistry, generate_latest
from support import (
    decode_delimited_families,
    parse,
    prometheus_multiprocess_run,
    prometheus_server,
    promtool_check,
    samples_by_series,
    wait_for_values,
    wire_message,
)

EXPORT = (sys.executable, "-m", "gateway_metrics", "ops", "export")
CALL = {"provider": "openai", "model": "gpt-4o", "operation": "chat", "status": "ok"}


def record(metrics: GatewayMetricsMiddleware) -> None:
    metrics.record_request(**CALL, latency_s=0.5, input_tokens=100, output_tokens=20)
    metrics.record_request(**{**CALL, "status": "error"}, latency_s=1.0, error_type="timeout")
    metrics.record_cache_hit("exact")


def family_names(text: str) -> set[str]:
    return {name for name, _type, _help, _samples in parse(text)}


def renamed(names: set[str], namespace: str) -> set[str]:
    return {name.replace("ractogateway_", f"{namespace}_", 1) for name in names}


def test_every_family_is_named_under_the_namespace():
    default = GatewayMetricsMiddleware(registry=CollectorRegistry())
    mine = GatewayMetricsMiddleware(registry=CollectorRegistry(), namespace="myapp")
    assert (default.namespace, mine.namespace) == ("ractogateway", "myapp")
    for metrics in (default, mine):
        record(metrics)
    text = mine.generate_latest()
    assert family_names(text) == renamed(family_names(default.generate_latest()), "myapp")
    assert "ractogateway" not in text
    assert without_created(text) == without_created(
        default.generate_latest().replace("ractogateway_", "myapp_")
    )
    promtool_check(text)
    assert family_names(generate_latest(mine.registry).decode()) == family_names(text)


def without_created(text: str) -> list[str]:
    return [line for line in text.splitlines() if "_created" not in line]


@pytest.mark.parametrize("namespace", ["1app", "__app", "my-app", "", "my app"])
def test_a_namespace_that_makes_no_metric_names_is_refused(namespace):
    with pytest.raises(ValueError, match=r"namespace: .* must be letters, digits and _"):
        GatewayMetricsMiddleware(registry=CollectorRegistry(), namespace=namespace)
    with pytest.raises(TypeError, match="namespace must be a str"):
        GatewayMetricsMiddleware(registry=CollectorRegistry(), namespace=b"app")


def test_protobuf_and_batches_use_it():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), namespace="myapp")
    metrics.record_batch(**CALL, latency_s=[0.5, 1.5], input_tokens=[10, 20])
    names = {family.name for family in decode_delimited_families(metrics._protobuf_exposition())}
    assert "myapp_requests_total" in names and "myapp_tokens_total" in names
    assert not any(name.startswith("ractogateway") for name in names)


def test_snapshots_merge_within_a_namespace_and_are_refused_across():
    source = GatewayMetricsMiddleware(registry=CollectorRegistry(), namespace="myapp")
    record(source)
    driver = GatewayMetricsMiddleware(registry=CollectorRegistry(), namespace="myapp")
    driver.merge(source.snapshot())
    assert samples_by_series(driver.generate_latest()) == samples_by_series(
        source.generate_latest()
    )
    other = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with pytest.raises(ValueError, match='named under the namespace "myapp"'):
        other.merge(source.snapshot())
    with pytest.raises(ValueError, match='named under the namespace "ractogateway"'):
        driver.merge(other.snapshot())
    assert "requests_total{" not in other.generate_latest()


RECORD_IN_CHILD = """
    from prometheus_client import CollectorRegistry
    from gateway_metrics import GatewayMetricsMiddleware
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), namespace="myapp", {mode})
    metrics.record_request(provider="openai", model="gpt-4o", operation="chat", status="ok",
                           latency_s=0.5, input_tokens=100, output_tokens=20)
"""


def test_our_multiprocess_files_use_it(tmp_path):
    for _ in range(2):
        code = RECORD_IN_CHILD.format(mode=f"multiprocess_dir={str(tmp_path)!r}")
        subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, timeout=120)
    reader = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), namespace="myapp", multiprocess_dir=str(tmp_path)
    )
    text = reader.generate_latest()
    [requests] = [s for n, _t, _h, samples in parse(text) for s in samples if n == "myapp_requests"]
    assert requests[2] == 2.0


def test_prometheus_clients_multiprocess_files_use_it(tmp_path):
    text = prometheus_multiprocess_run(RECORD_IN_CHILD.format(mode=""), tmp_path)
    assert "myapp_requests_total{" in text
    assert "ractogateway" not in text


def test_otlp_uses_it():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), namespace="myapp")
    record(metrics)
    request = wire_message("opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest")()
    body = OtlpTarget("http://127.0.0.1:9/v1/metrics", None, None, None, None).body(metrics)
    request.ParseFromString(gzip.decompress(body))
    names = {
        metric.name
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert "myapp_requests" in names and "myapp_request_duration_seconds" in names
    assert not any(name.startswith("ractogateway") for name in names)


def test_the_ops_kit_names_it_and_promtool_loads_it(tmp_path):
    result = subprocess.run(
        [*EXPORT, str(tmp_path), "--namespace", "myapp", "--extra-label", "team"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert len(result.stdout.split()) == 3
    files = [tmp_path / name for name in (ops.RECORDING_RULES_FILE, ops.ALERTING_RULES_FILE)]
    report = subprocess.run(
        ["promtool", "check", "rules", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "SUCCESS" in report.stdout
    everything = "".join(path.read_text() for path in tmp_path.iterdir())
    assert "ractogateway" not in everything
    dashboard = json.loads((tmp_path / ops.DASHBOARD_FILE).read_text())
    known = {row[0].replace("ractogateway_", "myapp_", 1) for row in _core.FAMILIES}
    queried = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for word in queried.replace("(", " ").replace("{", " ").split():
        if word.startswith("myapp_"):
            assert word.removesuffix("_total").removesuffix("_bucket") in known, word
    bad = subprocess.run(
        [*EXPORT, str(tmp_path), "--namespace", "my-app"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--namespace" in bad.stderr


@pytest.mark.integration
def test_remote_write_delivers_it(tmp_path):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), namespace="myapp")
    record(metrics)
    with prometheus_server(tmp_path, "--web.enable-remote-write-receiver") as server:
        server.wait_ready()
        metrics.remote_write(f"{server.base}/api/v1/write", job="batch", instance="w")
        found = wait_for_values(server, 'myapp_requests_total{job="batch",status="ok"}')
        assert list(found.values()) == [1.0]
