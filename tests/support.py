"""Test helpers: a nameless tool call, parsed expositions, promtool, servers on loopback."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families


class Nameless:
    """A tool-call object without a ``name`` attribute."""


def parse(text: str) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]:
    """Families as ``(name, type, help, [(sample, labels, value), ...])``, in order."""
    return [
        (
            family.name,
            family.type,
            family.documentation,
            [(s.name, dict(s.labels), s.value) for s in family.samples],
        )
        for family in text_string_to_metric_families(text)
    ]


def sample_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a text exposition, or None when it is absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def assert_same_families(ours: str, reference: str, float_tolerance: float = 0.0) -> None:
    """Parsed expositions are equal family by family and sample by sample.

    Token totals are compared with a relative tolerance: the reference adds them
    as floats, we add integers (exact) and convert once, which can differ in the
    last bit once a total passes 2**53. ``float_tolerance`` allows the same for
    float sums (latency sums and cost), whose additions a batch groups differently.
    """
    ours_families, reference_families = parse(ours), parse(reference)
    assert [f[:3] for f in ours_families] == [f[:3] for f in reference_families]
    for mine, theirs in zip(ours_families, reference_families):
        assert [s[:2] for s in mine[3]] == [s[:2] for s in theirs[3]], mine[0]
        for (name, labels, value), (_, _, expected) in zip(mine[3], theirs[3]):
            if name == "ractogateway_tokens_total":
                assert math.isclose(value, expected, rel_tol=1e-12), (name, labels)
            elif float_tolerance and name.endswith(("_sum", "cost_usd_total")):
                assert math.isclose(value, expected, rel_tol=float_tolerance), (name, labels)
            else:
                assert value == expected, (name, labels, value, expected)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def promtool_check(text: str) -> str:
    """Runs ``promtool check metrics`` and returns what it reported (empty when clean)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make deps` unpacks it into target/"
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    report = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, report
    return report.strip()


def prometheus_multiprocess_run(code: str, directory: Path) -> str:
    """Runs ``code`` (dedented) in a child process in prometheus_client's
    multi-process mode on ``directory``; returns what ``MultiProcessCollector``
    then shows, as text."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry).decode()


def samples_by_series(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample but ``_created`` by name and label set: equal however series are ordered."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def assert_same_totals(ours: str, expected: str, float_tolerance: float) -> None:
    """Same series with the same values in any order: counts and buckets
    exactly, float sums (``_sum``, cost) within ``float_tolerance``, relative."""
    mine, theirs = samples_by_series(ours), samples_by_series(expected)
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():
        if key[0].endswith(("_sum", "cost_usd_total")):
            assert math.isclose(mine[key], value, rel_tol=float_tolerance), key
        else:
            assert mine[key] == value, (key, mine[key], value)


class RunningServer:
    """A server process on 127.0.0.1, stopped (and its output kept) on exit.

    ``ready`` is a URL path that answers 200 once the server serves.
    """

    def __init__(self, argv: list[str], port: int, ready: str) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self._ready = ready
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                with urllib.request.urlopen(self.base + self._ready, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.base} not ready in {timeout} s:\n{self.output()}")

    def get_json(self, path: str, **query: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self._log.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def prometheus_command(
    data: Path, *flags: str, config: dict | None = None
) -> tuple[list[str], int]:
    """The command line of Debian's Prometheus on a free loopback port, storing in
    ``data``, and that port."""
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: `make deps` unpacks it into target/"
    data.mkdir(parents=True, exist_ok=True)
    config_file = data / "prometheus.yml"
    # JSON is YAML: no YAML writer needed.
    config_file.write_text(json.dumps(config or {}))
    port = free_port()
    argv = [
        prometheus,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        *flags,
    ]
    return argv, port


def prometheus_server(data: Path, *flags: str, config: dict | None = None) -> RunningServer:
    """Debian's Prometheus started as ``prometheus_command`` says (see ``wait_ready``)."""
    argv, port = prometheus_command(data, *flags, config=config)
    return RunningServer(argv, port, "/-/ready")
