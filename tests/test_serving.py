"""Native serving: the WSGI and ASGI apps answer as prometheus_client's own apps do."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from typing import Any

import prometheus_client
import pytest
from gateway_metrics import (
    GatewayMetricsMiddleware,
    PrometheusExporter,
    ToolCall,
    make_asgi_app,
    make_wsgi_app,
)
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from support import (
    prometheus_server,
    promtool_check,
    query_values,
    scrape_every_second,
    wait_for_values,
)

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
ACCEPT_HEADERS = [
    None,
    "text/plain",
    PROMETHEUS_ACCEPT,
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0",
    "text/plain; version=1.0.0; escaping=underscores",
]


def populated() -> tuple[CollectorRegistry, GatewayMetricsMiddleware]:
    registry = CollectorRegistry()
    metrics = GatewayMetricsMiddleware(registry=registry)
    for model, latency in [("gpt-4o", 0.3), ('we"ird\nname', 61.0), ("gpt-4o", 2.5)]:
        metrics.record_request(
            provider="openai",
            model=model,
            operation="chat",
            status="ok",
            latency_s=latency,
            input_tokens=1000,
            output_tokens=20,
            tool_calls=[ToolCall("search")],
        )
    metrics.record_cache_hit("exact")
    Counter("app_logins", "Logins.", ["method"], registry=registry).labels("sso").inc(3)
    Gauge("app_queue_depth", "Queue depth.", registry=registry).set(7)
    return registry, metrics


def call_wsgi(app, accept: str | None = None, encoding: str | None = None, query: str = ""):
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/metrics",
        "QUERY_STRING": query,
    }
    if accept is not None:
        environ["HTTP_ACCEPT"] = accept
    if encoding is not None:
        environ["HTTP_ACCEPT_ENCODING"] = encoding
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], body


def families(content_type: str, body: bytes) -> dict[str, list[tuple[str, tuple, float]]]:
    """Families by name with their samples sorted: order across collectors may differ."""
    text = body.decode()
    parse = (
        openmetrics_families
        if content_type.startswith("application/openmetrics-text")
        else text_string_to_metric_families
    )
    return {
        family.name: sorted(
            (sample.name, tuple(sorted(sample.labels.items())), sample.value)
            for sample in family.samples
        )
        for family in parse(text)
    }


@pytest.mark.parametrize("accept", ACCEPT_HEADERS)
def test_every_format_carries_the_samples_prometheus_client_serves(accept, no_created):
    registry, _ = populated()
    status, headers, body = call_wsgi(make_wsgi_app(registry), accept)
    reference_status, reference_headers, reference_body = call_wsgi(
        prometheus_client.make_wsgi_app(registry), accept
    )
    assert (status, headers) == (reference_status, reference_headers)
    ours = families(headers["Content-Type"], body)
    assert ours == families(reference_headers["Content-Type"], reference_body)
    assert ours["ractogateway_requests"] == [
        (
            "ractogateway_requests_total",
            (("model", "gpt-4o"), ("operation", "chat"), ("provider", "openai"), ("status", "ok")),
            2.0,
        ),
        (
            "ractogateway_requests_total",
            (
                ("model", 'we"ird\nname'),
                ("operation", "chat"),
                ("provider", "openai"),
                ("status", "ok"),
            ),
            1.0,
        ),
    ]
    assert ours["app_logins"] == [("app_logins_total", (("method", "sso"),), 3.0)]
    if headers["Content-Type"].startswith("application/openmetrics-text"):
        assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1
    else:
        promtool_check(body.decode())


@pytest.mark.parametrize("created", [True, False])
def test_openmetrics_of_our_families_is_byte_for_byte_prometheus_clients(created):
    previous = prometheus_client.metrics._use_created
    prometheus_client.metrics._use_created = created
    try:
        _registry, metrics = populated()
        only_ours = CollectorRegistry()
        only_ours.register(metrics._collector)
        native = metrics._exposition(True) + b"# EOF\n"
        assert native == openmetrics_latest(only_ours)
        assert metrics._exposition(False) == prometheus_client.generate_latest(only_ours)
    finally:
        prometheus_client.metrics._use_created = previous


def test_scrapes_in_turn_match_prometheus_client_as_the_store_grows(no_created):
    # Each scrape reuses the previous one's buffer, whatever its format and size.
    _registry, metrics = populated()
    only_ours = CollectorRegistry()
    only_ours.register(metrics._collector)
    for grown in range(3):
        for index in range(300 * grown):
            metrics.record_request(
                provider="openai",
                model=f"model-{grown}-{index}",
                operation="chat",
                status="ok",
                latency_s=0.5,
                input_tokens=index,
            )
        text = prometheus_client.generate_latest(only_ours)
        assert metrics._exposition(True) + b"# EOF\n" == openmetrics_latest(only_ours)
        assert metrics.generate_latest().encode() == text
        assert metrics._exposition(False) == text
    requests = families("text/plain", text)["ractogateway_requests"]
    assert len(requests) == 2 + 300 + 600


def test_name_filtering_and_gzip_as_prometheus_client_does(no_created):
    registry, _ = populated()
    query = "name[]=ractogateway_requests_total&name[]=app_queue_depth"
    status, headers, body = call_wsgi(make_wsgi_app(registry), None, "gzip", query)
    reference = call_wsgi(prometheus_client.make_wsgi_app(registry), None, "gzip", query)
    assert (status, headers) == reference[:2]
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == gzip.decompress(reference[2])
    names = set(families(headers["Content-Type"], gzip.decompress(body)))
    assert names == {"ractogateway_requests", "app_queue_depth"}
    uncompressed = call_wsgi(make_wsgi_app(registry, disable_compression=True), None, "gzip")
    assert "Content-Encoding" not in uncompressed[1]


def test_other_methods_and_the_favicon(no_created):
    registry, _ = populated()
    app = make_wsgi_app(registry)
    answers: list[str] = []
    for method in ("OPTIONS", "POST"):
        app({"REQUEST_METHOD": method, "PATH_INFO": "/metrics"}, lambda s, h: answers.append(s))
    assert answers == ["200 OK", "405 Method Not Allowed"]
    status, _, body = call_wsgi(app)
    assert status == "200 OK" and b"ractogateway_requests_total" in body


def test_the_asgi_app_answers_like_prometheus_clients(no_created):
    registry, _ = populated()

    def call(app) -> tuple[int, dict[bytes, bytes], bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/metrics",
            "query_string": b"",
            "headers": [(b"accept", PROMETHEUS_ACCEPT.encode())],
        }
        asyncio.run(app(scope, receive, send))
        # The body may come in several messages, the last without more_body.
        assert not sent[-1].get("more_body", False)
        body = b"".join(message["body"] for message in sent[1:])
        return sent[0]["status"], dict(sent[0]["headers"]), body

    status, headers, body = call(make_asgi_app(registry))
    reference_status, reference_headers, reference_body = call(
        prometheus_client.make_asgi_app(registry)
    )
    assert (status, headers) == (reference_status, reference_headers)
    content_type = headers[b"Content-Type"].decode()
    assert families(content_type, body) == families(content_type, reference_body)


def test_the_global_registry_is_served_by_default(no_created):
    metrics = GatewayMetricsMiddleware()
    try:
        metrics.record_cache_miss("semantic")
        _, _headers, body = call_wsgi(make_wsgi_app())
        text = body.decode()
        assert 'ractogateway_cache_misses_total{cache_type="semantic"} 1.0' in text
        assert "process_cpu_seconds_total" in text or "python_info" in text
    finally:
        metrics.unregister()


def many_models(models: int) -> tuple[CollectorRegistry, GatewayMetricsMiddleware]:
    """A registry whose exposition runs to megabytes: our gzip's many blocks."""
    registry = CollectorRegistry()
    metrics = GatewayMetricsMiddleware(registry=registry)
    for index in range(models):
        for status, latency in [("ok", 0.3 + index % 7), ("error", 2.5)]:
            metrics.record_request(
                provider="openai",
                model=f"model-{index:05d}",
                operation="chat",
                status=status,
                latency_s=latency,
                input_tokens=1000 + index,
                output_tokens=index % 300,
            )
    Counter("app_logins", "Logins.", ["method"], registry=registry).labels("sso").inc(3)
    return registry, metrics


@pytest.mark.parametrize("accept", [None, PROMETHEUS_ACCEPT])
def test_a_large_gzip_scrape_unpacks_to_the_plain_one(accept):
    # Several megabytes: compressed in chunks as it is rendered, across many
    # blocks of the core's deflate, with `_created` values (literal digits).
    registry, _ = many_models(4_000)
    app = make_wsgi_app(registry)
    status, plain_headers, plain = call_wsgi(app, accept)
    status, headers, packed = call_wsgi(app, accept, "gzip")
    assert status == "200 OK"
    assert headers["Content-Encoding"] == "gzip"
    assert len(plain) > 8_000_000
    assert len(packed) < len(plain) / 10
    assert gzip.decompress(packed) == plain
    # The standard library's inflater, fed a byte at a time at the start and
    # in large pieces after, agrees.
    unpacker = zlib.decompressobj(wbits=31)
    pieces = [packed[:64]] + [packed[at : at + 65_536] for at in range(64, len(packed), 65_536)]
    unpacked = b"".join(unpacker.decompress(piece) for piece in pieces) + unpacker.flush()
    assert unpacker.eof and unpacked == plain
    requests = families(plain_headers["Content-Type"], plain)["ractogateway_requests"]
    assert sum(name == "ractogateway_requests_total" for name, _, _ in requests) == 8_000


@pytest.mark.integration
def test_prometheus_ingests_a_large_gzip_scrape(tmp_path):
    # Prometheus asks for gzip and inflates with Go's own decoder.
    registry, _ = many_models(4_000)
    exporter = PrometheusExporter(0, registry=registry, addr="127.0.0.1")
    exporter.start()
    config = scrape_every_second({"gateway": exporter.port})
    try:
        with prometheus_server(tmp_path, config=config) as server:
            server.wait_ready()
            counted = wait_for_values(
                server, 'count(ractogateway_requests_total{job="gateway"})', timeout=60.0
            )
            assert list(counted.values()) == [8_000.0]
            tokens = query_values(server, 'sum(ractogateway_tokens_total{job="gateway"})')
            expected = sum(1000 + index + index % 300 for index in range(4_000)) * 2
            assert list(tokens.values()) == [float(expected)]
            [health] = server.get_json("/api/v1/targets")["data"]["activeTargets"]
            assert health["health"] == "up", health
    finally:
        exporter.stop()
