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


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
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


def test_flask_under_gunicorn_sync_workers(tmp_path):
    server = Server(
        ["-w", "2", "flask_app:app"],
        {"GATEWAY_METRICS_MULTIPROC_DIR": str(tmp_path / "flask")},
    )
    try:
        server.load()
        assert server.scrapes(6) == [float(REQUESTS)] * 6
    finally:
        server.stop()
