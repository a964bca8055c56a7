"""OTLP/HTTP metrics export: every series as OpenTelemetry points, decoded with
opentelemetry-proto, compared with the OpenTelemetry SDK recording the same
requests, and ingested by VictoriaMetrics."""

from __future__ import annotations

import gzip
import http.server
import math
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gateway_metrics
import mp_workers
import pytest
from gateway_metrics import (
    GEN_AI_SEMCONV_VERSION,
    GatewayMetricsMiddleware,
    OtlpError,
    OtlpExporter,
    ToolCall,
)
from gateway_metrics._core import GEN_AI_SEMCONV_NAMES
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from support import (
    RunningServer,
    decode_delimited_families,
    free_port,
    native_buckets,
    query_values,
    wait_for_values,
    wait_until,
)

otlp_metrics = pytest.importorskip("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")

CALL = {"provider": "openai", "model": "gpt-4o", "operation": "chat", "status": "ok"}
DURATION = "ractogateway_request_duration_seconds"
TOKEN_USAGE = "ractogateway_request_tokens"
OPERATION_DURATION = "ractogateway_operation_duration_seconds"
#: The GenAI conventions' advised buckets for gen_ai.client.token.usage (v1.41.0).
TOKEN_USAGE_BOUNDS = [float(4**power) for power in range(14)]
TRACE = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}


class Receiver:
    """An OTLP/HTTP receiver on 127.0.0.1 that keeps what it is sent and answers
    each request with the next of ``statuses`` (200 once they run out)."""

    def __init__(self, statuses: tuple[int, ...] = (), port: int = 0) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.statuses = list(statuses)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if status == 307:
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/metrics"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def last(self) -> Any:
        """The last request's ``ExportMetricsServiceRequest``."""
        return decode(self.requests[-1][2])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def decode(body: bytes) -> Any:
    return otlp_metrics.ExportMetricsServiceRequest.FromString(gzip.decompress(body))


def attributes(point: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in point.attributes}


def metrics_by_name(request: Any) -> dict[str, Any]:
    [resource] = request.resource_metrics
    [scope] = resource.scope_metrics
    return {metric.name: metric for metric in scope.metrics}


def exposition(metrics: GatewayMetricsMiddleware) -> dict[tuple[str, frozenset], float]:
    """Every sample of the OpenMetrics exposition, ``_created`` included."""
    text = metrics._exposition(True).decode() + "# EOF\n"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def recorded(semconv: str | None = None) -> GatewayMetricsMiddleware:
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), semconv=semconv)
    for index in range(5):
        metrics.record_request(
            **CALL,
            latency_s=0.2 * (index + 1),
            time_to_first_token_s=0.05,
            input_tokens=1000,
            output_tokens=200 + index,
            tool_calls=[ToolCall("search")],
        )
    metrics.record_request(
        **{**CALL, "status": "error", "model": "mystery"}, latency_s=12.0, error_type="server_error"
    )
    metrics.record_cache_hit("exact")
    return metrics


def test_a_push_carries_every_series_as_the_exposition_shows_it(receiver):
    metrics = recorded()
    before = time.time()
    metrics.otlp_push(receiver.url, headers={"x-tenant": "a"}, resource={"deployment": "test"})
    after = time.time()
    [(path, headers, _)] = receiver.requests
    assert path == "/v1/metrics"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["Content-Encoding"] == "gzip"
    assert headers["x-tenant"] == "a"
    request = receiver.last()
    [resource] = request.resource_metrics
    resource_attributes = {kv.key: kv.value.string_value for kv in resource.resource.attributes}
    assert resource_attributes["deployment"] == "test"
    assert resource_attributes["service.name"] == "unknown_service:python"
    assert len(resource_attributes["service.instance.id"]) == 36
    [scope] = resource.scope_metrics
    assert (scope.scope.name, scope.scope.version) == (
        "gateway_metrics",
        gateway_metrics.__version__,
    )
    shown = exposition(metrics)
    checked = 0
    for name, metric in metrics_by_name(request).items():
        kind = metric.WhichOneof("data")
        assert metric.description
        if kind == "sum":
            assert metric.sum.is_monotonic
            assert metric.sum.aggregation_temporality == 2  # cumulative
            points = metric.sum.data_points
            for point in points:
                labels = frozenset(attributes(point).items())
                value = point.as_int if point.HasField("as_int") else point.as_double
                assert value == shown[(f"{name}_total", labels)]
                created = shown[(f"{name}_created", labels)]
                assert abs(point.start_time_unix_nano / 1e9 - created) < 1e-6
                assert before <= point.time_unix_nano / 1e9 <= after
                checked += 1
        else:
            assert kind == "histogram" and metric.unit == "s"
            assert metric.histogram.aggregation_temporality == 2
            for point in metric.histogram.data_points:
                labels = attributes(point)
                cumulative = [
                    shown[(f"{name}_bucket", frozenset({**labels, "le": le}.items()))]
                    for le in [*map(str, point.explicit_bounds), "+Inf"]
                ]
                assert list(point.bucket_counts) == [
                    now - then for now, then in zip(cumulative, [0.0, *cumulative])
                ]
                key = frozenset(labels.items())
                assert point.count == shown[(f"{name}_count", key)]
                assert point.sum == shown[(f"{name}_sum", key)]
                checked += 1
    # Every series of the exposition is one point.
    series = {key for key in shown if key[0].endswith(("_total", "_count"))}
    assert checked == len(series) > 10


def test_native_histograms_go_as_exponential_histograms_with_their_exemplars(receiver):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms=True)
    for index in range(200):
        metrics.record_request(**CALL, latency_s=0.001 * 1.07**index)
    metrics.record_request(**CALL, latency_s=0.0)
    metrics.record_request(**CALL, latency_s=0.3, exemplar=TRACE)
    metrics.otlp_push(receiver.url)
    metric = metrics_by_name(receiver.last())[DURATION]
    [point] = metric.exponential_histogram.data_points
    families = {f.name: f for f in decode_delimited_families(metrics._protobuf_exposition())}
    [exposed] = families[DURATION].metric
    native = exposed.histogram
    assert point.scale == native.schema == 3
    assert point.zero_count == native.zero_count == 1
    assert point.zero_threshold == native.zero_threshold
    assert point.count == native.sample_count == 202
    assert point.sum == native.sample_sum
    # Prometheus' bucket i is (b^(i-1), b^i], OpenTelemetry's i - 1 is the same.
    ours = {
        point.positive.offset + 1 + at: count
        for at, count in enumerate(point.positive.bucket_counts)
        if count
    }
    assert ours == dict(native_buckets(native))
    [exemplar] = point.exemplars
    assert exemplar.trace_id.hex() == TRACE["trace_id"]
    assert exemplar.span_id.hex() == TRACE["span_id"]
    assert exemplar.as_double == 0.3


def test_multiprocess_mode_and_a_merged_driver_push_the_sum(tmp_path, receiver):
    context = multiprocessing.get_context("fork")
    for model in ("gpt-4o", "gpt-4o", "mystery"):
        worker = context.Process(target=mp_workers.record_requests, args=(str(tmp_path), 7, model))
        worker.start()
        worker.join(timeout=60)
        assert worker.exitcode == 0
    scraper = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=tmp_path)
    scraper.otlp_push(receiver.url)
    requests = metrics_by_name(receiver.last())["ractogateway_requests"]
    by_model = {attributes(p)["model"]: p.as_int for p in requests.sum.data_points}
    assert by_model == {"gpt-4o": 14, "mystery": 7}
    # A driver that merged the workers' snapshots pushes what one process would.
    single, driver = mp_workers.free_metrics(), mp_workers.free_metrics()
    for start in (0, 50):
        driver.merge(mp_workers.recorded_snapshot(start, 50))
        for index in range(start, start + 50):
            single.record_request(**mp_workers.workload_row(index))
    single.record_cache_hit("exact")
    single.record_cache_hit("exact")

    def points(metrics: GatewayMetricsMiddleware) -> dict:
        metrics.otlp_push(receiver.url)
        found = {}
        for name, metric in metrics_by_name(receiver.last()).items():
            data = getattr(metric, metric.WhichOneof("data"))
            for point in data.data_points:
                point.ClearField("start_time_unix_nano")
                point.ClearField("time_unix_nano")
                found[(name, frozenset(attributes(point).items()))] = point
        return found

    merged, expected = points(driver), points(single)
    assert merged.keys() == expected.keys()
    for key, point in merged.items():
        assert point == expected[key], key


PROMETHEUS_CLIENT_WORKER = """
import sys
from gateway_metrics import GatewayMetricsMiddleware
from prometheus_client import CollectorRegistry
metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
for _ in range(int(sys.argv[1])):
    metrics.record_request(provider="openai", model="gpt-4o", operation="chat", status="ok",
                           latency_s=0.5, input_tokens=10, output_tokens=2)
if len(sys.argv) > 2:
    metrics.otlp_push(sys.argv[2])
"""


def test_prometheus_clients_multiprocess_mode_pushes_the_sum(tmp_path, receiver):
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for argv in (["4"], ["3"], ["0", receiver.url]):
        subprocess.run(
            [sys.executable, "-c", PROMETHEUS_CLIENT_WORKER, *argv],
            env=environment,
            check=True,
            timeout=120,
        )
    found = metrics_by_name(receiver.last())
    [requests] = found["ractogateway_requests"].sum.data_points
    assert requests.as_int == 7
    [duration] = found[DURATION].histogram.data_points
    assert (duration.count, duration.sum) == (7, 3.5)


def test_the_opentelemetry_variables_configure_it_as_the_sdks_do(monkeypatch, receiver):
    metrics = recorded()
    base = f"http://127.0.0.1:{receiver.port}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base + "/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b, x-team = ml")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=attrs,deployment.environment=prod")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway")
    metrics.otlp_push()
    path, headers, _ = receiver.requests[-1]
    assert path == "/v1/metrics"
    assert (headers["api-key"], headers["x-team"]) == ("a b", "ml")
    [resource] = receiver.last().resource_metrics
    found = {kv.key: kv.value.string_value for kv in resource.resource.attributes}
    assert found["service.name"] == "gateway"
    assert found["deployment.environment"] == "prod"
    # The metrics-specific endpoint wins, used as given; arguments win over both.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", base + "/custom")
    metrics.otlp_push(resource={"service.name": "argument"})
    assert receiver.requests[-1][0] == "/custom"
    [resource] = receiver.last().resource_metrics
    found = {kv.key: kv.value.string_value for kv in resource.resource.attributes}
    assert found["service.name"] == "argument"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "broken")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_HEADERS"):
        metrics.otlp_push()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_HEADERS")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_TIMEOUT"):
        metrics.otlp_push()


def test_bad_arguments_are_refused_by_name():
    metrics = recorded()
    with pytest.raises(ValueError, match="url must be an http"):
        metrics.otlp_push("ftp://127.0.0.1/v1/metrics")
    with pytest.raises(TypeError, match="headers must be a mapping"):
        metrics.otlp_push("http://127.0.0.1:1/v1/metrics", headers=[("a", "b")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="resource must map"):
        metrics.otlp_push("http://127.0.0.1:1/v1/metrics", resource={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="timeout must be finite"):
        metrics.otlp_push("http://127.0.0.1:1/v1/metrics", timeout=-1.0)


def test_answers_are_retried_only_when_otlp_says_so():
    metrics = recorded()
    for status, retryable in ((400, False), (503, True), (429, True), (500, False), (307, False)):
        receiver = Receiver((status,))
        try:
            with pytest.raises(OtlpError) as raised:
                metrics.otlp_push(receiver.url)
            assert (raised.value.status, raised.value.retryable) == (status, retryable)
        finally:
            receiver.close()
    with pytest.raises(OtlpError, match="failed") as raised:
        metrics.otlp_push(f"http://127.0.0.1:{free_port()}/v1/metrics", timeout=2.0)
    assert raised.value.retryable and raised.value.status is None


def test_the_exporter_retries_a_receiver_down_then_up_and_pushes_the_final_totals_on_close():
    metrics = recorded()
    port = free_port()
    exporter = OtlpExporter(
        metrics,
        f"http://127.0.0.1:{port}/v1/metrics",
        interval_s=0.2,
        max_retries=100,
        backoff_s=0.05,
        max_backoff_s=0.2,
        timeout=5.0,
    )
    receiver = None
    try:
        deadline = time.monotonic() + 20
        while exporter.failed == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exporter.failed >= 1 and exporter.sent == 0
        assert exporter.last_error is not None and exporter.last_error.retryable
        receiver = Receiver((503, 503), port=port)
        deadline = time.monotonic() + 20
        while exporter.sent == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exporter.sent >= 1
        metrics.record_request(**CALL, latency_s=0.1)
        exporter.close()
        requests = metrics_by_name(receiver.last())["ractogateway_requests"]
        ok = [p for p in requests.sum.data_points if attributes(p) == {**CALL}]
        assert [p.as_int for p in ok] == [6]
        sent = exporter.sent
        exporter.close()  # twice is fine, and sends nothing more
        assert exporter.sent == sent
    finally:
        exporter.close()
        if receiver is not None:
            receiver.close()


def sdk_request(metrics: GatewayMetricsMiddleware, semconv: str | None) -> Any:
    """The same requests recorded through the OpenTelemetry SDK, with the names,
    attributes and buckets of ``semconv`` (ours when None), encoded by its own
    OTLP encoder."""
    sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")
    export = pytest.importorskip("opentelemetry.sdk.metrics.export")
    view = pytest.importorskip("opentelemetry.sdk.metrics.view")
    encoder = pytest.importorskip("opentelemetry.exporter.otlp.proto.common.metrics_encoder")
    metric_names, attribute_names = (dict(names) for names in GEN_AI_SEMCONV_NAMES)
    if semconv is None:
        metric_names, attribute_names = {}, {}

    def named(family: str) -> str:
        return metric_names.get(family, family.removesuffix("_total"))

    def labelled(labels: dict[str, str]) -> dict[str, str]:
        return {attribute_names.get(key, key): value for key, value in labels.items()}

    reader = export.InMemoryMetricReader()
    provider = sdk_metrics.MeterProvider(
        metric_readers=[reader],
        views=[
            *(
                view.View(
                    instrument_name=named(name),
                    aggregation=view.ExplicitBucketHistogramAggregation(metrics.latency_buckets),
                )
                for name in (DURATION, OPERATION_DURATION)
            ),
            view.View(
                instrument_name=named(TOKEN_USAGE),
                aggregation=view.ExplicitBucketHistogramAggregation(TOKEN_USAGE_BOUNDS),
            ),
        ],
    )
    meter = provider.get_meter("gateway_metrics", gateway_metrics.__version__)
    requests = meter.create_counter(named("ractogateway_requests_total"))
    duration = meter.create_histogram(named(DURATION), unit="s")
    tokens = meter.create_counter(named("ractogateway_tokens_total"))
    errors = meter.create_counter(named("ractogateway_request_errors_total"))
    # Kept by a middleware named as the conventions: their gen_ai.client.token.usage,
    # and their gen_ai.client.operation.duration, with error.type on failures.
    usage = meter.create_histogram(named(TOKEN_USAGE), unit="{token}") if semconv else None
    by_outcome = meter.create_histogram(named(OPERATION_DURATION), unit="s") if semconv else None
    rows = [(0.2 * (index + 1), 1000, 200 + index, None) for index in range(5)]
    rows.append((3.5, 0, 0, "timeout"))
    for latency, input_tokens, output_tokens, error_type in rows:
        call = {**CALL, "status": "error"} if error_type else CALL
        metrics.record_request(
            **call,
            latency_s=latency,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            error_type=error_type,
        )
        requests.add(1, labelled(call))
        request_labels = {k: CALL[k] for k in ("model", "operation", "provider")}
        duration.record(latency, labelled(request_labels))
        if by_outcome is not None:
            # error.type only on a failure: a success has no such attribute.
            outcome = {"error_type": error_type} if error_type else {}
            by_outcome.record(latency, labelled({**request_labels, **outcome}))
        if error_type:
            errors.add(1, labelled({**request_labels, "error_type": error_type}))
        for token_type, count in (("input", input_tokens), ("output", output_tokens)):
            token_labels = {"model": "gpt-4o", "provider": "openai", "token_type": token_type}
            tokens.add(count, labelled(token_labels))
            if usage is not None and count:  # a count of zero is not observed
                usage.record(count, labelled({**token_labels, "operation": CALL["operation"]}))
    return encoder.encode_metrics(reader.get_metrics_data())


@pytest.mark.parametrize("semconv", [None, "gen_ai"])
def test_the_points_equal_the_opentelemetry_sdks_for_the_same_requests(receiver, semconv):
    metrics = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), price_table={}, semconv=semconv
    )
    theirs = metrics_by_name(sdk_request(metrics, semconv))
    metrics.otlp_push(receiver.url)
    ours = metrics_by_name(receiver.last())
    names = {
        "ractogateway_requests",
        DURATION,
        "ractogateway_tokens",
        "ractogateway_request_errors",
    }
    if semconv:
        names |= {"gen_ai.client.token.usage", "gen_ai.client.operation.duration"}
    assert set(theirs) == names
    for name, their_metric in theirs.items():
        our_metric = ours[name]
        kind = their_metric.WhichOneof("data")
        assert our_metric.WhichOneof("data") == kind, name
        assert our_metric.unit == their_metric.unit
        ours_data, theirs_data = getattr(our_metric, kind), getattr(their_metric, kind)
        assert ours_data.aggregation_temporality == theirs_data.aggregation_temporality
        if kind == "sum":
            assert ours_data.is_monotonic == theirs_data.is_monotonic

        def comparable(data: Any) -> dict:
            points = {}
            for point in data.data_points:
                point.ClearField("start_time_unix_nano")
                point.ClearField("time_unix_nano")
                for extremum in ("min", "max"):  # the SDK keeps them; the exposition has none
                    if extremum in point.DESCRIPTOR.fields_by_name:
                        point.ClearField(extremum)
                labels = frozenset(attributes(point).items())
                point.ClearField("attributes")  # the same, in the SDK's order
                points[labels] = point
            return points

        assert comparable(ours_data) == comparable(theirs_data), name


#: The client metrics of the OpenTelemetry GenAI semantic conventions v1.41.0
#: (semantic-conventions, docs/gen-ai/gen-ai-metrics.md) that ours map to: the
#: instrument, the unit, the required attributes and every attribute defined.
PUBLISHED_GEN_AI_METRICS = {
    "gen_ai.client.token.usage": (
        "histogram",
        "{token}",
        {"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.token.type"},
        {
            "gen_ai.operation.name",
            "gen_ai.provider.name",
            "gen_ai.token.type",
            "gen_ai.request.model",
            "server.port",
            "gen_ai.response.model",
            "server.address",
        },
    ),
    "gen_ai.client.operation.duration": (
        "histogram",
        "s",
        {"gen_ai.operation.name", "gen_ai.provider.name"},
        {
            "gen_ai.operation.name",
            "gen_ai.provider.name",
            "error.type",
            "gen_ai.request.model",
            "server.port",
            "gen_ai.response.model",
            "server.address",
        },
    ),
    # The streaming metrics: the common attributes only.
    **{
        name: (
            "histogram",
            "s",
            {"gen_ai.operation.name", "gen_ai.provider.name"},
            {
                "gen_ai.operation.name",
                "gen_ai.provider.name",
                "gen_ai.request.model",
                "server.port",
                "gen_ai.response.model",
                "server.address",
            },
        )
        for name in (
            "gen_ai.client.operation.time_to_first_chunk",
            "gen_ai.client.operation.time_per_output_chunk",
        )
    },
}
#: Conditionally required (when the operation ended in an error) on the duration.
ERROR_TYPE_REQUIRED = {"gen_ai.client.operation.duration": "error.type"}


def test_gen_ai_names_follow_the_pinned_conventions(receiver):
    assert GEN_AI_SEMCONV_VERSION == "1.41.0"
    metrics = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), extra_labels=["tenant"], semconv="gen_ai"
    )
    metrics.record_request(
        **CALL,
        latency_s=0.8,
        time_to_first_token_s=0.1,
        input_tokens=10,
        output_tokens=4,
        labels={"tenant": "t1"},
    )
    metrics.record_request(
        **{**CALL, "status": "error"},
        latency_s=31.0,
        error_type="timeout",
        labels={"tenant": "t1"},
    )
    metrics.otlp_push(receiver.url)
    [resource] = receiver.last().resource_metrics
    [scope] = resource.scope_metrics
    assert scope.schema_url == "https://opentelemetry.io/schemas/1.41.0"
    found = {metric.name: metric for metric in scope.metrics}
    for name, (instrument, unit, required, defined) in PUBLISHED_GEN_AI_METRICS.items():
        metric = found[name]
        assert (metric.WhichOneof("data"), metric.unit) == (instrument, unit)
        assert metric.histogram.data_points
        for point in metric.histogram.data_points:
            keys = set(attributes(point))
            assert required <= keys
            assert keys - defined == {"tenant"}  # the user's own labels stay
            if name in ERROR_TYPE_REQUIRED:
                # Failed: error.type with its value; succeeded: no error.type.
                failed = point.count == 1 and point.sum == 31.0
                assert (ERROR_TYPE_REQUIRED[name] in keys) == failed
    errors = {
        attributes(point).get("error.type"): (point.count, point.sum)
        for point in found["gen_ai.client.operation.duration"].histogram.data_points
    }
    assert errors == {None: (1, 0.8), "timeout": (1, 31.0)}
    # Time per output chunk: our time per output token, (0.8 - 0.1) / (4 - 1).
    [chunk] = found["gen_ai.client.operation.time_per_output_chunk"].histogram.data_points
    assert math.isclose(chunk.sum, 0.7 / 3, rel_tol=1e-12)
    # The conventions' advised buckets, and their token types.
    usage = found["gen_ai.client.token.usage"].histogram.data_points
    assert {attributes(point)["gen_ai.token.type"]: point.sum for point in usage} == {
        "input": 10.0,
        "output": 4.0,
    }
    assert list(usage[0].explicit_bounds) == TOKEN_USAGE_BOUNDS
    # Families the conventions do not define keep our names, with their attributes.
    [tokens] = [p for p in found["ractogateway_tokens"].sum.data_points if p.as_int == 4]
    assert attributes(tokens)["gen_ai.token.type"] == "output"
    # Our duration histogram keeps our name beside theirs.
    assert {p.count for p in found[DURATION].histogram.data_points} == {2}
    with pytest.raises(ValueError, match="semconv must be None or 'gen_ai'"):
        metrics.otlp_push(receiver.url, semconv="genai")


@pytest.mark.integration
def test_victoria_metrics_ingests_a_push_with_exact_values(tmp_path):
    binary = (
        Path(__file__).resolve().parent.parent / "target/debian/forky/root/usr/bin/victoria-metrics"
    )
    assert binary.exists(), "VictoriaMetrics 1.145 is missing: `make deps` unpacks it"
    port = free_port()
    argv = [
        str(binary),
        f"-storageDataPath={tmp_path / 'vm'}",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-search.latencyOffset=0s",
        "-search.disableCache",
    ]
    metrics = recorded()
    with RunningServer(argv, port, "/health") as server:
        server.wait_ready()
        metrics.otlp_push(
            f"{server.base}/opentelemetry/v1/metrics", resource={"service.name": "vm-batch"}
        )
        shown = {
            key: value
            for key, value in exposition(metrics).items()
            if not key[0].endswith("_created")
        }
        # OTLP names counters without `_total`, and VictoriaMetrics keeps them
        # so; it writes bucket bounds as Go does (1 for 1.0), and adds the
        # resource's and scope's attributes as labels.
        expected = {}
        for (name, shown_labels), value in shown.items():
            labels = dict(shown_labels)
            if "le" in labels and labels["le"] != "+Inf":
                labels["le"] = format(float(labels["le"]), "g")
            expected[(name.removesuffix("_total"), frozenset(labels.items()))] = value
        added = {"service.name", "service.instance.id", "scope.name", "scope.version"}

        def received() -> dict:
            found = query_values(server, '{__name__=~"ractogateway_.+",service.name="vm-batch"}')
            return {
                (
                    dict(labels)["__name__"],
                    frozenset((k, v) for k, v in labels if k not in added and k != "__name__"),
                ): value
                for labels, value in found.items()
            }

        # Pushed samples become searchable when VictoriaMetrics flushes its buffers.
        urllib.request.urlopen(f"{server.base}/internal/force_flush", timeout=10).close()
        wait_until(lambda: len(received()) == len(expected), "every series", server, 30.0)
        got = received()
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert math.isclose(got[key], value, rel_tol=1e-12), (key, got[key], value)
        # The GenAI conventions' names and attributes arrive as such, and a
        # middleware of those names adds their token usage histogram.
        recorded("gen_ai").otlp_push(
            f"{server.base}/opentelemetry/v1/metrics", resource={"service.name": "vm-semconv"}
        )
        urllib.request.urlopen(f"{server.base}/internal/force_flush", timeout=10).close()
        semconv = 'service.name="vm-semconv"'
        counts = wait_for_values(
            server, f'{{__name__="gen_ai.client.operation.duration_count",{semconv}}}'
        )
        by_model = {
            (dict(labels)["gen_ai.request.model"], dict(labels).get("error.type")): value
            for labels, value in counts.items()
        }
        # The failure carries error.type; the successes have none.
        assert by_model == {("gpt-4o", None): 5.0, ("mystery", "server_error"): 1.0}
        failed = wait_for_values(
            server,
            f'{{__name__="gen_ai.client.operation.duration_sum","error.type"!="",{semconv}}}',
        )
        assert list(failed.values()) == [12.0]
        chunks = wait_for_values(
            server,
            f'{{__name__="gen_ai.client.operation.time_per_output_chunk_count",{semconv}}}',
        )
        assert list(chunks.values()) == [5.0]
        usage = {}
        for suffix in ("count", "sum"):
            found = wait_for_values(
                server, f'{{__name__="gen_ai.client.token.usage_{suffix}",{semconv}}}'
            )
            for labels, value in found.items():
                usage[(suffix, dict(labels)["gen_ai.token.type"])] = value
        # Five requests of 1,000 input and 200..204 output tokens; the error had none.
        assert usage == {
            ("count", "input"): 5.0,
            ("sum", "input"): 5000.0,
            ("count", "output"): 5.0,
            ("sum", "output"): 1010.0,
        }
