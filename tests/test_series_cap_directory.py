"""``max_series`` in our multi-process mode caps the directory, not each process:
sixteen workers recording 5,000 distinct models each under ``max_series=1000`` scrape
as at most 1,000 label sets per family plus the overflow series, with exact totals,
also across waves of workers that start and die, and a compaction between them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import defaultdict

from gateway_metrics import GatewayMetricsMiddleware, multiprocess
from prometheus_client import CollectorRegistry
from support import parse

MAX_SERIES = 1000
MODELS_PER_WORKER = 5000
WORKERS_PER_WAVE = 8

WORKER = """
    import sys
    from prometheus_client import CollectorRegistry
    from gateway_metrics import GatewayMetricsMiddleware
    worker = int(sys.argv[1])
    metrics = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), multiprocess_dir=sys.argv[2], max_series={cap}
    )
    for index in range({models}):
        metrics.record_request(provider="openai", model=f"m-{{worker}}-{{index}}",
                               operation="chat", status="ok", latency_s=0.25,
                               input_tokens=2, output_tokens=1)
    metrics.record_batch(provider="openai", model=[f"b-{{worker}}-{{i}}" for i in range(100)],
                         operation="chat", status="ok", latency_s=0.5)
"""


def run_wave(directory: str, first: int) -> None:
    code = textwrap.dedent(WORKER.format(cap=MAX_SERIES, models=MODELS_PER_WORKER))
    workers = [
        subprocess.Popen([sys.executable, "-c", code, str(worker), directory])
        for worker in range(first, first + WORKERS_PER_WAVE)
    ]
    for worker in workers:
        assert worker.wait(timeout=600) == 0


def label_sets(text: str) -> tuple[dict[str, set], dict[str, float]]:
    """Each family's label sets but the overflow one, and each sample name's total."""
    sets: dict[str, set] = defaultdict(set)
    totals: dict[str, float] = defaultdict(float)
    for name, _kind, _help, samples in parse(text):
        for sample, labels, value in samples:
            if sample.endswith("_created"):
                continue
            totals[sample] += value
            plain = {key: value for key, value in labels.items() if key != "le"}
            if name != "ractogateway_overflow_requests" and "__overflow__" not in plain.values():
                sets[name].add(frozenset(plain.items()))
    return sets, totals


def check(directory: str, workers: int) -> None:
    reader = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), multiprocess_dir=directory, max_series=MAX_SERIES
    )
    sets, totals = label_sets(reader.generate_latest())
    for family, found in sets.items():
        assert len(found) <= MAX_SERIES, (family, len(found))
    requests = workers * (MODELS_PER_WORKER + 100)
    assert len(sets["ractogateway_requests"]) == MAX_SERIES
    assert totals["ractogateway_requests_total"] == requests
    assert totals["ractogateway_request_duration_seconds_count"] == requests
    assert totals["ractogateway_tokens_total"] == workers * MODELS_PER_WORKER * 3
    assert totals["ractogateway_overflow_requests_total"] > 0


def test_sixteen_workers_share_one_cap_across_waves_and_a_compaction(tmp_path):
    directory = str(tmp_path)
    multiprocess.cleanup(directory)
    run_wave(directory, 0)
    check(directory, WORKERS_PER_WAVE)
    assert multiprocess.compact(directory).folded == WORKERS_PER_WAVE
    run_wave(directory, WORKERS_PER_WAVE)
    check(directory, 2 * WORKERS_PER_WAVE)
    # A new run starts from an empty cap.
    assert multiprocess.cleanup(directory) >= 1
    run_wave(directory, 100)
    check(directory, WORKERS_PER_WAVE)
