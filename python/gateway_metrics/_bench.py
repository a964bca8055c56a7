"""Benchmark workloads shared by ``benches/`` and ``python -m gateway_metrics bench``.

Each workload is built for three contenders where it applies: this package,
the reference middleware (``ractogateway==0.2.1`` on ``prometheus_client``,
installed with the test extras) and a do-nothing Python function with the same
signature, the floor any Python API costs.
"""

from __future__ import annotations

import gc
import itertools
import subprocess
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from gateway_metrics._middleware import GatewayMetricsMiddleware

FOUR_MODELS = ["gpt-4o", "claude-sonnet-4-5-20250929", "gemini-2.0-flash", "gpt-4o-mini"]
SCRAPE_MODELS = 2_500
MEMORY_LABEL_SETS = 20_000


@dataclass(frozen=True)
class ToolCall:
    """A tool call as the kits pass it; only ``.name`` is read."""

    id: str
    name: str


ONE_TOOL_CALL = [ToolCall(id="call-1", name="search")]


def floor_record_request(
    *,
    provider: str,
    model: str,
    operation: str,
    status: str,
    latency_s: float,
    input_tokens: int = 0,
    output_tokens: int = 0,
    tool_calls: Any = None,
) -> None:
    """Does nothing, with ``record_request``'s keyword signature."""


def floor_one_argument(cache_type: str) -> None:
    """Does nothing, with ``record_cache_hit``'s signature."""


def reference_middleware_class() -> type | None:
    """The reference middleware class, or None when ``ractogateway`` is not installed."""
    try:
        from ractogateway.telemetry.metrics import GatewayMetricsMiddleware as Reference
    except ImportError:
        return None
    return Reference


def new_middleware(contender: str) -> Any:
    """A fresh middleware of ``"ours"`` or ``"reference"`` on its own registry."""
    if contender == "ours":
        return GatewayMetricsMiddleware(registry=CollectorRegistry())
    reference = reference_middleware_class()
    if reference is None:
        raise RuntimeError("the reference needs `pip install ractogateway==0.2.1`")
    return reference(registry=CollectorRegistry())


def fixed_request(record: Callable[..., Any]) -> Callable[[], Any]:
    """One call with fixed labels, tokens and one tool call."""

    def call() -> Any:
        return record(
            provider="openai",
            model="gpt-4o",
            operation="chat",
            status="ok",
            latency_s=0.42,
            input_tokens=1200,
            output_tokens=350,
            tool_calls=ONE_TOOL_CALL,
        )

    return call


def four_model_requests(record: Callable[..., Any]) -> Callable[[], Any]:
    """Four calls, one per model in turn, without tool calls (timed as one round)."""
    a, b, c, d = FOUR_MODELS

    def call() -> Any:
        record(
            provider="openai",
            model=a,
            operation="chat",
            status="ok",
            latency_s=0.42,
            input_tokens=1200,
            output_tokens=350,
        )
        record(
            provider="anthropic",
            model=b,
            operation="chat",
            status="ok",
            latency_s=1.3,
            input_tokens=900,
            output_tokens=410,
        )
        record(
            provider="google",
            model=c,
            operation="chat",
            status="ok",
            latency_s=0.21,
            input_tokens=300,
            output_tokens=80,
        )
        record(
            provider="openai",
            model=d,
            operation="chat",
            status="ok",
            latency_s=0.09,
            input_tokens=100,
            output_tokens=20,
        )

    return call


def new_label_set_requests(record: Callable[..., Any]) -> Callable[[], Any]:
    """Each call uses a model never seen before: the cost of creating a label set."""
    names = (f"model-{i}" for i in itertools.count())

    def call() -> Any:
        return record(
            provider="openai",
            model=next(names),
            operation="chat",
            status="ok",
            latency_s=0.42,
            input_tokens=1200,
            output_tokens=350,
        )

    return call


def populate_for_scrape(middleware: Any, models: int = SCRAPE_MODELS) -> None:
    """Two requests per model (ok with tokens and an error): about 20 sample lines each."""
    for i in range(models):
        model = f"model-{i:05d}"
        middleware.record_request(
            provider="openai",
            model=model,
            operation="chat",
            status="ok",
            latency_s=0.3,
            input_tokens=1000 + i,
            output_tokens=200,
        )
        middleware.record_request(
            provider="openai",
            model=model,
            operation="chat",
            status="error",
            latency_s=2.5,
        )


def resident_bytes() -> int:
    """This process's resident set size in bytes (Linux)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    import resource

    return pages * resource.getpagesize()


def measure_rss_per_label_set(contender: str, label_sets: int = MEMORY_LABEL_SETS) -> float:
    """RSS growth per new label set, in bytes, inside this process."""
    middleware = new_middleware(contender)
    record = new_label_set_requests(middleware.record_request)
    for _ in range(100):
        record()
    gc.collect()
    before = resident_bytes()
    for _ in range(label_sets):
        record()
    gc.collect()
    return (resident_bytes() - before) / label_sets


def rss_per_label_set(contender: str, label_sets: int = MEMORY_LABEL_SETS) -> float:
    """RSS growth per new label set measured in a fresh child process."""
    code = (
        "from gateway_metrics._bench import measure_rss_per_label_set as m; "
        f"print(m({contender!r}, {label_sets}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return float(result.stdout.strip())


def best_seconds_per_call(
    call: Callable[[], Any], *, calls_per_round: int = 1, budget_s: float = 0.4
) -> float:
    """The best of several timing rounds, in seconds per call (for the CLI table)."""
    timer = timeit.Timer(call)
    number, elapsed = timer.autorange()
    rounds = max(3, min(15, int(budget_s / max(elapsed, 1e-9))))
    best = min(timer.repeat(repeat=rounds, number=number))
    return best / number / calls_per_round
