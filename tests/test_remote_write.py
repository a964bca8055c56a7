"""Remote write 1.0 into a real Prometheus and VictoriaMetrics, retries, and refusals."""

from __future__ import annotations

import http.server
import math
import shutil
import threading
import time

import pytest
from gateway_metrics import GatewayMetricsMiddleware, RemoteWriteError, RemoteWriter
from prometheus_client import CollectorRegistry
from support import (
    RunningServer,
    free_port,
    prometheus_command,
    prometheus_server,
    sample_value,
)
from support import (
    query_values as values,
)
from support import (
    wait_for_values as wait_for,
)

DURATION = {"model": "gpt-4o", "operation": "chat", "provider": "openai"}
REQUESTS = {**DURATION, "status": "ok"}


def recorded_metrics(requests: int = 3) -> GatewayMetricsMiddleware:
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    for index in range(requests):
        metrics.record_request(
            **REQUESTS, latency_s=0.25 * (index + 1), input_tokens=1000, output_tokens=200
        )
    metrics.record_request(**{**REQUESTS, "status": "error"}, latency_s=7.0)
    metrics.record_cache_hit("semantic")
    return metrics


def assert_receiver_holds(
    server: RunningServer, metrics: GatewayMetricsMiddleware, job: str, float_tolerance: float = 0.0
):
    """Counts exactly; float sums exactly, or within ``float_tolerance`` for a
    receiver that stores values as decimals of limited precision."""
    text = metrics.generate_latest()
    selector = f'job="{job}",instance="worker-1"'
    requests = wait_for(server, f"ractogateway_requests_total{{{selector}}}")
    assert {dict(labels)["status"]: value for labels, value in requests.items()} == {
        "ok": 3.0,
        "error": 1.0,
    }
    inf = values(server, f'ractogateway_request_duration_seconds_bucket{{{selector},le="+Inf"}}')
    assert list(inf.values()) == [4.0]
    for name, labels in (
        ("ractogateway_request_duration_seconds_sum", DURATION),
        ("ractogateway_cost_usd_total", {"model": "gpt-4o", "provider": "openai"}),
    ):
        [received] = values(server, f"{name}{{{selector}}}").values()
        expected = sample_value(text, name, **labels)
        assert math.isclose(received, expected, rel_tol=float_tolerance, abs_tol=0.0), name
    quantile = values(
        server,
        f"histogram_quantile(0.5, sum by (le) (ractogateway_request_duration_seconds_bucket"
        f"{{{selector}}}))",
    )
    assert 0.5 <= next(iter(quantile.values())) <= 1.0
    hits = values(server, f"ractogateway_cache_hits_total{{{selector}}}")
    assert list(hits.values()) == [1.0]
    assert not values(server, '{__name__=~".+_created"}')


@pytest.mark.integration
def test_prometheus_receives_a_remote_write_with_exact_values(tmp_path):
    with prometheus_server(tmp_path, "--web.enable-remote-write-receiver") as server:
        server.wait_ready()
        metrics = recorded_metrics()
        metrics.remote_write(f"{server.base}/api/v1/write", job="batch", instance="worker-1")
        assert_receiver_holds(server, metrics, "batch")


@pytest.mark.integration
def test_victoria_metrics_receives_a_remote_write_with_exact_values(tmp_path):
    binary = shutil.which("victoria-metrics")
    assert binary, "victoria-metrics is missing: `make deps` unpacks it into target/"
    port = free_port()
    argv = [
        binary,
        f"-storageDataPath={tmp_path / 'vm'}",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-search.latencyOffset=0s",
        "-search.disableCache",
    ]
    with RunningServer(argv, port, "/health") as server:
        server.wait_ready()
        metrics = recorded_metrics()
        metrics.remote_write(f"{server.base}/api/v1/write", job="vm-batch", instance="worker-1")
        # VictoriaMetrics keeps floats as decimals of 12 to 15 significant digits.
        assert_receiver_holds(server, metrics, "vm-batch", float_tolerance=1e-12)


@pytest.mark.integration
def test_a_receiver_down_then_up_gets_the_data_after_retries_and_the_final_totals_on_close(
    tmp_path,
):
    argv, port = prometheus_command(tmp_path, "--web.enable-remote-write-receiver")
    metrics = recorded_metrics()
    writer = RemoteWriter(
        metrics,
        f"http://127.0.0.1:{port}/api/v1/write",
        interval_s=0.5,
        job="late",
        instance="worker-1",
        max_retries=50,
        backoff_s=0.1,
        max_backoff_s=0.5,
        timeout=5.0,
    )
    try:
        deadline = time.monotonic() + 30
        while writer.failed == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writer.failed >= 1 and writer.sent == 0
        assert writer.last_error is not None and writer.last_error.retryable
        with RunningServer(argv, port, "/-/ready") as late:
            late.wait_ready()
            assert_receiver_holds(late, metrics, "late")
            assert writer.sent >= 1
            for _ in range(5):
                metrics.record_request(**REQUESTS, latency_s=0.1)
            writer.close()
            final = values(late, 'ractogateway_requests_total{job="late",status="ok"}')
            assert list(final.values()) == [8.0]
    finally:
        writer.close()


class _Answering(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the server's ``status`` and keeps what it got."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.headers, body))
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(b"refused by the test")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering_server():
    servers = []

    def start(status: int) -> http.server.HTTPServer:
        server = http.server.HTTPServer(("127.0.0.1", 0), _Answering)
        server.status = status
        server.received = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_4xx_is_reported_and_not_retried(answering_server, caplog):
    server = answering_server(400)
    url = f"http://127.0.0.1:{server.server_port}/api/v1/write"
    metrics = recorded_metrics()
    with pytest.raises(RemoteWriteError, match="answered 400: refused by the test") as raised:
        metrics.remote_write(url, basic_auth=("user", "pass"), headers={"X-Scope-OrgID": "t1"})
    assert raised.value.status == 400 and not raised.value.retryable
    headers, body = server.received[0]
    assert headers["Content-Encoding"] == "snappy"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert headers["Authorization"] == "Basic dXNlcjpwYXNz"
    assert headers["X-Scope-OrgID"] == "t1"
    assert body
    writer = RemoteWriter(metrics, url, interval_s=3600, max_retries=5, backoff_s=0.01)
    assert writer.flush() is False
    assert len(server.received) == 2
    assert writer.failed == 1 and writer.last_error.status == 400
    assert "not retried" in caplog.text
    writer.close()
    assert len(server.received) == 3


def test_a_5xx_is_retried_with_backoff_then_given_up(answering_server):
    server = answering_server(503)
    writer = RemoteWriter(
        recorded_metrics(),
        f"http://127.0.0.1:{server.server_port}/",
        interval_s=3600,
        max_retries=3,
        backoff_s=0.05,
    )
    started = time.monotonic()
    assert writer.flush() is False
    # Three pauses of 0.05, 0.1 and 0.2 s between four attempts.
    assert time.monotonic() - started >= 0.35
    assert len(server.received) == 4
    assert writer.failed == 4 and writer.last_error.status == 503
    writer.close()


def test_close_cuts_a_retry_pause_short_and_sends_the_final_totals():
    port = free_port()
    writer = RemoteWriter(
        recorded_metrics(),
        f"http://127.0.0.1:{port}/api/v1/write",
        interval_s=0.05,
        max_retries=10,
        backoff_s=30.0,
        timeout=2.0,
    )
    deadline = time.monotonic() + 30
    while writer.failed == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.failed == 1  # the thread now pauses 30 s before its retry
    server = http.server.HTTPServer(("127.0.0.1", port), _Answering)
    server.status, server.received = 200, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        writer.close()
        assert time.monotonic() - started < 10
        assert len(server.received) == 1
        assert writer.sent == 1 and writer.failed == 1
    finally:
        server.shutdown()
        server.server_close()


def test_bad_arguments_are_refused_by_name():
    metrics = recorded_metrics()
    with pytest.raises(TypeError, match="url must be a str"):
        metrics.remote_write(b"http://127.0.0.1:1/")
    with pytest.raises(ValueError, match="url must be an http"):
        metrics.remote_write("ftp://127.0.0.1/")
    with pytest.raises(TypeError, match="job must be"):
        metrics.remote_write("http://127.0.0.1:1/", job="")
    with pytest.raises(TypeError, match="basic_auth must be"):
        metrics.remote_write("http://127.0.0.1:1/", basic_auth="user:pass")
    with pytest.raises(TypeError, match="headers must map str to str"):
        metrics.remote_write("http://127.0.0.1:1/", headers={"X": 1})
    with pytest.raises(ValueError, match="timeout must be finite"):
        metrics.remote_write("http://127.0.0.1:1/", timeout=0)
    with pytest.raises(ValueError, match="max_retries must not be negative"):
        RemoteWriter(metrics, "http://127.0.0.1:1/", max_retries=-1)
    with pytest.raises(ValueError, match="interval_s must be finite"):
        RemoteWriter(metrics, "http://127.0.0.1:1/", interval_s=float("inf"))
