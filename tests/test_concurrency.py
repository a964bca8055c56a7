"""Many threads at once: no lost update, one series per label set, consistent scrapes."""

from __future__ import annotations

import threading
import time

from gateway_metrics import ToolCall
from support import parse

THREADS = 8
CALLS_PER_THREAD = 5_000


def test_no_increment_is_lost_and_first_use_races_make_one_series(metrics, no_created):
    start = threading.Barrier(THREADS)

    def worker(index: int) -> None:
        start.wait()
        for i in range(CALLS_PER_THREAD):
            metrics.record_request(
                provider="openai",
                model=f"model-{i % 50}",
                operation="chat",
                status="ok",
                latency_s=0.5,
                input_tokens=3,
                output_tokens=1,
                tool_calls=[ToolCall("search")],
            )
            metrics.record_cache_hit("exact")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    families = {name: samples for name, _, _, samples in parse(metrics.generate_latest())}
    requests = families["ractogateway_requests"]
    assert len(requests) == 50
    assert {s[2] for s in requests} == {THREADS * CALLS_PER_THREAD / 50}
    total = THREADS * CALLS_PER_THREAD
    assert families["ractogateway_cache_hits"] == [
        ("ractogateway_cache_hits_total", {"cache_type": "exact"}, float(total))
    ]
    assert families["ractogateway_tool_calls"][0][2] == float(total)
    sums = [
        s[2] for s in families["ractogateway_request_duration_seconds"] if s[0].endswith("_sum")
    ]
    assert sum(sums) == 0.5 * total
    tokens = {s[1]["token_type"]: 0.0 for s in families["ractogateway_tokens"]}
    for s in families["ractogateway_tokens"]:
        tokens[s[1]["token_type"]] += s[2]
    assert tokens == {"input": 3.0 * total, "output": 1.0 * total}


def test_scrapes_during_writes_are_consistent(metrics, no_created):
    stop = threading.Event()
    deadline = time.monotonic() + 30

    def writer(offset: int) -> None:
        i = 0
        while not stop.is_set() and i < 400_000 and time.monotonic() < deadline:
            metrics.record_request(
                provider="p",
                model=f"m{(i + offset) % 7}",
                operation="chat",
                status="ok",
                latency_s=(i % 13) * 0.9,
            )
            i += 1

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for thread in writers:
        thread.start()
    try:
        for _ in range(40):
            families = {n: s for n, _, _, s in parse(metrics.generate_latest())}
            histogram = families["ractogateway_request_duration_seconds"]
            series: dict[tuple, list[tuple[str, float]]] = {}
            for name, labels, value in histogram:
                key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                series.setdefault(key, []).append((name, labels.get("le"), value))
            for samples in series.values():
                buckets = [v for n, _, v in samples if n.endswith("_bucket")]
                count = next(v for n, _, v in samples if n.endswith("_count"))
                assert buckets == sorted(buckets)
                assert count == buckets[-1]
    finally:
        stop.set()
        for thread in writers:
            thread.join(timeout=60)
