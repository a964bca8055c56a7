"""The deployment recipes of docs/deployments.md, run for real: gunicorn with uvicorn workers
(both multi-process modes) and Flask, under load on 127.0.0.1, bounded in count
and time; every scrape must show exact totals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from support import free_port

pytestmark = pytest.mark.integration

DEPLOYMENTS = Path(__file__).parent.parent / "examples" / "deployments"
REQUESTS = 400
PROMPT = "what is the capital of france"


def requests_total(text: str, model: str = "gpt-4o") -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ractogateway_requests_total" and sample.labels.get("model") == model
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a 3xx is an HTTPError: /metrics must answer itself, as curl sees it


_PLAIN = urllib.request.build_opener(_NoRedirects)


def get(url: str) -> str:
    with _PLAIN.open(url, timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def post_chat(base: str) -> int:
    request = urllib.request.Request(
        f"{base}/v1/chat",
        data=json.dumps({"model": "gpt-4o", "prompt": PROMPT}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


class Server:
    """A gunicorn master and its workers, started on a free loopback port."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *args, "--bind", f"127.0.0.1:{self.port}"],
            cwd=DEPLOYMENTS,
            env={**os.environ, **env, "PYTHONPATH": str(DEPLOYMENTS)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read()
            try:
                get(f"{self.base}/metrics")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        self.stop()
        pytest.fail("gunicorn did not answer within 60 s")

    def load(self) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(lambda _: post_chat(self.base), range(REQUESTS)))
        assert statuses == [200] * REQUESTS

    def scrapes(self, count: int = 12) -> list[float]:
        return [requests_total(get(f"{self.base}/metrics")) for _ in range(count)]

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def wait_for_workers(server: Server, count: int, old: set[int]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = set(server.worker_pids())
        if len(pids) == count and not pids & old:
            return
        time.sleep(0.2)
    pytest.fail("gunicorn did not replace the killed worker within 60 s")


def test_gunicorn_uvicorn_workers_in_our_multiprocess_mode(tmp_path):
    directory = tmp_path / "gateway-metrics"
    server = Server(
        ["-c", "gunicorn_gateway_metrics.conf.py", "fastapi_app:app"],
        {"GATEWAY_METRICS_MULTIPROC_DIR": str(directory)},
    )
    try:
        server.load()
        assert server.scrapes() == [float(REQUESTS)] * 12
        # A worker killed with SIGKILL loses nothing; gunicorn's child_exit compacts its file.
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_for_workers(server, 4, {victim})
        assert server.scrapes() == [float(REQUESTS)] * 12
        server.load()
        assert server.scrapes() == [float(2 * REQUESTS)] * 12
        # A second server on the same directory is refused at start.
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "gunicorn_gateway_metrics.conf.py",
                "--bind",
                f"127.0.0.1:{free_port()}",
                "fastapi_app:app",
            ],
            cwd=DEPLOYMENTS,
            env={
                **os.environ,
                "GATEWAY_METRICS_MULTIPROC_DIR": str(directory),
                "PYTHONPATH": str(DEPLOYMENTS),
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode != 0
        assert "is held by a live process" in second.stderr
    finally:
        server.stop()


def test_gunicorn_uvicorn_workers_in_prometheus_clients_multiprocess_mode(tmp_path):
    directory = tmp_path / "prometheus"
    server = Server(
        ["-c", "gunicorn_prometheus_client.conf.py", "fastapi_app:app"],
        {"PROMETHEUS_MULTIPROC_DIR": str(directory)},
    )
    try:
        server.load()
        assert server.scrapes() == [float(REQUESTS)] * 12
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))
        assert requests_total(generate_latest(registry).decode()) == REQUESTS
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_for_workers(server, 4, {victim})
        assert server.scrapes() == [float(REQUESTS)] * 12
    finally:
        server.stop()


def test_flask_after_fastapi_on_the_same_directory_starts_from_zero(tmp_path):
    """docs/deployments.md's Flask command, after the FastAPI recipe ran on the
    same directory: the config's hooks clear the earlier server's files."""
    directory = tmp_path / "shared"
    fastapi = Server(
        ["-c", "gunicorn_gateway_metrics.conf.py", "fastapi_app:app"],
        {"GATEWAY_METRICS_MULTIPROC_DIR": str(directory)},
    )
    try:
        fastapi.load()
        assert fastapi.scrapes(2) == [float(REQUESTS)] * 2
    finally:
        fastapi.stop()
    flask = Server(
        ["-c", "gunicorn_gateway_metrics.conf.py", "-k", "sync", "-w", "2", "flask_app:app"],
        {"GATEWAY_METRICS_MULTIPROC_DIR": str(directory)},
    )
    try:
        assert flask.scrapes(2) == [0.0] * 2
        flask.load()
        assert flask.scrapes(6) == [float(REQUESTS)] * 6
    finally:
        flask.stop()


def test_our_mode_with_preload_starts_and_counts_once(tmp_path):
    """--preload: the master makes its middleware (and file) before on_starting's
    cleanup, which keeps the caller's own file and removes the rest."""
    directory = tmp_path / "preload"
    directory.mkdir()
    code = (
        "import sys\n"
        "from gateway_metrics import GatewayMetricsMiddleware\n"
        "from prometheus_client import CollectorRegistry\n"
        "m = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=sys.argv[1])\n"
        "m.record_request(provider='openai', model='gpt-4o', operation='chat', status='ok', "
        "latency_s=0.1)\n"
    )
    stale = subprocess.run([sys.executable, "-c", code, str(directory)], timeout=60, check=True)
    assert stale.returncode == 0
    server = Server(
        ["-c", "gunicorn_gateway_metrics.conf.py", "--preload", "fastapi_app:app"],
        {"GATEWAY_METRICS_MULTIPROC_DIR": str(directory)},
    )
    try:
        assert server.scrapes(2) == [0.0] * 2  # the earlier run's file is gone
        server.load()
        assert server.scrapes(12) == [float(REQUESTS)] * 12
    finally:
        server.stop()
