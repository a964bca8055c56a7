"""Test helpers: tool-call stand-ins, parsed expositions, promtool."""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class ToolCall:
    """Stands in for ractogateway's ToolCallResult: only ``.name`` is read."""

    name: Any


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
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
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
