"""The wire formats against their schemas: the core's protobuf read back by
messages built from proto/ by Google's protoc, for every kind of family a
registry's other collectors produce, and OTLP bodies read alike by those
messages and by opentelemetry-proto's own."""

from __future__ import annotations

import pytest
from gateway_metrics import GatewayMetricsMiddleware
from gateway_metrics._serving import exposition
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    UnknownMetricFamily,
)
from support import decode_delimited_families, wire_message

PROTOBUF = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
)
CALL = {"provider": "openai", "model": "gpt-4o", "operation": "chat", "status": "ok"}
COUNTER, GAUGE, SUMMARY, UNTYPED, HISTOGRAM, GAUGE_HISTOGRAM = range(6)


class Custom:
    """Families client_python has no class for, made by hand as exporters make them."""

    def collect(self):
        queue = GaugeHistogramMetricFamily("app_queue_wait", "Queue wait.", labels=["queue"])
        queue.add_metric(["jobs"], [("1.0", 4), ("+Inf", 6)], 10.5)
        yield queue
        mystery = UnknownMetricFamily("app_mystery", "Unknown type.", labels=["k"])
        mystery.add_metric(["v"], 7)
        yield mystery
        dotted = CounterMetricFamily("app.dotted", "A UTF-8 name.", labels=["ä-b"])
        dotted.add_metric(["v"], 1.5, created=1_700_000_000.25)
        yield dotted
        yield CounterMetricFamily("app_empty", "No samples: no message.")


def registry_of_every_kind() -> CollectorRegistry:
    registry = CollectorRegistry()
    GatewayMetricsMiddleware(registry=registry).record_request(**CALL, latency_s=0.3)
    logins = Counter("app_logins", "Logins.", ["method"], registry=registry)
    logins.labels("sso").inc(3)
    logins.labels("password").inc(0)
    Gauge("app_temperature", "Degrees.", registry=registry).set(-2.5)
    sizes = Histogram("app_sizes", "Sizes.", ["route"], buckets=[10, 100], registry=registry)
    sizes.labels("/").observe(42)
    sizes.labels("/").observe(420)
    Summary("app_latency", "Latency.", registry=registry).observe(0.5)
    Info("app_build", "Build.", registry=registry).info({"version": "1.2"})
    Enum("app_state", "State.", states=["up", "down"], registry=registry).state("down")
    registry.register(Custom())
    return registry


def scrape(registry: CollectorRegistry, escaping: str = "") -> dict:
    accept = PROTOBUF + (f";escaping={escaping}" if escaping else "")
    _, headers, parts = exposition(registry, accept, None, {})
    assert dict(headers)["Content-Type"].startswith(PROTOBUF.replace(";", "; "))
    return {family.name: family for family in decode_delimited_families(b"".join(parts))}


def labels(metric) -> dict[str, str]:
    return {pair.name: pair.value for pair in metric.label}


def test_every_kind_of_other_family_reads_back_as_prometheus_client_has_it():
    families = scrape(registry_of_every_kind())
    logins = families["app_logins_total"]
    assert (logins.type, logins.help) == (COUNTER, "Logins.")
    assert {labels(m)["method"]: m.counter.value for m in logins.metric} == {
        "sso": 3.0,
        "password": 0.0,
    }
    # Every field is written, zeros too, as client_golang writes them.
    zero = next(m for m in logins.metric if labels(m)["method"] == "password")
    assert zero.counter.HasField("value") and zero.counter.HasField("created_timestamp")
    assert families["app_temperature"].metric[0].gauge.value == -2.5
    sizes = families["app_sizes"]
    histogram = sizes.metric[0].histogram
    assert (sizes.type, labels(sizes.metric[0])) == (HISTOGRAM, {"route": "/"})
    assert (histogram.sample_count, histogram.sample_sum) == (2, 462.0)
    assert [(b.upper_bound, b.cumulative_count) for b in histogram.bucket] == [(10, 0), (100, 1)]
    latency = families["app_latency"]
    assert latency.type == SUMMARY
    assert (latency.metric[0].summary.sample_count, latency.metric[0].summary.sample_sum) == (
        1,
        0.5,
    )
    # Info and state sets have no protobuf type: gauges, named by their samples.
    build = families["app_build_info"]
    assert (build.type, labels(build.metric[0]), build.metric[0].gauge.value) == (
        GAUGE,
        {"version": "1.2"},
        1.0,
    )
    assert {labels(m)["app_state"]: m.gauge.value for m in families["app_state"].metric} == {
        "up": 0.0,
        "down": 1.0,
    }
    queue = families["app_queue_wait"]
    assert queue.type == GAUGE_HISTOGRAM
    assert queue.metric[0].histogram.sample_count == 6
    assert queue.metric[0].histogram.sample_sum == 10.5
    assert [(b.upper_bound, b.cumulative_count) for b in queue.metric[0].histogram.bucket] == [
        (1.0, 4)
    ]
    assert families["app_mystery"].type == UNTYPED
    assert families["app_mystery"].metric[0].untyped.value == 7
    dotted = families["app_dotted_total"].metric[0]
    assert labels(dotted) == {"__b": "v"}
    created = dotted.counter.created_timestamp
    assert (created.seconds, created.nanos) == (1_700_000_000, 250_000_000)
    assert "app_empty_total" not in families
    assert families["ractogateway_requests_total"].metric[0].counter.value == 1


def test_utf8_names_go_as_they_are_when_the_scraper_allows_them():
    families = scrape(registry_of_every_kind(), "allow-utf-8")
    assert labels(families["app.dotted_total"].metric[0]) == {"ä-b": "v"}
    assert "app_dotted_total" not in families


def test_a_registry_without_other_collectors_adds_nothing():
    registry = CollectorRegistry()
    GatewayMetricsMiddleware(registry=registry).record_request(**CALL, latency_s=0.3)
    assert all(name.startswith("ractogateway_") for name in scrape(registry))


def test_otlp_bodies_read_alike_by_the_schemas_messages_and_opentelemetry_protos():
    otlp = pytest.importorskip("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")
    from google.protobuf.json_format import MessageToDict

    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms=True)
    metrics.record_request(**CALL, latency_s=0.3, input_tokens=12, output_tokens=3)
    metrics.record_request(**{**CALL, "status": "error"}, latency_s=1.5)
    body = metrics._otlp_body([("service.name", "svc"), ("empty", "")], 1_700_000_000.5)
    ours = wire_message("opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest")
    theirs = otlp.ExportMetricsServiceRequest
    decoded = MessageToDict(ours.FromString(body))
    assert decoded == MessageToDict(theirs.FromString(body))
    resource = decoded["resourceMetrics"][0]["resource"]["attributes"]
    # An empty attribute is an empty string value, as the OpenTelemetry SDKs send it.
    assert {"key": "empty", "value": {"stringValue": ""}} in resource
    names = {
        metric["name"] for metric in decoded["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    }
    assert "ractogateway_request_duration_seconds" in names
    point = next(
        metric
        for metric in decoded["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
        if metric["name"] == "ractogateway_request_duration_seconds"
    )["exponentialHistogram"]["dataPoints"]
    # Duration has no status label: both requests in one point.
    assert [(int(p["count"]), p["sum"]) for p in point] == [(2, 1.8)]
