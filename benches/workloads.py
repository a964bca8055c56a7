"""Benchmark workloads shared by the pytest-benchmark suite and ``make bench-table``.

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
from pathlib import Path
from typing import Any

from gateway_metrics import GatewayMetricsMiddleware, ToolCall
from prometheus_client import CollectorRegistry

FOUR_MODELS = ["gpt-4o", "claude-sonnet-4-5-20250929", "gemini-2.0-flash", "gpt-4o-mini"]
SCRAPE_MODELS = 2_500
#: Models of the load benchmark's largest case (`benches/load.py --label-sets 25000`).
LOAD_MODELS = 25_000
MEMORY_LABEL_SETS = 20_000


ONE_TOOL_CALL = [ToolCall("search", id="call-1")]


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


#: Our middleware with native histograms on, as a contender's name.
NATIVE = "ours, native histograms"


def new_middleware(contender: str) -> Any:
    """A fresh middleware of ``"ours"``, ``"ours, native histograms"`` or
    ``"reference"`` on its own registry."""
    if contender == "ours":
        return GatewayMetricsMiddleware(registry=CollectorRegistry())
    if contender == NATIVE:
        return GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms=True)
    reference = reference_middleware_class()
    if reference is None:
        raise RuntimeError("the reference needs `pip install ractogateway==0.2.1`")
    return reference(registry=CollectorRegistry())


#: Calls per timed round of the call workloads, so that the harness's own
#: overhead per round is spread over many calls.
CALLS_PER_ROUND = 48
_ROUND = range(CALLS_PER_ROUND)
_QUARTER_ROUND = range(CALLS_PER_ROUND // 4)


def fixed_request(record: Callable[..., Any]) -> Callable[[], None]:
    """A round of calls with fixed labels, tokens and one tool call."""

    def calls() -> None:
        for _ in _ROUND:
            record(
                provider="openai",
                model="gpt-4o",
                operation="chat",
                status="ok",
                latency_s=0.42,
                input_tokens=1200,
                output_tokens=350,
                tool_calls=ONE_TOOL_CALL,
            )

    return calls


#: The extra-label values of the every-field workload.
TENANT = {"tenant": "acme"}


def every_field_request(record: Callable[..., Any]) -> Callable[[], None]:
    """A round of calls like ``fixed_request`` with every newer field given too."""

    def calls() -> None:
        for _ in _ROUND:
            record(
                provider="openai",
                model="gpt-4o",
                operation="chat",
                status="ok",
                latency_s=0.42,
                input_tokens=1200,
                output_tokens=350,
                tool_calls=ONE_TOOL_CALL,
                time_to_first_token_s=0.08,
                cache_read_tokens=1000,
                cache_write_tokens=100,
                reasoning_tokens=120,
                labels=TENANT,
            )

    return calls


def four_model_requests(record: Callable[..., Any]) -> Callable[[], None]:
    """A round of calls cycling through four models, without tool calls."""
    a, b, c, d = FOUR_MODELS

    def calls() -> None:
        for _ in _QUARTER_ROUND:
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

    return calls


def cache_hits(hit: Callable[[str], Any]) -> Callable[[], None]:
    """A round of ``record_cache_hit("exact")`` calls."""

    def calls() -> None:
        for _ in _ROUND:
            hit("exact")

    return calls


def new_label_set_requests(record: Callable[..., Any]) -> Callable[[], None]:
    """A round of calls each with a model never seen before: the cost of a new label set."""
    names = (f"model-{i}" for i in itertools.count())

    def calls() -> None:
        for name in itertools.islice(names, CALLS_PER_ROUND):
            record(
                provider="openai",
                model=name,
                operation="chat",
                status="ok",
                latency_s=0.42,
                input_tokens=1200,
                output_tokens=350,
            )

    return calls


BATCH_ROWS = 100_000


def batch_columns(rows: int = BATCH_ROWS, *, model_column: bool) -> dict[str, Any]:
    """Columns of a batch-inference job: numpy latencies and token counts.

    ``model_column`` gives each row one of four models in turn; otherwise the
    model is one scalar for all rows.
    """
    import numpy as np

    generator = np.random.default_rng(7)
    model: Any = "gpt-4o"
    if model_column:
        model = [FOUR_MODELS[row % len(FOUR_MODELS)] for row in range(rows)]
    return {
        "provider": "openai",
        "model": model,
        "operation": "chat",
        "status": "ok",
        "latency_s": generator.lognormal(0.0, 0.6, rows),
        "input_tokens": generator.integers(50, 4000, rows),
        "output_tokens": generator.integers(1, 800, rows),
    }


def batch_frame(kind: str, rows: int = BATCH_ROWS) -> Any:
    """The columns of ``batch_columns(model_column=True)`` as a table of ``kind``:
    ``"pyarrow dictionary"`` (the model column dictionary-encoded), ``"pyarrow
    string"`` (a plain ``string`` column) or ``"pandas categorical"`` (a
    DataFrame with a categorical model column). Provider, operation and
    status are passed as keywords beside it."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    columns = batch_columns(rows, model_column=False)
    codes = np.arange(rows, dtype=np.int32) % len(FOUR_MODELS)
    numbers = {name: columns[name] for name in ("latency_s", "input_tokens", "output_tokens")}
    if kind == "pandas categorical":
        model = pd.Categorical.from_codes(codes, FOUR_MODELS)
        return pd.DataFrame({"model": model, **numbers})
    if kind == "pyarrow dictionary":
        model = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(FOUR_MODELS))
    else:
        model = pa.array(np.array(FOUR_MODELS, dtype=object)[codes], pa.string())
    return pa.table({"model": model, **{name: pa.array(v) for name, v in numbers.items()}})


def opentelemetry_sdk_for_scrape(models: int = SCRAPE_MODELS) -> Callable[[], bytes]:
    """The requests of ``populate_for_scrape`` recorded through the OpenTelemetry
    SDK (the same names, attributes and buckets), and what one OTLP push of
    them costs there: collecting, encoding with the SDK's OTLP encoder, gzip."""
    import gzip

    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    duration = "ractogateway_request_duration_seconds"
    bounds = GatewayMetricsMiddleware(registry=CollectorRegistry()).latency_buckets
    reader = InMemoryMetricReader()
    # The SDK folds label sets past 2,000 per instrument into one overflow
    # point unless told otherwise: every series is kept, as ours are.
    every = 10 * models
    provider = MeterProvider(
        metric_readers=[reader],
        views=[
            View(
                instrument_name=duration,
                aggregation=ExplicitBucketHistogramAggregation(bounds),
                aggregation_cardinality_limit=every,
            ),
            View(instrument_name="ractogateway_requests", aggregation_cardinality_limit=every),
            View(instrument_name="ractogateway_tokens", aggregation_cardinality_limit=every),
        ],
    )
    meter = provider.get_meter("bench")
    requests = meter.create_counter("ractogateway_requests")
    histogram = meter.create_histogram(duration, unit="s")
    tokens = meter.create_counter("ractogateway_tokens")
    for i in range(models):
        model = f"model-{i:05d}"
        series = {"provider": "openai", "model": model, "operation": "chat"}
        for status, latency in (("ok", 0.3), ("error", 2.5)):
            requests.add(1, {**series, "status": status})
            histogram.record(latency, series)
        for token_type, count in (("input", 1000 + i), ("output", 200)):
            tokens.add(count, {"provider": "openai", "model": model, "token_type": token_type})

    def push_body() -> bytes:
        encoded = encode_metrics(reader.get_metrics_data()).SerializeToString()
        return gzip.compress(encoded, compresslevel=6, mtime=0)

    return push_body


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


def formatting_only(middleware: GatewayMetricsMiddleware) -> Callable[[], bytes]:
    """``prometheus_client.generate_latest`` over samples collected beforehand.

    This is the part of a collector-path scrape that no collector can speed up:
    ``prometheus_client`` formats every sample in Python.
    """
    from prometheus_client import generate_latest

    families = list(middleware._collector.collect())

    class Collected:
        def collect(self) -> list[Any]:
            return families

    return lambda: generate_latest(Collected())


SCRAPE_PROCESSES = 64
PROCESS_MODELS = 50

_WRITE_PROCESS_FILES = """
import os, sys
kind, directory, processes, models = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
prefix = "PROMETHEUS" if kind == "prometheus_client" else "GATEWAY_METRICS"
os.environ[prefix + "_MULTIPROC_DIR"] = directory
from prometheus_client import CollectorRegistry
if kind == "prometheus_client":
    from ractogateway.telemetry.metrics import GatewayMetricsMiddleware
else:
    from gateway_metrics import GatewayMetricsMiddleware
children = []
for _ in range(processes):
    pid = os.fork()
    if pid == 0:
        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
        for index in range(models):
            metrics.record_request(provider="openai", model=f"model-{index}", operation="chat",
                                   status="ok", latency_s=0.3, input_tokens=100, output_tokens=20)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""


def write_process_files(
    kind: str, directory: str, processes: int = SCRAPE_PROCESSES, models: int = PROCESS_MODELS
) -> None:
    """Has ``processes`` forked processes record the same series into ``directory``.

    ``kind`` is ``"ours"`` (our multi-process files) or ``"prometheus_client"``
    (the reference middleware in ``PROMETHEUS_MULTIPROC_DIR`` mode).
    """
    subprocess.run(
        [sys.executable, "-c", _WRITE_PROCESS_FILES, kind, directory, str(processes), str(models)],
        check=True,
        timeout=300,
    )


def prometheus_client_multiprocess_scrape(directory: str) -> Callable[[], bytes]:
    """A scrape through ``prometheus_client``'s multiprocess collector."""
    from prometheus_client import generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return lambda: generate_latest(registry)


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
    record()
    gc.collect()
    before = resident_bytes()
    rounds = max(1, label_sets // CALLS_PER_ROUND)
    for _ in range(rounds):
        record()
    gc.collect()
    return (resident_bytes() - before) / (rounds * CALLS_PER_ROUND)


def rss_per_label_set(contender: str, label_sets: int = MEMORY_LABEL_SETS) -> float:
    """RSS growth per new label set measured in a fresh child process."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from workloads import measure_rss_per_label_set as m; "
        f"print(m({contender!r}, {label_sets}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return float(result.stdout.strip())


def median_seconds_per_call(
    workload: Callable[[], Any], *, calls_per_round: int = CALLS_PER_ROUND, budget_s: float = 0.5
) -> float:
    """The median of repeated timings of ``workload``, in seconds per call."""
    timer = timeit.Timer(workload)
    number, elapsed = timer.autorange()
    repeats = max(5, min(21, int(budget_s / max(elapsed, 1e-9))))
    timings = sorted(timer.repeat(repeat=repeats, number=number))
    return timings[len(timings) // 2] / number / calls_per_round


def interleaved_ratio(
    call: Callable[[], Any],
    floor: Callable[[], Any],
    rounds: int = 15,
    *,
    units_per_call: int = 1,
    units_per_floor: int = 1,
) -> float:
    """``call``'s time over ``floor``'s, timed in alternation and best of ``rounds`` each.

    On a shared machine the speed drifts between benchmarks; alternating the two
    workloads makes them meet the same conditions, so their ratio holds. The
    ratio is per unit (a batch of ``units_per_call`` rows against
    ``units_per_floor`` floor calls, say), each round timing as many units of both.
    """
    call_number = max(1, timeit.Timer(call).autorange()[0] // 4)
    floor_number = max(1, round(call_number * units_per_call / units_per_floor))
    best_call = best_floor = float("inf")
    for _ in range(rounds):
        best_call = min(best_call, timeit.timeit(call, number=call_number))
        best_floor = min(best_floor, timeit.timeit(floor, number=floor_number))
    per_call_unit = best_call / call_number / units_per_call
    per_floor_unit = best_floor / floor_number / units_per_floor
    return per_call_unit / per_floor_unit


@dataclass(frozen=True)
class Comparison:
    """One row of the comparison table; times in seconds per call, memory in bytes.

    ``floor_ratio`` is ours over the floor timed in alternation (see
    ``interleaved_ratio``), steadier than the ratio of the two medians.
    """

    group: str
    ours: float
    reference: float | None
    floor: float | None
    unit: str = "s"
    floor_ratio: float | None = None


def compare(*, include_reference: bool = True) -> list[Comparison]:
    """Measures every group for ``make bench-table`` (well under a minute)."""
    reference_available = include_reference and reference_middleware_class() is not None
    contenders = ["ours", "reference"] if reference_available else ["ours"]
    rows = []
    call_groups: list[tuple[str, Callable[[Callable[..., Any]], Callable[[], None]], bool]] = [
        ("record_request, fixed labels + 1 tool call", fixed_request, False),
        ("record_request, 4 models in turn", four_model_requests, False),
        ("record_cache_hit", cache_hits, True),
    ]
    for group, workload, one_argument in call_groups:
        measured: dict[str, float] = {}
        for contender in contenders:
            middleware = new_middleware(contender)
            target = middleware.record_cache_hit if one_argument else middleware.record_request
            measured[contender] = median_seconds_per_call(workload(target))
        floor = workload(floor_one_argument if one_argument else floor_record_request)
        ours = new_middleware("ours")
        ours_workload = workload(ours.record_cache_hit if one_argument else ours.record_request)
        rows.append(
            Comparison(
                group,
                measured["ours"],
                measured.get("reference"),
                median_seconds_per_call(floor),
                floor_ratio=interleaved_ratio(ours_workload, floor),
            )
        )
    new_sets = {
        contender: median_seconds_per_call(
            new_label_set_requests(new_middleware(contender).record_request), budget_s=0.2
        )
        for contender in contenders
    }
    rows.append(
        Comparison(
            "first use of a new label set", new_sets["ours"], new_sets.get("reference"), None
        )
    )
    populated = {}
    for contender in contenders:
        populated[contender] = new_middleware(contender)
        populate_for_scrape(populated[contender])
    scrape = {
        contender: median_seconds_per_call(
            middleware.generate_latest, calls_per_round=1, budget_s=1.0
        )
        for contender, middleware in populated.items()
    }
    rows.append(
        Comparison(
            f"generate_latest(), {SCRAPE_MODELS:,} models",
            scrape["ours"],
            scrape.get("reference"),
            None,
        )
    )
    from prometheus_client import generate_latest

    registry = populated["ours"]._registry
    collector = median_seconds_per_call(
        lambda: generate_latest(registry), calls_per_round=1, budget_s=1.0
    )
    rows.append(
        Comparison(
            "prometheus_client.generate_latest via the collector",
            collector,
            scrape.get("reference"),
            None,
        )
    )
    formatting = median_seconds_per_call(
        formatting_only(populated["ours"]), calls_per_round=1, budget_s=1.0
    )
    rows.append(
        Comparison("  of which prometheus_client's formatting alone", formatting, None, None)
    )
    memory = {contender: rss_per_label_set(contender) for contender in contenders}
    rows.append(
        Comparison(
            "resident memory per label set", memory["ours"], memory.get("reference"), None, unit="B"
        )
    )
    return rows
