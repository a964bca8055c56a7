"""Peers that do not play fair: the exporter's clients and the remote writer's receivers.

Clients that connect and say nothing, start and stop racing each other, a
burst of scrapes; receivers that hang up mid-request, speak another protocol,
send endless header lines, redirect, trickle or answer with a flood. Every
server here listens on 127.0.0.1, every loop is bounded in count and in time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from gateway_metrics import (
    GatewayMetricsMiddleware,
    PrometheusExporter,
    RemoteWriteError,
    RemoteWriter,
)
from prometheus_client import CollectorRegistry
from support import free_port

REQUEST = {"provider": "openai", "model": "gpt-4o", "operation": "chat", "status": "ok"}


def recorded(registry: CollectorRegistry | None = None) -> GatewayMetricsMiddleware:
    metrics = GatewayMetricsMiddleware(registry=registry or CollectorRegistry())
    metrics.record_request(**REQUEST, latency_s=0.25, input_tokens=10, output_tokens=5)
    return metrics


def scrape(port: int, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        return response.read()


def read_to_end(sock: socket.socket, timeout: float) -> bytes:
    """Everything ``sock`` receives until its peer closes it (a reset counts as closed)."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionError:
        pass
    return received


# --------------------------------------------------------------------------- exporter


@pytest.fixture
def exporter_of() -> Iterator[Callable[..., PrometheusExporter]]:
    started: list[PrometheusExporter] = []

    def start(**options: object) -> PrometheusExporter:
        exporter = PrometheusExporter(0, registry=recorded_registry(), addr="127.0.0.1", **options)
        exporter.start()
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.stop()


def recorded_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    recorded(registry)
    return registry


def test_clients_that_never_speak_are_cut_at_the_deadline_and_never_starve_a_scrape(exporter_of):
    exporter = exporter_of(timeout_s=1.0, max_connections=8)
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", exporter.port), timeout=5) for _ in range(40)]
    try:
        # One thread per connection served: once the cut ones have ended, no
        # more than the bound (a busy machine may take a moment to end them).
        deadline = time.monotonic() + 10
        time.sleep(0.3)
        while threading.active_count() > threads_before + 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= threads_before + 8
        for _ in range(5):
            assert b"ractogateway_requests_total{" in scrape(exporter.port)
        # Every idle client is cut off: the oldest to make room, the rest at the deadline.
        started = time.monotonic()
        for sock in idle:
            assert read_to_end(sock, timeout=max(0.1, started + 10 - time.monotonic())) == b""
        assert time.monotonic() - started < 5
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threading.active_count() <= threads_before


def test_a_client_that_trickles_its_request_is_cut_at_the_deadline(exporter_of):
    exporter = exporter_of(timeout_s=1.0)
    sock = socket.create_connection(("127.0.0.1", exporter.port), timeout=5)
    started = time.monotonic()
    try:
        sock.sendall(b"GET /metrics HTTP/1.0\r\n")
        for _ in range(40):  # a header byte every 0.1 s: each read is quick, the whole is not
            sock.sendall(b"X")
            time.sleep(0.1)
    except ConnectionError:
        pass
    assert read_to_end(sock, timeout=5) == b""
    assert time.monotonic() - started < 3
    sock.close()


def test_the_accept_loop_does_not_spin_when_the_process_runs_out_of_descriptors():
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import os, resource, sys
                from prometheus_client import CollectorRegistry
                from gateway_metrics import PrometheusExporter
                exporter = PrometheusExporter(0, registry=CollectorRegistry(), addr="127.0.0.1",
                                              timeout_s=30, max_connections=1000)
                exporter.start()
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                opened = len(os.listdir("/proc/self/fd"))
                resource.setrlimit(resource.RLIMIT_NOFILE, (opened + 8, hard))
                print(exporter.port, flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    clients: list[socket.socket] = []
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
        time.sleep(0.5)

        def cpu_seconds() -> float:
            with open(f"/proc/{child.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu_seconds()
        time.sleep(2.0)
        # Spinning on accept() used about 90% of a core.
        assert cpu_seconds() - before < 0.5
    finally:
        for sock in clients:
            sock.close()
        child.kill()
        child.wait(10)


@pytest.mark.core_loop
def test_start_racing_stop_never_finds_the_port_in_use():
    port = free_port()
    exporter = PrometheusExporter(port, registry=recorded_registry(), addr="127.0.0.1")
    failures: list[BaseException] = []
    try:
        for _ in range(120):
            exporter.start()
            stopping = threading.Thread(target=exporter.stop)
            stopping.start()
            try:
                exporter.start()
            except OSError as error:
                failures.append(error)
            stopping.join(10)
            assert exporter.is_running in (True, False)
    finally:
        exporter.stop()
    assert failures == []
    exporter.start()
    try:
        assert b"ractogateway_requests_total{" in scrape(exporter.port)
    finally:
        exporter.stop()


def test_nothing_is_answered_after_stop_returns(exporter_of):
    exporter = exporter_of()
    early = socket.create_connection(("127.0.0.1", exporter.port), timeout=5)
    time.sleep(0.3)  # accepted, waiting for its request
    exporter.stop()
    with contextlib.suppress(ConnectionError):
        early.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    assert read_to_end(early, timeout=10) == b""
    early.close()
    with pytest.raises(OSError, match="refused"):
        scrape(exporter.port, timeout=2)


def listen_backlog(port: int) -> int:
    """The backlog of the socket listening on ``port``, as the kernel reports it."""
    listing = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    # State, Recv-Q, Send-Q (for a listening socket: its backlog), addresses.
    return int(listing[2])


def test_a_burst_of_scrapes_is_queued_not_dropped(exporter_of):
    exporter = exporter_of()
    # With a backlog of 5, connections past it waited for a SYN retransmit (1 s).
    assert listen_backlog(exporter.port) >= 128
    scrapers = 60
    ready = threading.Barrier(scrapers)
    bodies: list[bytes] = []

    def scrape_once() -> None:
        ready.wait(10)
        bodies.append(scrape(exporter.port, timeout=10))

    threads = [threading.Thread(target=scrape_once) for _ in range(scrapers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(bodies) == scrapers
    assert all(b"ractogateway_requests_total{" in body for body in bodies)


@pytest.mark.parametrize("bad", [{"timeout_s": 0}, {"timeout_s": "1"}, {"max_connections": 0}])
def test_exporter_limits_are_checked(bad):
    with pytest.raises((TypeError, ValueError), match=next(iter(bad))):
        PrometheusExporter(0, **bad)


# --------------------------------------------------------------------------- remote write


class HostileReceiver:
    """A TCP server on 127.0.0.1 that treats each connection with ``behave``."""

    def __init__(self, behave: Callable[[socket.socket, threading.Event], None]) -> None:
        self.behave = behave
        self.stopped = threading.Event()
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/api/v1/write"
        self.threads: list[threading.Thread] = []
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            self.behave(conn, self.stopped)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.accepting.join(5)
        self.listener.close()
        for thread in self.threads:
            thread.join(5)


def request_head(conn: socket.socket) -> bytes:
    """The request line and headers a sender wrote (at most 64 KiB)."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        head += chunk
    return head


def whole_request(conn: socket.socket) -> bytes:
    head = request_head(conn)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = head.split(b"\r\n\r\n", 1)[1]
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head


def hang_up_mid_body(conn: socket.socket, stopped: threading.Event) -> None:
    request_head(conn)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def not_http(conn: socket.socket, stopped: threading.Event) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
    request_head(conn)


def endless_header_line(conn: socket.socket, stopped: threading.Event) -> None:
    whole_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 200_000 + b"\r\n\r\n")


@pytest.fixture
def receiver() -> Iterator[Callable[..., HostileReceiver]]:
    made: list[HostileReceiver] = []

    def make(behave: Callable[[socket.socket, threading.Event], None]) -> HostileReceiver:
        server = HostileReceiver(behave)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


@pytest.mark.parametrize("behave", [hang_up_mid_body, not_http, endless_header_line])
def test_a_broken_receiver_is_a_remote_write_error_and_the_writer_keeps_going(
    receiver, behave, caplog
):
    server = receiver(behave)
    metrics = recorded()
    with pytest.raises(RemoteWriteError) as raised:
        metrics.remote_write(server.url, timeout=5)
    assert raised.value.retryable and raised.value.status is None
    caplog.set_level(logging.DEBUG, logger="gateway_metrics")
    writer = RemoteWriter(metrics, server.url, interval_s=0.05, max_retries=0, timeout=5)
    try:
        deadline = time.monotonic() + 20
        while writer.failed < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        # The thread is alive and still trying, and says why it fails.
        assert writer._thread.is_alive()
        assert writer.failed >= 4 and writer.sent == 0
        assert isinstance(writer.last_error, RemoteWriteError)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
    finally:
        writer.close()  # never raises


@pytest.mark.parametrize(
    "value", ["Bearer s3cret\n", "Bearer s3cret\r\nX-Evil: 1", " padded", "caf\u00e9\u2603"]
)
def test_a_header_value_a_request_cannot_carry_is_refused_when_configured(value):
    metrics = recorded()
    with pytest.raises(ValueError, match="Authorization"):
        RemoteWriter(metrics, "http://127.0.0.1:1/", headers={"Authorization": value})
    with pytest.raises(ValueError, match="Authorization"):
        metrics.remote_write("http://127.0.0.1:1/", headers={"Authorization": value})
    with pytest.raises(ValueError, match="header name"):
        metrics.remote_write("http://127.0.0.1:1/", headers={"Bad Name": "x"})


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_refused_and_the_credentials_stay_home(receiver, status):
    elsewhere = receiver(lambda conn, stopped: conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n"))
    location = f"http://127.0.0.1:{elsewhere.port}/steal".encode()

    def redirect(conn: socket.socket, stopped: threading.Event) -> None:
        whole_request(conn)
        conn.sendall(
            b"HTTP/1.1 %d Moved\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % (status, location)
        )

    server = receiver(redirect)
    metrics = recorded()
    with pytest.raises(RemoteWriteError, match="redirect") as raised:
        metrics.remote_write(server.url, basic_auth=("u", "p"), headers={"X-Scope-OrgID": "t"})
    assert raised.value.status == status and not raised.value.retryable
    writer = RemoteWriter(metrics, server.url, interval_s=3600, basic_auth=("user", "pass"))
    assert writer.flush() is False
    writer.close()
    assert elsewhere.connections == 0
    assert server.connections == 3


def trickle_forever(prefix: bytes) -> Callable[[socket.socket, threading.Event], None]:
    def behave(conn: socket.socket, stopped: threading.Event) -> None:
        whole_request(conn)
        conn.sendall(prefix)
        for _ in range(600):  # a byte every 0.1 s for at most a minute
            if stopped.wait(0.1):
                return
            conn.sendall(b"a")

    return behave


def test_a_trickled_answer_ends_at_the_deadline_and_a_trickled_body_costs_nothing(receiver):
    metrics = recorded()
    headers = receiver(trickle_forever(b"HTTP/1.1 200 OK\r\nX-Slow: "))
    started = time.monotonic()
    with pytest.raises(RemoteWriteError, match=r"no answer within 1 s"):
        metrics.remote_write(headers.url, timeout=1.0)
    assert time.monotonic() - started < 3
    body = receiver(trickle_forever(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"))
    started = time.monotonic()
    metrics.remote_write(body.url, timeout=5.0)  # accepted: the body is not waited for
    assert time.monotonic() - started < 3  # not the 5 s deadline


def test_close_at_exit_is_bounded_by_the_timeout_whatever_the_receiver_does(receiver):
    server = receiver(trickle_forever(b"HTTP/1.1 200 OK\r\nX-Slow: "))
    code = f"""
        from prometheus_client import CollectorRegistry
        from gateway_metrics import GatewayMetricsMiddleware, RemoteWriter
        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
        writer = RemoteWriter(metrics, {server.url!r}, interval_s=0.1, timeout=2.0)
        import time; time.sleep(0.5)
    """
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    # The thread's own request (at most 2 s), then close()'s, within the same 2 s.
    assert time.monotonic() - started < 8


def flood(status: bytes) -> Callable[[socket.socket, threading.Event], None]:
    chunk = b"\0" * (1 << 20)

    def behave(conn: socket.socket, stopped: threading.Event) -> None:
        whole_request(conn)
        conn.sendall(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n" % (status, 256 << 20))
        for _ in range(256):
            if stopped.is_set():
                return
            conn.sendall(chunk)

    return behave


@pytest.mark.parametrize("status", [b"200 OK", b"500 Internal Server Error"])
def test_a_flood_of_an_answer_is_not_read(receiver, status):
    server = receiver(flood(status))
    metrics = recorded()
    tracemalloc.start()
    try:
        if status.startswith(b"2"):
            metrics.remote_write(server.url, timeout=10)
        else:
            with pytest.raises(RemoteWriteError, match="answered 500") as raised:
                metrics.remote_write(server.url, timeout=10)
            assert len(str(raised.value)) < 1024
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The answer was 256 MiB; what it may cost is the request and a few buffers.
    assert peak < 4 << 20
