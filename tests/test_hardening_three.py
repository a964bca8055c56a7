"""The third hardening round: each defect found, reproduced, and kept fixed."""

from __future__ import annotations

import logging

import pytest
from gateway_metrics import GatewayMetricsMiddleware
from prometheus_client import CollectorRegistry
from support import sample_value

REQUEST = {"provider": "openai", "model": "gpt-4o", "operation": "chat", "status": "ok"}


# 1. A series of more cells than a heap slab holds got cells past its slab.


@pytest.mark.parametrize(
    "options",
    [
        {"native_histograms": {"max_buckets": 4096}},
        {"latency_buckets": [0.001 * (index + 1) for index in range(5000)]},
    ],
    ids=["4096 native buckets", "5000 latency buckets"],
)
def test_series_larger_than_a_slab_count_exactly(options):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), **options)
    for index in range(20):
        metrics.record_request(
            **{**REQUEST, "model": f"model-{index % 4}"},
            latency_s=0.001 * (index + 1) * 37,
            input_tokens=10,
        )
    text = metrics.generate_latest()
    for model in range(4):
        labels = {**REQUEST, "model": f"model-{model}"}
        assert sample_value(text, "ractogateway_requests_total", **labels) == 5.0
        labels.pop("status")
        count = sample_value(text, "ractogateway_request_duration_seconds_count", **labels)
        assert count == 5.0
        assert (
            sample_value(text, "ractogateway_request_duration_seconds_bucket", le="+Inf", **labels)
            == 5.0
        )


# 2. A dict changed while it is read made PyO3 panic (PanicException, a BaseException).


def test_an_exemplar_dict_changed_while_read_is_an_ordinary_error_or_recorded():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    exemplar: dict[str, str] = {}

    class Growing(str):
        def __str__(self) -> str:
            exemplar[f"k{len(exemplar)}"] = "v"
            return str.__str__(self)

    exemplar["trace_id"] = Growing("abc")

    def tracked() -> None:
        with metrics.track("openai", "gpt-4o", exemplar=exemplar):
            pass

    outcomes = []
    for call in (
        lambda: metrics.record_request(**REQUEST, latency_s=0.1, exemplar=exemplar),
        lambda: metrics.record_batch(**REQUEST, latency_s=[0.1], exemplar=exemplar),
        tracked,
    ):
        try:
            call()
            outcomes.append("recorded")
        except Exception as error:  # a PanicException is not an Exception
            outcomes.append(type(error).__name__)
    assert set(outcomes) <= {"recorded", "TypeError", "ValueError"}, outcomes


# 5. An Accept header prometheus_client's negotiation cannot read was a 500.

ODD_ACCEPTS = [
    (
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
        "encoding=delimited;q=1, text/plain;version=1.0-rc1;q=0.1"
    ),
    "text/plain;version=abc",
    "application/openmetrics-text;version=1.x.0, text/plain;version=0.0.4;q=0.5",
]


@pytest.mark.parametrize("accept", ODD_ACCEPTS)
def test_a_malformed_media_range_is_skipped_and_the_scrape_answers(accept):
    import urllib.request

    from gateway_metrics import PrometheusExporter, make_wsgi_app

    registry = CollectorRegistry()
    metrics = GatewayMetricsMiddleware(registry=registry)
    metrics.record_request(**REQUEST, latency_s=0.1)
    started: list[str] = []
    body = b"".join(
        make_wsgi_app(registry)(
            {
                "REQUEST_METHOD": "GET",
                "PATH_INFO": "/metrics",
                "QUERY_STRING": "",
                "HTTP_ACCEPT": accept,
            },
            lambda status, headers: started.append(status),
        )
    )
    assert started == ["200 OK"] and body
    with PrometheusExporter(0, addr="127.0.0.1", registry=registry) as exporter:
        request = urllib.request.Request(
            f"http://127.0.0.1:{exporter.port}/metrics", headers={"Accept": accept}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert response.read()


# 8. queue_s + upstream_latency_s was compared to latency_s after float rounding.


def test_parts_of_a_latency_that_add_up_in_decimal_are_accepted():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    metrics.record_request(**REQUEST, latency_s=0.3, queue_s=0.2, upstream_latency_s=0.1)
    assert (
        metrics.record_batch(
            **REQUEST, latency_s=[0.3, 0.7], queue_s=[0.2, 0.6], upstream_latency_s=[0.1, 0.1]
        )
        == 2
    )
    text = metrics.generate_latest()
    labels = {key: value for key, value in REQUEST.items() if key != "status"}
    assert sample_value(text, "ractogateway_gateway_overhead_seconds_count", **labels) == 3.0
    with pytest.raises(ValueError, match="must not exceed latency_s"):
        metrics.record_request(**REQUEST, latency_s=0.3, queue_s=0.2, upstream_latency_s=0.11)


# 9. to 11. The senders' URLs and durations.


def test_a_url_with_a_port_that_is_no_number_is_refused_at_construction(monkeypatch):
    from gateway_metrics import OtlpExporter, RemoteWriter

    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with pytest.raises(ValueError, match="port must be a number"):
        RemoteWriter(metrics, "http://127.0.0.1:${PORT}/api/v1/write")
    with pytest.raises(ValueError, match="port must be a number"):
        OtlpExporter(metrics, "http://127.0.0.1:${OTEL_PORT}/v1/metrics")
    with pytest.raises(ValueError, match="port must be a number"):
        metrics.otlp_push("http://127.0.0.1:x/v1/metrics")


def test_credentials_in_a_url_are_basic_auth_and_never_shown(caplog):
    import base64
    import http.server
    import threading

    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers.get("Authorization"))
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    metrics.record_request(**REQUEST, latency_s=0.1)
    url = f"http://writer:s%3Acret-TOKEN@127.0.0.1:{server.server_address[1]}/api/v1/write"
    try:
        with (
            caplog.at_level(logging.DEBUG, logger="gateway_metrics"),
            pytest.raises(OSError, match="503") as raised,
        ):
            metrics.remote_write(url, timeout=10)
        assert seen == ["Basic " + base64.b64encode(b"writer:s:cret-TOKEN").decode()]
        assert "TOKEN" not in str(raised.value)
        assert all("TOKEN" not in record.getMessage() for record in caplog.records)
        with pytest.raises(ValueError, match="pass one"):
            metrics.remote_write(url, basic_auth=("a", "b"))
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_METRIC_EXPORT_INTERVAL"])
def test_durations_past_a_week_are_refused_naming_the_variable(monkeypatch, variable):
    from gateway_metrics import OtlpExporter

    monkeypatch.setenv(variable, "1e13")
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with pytest.raises(ValueError, match=f"{variable} must be at most"):
        OtlpExporter(metrics, "http://127.0.0.1:4318/v1/metrics")
    monkeypatch.delenv(variable)
    with pytest.raises(ValueError, match="interval_s must be at most"):
        OtlpExporter(metrics, "http://127.0.0.1:4318/v1/metrics", interval_s=1e13)


# 6. call.usage() raised into the block for sources that raise when read.


class _Raising:
    @property
    def usage(self) -> object:
        raise RuntimeError("no usage here")


class _Itself:
    def __getattr__(self, name: str) -> object:
        return self


def _cyclic() -> dict:
    source: dict = {"usage": {}}
    source["usage"]["prompt_tokens_details"] = source
    return source


@pytest.mark.parametrize(
    "source",
    [_Raising(), _Itself(), _cyclic(), "mock"],
    ids=["property raises", "getattr returns self", "cycle", "mock"],
)
def test_usage_never_raises_into_the_block_and_usage_from_says_type_error(source, caplog):
    from unittest import mock

    from gateway_metrics import usage_from

    if source == "mock":
        source = mock.MagicMock()
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with (
        caplog.at_level(logging.WARNING, logger="gateway_metrics"),
        metrics.track("openai", "gpt-4o") as call,
    ):
        call.usage(source)
        call.usage(source)
    text = metrics.generate_latest()
    assert sample_value(text, "ractogateway_requests_total", **REQUEST) == 1.0
    # Reported once however often it is given (beside "nothing carries usage").
    reports = [
        r.getMessage() for r in caplog.records if "nothing that carries" not in r.getMessage()
    ]
    assert len(reports) == 1 and reports[0].startswith("track(): "), reports
    with pytest.raises(TypeError):
        usage_from(source)


# 7. The LiteLLM logger dropped a whole call for counts out of range or a mock answer.


@pytest.mark.parametrize(
    "counts",
    [
        {"prompt_tokens": -5, "completion_tokens": 7},
        {"prompt_tokens": 2**64, "completion_tokens": 7},
    ],
)
def test_the_litellm_logger_keeps_a_call_whose_counts_are_out_of_range(counts):
    pytest.importorskip("litellm", reason="the test dependency group installs LiteLLM")
    from unittest import mock

    from gateway_metrics.integrations.litellm import GatewayMetricsLogger

    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    logger = GatewayMetricsLogger(metrics)
    kwargs = {
        "call_type": "completion",
        "model": "gpt-4o",
        "litellm_params": {"custom_llm_provider": "openai"},
    }
    logger.log_success_event(kwargs, {"usage": counts}, 1_700_000_000.0, 1_700_000_000.5)
    logger.log_success_event(kwargs, mock.MagicMock(), 1_700_000_001.0, 1_700_000_001.5)
    text = metrics.generate_latest()
    assert sample_value(text, "ractogateway_requests_total", **REQUEST) == 2.0
    labels = {"provider": "openai", "model": "gpt-4o"}
    assert sample_value(text, "ractogateway_tokens_total", token_type="output", **labels) == 7.0
    assert sample_value(text, "ractogateway_tokens_total", token_type="input", **labels) is None
