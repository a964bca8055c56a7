"""PrometheusExporter over real HTTP on 127.0.0.1."""

from __future__ import annotations

import gzip
import urllib.request

import pytest
from gateway_metrics import PrometheusExporter
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from support import sample_value


def fetch(port: int, accept: str | None = None, encoding: str | None = None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if accept:
        request.add_header("Accept", accept)
    if encoding:
        request.add_header("Accept-Encoding", encoding)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers, response.read()


@pytest.fixture
def exporter(registry):
    exporter = PrometheusExporter(0, registry=registry, addr="127.0.0.1")
    exporter.start()
    yield exporter
    exporter.stop()


def test_serves_the_text_format(metrics, exporter, no_created):
    metrics.record_request(
        provider="openai",
        model="gpt-4o",
        operation="chat",
        status="ok",
        latency_s=0.3,
        input_tokens=1000,
        output_tokens=200,
    )
    headers, body = fetch(exporter.port)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert text == metrics.generate_latest() == exporter.generate_latest()
    assert (
        sample_value(text, "ractogateway_cost_usd_total", model="gpt-4o", provider="openai")
        == 0.0045000000000000005
    )


def test_serves_openmetrics_when_asked(metrics, exporter):
    metrics.record_cache_hit("semantic")
    headers, body = fetch(exporter.port, accept="application/openmetrics-text; version=1.0.0")
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(text)}
    hits = families["ractogateway_cache_hits"].samples
    assert [(s.name, s.labels, s.value) for s in hits if s.name.endswith("_total")] == [
        ("ractogateway_cache_hits_total", {"cache_type": "semantic"}, 1.0)
    ]


def test_serves_gzip_when_accepted(metrics, exporter, no_created):
    metrics.record_cache_miss("exact")
    headers, body = fetch(exporter.port, encoding="gzip")
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body).decode() == metrics.generate_latest()


def test_lifecycle(registry):
    exporter = PrometheusExporter(0, registry=registry, addr="127.0.0.1")
    assert not exporter.is_running
    assert exporter.port == 0
    exporter.stop()
    exporter.start()
    port = exporter.port
    assert exporter.is_running and port > 0
    exporter.start()
    assert exporter.port == port
    fetch(port)
    exporter.stop()
    assert not exporter.is_running
    with pytest.raises(OSError, match=r"refused|reset"):
        fetch(port)
    exporter.stop()
    with PrometheusExporter(0, registry=registry, addr="127.0.0.1") as again:
        assert again.is_running
        fetch(again.port)
    assert not again.is_running


def test_default_address_binds_all_interfaces_and_starts(registry):
    exporter = PrometheusExporter(0, registry=registry)
    assert exporter.addr == "0.0.0.0"
    exporter.start()
    try:
        fetch(exporter.port)
    finally:
        exporter.stop()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"port": "80"}, TypeError),
        ({"port": -1}, ValueError),
        ({"port": 70000}, ValueError),
        ({"port": 0, "addr": None}, TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        PrometheusExporter(**kwargs)
