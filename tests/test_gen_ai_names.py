"""``semconv="gen_ai"``: the OpenTelemetry GenAI names in every exposition and push.

A scraper that asks for UTF-8 names (``escaping=allow-utf-8``, as Prometheus 3
does) gets the conventions' dotted names with Prometheus's unit suffix; every
other one gets their underscore translation. The values are the same as under
our names, whatever the format.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import urllib.request
from typing import Any

import pytest
from gateway_metrics import GatewayMetricsMiddleware, PrometheusExporter
from gateway_metrics._core import GEN_AI_SEMCONV_NAMES
from gateway_metrics._serving import exposition
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from support import (
    PROMETHEUS_3,
    decode_delimited_families,
    prometheus_server,
    promtool_check,
    scrape_every_second,
    wait_for_values,
)

CALL = {"provider": "openai", "model": "gpt-4o", "operation": "chat", "status": "ok"}

#: Our names and the conventions', in UTF-8 and underscore-escaped.
DURATION = "ractogateway_request_duration_seconds"
DURATION_UTF8 = "gen_ai.client.operation.duration_seconds"
DURATION_LEGACY = "gen_ai_client_operation_duration_seconds"
TTFT_UTF8 = "gen_ai.client.operation.time_to_first_chunk_seconds"
TPOC_UTF8 = "gen_ai.client.operation.time_per_output_chunk_seconds"
RENAMED_LABELS = {
    "provider": "gen_ai.provider.name",
    "model": "gen_ai.request.model",
    "operation": "gen_ai.operation.name",
    "token_type": "gen_ai.token.type",
    "error_type": "error.type",
}
#: The histograms only a middleware of the conventions' names keeps, as a
#: Prometheus exposition names them.
CONVENTIONS_ONLY = ("gen_ai.client.token.usage", DURATION_UTF8)
#: Inside, under our names: the tokens per request, the duration by error type.
KEPT_BY_CONVENTIONS = ("ractogateway_request_tokens", "ractogateway_operation_duration_seconds")

OPENMETRICS_UTF8 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8"
TEXT_UTF8 = "text/plain;version=1.0.0;escaping=allow-utf-8"
PROTOBUF = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
)


def recorded(semconv: str | None, registry: CollectorRegistry | None = None) -> Any:
    metrics = GatewayMetricsMiddleware(registry=registry or CollectorRegistry(), semconv=semconv)
    for index in range(4):
        metrics.record_request(
            **CALL,
            latency_s=0.1 * (index + 1),
            time_to_first_token_s=0.04,
            input_tokens=100 + index,
            output_tokens=30,
        )
    metrics.record_request(
        **{**CALL, "status": "error", "model": "o3"}, latency_s=2.5, error_type="rate_limit"
    )
    return metrics


def legacy(name: str) -> str:
    return name.replace(".", "_")


def translated(sample_name: str, labels: dict[str, str], utf8: bool) -> tuple[str, frozenset]:
    """One of our samples as the GenAI names spell it."""
    spell = (lambda name: name) if utf8 else legacy
    for ours, theirs in (
        ("ractogateway_time_to_first_token_seconds", TTFT_UTF8),
        ("ractogateway_time_per_output_token_seconds", TPOC_UTF8),
    ):
        if sample_name.startswith(ours):
            sample_name = theirs + sample_name[len(ours) :]
    renamed = {spell(RENAMED_LABELS.get(name, name)): value for name, value in labels.items()}
    return spell(sample_name), frozenset(renamed.items())


def samples(text: str, parser: Any) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in parser(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def body(registry: CollectorRegistry, accept: str | None) -> tuple[str, str]:
    _, headers, parts = exposition(registry, accept, None, {})
    return dict(headers)["Content-Type"], b"".join(parts).decode()


@pytest.mark.parametrize(
    ("accept", "parser", "utf8"),
    [
        (None, parse_text, False),
        ("text/plain;version=0.0.4", parse_text, False),
        (TEXT_UTF8, parse_text, True),
        ("application/openmetrics-text;version=1.0.0", parse_openmetrics, False),
        (
            "application/openmetrics-text;version=1.0.0;escaping=underscores",
            parse_openmetrics,
            False,
        ),
        (OPENMETRICS_UTF8, parse_openmetrics, True),
    ],
)
def test_each_negotiated_text_format_carries_our_values_under_the_gen_ai_names(
    accept, parser, utf8
):
    ours = recorded(None)
    theirs = recorded("gen_ai")
    _, our_text = body(ours._registry, accept)
    content_type, text = body(theirs._registry, accept)
    if utf8:
        assert content_type.endswith("escaping=allow-utf-8")
        assert f'# TYPE "{DURATION_UTF8}" histogram' in text
    else:
        assert '"gen_ai' not in text
        assert f"# TYPE {DURATION_LEGACY} histogram" in text
    expected = {
        translated(name, dict(labels), utf8): value
        for (name, labels), value in samples(our_text, parser).items()
    }
    # Besides ours, the conventions' histograms, which only they keep.
    spell = (lambda name: name) if utf8 else legacy
    only = tuple(spell(name) for name in CONVENTIONS_ONLY)
    found = samples(text, parser)
    for name in only:
        assert {sample for sample, _ in found if sample.startswith(name)} == {
            f"{name}_bucket",
            f"{name}_count",
            f"{name}_sum",
        }
    assert {key: value for key, value in found.items() if not key[0].startswith(only)} == (expected)
    # The duration by error type: ours per model, its failure with error.type.
    counts = {
        (labels[spell("gen_ai.request.model")], labels[spell("error.type")]): value
        for (name, frozen), value in found.items()
        for labels in [dict(frozen)]
        if name == spell(DURATION_UTF8) + "_count"
    }
    assert counts == {("gpt-4o", ""): 4.0, ("o3", "rate_limit"): 1.0}
    by_model = {
        dict(frozen)["model"]: value
        for (name, frozen), value in samples(our_text, parser).items()
        if name == DURATION + "_sum"
    }
    assert {
        dict(frozen)[spell("gen_ai.request.model")]: value
        for (name, frozen), value in found.items()
        if name == spell(DURATION_UTF8) + "_sum"
    } == by_model
    # The same as prometheus_client's own rendering of the collector, negotiated alike.
    encoder, _ = choose_encoder(accept or "")
    assert samples(encoder(theirs._registry).decode(), parser) == found


def test_the_legacy_spelling_passes_promtool_and_ours_is_untouched():
    theirs = recorded("gen_ai")
    promtool_check(theirs.generate_latest())
    ours = recorded(None)
    assert ours.semconv is None and theirs.semconv == "gen_ai"
    # Without the option nothing changes, whatever the scraper asks for.
    assert (
        body(ours._registry, OPENMETRICS_UTF8)[1]
        == body(ours._registry, "application/openmetrics-text;version=1.0.0")[1]
    )


@pytest.mark.parametrize("utf8", [False, True])
def test_protobuf_names_follow_the_escaping_asked_for(utf8):
    theirs = recorded("gen_ai")
    Counter("app.jobs", "An application's own counter.", registry=theirs._registry).inc()
    accept = PROTOBUF + (";escaping=allow-utf-8" if utf8 else "")
    _, headers, parts = exposition(theirs._registry, accept, None, {})
    content_type = dict(headers)["Content-Type"]
    assert content_type.endswith("escaping=allow-utf-8") == utf8
    families = {family.name: family for family in decode_delimited_families(b"".join(parts))}
    spell = (lambda name: name) if utf8 else legacy
    duration = families[spell(DURATION_UTF8)]
    [metric] = [
        metric
        for metric in duration.metric
        if {label.name: label.value for label in metric.label}.get(spell("gen_ai.request.model"))
        == "gpt-4o"
    ]
    assert {label.name: label.value for label in metric.label} == {
        spell("gen_ai.request.model"): "gpt-4o",
        spell("gen_ai.operation.name"): "chat",
        spell("gen_ai.provider.name"): "openai",
        spell("error.type"): "",
    }
    assert metric.histogram.sample_count == 4
    [failed] = [m for m in duration.metric if m.histogram.sample_count == 1]
    assert {label.name: label.value for label in failed.label}[spell("error.type")] == (
        "rate_limit"
    )
    assert spell("app.jobs_total") in families
    assert "ractogateway_requests_total" in families


def test_describe_names_the_families_as_collect_does():
    theirs = recorded("gen_ai")
    described = {family.name for family in theirs._collector.describe()}
    collected = {family.name for family in theirs._collector.collect()}
    assert collected <= described
    assert DURATION_UTF8 in described and DURATION in described


def test_files_and_snapshots_keep_our_names_so_conventions_merge():
    theirs = recorded("gen_ai")
    ours = GatewayMetricsMiddleware(registry=CollectorRegistry())
    ours.merge(theirs.snapshot())
    merged = samples(ours.generate_latest(), parse_text)
    # The histograms they kept come along, under our names here.
    usage = {key: value for key, value in merged.items() if key[0].startswith(KEPT_BY_CONVENTIONS)}
    assert (
        usage[
            (
                "ractogateway_request_tokens_count",
                frozenset(
                    {
                        "model": "gpt-4o",
                        "operation": "chat",
                        "provider": "openai",
                        "token_type": "input",
                    }.items()
                ),
            )
        ]
        == 4
    )
    failed = {
        "error_type": "rate_limit",
        "model": "o3",
        "operation": "chat",
        "provider": "openai",
    }
    assert usage[("ractogateway_operation_duration_seconds_sum", frozenset(failed.items()))] == 2.5
    rest = {key: value for key, value in merged.items() if key not in usage}
    assert rest == samples(recorded(None).generate_latest(), parse_text)


def test_a_push_follows_the_middlewares_names_unless_told():
    otlp = pytest.importorskip("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")
    received: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/metrics"
        theirs = recorded("gen_ai")
        theirs.otlp_push(url)
        recorded(None).otlp_push(url)
        recorded(None).otlp_push(url, semconv="gen_ai")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    names = []
    for request in received:
        decoded = otlp.ExportMetricsServiceRequest.FromString(gzip.decompress(request))
        [resource] = decoded.resource_metrics
        [scope] = resource.scope_metrics
        names.append({metric.name for metric in scope.metrics})
    assert {"gen_ai.client.operation.duration", DURATION} <= names[0]
    assert DURATION in names[1] and "gen_ai.client.operation.duration" not in names[1]
    # Pushed under their names, ours lacks the histograms only they keep: our
    # duration histogram stands in for theirs, without error.type.
    assert names[2] == names[0] - {"gen_ai.client.token.usage", DURATION}
    assert "gen_ai.client.token.usage" in names[0]


def test_bad_semconv_is_refused_by_name():
    with pytest.raises(TypeError, match="semconv"):
        GatewayMetricsMiddleware(registry=CollectorRegistry(), semconv=1)
    with pytest.raises(ValueError, match="semconv"):
        GatewayMetricsMiddleware(registry=CollectorRegistry(), semconv="otel")


def test_the_mapping_is_the_pinned_tables():
    metrics, attributes = GEN_AI_SEMCONV_NAMES
    assert dict(attributes) == RENAMED_LABELS
    assert dict(metrics)[KEPT_BY_CONVENTIONS[1]] + "_seconds" == DURATION_UTF8
    assert dict(metrics)["ractogateway_time_per_output_token_seconds"] + "_seconds" == TPOC_UTF8


@pytest.mark.integration
@pytest.mark.parametrize("prometheus", ["2.42", "3.5"])
def test_prometheus_stores_the_names_it_negotiated(tmp_path, prometheus):
    # Prometheus 3 asks for UTF-8 names and keeps the dotted ones; 2.42 cannot
    # and gets the underscore translation.
    registry = CollectorRegistry()
    recorded("gen_ai", registry)
    exporter = PrometheusExporter(0, registry=registry, addr="127.0.0.1")
    exporter.start()
    job = scrape_every_second({"gateway": exporter.port})
    binary = PROMETHEUS_3 if prometheus == "3.5" else None
    utf8 = prometheus == "3.5"
    count = f'{{"{DURATION_UTF8}_count"}}' if utf8 else f"{DURATION_LEGACY}_count"
    try:
        with prometheus_server(tmp_path / "data", config=job, binary=binary) as server:
            server.wait_ready()
            found = wait_for_values(server, count, timeout=60.0)
            model = "gen_ai.request.model" if utf8 else "gen_ai_request_model"
            by_model = {dict(labels)[model]: value for labels, value in found.items()}
            assert by_model == {"gpt-4o": 4.0, "o3": 1.0}
            [labels] = [dict(labels) for labels in found if "o3" in dict(labels).values()]
            provider = "gen_ai.provider.name" if utf8 else "gen_ai_provider_name"
            assert labels[provider] == "openai"
            # The failure carries error.type; the empty value of the successes is no label.
            error_type = "error.type" if utf8 else "error_type"
            assert labels[error_type] == "rate_limit"
            [succeeded] = [dict(labels) for labels in found if "gpt-4o" in dict(labels).values()]
            assert error_type not in succeeded
    finally:
        exporter.stop()


def test_a_scrape_over_http_negotiates_as_prometheus_3_asks():
    registry = CollectorRegistry()
    recorded("gen_ai", registry)
    exporter = PrometheusExporter(0, registry=registry, addr="127.0.0.1")
    exporter.start()
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{exporter.port}/metrics",
            headers={
                "Accept": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
                "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            assert response.headers["Content-Type"].endswith("escaping=allow-utf-8")
    finally:
        exporter.stop()
    families = {family.name: family for family in parse_openmetrics(text)}
    assert families[DURATION_UTF8].type == "histogram"
    assert generate_latest(registry).decode().count(DURATION_LEGACY + "_count") == 2


def test_the_token_usage_histogram_is_kept_under_the_gen_ai_names_only():
    theirs = recorded("gen_ai")
    text = theirs.generate_latest()
    found = samples(text, parse_text)
    usage = {
        (name, dict(labels)["gen_ai_token_type"], dict(labels).get("le")): value
        for (name, labels), value in found.items()
        if name.startswith("gen_ai_client_token_usage")
        and dict(labels)["gen_ai_request_model"] == "gpt-4o"
    }
    # Four requests of 100..103 input and 30 output tokens each.
    assert usage[("gen_ai_client_token_usage_count", "input", None)] == 4
    assert usage[("gen_ai_client_token_usage_sum", "input", None)] == 406
    assert usage[("gen_ai_client_token_usage_bucket", "input", "64.0")] == 0
    assert usage[("gen_ai_client_token_usage_bucket", "input", "256.0")] == 4
    assert usage[("gen_ai_client_token_usage_bucket", "output", "16.0")] == 0
    assert usage[("gen_ai_client_token_usage_bucket", "output", "64.0")] == 4
    # The error request had no tokens: nothing observed for o3.
    assert not any(
        name.startswith("gen_ai_client_token_usage")
        and dict(labels)["gen_ai_request_model"] == "o3"
        for name, labels in found
    )
    # A middleware of our names does not keep it: no cost, no family.
    assert "request_tokens" not in recorded(None).generate_latest()


def test_a_batch_keeps_the_token_usage_as_one_call_per_row():
    np = pytest.importorskip("numpy")
    calls = GatewayMetricsMiddleware(registry=CollectorRegistry(), semconv="gen_ai")
    batch = GatewayMetricsMiddleware(registry=CollectorRegistry(), semconv="gen_ai")
    inputs, outputs = [5, 0, 70_000, 3], [1, 9, 0, 2_000_000]
    # Two failures: the duration by error type tells them apart, as single calls do.
    statuses, error_types = ["ok", "error", "ok", "error"], [None, "timeout", None, "auth"]
    latencies = [0.5, 7.0, 0.25, 0.04]
    for row in zip(inputs, outputs, statuses, error_types, latencies):
        input_tokens, output_tokens, status, error_type, latency = row
        calls.record_request(
            **{**CALL, "status": status},
            latency_s=latency,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            error_type=error_type,
        )
    batch.record_batch(
        **{**CALL, "status": statuses},
        latency_s=np.array(latencies),
        input_tokens=np.array(inputs),
        output_tokens=np.array(outputs),
        error_type=error_types,
    )
    assert samples(batch.generate_latest(), parse_text) == samples(
        calls.generate_latest(), parse_text
    )
    usage = samples(batch.generate_latest(), parse_text)
    key = frozenset(
        {
            "gen_ai_request_model": "gpt-4o",
            "gen_ai_operation_name": "chat",
            "gen_ai_provider_name": "openai",
            "gen_ai_token_type": "output",
        }.items()
    )
    assert usage[("gen_ai_client_token_usage_count", key)] == 3
    durations = {
        dict(labels)["error_type"]: value
        for (name, labels), value in usage.items()
        if name == "gen_ai_client_operation_duration_seconds_sum"
    }
    assert durations == {"": 0.75, "timeout": 7.0, "auth": 0.04}
