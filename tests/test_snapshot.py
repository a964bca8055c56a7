"""Snapshots: workers' values merged in a driver, exactly, and refused when they do not fit."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import threading

import pytest
from gateway_metrics import GatewayMetricsMiddleware
from mp_workers import free_metrics, recorded_snapshot, workload_row
from prometheus_client import CollectorRegistry
from support import assert_same_totals, promtool_check, sample_value, samples_by_series

ROWS = 3_000


def recorded(rows: range, **options: object) -> GatewayMetricsMiddleware:
    metrics = free_metrics(**options)
    for index in rows:
        metrics.record_request(**workload_row(index))
    return metrics


def test_merged_worker_snapshots_equal_one_process_that_recorded_everything(no_created):
    whole = recorded(range(ROWS))
    driver = free_metrics()
    for start in range(0, ROWS, 1_000):
        assert driver.merge(recorded(range(start, start + 1_000)).snapshot()) > 0
    # Counts, buckets and these sums are exact whatever the grouping.
    assert_same_totals(driver.generate_latest(), whole.generate_latest(), float_tolerance=0.0)
    assert sample_value(
        driver.generate_latest(), "ractogateway_tool_calls_total", tool_name="search"
    ) == float(len(range(0, ROWS, 4)))
    promtool_check(driver.generate_latest())


def test_priced_costs_merge_up_to_float_rounding(no_created):
    def priced(rows: range) -> GatewayMetricsMiddleware:
        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
        for index in rows:
            metrics.record_request(**{**workload_row(index), "model": "gpt-4o"})
        return metrics

    driver = GatewayMetricsMiddleware(registry=CollectorRegistry())
    for start in range(0, ROWS, 700):
        driver.merge(priced(range(start, min(start + 700, ROWS))).snapshot())
    whole = priced(range(ROWS)).generate_latest()
    assert_same_totals(driver.generate_latest(), whole, float_tolerance=1e-12)
    assert sample_value(whole, "ractogateway_cost_usd_total", model="gpt-4o", provider="openai")


def test_merging_is_associative_and_order_free(no_created):
    parts = [recorded(range(start, start + 500)).snapshot() for start in (0, 500, 1_000)]
    in_order, reversed_order, grouped = free_metrics(), free_metrics(), free_metrics()
    for part in parts:
        in_order.merge(part)
    for part in reversed(parts):
        reversed_order.merge(part)
    first_two = free_metrics()
    first_two.merge(parts[0])
    first_two.merge(parts[1])
    grouped.merge(first_two.snapshot())
    grouped.merge(parts[2])
    expected = samples_by_series(in_order.generate_latest())
    assert samples_by_series(reversed_order.generate_latest()) == expected
    assert samples_by_series(grouped.generate_latest()) == expected


def test_reset_snapshots_count_each_request_once_while_a_thread_records(no_created):
    worker, driver = free_metrics(), free_metrics()
    rows = 40_000
    done = threading.Event()

    def record() -> None:
        for index in range(rows):
            worker.record_request(**workload_row(index))
        done.set()

    thread = threading.Thread(target=record)
    thread.start()
    deltas = 0
    while not done.is_set() and deltas < 10_000:
        driver.merge(worker.snapshot(reset=True))
        deltas += 1
    thread.join(timeout=120)
    driver.merge(worker.snapshot(reset=True))
    assert deltas > 1
    assert_same_totals(
        driver.generate_latest(), recorded(range(rows)).generate_latest(), float_tolerance=0.0
    )
    # The worker kept nothing: a reset snapshot now holds no series.
    assert free_metrics().merge(worker.snapshot(reset=True)) == 0


def test_snapshots_of_spawned_pool_workers_add_up(no_created):
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        snapshots = list(pool.map(recorded_snapshot, [0, 1_000, 2_000], [1_000] * 3))
    driver = free_metrics()
    for snapshot in snapshots:
        driver.merge(snapshot)
    whole = recorded(range(ROWS))
    for _ in range(3):
        whole.record_cache_hit("exact")
    assert_same_totals(driver.generate_latest(), whole.generate_latest(), float_tolerance=0.0)


def test_bad_snapshots_are_refused_by_name_and_add_nothing(no_created):
    snapshot = recorded(range(100)).snapshot()
    driver = free_metrics()
    driver.merge(recorded(range(10)).snapshot())
    before = driver.generate_latest()
    with pytest.raises(TypeError, match="snapshot must be bytes"):
        driver.merge("not bytes")
    with pytest.raises(ValueError, match="snapshot: damaged"):
        driver.merge(snapshot[:-9])
    flipped = bytearray(snapshot)
    flipped[len(flipped) // 2] ^= 0x10
    with pytest.raises(ValueError, match="checksum"):
        driver.merge(flipped)
    newer = bytearray(snapshot)
    newer[8] = 3
    with pytest.raises(ValueError, match="layout version 3"):
        driver.merge(bytes(newer))
    with pytest.raises(ValueError, match="buckets"):
        free_metrics(latency_buckets=[1.0, 2.0]).merge(snapshot)
    with pytest.raises(ValueError, match="label names"):
        free_metrics(extra_labels=["team"]).merge(snapshot)
    assert driver.generate_latest() == before


def test_merged_label_sets_past_the_cap_fold_into_overflow(no_created):
    driver = free_metrics(max_series=2)
    driver.merge(recorded(range(ROWS)).snapshot())
    requests = {
        dict(labels)["model"]: value
        for (name, labels), value in samples_by_series(driver.generate_latest()).items()
        if name == "ractogateway_requests_total"
    }
    assert len(requests) == 3
    assert "__overflow__" in requests
    assert sum(requests.values()) == ROWS
    folded = sample_value(
        driver.generate_latest(),
        "ractogateway_overflow_requests_total",
        family="ractogateway_requests",
    )
    assert folded is not None and folded >= 1


def test_extra_labels_travel(no_created):
    worker = free_metrics(extra_labels=["team"])
    worker.record_request(**workload_row(1), labels={"team": "search"})
    driver = free_metrics(extra_labels=["team"])
    driver.merge(worker.snapshot())
    assert (
        sample_value(
            driver.generate_latest(),
            "ractogateway_requests_total",
            model="model-b",
            operation="chat",
            provider="openai",
            status="ok",
            team="search",
        )
        == 1.0
    )


def test_reset_is_refused_in_multiprocess_mode_but_a_plain_snapshot_works(tmp_path, no_created):
    metrics = free_metrics(multiprocess_dir=tmp_path)
    metrics.record_request(**workload_row(1))
    with pytest.raises(ValueError, match=r"reset=True"):
        metrics.snapshot(reset=True)
    driver = free_metrics()
    driver.merge(metrics.snapshot())
    assert_same_totals(driver.generate_latest(), metrics.generate_latest(), float_tolerance=0.0)
