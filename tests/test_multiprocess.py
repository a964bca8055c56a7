"""Multi-process mode: every process's file summed, across fork, spawn, SIGKILL and compaction."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import mp_workers
import pytest
from gateway_metrics import GatewayMetricsMiddleware, ToolCall, multiprocess
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from support import sample_value

REQUEST = {"provider": "openai", "operation": "chat", "status": "ok"}


def requests_total(metrics: GatewayMetricsMiddleware) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics.generate_latest())
        for sample in family.samples
        if sample.name == "ractogateway_requests_total"
    )


def files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.gwm"))


def mp_middleware(directory: Path) -> GatewayMetricsMiddleware:
    return GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=directory)


def record(metrics: GatewayMetricsMiddleware, count: int, model: str = "gpt-4o") -> None:
    for _ in range(count):
        metrics.record_request(**REQUEST, model=model, latency_s=0.5, input_tokens=10)


def test_the_sum_over_processes_equals_one_process(tmp_path, no_created):
    single = GatewayMetricsMiddleware(registry=CollectorRegistry())
    first, second = mp_middleware(tmp_path), mp_middleware(tmp_path)
    for target in (single, first):
        record(target, 3, "gpt-4o")
        target.record_request(**REQUEST, model="mystery", latency_s=61, tool_calls=[ToolCall("a")])
    for target in (single, second):
        record(target, 2, "gemini-2.0-flash")
        target.record_cache_miss("semantic")
    for target in (single, second):
        target.record_request(**REQUEST, model="gpt-4o", latency_s=0.1, output_tokens=7)
    expected = sorted(single.generate_latest().splitlines())
    assert sorted(first.generate_latest().splitlines()) == expected
    assert sorted(second.generate_latest().splitlines()) == expected
    assert len(files(tmp_path)) == 2


def test_the_collector_and_batches_see_the_sum(tmp_path, no_created):
    registry = CollectorRegistry()
    mine = GatewayMetricsMiddleware(registry=registry, multiprocess_dir=tmp_path)
    other = mp_middleware(tmp_path)
    mine.record_batch(**REQUEST, model="gpt-4o", latency_s=[0.1, 0.2, 0.3])
    other.record_batch(**REQUEST, model="gpt-4o", latency_s=[0.4])
    labels = {**REQUEST, "model": "gpt-4o"}
    assert registry.get_sample_value("ractogateway_requests_total", labels) == 4.0


def test_the_environment_variable_selects_the_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_METRICS_MULTIPROC_DIR", str(tmp_path))
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    assert metrics.multiprocess_dir == str(tmp_path)
    record(metrics, 1)
    assert len(files(tmp_path)) == 1


def test_forked_children_get_files_of_their_own(tmp_path):
    parent = mp_middleware(tmp_path)
    record(parent, 5)
    context = multiprocessing.get_context("fork")

    def child() -> None:
        record(parent, 100)

    children = [context.Process(target=child) for _ in range(3)]
    for process in children:
        process.start()
    for process in children:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert requests_total(parent) == 305.0
    assert len(files(tmp_path)) == 4
    record(parent, 1)
    assert requests_total(parent) == 306.0


def test_spawned_workers_are_summed(tmp_path):
    parent = mp_middleware(tmp_path)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=mp_workers.record_requests, args=(str(tmp_path), 50, model))
        for model in ("gpt-4o", "gpt-4o", "mystery")
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
        assert process.exitcode == 0
    text = parent.generate_latest()
    assert sample_value(text, "ractogateway_requests_total", **REQUEST, model="gpt-4o") == 100.0
    assert sample_value(text, "ractogateway_requests_total", **REQUEST, model="mystery") == 50.0
    assert sample_value(text, "ractogateway_cache_hits_total", cache_type="exact") == 3.0


def test_a_worker_killed_with_sigkill_loses_nothing(tmp_path):
    parent = mp_middleware(tmp_path)
    context = multiprocessing.get_context("fork")
    recorded = context.Event()

    def child() -> None:
        record(parent, 1234)
        recorded.set()
        time.sleep(60)

    process = context.Process(target=child)
    process.start()
    assert recorded.wait(timeout=60)
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=30)
    assert process.exitcode == -signal.SIGKILL
    assert requests_total(parent) == 1234.0


def test_a_reused_pid_neither_merges_nor_overwrites(tmp_path):
    first = mp_middleware(tmp_path)
    record(first, 7)
    first_file = first._multiprocess_file()
    del first
    second = mp_middleware(tmp_path)
    record(second, 3)
    assert second._multiprocess_file() != first_file
    assert str(os.getpid()) in Path(first_file).name
    assert requests_total(second) == 10.0


def test_a_torn_file_is_skipped_with_a_warning(tmp_path):
    metrics = mp_middleware(tmp_path)
    record(metrics, 2)
    good = Path(metrics._multiprocess_file()).read_bytes()
    (tmp_path / "gwm-99999-torn.gwm").write_bytes(good[:100])
    with pytest.warns(RuntimeWarning, match="gwm-99999-torn.gwm"):
        assert requests_total(metrics) == 2.0


def test_a_file_of_another_schema_or_version_is_skipped_with_a_warning(tmp_path):
    metrics = mp_middleware(tmp_path)
    record(metrics, 2)
    good = Path(metrics._multiprocess_file()).read_bytes()
    assert good.count(b"tool_name") == 1  # the tool-calls family's declaration
    (tmp_path / "gwm-99998-other.gwm").write_bytes(good.replace(b"tool_name", b"tool_id__"))
    (tmp_path / "gwm-99999-older.gwm").write_bytes(b"GWMFILE2" + good[8:])
    with pytest.warns(RuntimeWarning) as caught:
        assert requests_total(metrics) == 2.0
    messages = sorted(str(warning.message) for warning in caught)
    assert (
        "gwm-99998-other.gwm: written with another schema of ractogateway_tool_calls"
        in (messages[0])
    )
    assert "gwm-99999-older.gwm: not a metrics file of this version" in messages[1]


def test_cleanup_refuses_while_another_live_process_holds_a_file_unless_forced(tmp_path):
    gone = mp_middleware(tmp_path)
    record(gone, 4)
    del gone
    gc.collect()  # the middleware, its registry and collector form a cycle
    ready_read, ready_write = os.pipe()
    release_read, release_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_read)
            os.close(release_write)
            live = mp_middleware(tmp_path)
            record(live, 1)
            os.write(ready_write, b"x")
            os.read(release_read, 1)  # until the parent is done, or gone
        finally:
            os._exit(0)
    os.close(ready_write)
    os.close(release_read)
    try:
        assert os.read(ready_read, 1) == b"x"
        with pytest.raises(RuntimeError, match=f"written by process {pid}\\) is held by a live"):
            multiprocess.cleanup(tmp_path)
        assert len(files(tmp_path)) == 2
        assert multiprocess.cleanup(tmp_path, force=True) == 1
        assert [path.name.split("-")[1] for path in files(tmp_path)] == [str(pid)]
    finally:
        os.close(release_write)
        os.waitpid(pid, 0)
        os.close(ready_read)


def test_cleanup_keeps_the_calling_processs_own_file_and_removes_the_rest(tmp_path):
    """gunicorn --preload: the master imports the app (making its middleware, and
    its file) before on_starting cleans the directory up."""
    gone = mp_middleware(tmp_path)
    record(gone, 4)
    del gone
    gc.collect()
    own = mp_middleware(tmp_path)
    record(own, 1)
    assert len(files(tmp_path)) == 2
    assert multiprocess.cleanup(tmp_path) == 1
    assert files(tmp_path) == [Path(own._multiprocess_file())]
    assert requests_total(own) == 1.0
    record(own, 2)
    assert requests_total(own) == 3.0


def test_cleanup_removes_every_file_once_their_processes_are_gone(tmp_path):
    for count in (4, 6):
        mp_workers_gone = mp_middleware(tmp_path)
        record(mp_workers_gone, count)
        del mp_workers_gone
    gc.collect()
    assert multiprocess.cleanup(tmp_path) == 2
    assert files(tmp_path) == []


def test_compaction_while_workers_write_and_a_scraper_reads(tmp_path):
    scraper = mp_middleware(tmp_path)
    context = multiprocessing.get_context("fork")
    per_worker, long_workers, short_workers = 20_000, 2, 12

    def writer(count: int) -> None:
        metrics = mp_middleware(tmp_path)
        record(metrics, count)

    expected = long_workers * per_worker + short_workers * 500
    seen: list[float] = []
    stop = threading.Event()

    def scrape() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            seen.append(requests_total(scraper))

    scraping = threading.Thread(target=scrape)
    scraping.start()
    long = [context.Process(target=writer, args=(per_worker,)) for _ in range(long_workers)]
    for process in long:
        process.start()
    compactions = []
    for _ in range(short_workers):
        short = context.Process(target=writer, args=(500,))
        short.start()
        short.join(timeout=60)
        compactions.append(multiprocess.compact(tmp_path))
    for process in long:
        process.join(timeout=120)
        assert process.exitcode == 0
    compactions.append(multiprocess.compact(tmp_path))
    stop.set()
    scraping.join(timeout=60)

    assert requests_total(scraper) == float(expected)
    assert seen and all(total <= expected for total in seen)
    assert seen == sorted(seen), "a scrape counted something twice or lost it"
    assert sum(done.folded for done in compactions) >= short_workers
    # The scraper's own file is live; everything else is folded into one file.
    assert len(files(tmp_path)) == 2


def test_a_push_sends_the_sum_over_processes(tmp_path):
    pushing, other = mp_middleware(tmp_path), mp_middleware(tmp_path)
    record(pushing, 2)
    record(other, 3)
    bodies = []

    def capture(url, method, timeout, headers, data):
        return lambda: bodies.append(data.decode())

    pushing.push_to_gateway("127.0.0.1:1", job="sum", handler=capture)
    labels = {**REQUEST, "model": "gpt-4o"}
    assert sample_value(bodies[0], "ractogateway_requests_total", **labels) == 5.0


@pytest.mark.parametrize(
    "options",
    [
        {"extra_labels": ["team"]},
        {"latency_buckets": [0.25, 1.0, 8.0]},
        {"extra_labels": ["team", "app"], "latency_buckets": [0.5, 2.0]},
        {"native_histograms": True},
        {"native_histograms": {"schema": 1, "max_buckets": 140}, "extra_labels": ["team"]},
    ],
)
def test_compaction_folds_every_schema_it_serves(tmp_path, options, no_created):
    context = multiprocessing.get_context("fork")

    def worker(index: int) -> None:
        metrics = GatewayMetricsMiddleware(
            registry=CollectorRegistry(), multiprocess_dir=tmp_path, **options
        )
        labels = {name: f"{name}-{index % 2}" for name in options.get("extra_labels", [])}
        for _ in range(100):
            metrics.record_request(
                **REQUEST, model="gpt-4o", latency_s=0.5, input_tokens=10, labels=labels or None
            )

    processes = [context.Process(target=worker, args=(index,)) for index in range(6)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert len(files(tmp_path)) == 6
    scraper = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), multiprocess_dir=tmp_path, **options
    )
    before = scraper.generate_latest()
    # The protobuf format carries the native histograms, which the text cannot.
    before_protobuf = scraper._protobuf_exposition()
    done = multiprocess.compact(tmp_path)
    assert done.folded == 6
    # The six dead workers' files became one; this process's own file stays.
    assert len(files(tmp_path)) == 2
    assert scraper.generate_latest() == before
    assert scraper._protobuf_exposition() == before_protobuf
    assert requests_total(scraper) == 600.0
