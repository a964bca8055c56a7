"""Pushing to a real Pushgateway (Debian's prometheus-pushgateway) on 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_metrics import GatewayMetricsMiddleware
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from support import free_port

pytestmark = pytest.mark.integration


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory) -> Iterator[str]:
    binary = shutil.which("prometheus-pushgateway")
    assert binary, "prometheus-pushgateway is missing: `make deps` unpacks it into target/"
    address = f"127.0.0.1:{free_port()}"
    workdir = tmp_path_factory.mktemp("pushgateway")
    process = subprocess.Popen(
        [binary, f"--web.listen-address={address}", "--web.enable-admin-api"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                fetch(f"http://{address}/-/ready")
                break
            except OSError:
                assert process.poll() is None, "the Pushgateway exited"
                assert time.monotonic() < deadline, "the Pushgateway did not start"
                time.sleep(0.1)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


def pushed_samples(address: str, job: str) -> dict[tuple[str, frozenset], float]:
    """Our samples for ``job`` as the Pushgateway serves them on its own /metrics.

    Labels with an empty value are left out: in Prometheus they are the same as
    no label (the Pushgateway adds an empty ``instance`` to every group).
    """
    samples = {}
    for family in text_string_to_metric_families(fetch(f"http://{address}/metrics")):
        for sample in family.samples:
            if sample.name.startswith("ractogateway_") and sample.labels.get("job") == job:
                labels = frozenset((k, v) for k, v in sample.labels.items() if v != "")
                samples[(sample.name, labels)] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_push_replaces_the_group(metrics, pushgateway):
    metrics.record_request(
        provider="openai",
        model="gpt-4o",
        operation="chat",
        status="ok",
        latency_s=0.4,
        input_tokens=1000,
        output_tokens=200,
    )
    metrics.record_cache_hit("exact")
    metrics.push_to_gateway(pushgateway, job="push-test")
    samples = pushed_samples(pushgateway, "push-test")
    labels = {"job": "push-test", "model": "gpt-4o", "provider": "openai"}
    assert value(samples, "ractogateway_cost_usd_total", **labels) == 0.0045000000000000005
    assert (
        value(samples, "ractogateway_requests_total", operation="chat", status="ok", **labels)
        == 1.0
    )
    assert value(samples, "ractogateway_cache_hits_total", job="push-test", cache_type="exact") == 1


def test_pushadd_then_delete(registry, pushgateway):
    first = GatewayMetricsMiddleware(registry=registry)
    first.record_cache_miss("semantic")
    first.push_to_gateway(pushgateway, job="pushadd-test")
    second = GatewayMetricsMiddleware(registry=type(registry)())
    for _ in range(3):
        second.record_cache_miss("semantic")
    second.pushadd_to_gateway(pushgateway, job="pushadd-test")
    samples = pushed_samples(pushgateway, "pushadd-test")
    assert (
        value(samples, "ractogateway_cache_misses_total", job="pushadd-test", cache_type="semantic")
        == 3.0
    )
    second.delete_from_gateway(pushgateway, job="pushadd-test")
    assert pushed_samples(pushgateway, "pushadd-test") == {}


@pytest.mark.parametrize(
    "grouping_key",
    [{"instance": "worker/3"}, {"shard": "a b/c", "region": "eu west"}, {"batch": ""}],
)
def test_grouping_keys_are_encoded_as_the_pushgateway_expects(metrics, pushgateway, grouping_key):
    metrics.record_cache_hit("exact")
    metrics.push_to_gateway(pushgateway, job="grouping-test", grouping_key=grouping_key)
    samples = pushed_samples(pushgateway, "grouping-test")
    expected = {"job": "grouping-test", "cache_type": "exact"}
    expected.update((key, label) for key, label in grouping_key.items() if label != "")
    assert value(samples, "ractogateway_cache_hits_total", **expected) == 1.0
    metrics.delete_from_gateway(pushgateway, job="grouping-test", grouping_key=grouping_key)
    assert pushed_samples(pushgateway, "grouping-test") == {}


def test_a_custom_handler_is_used(metrics):
    calls = []

    def recording_handler(url, method, timeout, headers, data):
        return lambda: calls.append((url, method, data))

    metrics.record_cache_hit("exact")
    metrics.push_to_gateway("127.0.0.1:1", job="j/x", handler=recording_handler)
    url, method, data = calls[0]
    assert method == "PUT"
    assert url == "http://127.0.0.1:1/metrics/job@base64/ai94"
    assert b'ractogateway_cache_hits_total{cache_type="exact"} 1.0' in data


def test_the_batch_inference_example_pushes_its_result(pushgateway):
    example = Path(__file__).parent.parent / "examples" / "batch_inference.py"
    result = subprocess.run(
        [
            sys.executable,
            str(example),
            "--prompts",
            "12000",
            "--workers",
            "2",
            "--pushgateway",
            pushgateway,
            "--job",
            "example-test",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "Batch job summary" in result.stdout
    samples = pushed_samples(pushgateway, "example-test")
    requests = sum(
        count for (name, _), count in samples.items() if name == "ractogateway_requests_total"
    )
    assert requests == 12_000.0
    tool_calls = sum(
        count for (name, _), count in samples.items() if name == "ractogateway_tool_calls_total"
    )
    assert tool_calls > 0


def test_the_table_added_families_are_pushed(pushgateway):
    from prometheus_client import CollectorRegistry
    from test_table_additions import LABELS, OVERHEAD, QUEUE, record_rows

    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record_rows(metrics)
    metrics.push_to_gateway(pushgateway, job="table-additions")
    samples = pushed_samples(pushgateway, "table-additions")
    labels = {**LABELS, "job": "table-additions"}
    assert value(samples, f"{OVERHEAD}_sum", **labels) == 0.625
    assert value(samples, f"{QUEUE}_count", **labels) == 2
    tokens = {"model": "gpt-4o", "provider": "openai", "job": "table-additions"}
    assert value(samples, "ractogateway_tokens_total", **tokens, token_type="audio_output") == 40


def test_a_namespace_of_our_own_is_pushed_under_it(pushgateway):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), namespace="myapp")
    metrics.record_request(
        provider="openai", model="gpt-4o", operation="chat", status="ok", latency_s=0.4
    )
    metrics.push_to_gateway(pushgateway, job="namespace-test")
    pushed = [
        sample
        for family in text_string_to_metric_families(fetch(f"http://{pushgateway}/metrics"))
        for sample in family.samples
        if sample.labels.get("job") == "namespace-test"
    ]
    names = {sample.name for sample in pushed}
    assert "myapp_requests_total" in names
    assert not any(name.startswith("ractogateway") for name in names)
