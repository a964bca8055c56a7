"""Runs one documented block inside a network and mount namespace of its own.

``tests/test_docs.py`` starts it as ``unshare --net --mount python
tests/docs_namespace.py`` with a JSON spec on standard input. Inside, loopback is
the only network and ``/run`` a fresh tmpfs, so a block runs exactly as printed,
on the ports and paths it names, whatever else this machine listens on: the
servers it needs are started on those ports first. It prints a JSON report:
the block's exit status and output, what ``serves`` answered, and what the
servers received.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from providers import ProviderServer
from support import RunningServer

_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """Brings ``lo`` up: a new network namespace starts with it down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(probe, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(probe, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


class OtlpReceiver:
    """An OTLP/HTTP receiver on 127.0.0.1:4318 keeping each request's path and body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 4318), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def report(self) -> list[dict[str, Any]]:
        import gzip

        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
        )

        found = []
        for path, body in self.requests:
            request = ExportMetricsServiceRequest()
            request.ParseFromString(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)
            services = [
                attribute.value.string_value
                for resource in request.resource_metrics
                for attribute in resource.resource.attributes
                if attribute.key == "service.name"
            ]
            found.append({"path": path, "services": services})
        return found


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """A GET that never follows a redirect: its status and body."""

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirects)
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""


def start_servers(needs: list[str], work: Path, env: dict[str, str]) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    if "providers" in needs:
        provider = ProviderServer().__enter__()
        servers["providers"] = provider
        env.update(
            {
                "OPENAI_BASE_URL": f"{provider.url}/v1",
                "OPENAI_API_BASE": f"{provider.url}/v1",
                "OPENAI_API_KEY": "test",
                "ANTHROPIC_BASE_URL": provider.url,
                "ANTHROPIC_API_KEY": "test",
                "GOOGLE_GEMINI_BASE_URL": provider.url,
                "GEMINI_API_KEY": "test",
            }
        )
        env.pop("GOOGLE_API_KEY", None)
    if "pushgateway" in needs:
        binary = shutil.which("prometheus-pushgateway", path=env["PATH"])
        assert binary, "prometheus-pushgateway is missing: `make deps` unpacks it"
        pushgateway = RunningServer(
            [binary, "--web.listen-address=127.0.0.1:9091"], 9091, "/-/ready"
        )
        pushgateway.wait_ready()
        servers["pushgateway"] = pushgateway
    if "prometheus" in needs:
        binary = shutil.which("prometheus", path=env["PATH"])
        assert binary, "prometheus is missing: `make deps` unpacks it"
        config = work / "prometheus-server.yml"
        config.write_text("{}")
        prometheus = RunningServer(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                "--web.listen-address=127.0.0.1:9090",
                "--web.enable-remote-write-receiver",
            ],
            9090,
            "/-/ready",
        )
        prometheus.wait_ready()
        servers["prometheus"] = prometheus
    if "otlp" in needs:
        servers["otlp"] = OtlpReceiver()
    return servers


def run(spec: dict[str, Any]) -> dict[str, Any]:
    loopback_up()
    # A private /run: the blocks' /run/gateway-metrics and the like.
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    work = Path(tempfile.mkdtemp(prefix="docs-block-"))
    (work / "examples").symlink_to(Path(spec["repo"]) / "examples")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(spec["python"]).parent), env["PATH"]])
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONUNBUFFERED"] = "1"
    report: dict[str, Any] = {}
    servers = start_servers(spec["needs"], work, env)
    try:
        if spec["language"] == "python":
            (work / "block.py").write_text(spec["code"])
            argv = [spec["python"], "block.py"]
        else:
            argv = ["bash", "-e", "-o", "pipefail", "-c", spec["code"]]
        if spec["serves"] is None:
            done = subprocess.run(
                argv,
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=spec["timeout"],
                check=False,
            )
            report.update(returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)
        else:
            report.update(serve(argv, work, env, spec["serves"], spec["timeout"]))
        if "pushgateway" in servers:
            report["pushgateway"] = get("http://127.0.0.1:9091/metrics")[1]
        if "otlp" in servers:
            report["otlp"] = servers["otlp"].report()
        if "prometheus" in servers:
            report["prometheus"] = servers["prometheus"].get_json(
                "/api/v1/query", query="ractogateway_requests_total"
            )["data"]["result"]
    finally:
        for name, server in servers.items():
            if name == "providers":
                server.__exit__(None, None, None)
            elif name == "otlp":
                server.server.shutdown()
            else:
                server.stop()
    return report


def serve(argv: list[str], work: Path, env: dict[str, str], url: str, timeout: float) -> dict:
    """Starts a serving block, waits for ``url`` to answer 200, then stops it."""
    log = work / "serving.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            argv, cwd=work, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        status, body = 0, ""
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and process.poll() is None:
                with contextlib.suppress(OSError):
                    status, body = get(url)
                    if status == 200:
                        break
                time.sleep(0.2)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
    return {
        "returncode": 0 if status == 200 else 1,
        "status": status,
        "served": body,
        "stdout": log.read_text()[-4000:],
        "stderr": "",
    }


if __name__ == "__main__":
    print(json.dumps(run(json.load(sys.stdin))))
