"""What ``instrument()`` adds to a call of the real ``openai`` client against the local
provider server: per non-streamed call, and per chunk of a 1,000-chunk stream.

Two figures each. End to end: both clients talk to the same server, the bare
and the instrumented call timed in alternation, and the overhead is the median
of the pairs' differences (the machine's drift meets both alike; a local HTTP
round trip varies by tens of microseconds, so this one is coarse). Our part:
the work ``instrument()`` adds, timed on the same SDK objects the server
returned (a response, a stream's chunks), against the bare loop over them.
CI runs this with ``--benchmark-disable``: each call once, checked to be
recorded once.
"""

from __future__ import annotations

import statistics
import sys
import time
import timeit
from pathlib import Path

import pytest
from gateway_metrics import GatewayMetricsMiddleware
from gateway_metrics._instrument import _SDKS, _observed, _settle, _start, _Watch
from prometheus_client import CollectorRegistry
from timings import FIGURES

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from providers import LONG_STREAM_WORDS, ProviderServer

openai = pytest.importorskip("openai", reason="the test dependency group installs the SDKs")

MESSAGES = [{"role": "user", "content": "Hi"}]
#: Bounds of the alternation: at most this many pairs, and this many seconds.
MAX_PAIRS = 400
MAX_SECONDS = 20.0


@pytest.fixture(scope="module")
def server():
    with ProviderServer() as running:
        yield running


def client(server: ProviderServer):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="test", max_retries=0)


def paired_difference(bare, instrumented, pairs: int) -> tuple[float, float]:
    """The median bare time and the median of (instrumented - bare), over at
    most ``pairs`` pairs timed in alternation."""
    bare_times, differences = [], []
    deadline = time.monotonic() + MAX_SECONDS
    for _ in range(min(pairs, MAX_PAIRS)):
        started = time.perf_counter()
        bare()
        middle = time.perf_counter()
        instrumented()
        ended = time.perf_counter()
        bare_times.append(middle - started)
        differences.append((ended - middle) - (middle - started))
        if time.monotonic() > deadline:
            break
    return statistics.median(bare_times), statistics.median(differences)


def best_per_call(call, number: int, repeat: int = 7) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number


def requests_of(metrics: GatewayMetricsMiddleware, model: str, operation: str) -> float | None:
    return metrics.registry.get_sample_value(
        "ractogateway_requests_total",
        {"provider": "openai", "model": model, "operation": operation, "status": "ok"},
    )


def test_instrument_overhead_per_call(benchmark, server):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    bare, instrumented = client(server), metrics.instrument(client(server))

    def call(sdk) -> object:
        return sdk.chat.completions.create(model="gpt-bench", messages=MESSAGES)

    benchmark.group = "instrument() per call"
    response = benchmark(call, instrumented)
    if not benchmark.disabled:
        median_bare, difference = paired_difference(
            lambda: call(bare), lambda: call(instrumented), MAX_PAIRS
        )
        FIGURES[("instrument(): bare SDK call to the local server, median", "us")] = (
            median_bare * 1e6
        )
        FIGURES[("instrument(): overhead per non-streamed call, end to end", "us")] = (
            difference * 1e6
        )
        create = _SDKS["openai"][1][0]

        def ours() -> None:
            tracked = _start(metrics, "openai", create, False, "gpt-bench")
            _settle(tracked, response, False, create, None, False)

        FIGURES[("instrument(): overhead per non-streamed call, our part", "us")] = (
            best_per_call(ours, 2000) * 1e6
        )
    assert requests_of(metrics, "gpt-bench", "chat") >= 1
    assert requests_of(metrics, "gpt-bench", "chat") >= 1


def test_instrument_overhead_per_chunk(benchmark, server):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    bare, instrumented = client(server), metrics.instrument(client(server))

    def stream(sdk) -> int:
        chunks = sdk.chat.completions.create(
            model="gpt-bench-long",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        return sum(1 for _ in chunks)

    benchmark.group = "instrument() per streamed chunk"
    chunks = benchmark(stream, instrumented)
    assert chunks >= len(LONG_STREAM_WORDS)
    if not benchmark.disabled:
        _, difference = paired_difference(lambda: stream(bare), lambda: stream(instrumented), 60)
        FIGURES[("instrument(): overhead per streamed chunk, end to end", "us")] = (
            difference / chunks * 1e6
        )
        items = list(
            bare.chat.completions.create(
                model="gpt-bench-long",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        create = _SDKS["openai"][1][0]

        def loop() -> None:
            for _ in iter(items):
                pass

        def ours() -> None:
            tracked = _start(metrics, "openai", create, True, "gpt-bench-long")
            for _ in _observed(iter(items), _Watch(tracked, create.reader)):
                pass

        FIGURES[("instrument(): overhead per streamed chunk, our part", "us")] = (
            (best_per_call(ours, 20) - best_per_call(loop, 20)) / len(items) * 1e6
        )
    assert requests_of(metrics, "gpt-bench-long", "stream") >= 1
