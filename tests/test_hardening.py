"""Hostile directories, killed compactions, forks at any moment, byte order, memory.

Each test reproduces one way the package used to crash, hang, leak or count
wrong, and checks values, not just survival. Every loop is bounded in count and
in time; child processes are killed when a deadline passes.
"""

from __future__ import annotations

import ast
import ctypes
import gc
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from gateway_metrics import GatewayMetricsMiddleware, multiprocess
from prometheus_client import CollectorRegistry, Counter, generate_latest
from support import sample_value

REQUEST = {"provider": "openai", "operation": "chat", "status": "ok"}
TESTS = Path(__file__).parent


def mp_middleware(directory: Path) -> GatewayMetricsMiddleware:
    return GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=directory)


def requests_total(metrics: GatewayMetricsMiddleware) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        text = metrics.generate_latest()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ractogateway_requests_total{")
    )


def run_python(code: str, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` in a fresh interpreter; a hang fails the test instead of blocking it."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=TESTS,
        env={**os.environ, **env},
        check=False,
    )


def wait_for_child(pid: int, timeout: float) -> int | None:
    """The wait status of ``pid``, or None (after killing it) when it outlives ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.001)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def fork_dead_files(directory: Path, files: int, requests_each: int) -> None:
    """Leaves ``files`` metrics files of a process that has exited."""
    pid = os.fork()
    if pid == 0:
        try:
            keep = [mp_middleware(directory) for _ in range(files)]
            for metrics in keep:
                for _ in range(requests_each):
                    metrics.record_request(**REQUEST, model="gpt-4o", latency_s=0.5)
        finally:
            os._exit(0)
    assert wait_for_child(pid, 60) == 0


# 1. A file shrinking under a scrape.


def test_a_file_truncated_and_restored_during_scrapes_never_kills_the_scraper(tmp_path):
    source, scraped = tmp_path / "source", tmp_path / "scraped"
    writer = mp_middleware(source)
    long_model = "m" * 10_000
    for index in range(800):
        writer.record_request(**REQUEST, model=f"{long_model}{index}", latency_s=0.5)
    big = Path(writer._multiprocess_file()).read_bytes()
    assert len(big) >= 16 << 20
    scraped.mkdir()
    target = scraped / "gwm-424242-0000000000000001.gwm"
    target.write_bytes(big)
    scraper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time, warnings
                from gateway_metrics import GatewayMetricsMiddleware
                from prometheus_client import CollectorRegistry
                metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(),
                                                   multiprocess_dir=sys.argv[1])
                for _ in range(7):
                    metrics.record_request(provider="openai", model="own", operation="chat",
                                           status="ok", latency_s=0.1)
                totals = set()
                deadline = time.monotonic() + 6
                scrapes = 0
                while time.monotonic() < deadline and scrapes < 2000:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        text = metrics.generate_latest()
                    totals.add(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                   if line.startswith("ractogateway_requests_total{")))
                    scrapes += 1
                print(scrapes, sorted(totals))
                """
            ),
            str(scraped),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while scraper.poll() is None and time.monotonic() < deadline:
        os.truncate(target, 64)
        with open(target, "r+b") as restore:
            restore.write(big)
    out, err = scraper.communicate(timeout=30)
    assert scraper.returncode == 0, f"the scraper died ({scraper.returncode}): {err}"
    scrapes, totals = out.split(" ", 1)
    assert int(scrapes) > 0
    # Each scrape saw the big file whole (800 + 7) or skipped it (7): never a part of it.
    assert set(ast.literal_eval(totals)) <= {7.0, 807.0}


# 2. Things that are not metrics files, named like them.


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-fifo", "symlink-to-file", "directory"])
def test_a_non_regular_entry_named_like_a_metrics_file_is_skipped(tmp_path, kind):
    directory = tmp_path / "metrics"
    fork_dead_files(directory, 3, 50)
    live = mp_middleware(directory)
    live.record_request(**REQUEST, model="gpt-4o", latency_s=0.5)
    name = directory / "gwm-1-00000000000000aa.gwm"
    if kind == "fifo":
        os.mkfifo(name)
    elif kind == "symlink-to-fifo":
        os.mkfifo(tmp_path / "elsewhere")
        name.symlink_to(tmp_path / "elsewhere")
    elif kind == "symlink-to-file":
        name.symlink_to(live._multiprocess_file())
    else:
        name.mkdir()
    # Scrape, compact and clean up in a fresh process, so that a hang fails the test.
    result = run_python(
        """
        import os, warnings
        from gateway_metrics import GatewayMetricsMiddleware, multiprocess
        from prometheus_client import CollectorRegistry
        directory = os.environ["TARGET"]
        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=directory)
        def total():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                text = metrics.generate_latest()
            assert any("gwm-1-00000000000000aa.gwm" in str(w.message) for w in caught), caught
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("ractogateway_requests_total{"))
        before = total()
        folded = multiprocess.compact(directory)
        after = total()
        multiprocess.compact(directory)
        print(before, after, total(), folded.folded)
        """,
        timeout=60,
        TARGET=str(directory),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["151.0", "151.0", "151.0", "3"]
    assert requests_total(live) == 151.0


# 3. Compaction: a removal that fails, and SIGKILL at any moment.


def test_repeated_compactions_never_double_count_when_a_removal_fails(tmp_path):
    fork_dead_files(tmp_path, 3, 50)
    (tmp_path / "gwm-7-00000000000000bb.gwm").mkdir()
    scraper = mp_middleware(tmp_path)
    for _ in range(4):
        multiprocess.compact(tmp_path)
        assert requests_total(scraper) == 150.0
        with pytest.warns(RuntimeWarning, match="gwm-7-00000000000000bb.gwm: not a regular file"):
            scraper.generate_latest()
    assert (tmp_path / "gwm-7-00000000000000bb.gwm").is_dir()


@pytest.mark.core_loop
def test_compaction_killed_at_random_moments_counts_every_dead_process_once(tmp_path):
    scraper = mp_middleware(tmp_path)
    rng = random.Random(20261127)

    def compact_in_child(delay: float | None) -> None:
        pid = os.fork()
        if pid == 0:
            try:
                multiprocess.compact(tmp_path)
            finally:
                os._exit(0)
        if delay is not None:
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
        assert wait_for_child(pid, 60) is not None

    expected, runs, published = 0, 0, 0
    fork_dead_files(tmp_path, 12, 3)
    started = time.monotonic()
    compact_in_child(None)
    duration = time.monotonic() - started
    expected += 36
    assert requests_total(scraper) == expected
    deadline = time.monotonic() + 150
    while runs < 120 and time.monotonic() < deadline:
        fork_dead_files(tmp_path, 12, 3)
        expected += 36
        before = set(tmp_path.glob("*.gwm"))
        compact_in_child(rng.uniform(0, duration * 1.5))
        published += bool(set(tmp_path.glob("*.gwm")) - before)
        assert requests_total(scraper) == expected, f"run {runs}"
        runs += 1
    assert runs >= 100
    assert 0 < published < runs, "the kills should land before and after publication"
    compact_in_child(None)
    assert requests_total(scraper) == expected
    # Leftovers of killed compactions are folded or removed by the next one.
    assert len(list(tmp_path.glob("*.gwm"))) == 2
    assert not list(tmp_path.glob(".*.tmp"))


# 4. Byte order of buffer columns.


@pytest.mark.parametrize(
    ("latency_dtype", "token_dtype"),
    [
        (">f8", ">u4"),
        (">f8", ">i4"),
        ("<f8", "<i8"),
        (">f4", ">u2"),
        ("=f8", "=u8"),
        ("<f4", ">i8"),
    ],
)
def test_buffer_columns_in_any_byte_order_record_their_values(
    latency_dtype, token_dtype, no_created
):
    latencies = [0.5, 1.5, 2.5]
    tokens = [1200, 1200, 1200]
    native = GatewayMetricsMiddleware(registry=CollectorRegistry())
    native.record_batch(
        **REQUEST, model="gpt-4o", latency_s=latencies, input_tokens=tokens, output_tokens=tokens
    )
    ordered = GatewayMetricsMiddleware(registry=CollectorRegistry())
    ordered.record_batch(
        **REQUEST,
        model="gpt-4o",
        latency_s=np.array(latencies, dtype=latency_dtype),
        input_tokens=np.array(tokens, dtype=token_dtype),
        output_tokens=np.array(tokens, dtype=token_dtype)[::-1],
    )
    text = ordered.generate_latest()
    labels = {"provider": "openai", "model": "gpt-4o"}
    assert sample_value(text, "ractogateway_tokens_total", **labels, token_type="input") == 3600
    assert (
        sample_value(text, "ractogateway_request_duration_seconds_sum", **labels, operation="chat")
        == 4.5
    )
    assert text == native.generate_latest()


def test_ctypes_arrays_and_strided_views_are_read_element_by_element():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    latencies = (ctypes.c_double * 3)(0.5, 1.5, 2.5)
    tokens = (ctypes.c_int32 * 3)(10, 20, 30)
    strided = np.arange(6, dtype=">u8")[::2]  # 0, 2, 4
    metrics.record_batch(
        **REQUEST, model="gpt-4o", latency_s=latencies, input_tokens=tokens, output_tokens=strided
    )
    text = metrics.generate_latest()
    labels = {"provider": "openai", "model": "gpt-4o"}
    assert sample_value(text, "ractogateway_tokens_total", **labels, token_type="input") == 60
    assert sample_value(text, "ractogateway_tokens_total", **labels, token_type="output") == 6
    duration = "ractogateway_request_duration_seconds_sum"
    assert sample_value(text, duration, **labels, operation="chat") == 4.5


@pytest.mark.parametrize("dtype", [">f2", "?", ">c16", "S4"])
def test_unsupported_buffer_elements_are_refused_by_name(dtype):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with pytest.raises(TypeError, match="input_tokens"):
        metrics.record_batch(
            **REQUEST, model="m", latency_s=0.1, input_tokens=np.zeros(2, dtype=dtype)
        )
    assert "ractogateway_requests_total{" not in metrics.generate_latest()


# 5. Memory with fresh-but-equal label strings, and __del__ of label objects.


def test_memory_stays_flat_over_millions_of_calls_with_fresh_label_strings(tmp_path):
    result = run_python(
        """
        import os, sys
        from gateway_metrics import GatewayMetricsMiddleware
        from prometheus_client import CollectorRegistry
        directory = os.environ.get("TARGET") or None
        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=directory)
        page = os.sysconf("SC_PAGE_SIZE")
        def rss():
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * page
        tail = ["ai", "-4o", "at", "k"]
        def calls(count):
            for _ in range(count):
                metrics.record_request(provider="open" + tail[0], model="gpt" + tail[1],
                                       operation="ch" + tail[2], status="o" + tail[3],
                                       latency_s=0.25, input_tokens=3)
                metrics.record_cache_hit("exa" + "ct"[:2])
        calls(100_000)
        before = rss()
        calls(2_400_000)
        print(rss() - before)
        """,
        timeout=300,
        TARGET="",
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 10 << 20


def test_memory_stays_flat_in_multiprocess_mode_too(tmp_path):
    result = run_python(
        """
        import os
        from gateway_metrics import GatewayMetricsMiddleware
        from prometheus_client import CollectorRegistry
        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(),
                                           multiprocess_dir=os.environ["TARGET"])
        page = os.sysconf("SC_PAGE_SIZE")
        def rss():
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * page
        tail = "-4o"
        for _ in range(50_000):
            metrics.record_request(provider="openai", model="gpt" + tail, operation="chat",
                                   status="ok", latency_s=0.25)
        before = rss()
        for _ in range(1_000_000):
            metrics.record_request(provider="openai", model="gpt" + tail, operation="chat",
                                   status="ok", latency_s=0.25)
        print(rss() - before)
        """,
        timeout=300,
        TARGET=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 10 << 20


def test_a_label_objects_finalizer_runs_when_the_call_returns():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    finalized: list[str] = []

    class Model(str):
        def __del__(self) -> None:
            finalized.append(str.__str__(self))

    metrics.record_request(**REQUEST, model=Model("gpt-4o"), latency_s=0.1)
    assert finalized == ["gpt-4o"]
    metrics.record_cache_hit(Model("exact"))
    assert finalized == ["gpt-4o", "exact"]


def test_a_str_subclass_is_rendered_as_str_renders_it(no_created):
    class Tagged(str):
        def __str__(self) -> str:
            return f"tagged:{str.__str__(self)}"

    class Tool:
        name = Tagged("search")

    ours = GatewayMetricsMiddleware(registry=CollectorRegistry())
    ours.record_request(
        **REQUEST, model=Tagged("gpt-4o"), latency_s=0.1, input_tokens=5, tool_calls=[Tool()]
    )
    ours.record_batch(**REQUEST, model=[Tagged("gpt-4o")], latency_s=[0.2])
    ours.record_cache_hit(Tagged("exact"))
    text = ours.generate_latest()
    labels = {**REQUEST, "model": "tagged:gpt-4o"}
    assert sample_value(text, "ractogateway_requests_total", **labels) == 2.0
    assert sample_value(text, "ractogateway_tool_calls_total", tool_name="tagged:search") == 1.0
    assert sample_value(text, "ractogateway_cache_hits_total", cache_type="tagged:exact") == 1.0
    # prometheus_client, and so the reference middleware, does the same.
    registry = CollectorRegistry()
    Counter("probe", "probe", ["model"], registry=registry).labels(Tagged("gpt-4o")).inc()
    assert 'model="tagged:gpt-4o"' in generate_latest(registry).decode()


# 6. and 7. Forks at any moment.


@pytest.mark.integration
def test_forks_while_threads_scrape_record_and_compact_never_hang_a_child(tmp_path):
    single = GatewayMetricsMiddleware(registry=CollectorRegistry())
    shared = mp_middleware(tmp_path)
    stop = threading.Event()
    recorded = {"single": 0, "shared": 0}
    errors: list[BaseException] = []

    def guarded(loop):
        def run() -> None:
            try:
                deadline = time.monotonic() + 300
                while not stop.is_set() and time.monotonic() < deadline:
                    loop()
            except BaseException as error:  # surfaced by the assertion below
                errors.append(error)

        return threading.Thread(target=run)

    counter = iter(range(10**9))

    def write() -> None:
        index = next(counter)
        single.record_request(**REQUEST, model=f"model-{index % 5000}", latency_s=0.1)
        recorded["single"] += 1
        shared.record_request(**REQUEST, model="gpt-4o", latency_s=0.1)
        recorded["shared"] += 1

    def scrape_shared() -> None:
        requests_total(shared)
        multiprocess.compact(tmp_path)

    threads = [guarded(single.generate_latest), guarded(write), guarded(scrape_shared)]
    for thread in threads:
        thread.start()
    # Bounded by count and by time: a slow machine forks fewer children, and the
    # test asserts what each child did, never how many there were.
    hung, forks = 0, 0
    deadline = time.monotonic() + 180
    try:
        while forks < 2000 and time.monotonic() < deadline:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    single.record_request(**REQUEST, model="child", latency_s=0.1)
                    single.generate_latest()
                    shared.record_request(**REQUEST, model="child", latency_s=0.1)
                    code = 0
                finally:
                    os._exit(code)
            status = wait_for_child(pid, 20)
            hung += status is None
            assert status is None or os.waitstatus_to_exitcode(status) == 0
            forks += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors
    assert hung == 0, f"{hung} of {forks} children hung"
    assert forks >= 1
    total_single = sum(
        float(line.rsplit(" ", 1)[1])
        for line in single.generate_latest().splitlines()
        if line.startswith("ractogateway_requests_total{")
    )
    assert total_single == recorded["single"]
    assert requests_total(shared) == recorded["shared"] + forks


def test_a_child_forked_during_a_scrape_does_not_hold_the_directory_lock(tmp_path):
    fork_dead_files(tmp_path, 200, 1)
    scraper = mp_middleware(tmp_path)
    stop = threading.Event()

    def scrape() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            requests_total(scraper)

    scraping = threading.Thread(target=scrape)
    scraping.start()
    children = []
    try:
        for _ in range(40):
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            children.append(pid)
            time.sleep(0.005)
        time.sleep(0.5)  # every child has run its fork handlers
        stop.set()
        scraping.join(timeout=60)
        done: list[multiprocess.Compaction] = []
        compacting = threading.Thread(target=lambda: done.append(multiprocess.compact(tmp_path)))
        compacting.start()
        compacting.join(timeout=20)
        assert done, "compact() blocked on a lock held by a forked child"
        assert done[0].folded == 200
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert requests_total(scraper) == 200.0


def test_a_forked_child_does_not_keep_its_parents_file_locked(tmp_path):
    parent = mp_middleware(tmp_path)
    parent.record_request(**REQUEST, model="gpt-4o", latency_s=0.1)
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(ready_write, b"!")  # the fork handlers have run
        time.sleep(60)
        os._exit(0)
    try:
        assert os.read(ready_read, 1) == b"!"
        parent_file = parent._multiprocess_file()
        del parent
        gc.collect()
        assert multiprocess.cleanup(tmp_path) == 1
        assert not Path(parent_file).exists()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


EXIT_MID_SCRAPE = {
    "native": ["while True: metrics.generate_latest()"],
    "collector": ["while True: prometheus_client.generate_latest(registry)"],
    "exporter": [
        "exporter = PrometheusExporter(0, registry=registry, addr='127.0.0.1')",
        "exporter.start()",
        "url = f'http://127.0.0.1:{exporter.port}/metrics'",
        # The exporter stops at exit and cuts this connection: the scraper
        # must not print the error, as a daemon thread writing to stderr while
        # the interpreter finalizes it can abort CPython itself
        # (`_enter_buffered_busy`), whatever the library does.
        "while True:",
        "    try: urllib.request.urlopen(url, timeout=10).read()",
        "    except Exception: pass",
    ],
}


@pytest.mark.parametrize("scraper", sorted(EXIT_MID_SCRAPE))
def test_exiting_while_a_thread_is_mid_scrape_always_exits_cleanly(scraper):
    # A daemon thread scrapes a 20,000-series store in a loop while the main
    # thread returns: CPython ends such a thread when it asks for the GIL back
    # during finalization, which through Rust frames used to abort (134).
    body = "\n            ".join(EXIT_MID_SCRAPE[scraper])
    code = f"""
        import sys, threading, time, urllib.request
        import prometheus_client
        from prometheus_client import CollectorRegistry
        from gateway_metrics import GatewayMetricsMiddleware, ModelPricing, PrometheusExporter

        registry = CollectorRegistry()
        models = [f"model-{{i}}" for i in range(5000)]
        metrics = GatewayMetricsMiddleware(
            registry=registry, price_table=dict.fromkeys(models, ModelPricing(1.0, 2.0))
        )
        for model in models:
            metrics.record_request(provider="p", model=model, operation="chat", status="ok",
                                   latency_s=0.5, input_tokens=3, output_tokens=2)

        def scrape():
            {body}

        threading.Thread(target=scrape, daemon=True).start()
        time.sleep(float(sys.argv[1]))
    """
    statuses = []
    for run in range(20):
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), str(0.05 + 0.01 * run)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=TESTS,
            check=False,
        )
        statuses.append((done.returncode, done.stderr[-300:]))
    assert [status for status, _ in statuses] == [0] * 20, statuses


def test_models_without_a_price_are_named_up_to_a_bound_then_summed_up(caplog):
    # Model names come from callers: each unpriced one is named once in a
    # warning, and past a hundred they stop being kept (and named).
    import logging

    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with caplog.at_level(logging.WARNING, logger="gateway_metrics"):
        for index in range(250):
            for _ in range(2):
                metrics.record_request(
                    provider="acme",
                    model=f"house-{index}",
                    operation="chat",
                    status="ok",
                    latency_s=0.1,
                    input_tokens=5,
                )
    messages = [record.getMessage() for record in caplog.records]
    named = [message for message in messages if message.startswith("no price for model")]
    assert len(named) == 100
    assert named[0].startswith('no price for model "house-0" of provider "acme"')
    summary = [message for message in messages if message.startswith("more than 100 models")]
    assert len(summary) == 1
    # Every request is counted all the same.
    total = sum(
        value
        for line in metrics.generate_latest().splitlines()
        if line.startswith("ractogateway_requests_total{")
        for value in [float(line.rsplit(" ", 1)[1])]
    )
    assert total == 500
