"""``ractogateway_requests_in_flight{model,operation,provider}``: calls started and not
ended, raised and lowered by ``track()``, ``instrument()`` and the LiteLLM logger, in one
process, in our multi-process mode (a dead process's calls gone with it) and in
``prometheus_client``'s (its ``livesum`` mode); never carried by snapshots."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from gateway_metrics import GatewayMetricsMiddleware, multiprocess
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from support import parse, promtool_check

IN_FLIGHT = "ractogateway_requests_in_flight"
LABELS = {"model": "gpt-4o", "operation": "chat", "provider": "openai"}
#: Bounds of every wait below.
WAIT_S = 30.0


def in_flight(text: str, **labels: str) -> float | None:
    wanted = {**LABELS, **labels}
    for name, kind, _help, samples in parse(text):
        if name == IN_FLIGHT:
            assert kind == "gauge"
            for _sample, sample_labels, value in samples:
                if sample_labels == wanted:
                    return value
    return None


def test_track_raises_it_while_a_call_runs_whatever_the_outcome():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    assert in_flight(metrics.generate_latest()) is None  # not shown before its first call
    with metrics.track("openai", "gpt-4o"):
        assert in_flight(metrics.generate_latest()) == 1
        with metrics.track("openai", "gpt-4o"):
            assert in_flight(metrics.generate_latest()) == 2
        with pytest.raises(TimeoutError), metrics.track("openai", "gpt-4o"):
            raise TimeoutError
        assert in_flight(metrics.generate_latest()) == 1
    text = metrics.generate_latest()
    assert in_flight(text) == 0
    assert f"{IN_FLIGHT}_created" not in text
    promtool_check(text)


def test_concurrent_async_calls_are_counted_each():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), extra_labels=["team"])
    seen: list[float | None] = []

    @metrics.track("openai", "gpt-4o", labels={"team": "search"})
    async def call(started: asyncio.Event, release: asyncio.Event) -> None:
        started.set()
        await release.wait()

    async def main() -> None:
        release = asyncio.Event()
        started = [asyncio.Event() for _ in range(5)]
        tasks = [asyncio.create_task(call(event, release)) for event in started]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), WAIT_S)
        seen.append(in_flight(metrics.generate_latest(), team="search"))
        tasks[0].cancel()
        await asyncio.gather(tasks[0], return_exceptions=True)
        seen.append(in_flight(metrics.generate_latest(), team="search"))
        release.set()
        await asyncio.gather(*tasks[1:])

    asyncio.run(main())
    assert seen == [5, 4]
    assert in_flight(metrics.generate_latest(), team="search") == 0


def test_snapshots_leave_it_out():
    source = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with source.track("openai", "gpt-4o"):
        snapshot = source.snapshot()
    driver = GatewayMetricsMiddleware(registry=CollectorRegistry())
    driver.merge(snapshot)
    assert in_flight(driver.generate_latest()) is None
    assert in_flight(source.generate_latest()) == 0


def test_bad_labels_are_refused_before_anything_counts():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with pytest.raises(TypeError, match="model must be str"):
        metrics._in_flight("openai", 5, "chat", None, 1)
    with pytest.raises(ValueError, match="not among this middleware's extra labels"):
        metrics._in_flight("openai", "gpt-4o", "chat", {"team": "x"}, 1)
    assert in_flight(metrics.generate_latest()) is None


HOLD_A_CALL = """
    import sys, time
    from prometheus_client import CollectorRegistry
    from gateway_metrics import GatewayMetricsMiddleware
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), {mode})
    with metrics.track("openai", "gpt-4o"):
        print("started", flush=True)
        time.sleep({hold})
    print("ended", flush=True)
"""


def start_holders(code: str, count: int, env: dict[str, str]) -> list[subprocess.Popen]:
    holders = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(count)
    ]
    for holder in holders:
        assert holder.stdout.readline().strip() == "started"
    return holders


def wait_for(read, expected: float | None) -> None:
    deadline = time.monotonic() + WAIT_S
    while (value := read()) != expected:
        assert time.monotonic() < deadline, f"in flight {value}, expected {expected}"
        time.sleep(0.05)


def test_our_multiprocess_mode_sums_live_processes_and_forgets_killed_ones(tmp_path):
    env = {**os.environ, "GATEWAY_METRICS_MULTIPROC_DIR": str(tmp_path)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    holders = start_holders(HOLD_A_CALL.format(mode="", hold=60), 3, env)
    quick = start_holders(HOLD_A_CALL.format(mode="", hold=0.2), 1, env)
    reader = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=str(tmp_path))
    try:
        wait_for(lambda: in_flight(reader.generate_latest()), 3)  # the quick call ended
        assert quick[0].wait(WAIT_S) == 0
        holders[0].send_signal(signal.SIGKILL)
        holders[0].wait(WAIT_S)
        wait_for(lambda: in_flight(reader.generate_latest()), 2)
        # Compaction folds the killed process's counts, not its calls in flight.
        assert multiprocess.compact(tmp_path).folded == 2
        assert in_flight(reader.generate_latest()) == 2
    finally:
        for holder in holders:
            holder.kill()
            holder.wait(WAIT_S)
    wait_for(lambda: in_flight(reader.generate_latest()), 0)


def test_prometheus_clients_mode_sums_them_as_livesum(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    env.pop("GATEWAY_METRICS_MULTIPROC_DIR", None)
    holders = start_holders(HOLD_A_CALL.format(mode="", hold=60), 2, env)

    def scraped() -> float | None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(tmp_path))
        from prometheus_client import generate_latest

        return in_flight(generate_latest(registry).decode())

    try:
        wait_for(scraped, 2)
        assert len(list(Path(tmp_path).glob("gauge_livesum_gwm-*.db"))) == 2
        holders[0].send_signal(signal.SIGKILL)
        holders[0].wait(WAIT_S)
        # prometheus_client's livesum: a dead process's file counts until it is
        # marked dead, as gunicorn's child_exit hook does.
        assert scraped() == 2
        assert multiprocess.mark_process_dead(holders[0].pid, tmp_path) == 1
        assert scraped() == 1
    finally:
        for holder in holders:
            holder.kill()
            holder.wait(WAIT_S)


def test_protobuf_and_otlp_carry_it_as_a_gauge():
    import gzip

    from gateway_metrics._otlp import OtlpTarget
    from support import decode_delimited_families, wire_message

    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with metrics.track("openai", "gpt-4o"), metrics.track("openai", "gpt-4o"):
        body = metrics._protobuf_exposition()
        otlp = OtlpTarget("http://127.0.0.1:9/v1/metrics", None, None, None, None).body(metrics)
    [family] = [f for f in decode_delimited_families(body) if f.name == IN_FLIGHT]
    gauge_type = (
        wire_message("io.prometheus.client.MetricFamily")
        .DESCRIPTOR.fields_by_name["type"]
        .enum_type.values_by_name["GAUGE"]
        .number
    )
    assert family.type == gauge_type
    assert [metric.gauge.value for metric in family.metric] == [2.0]
    request = wire_message("opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest")()
    request.ParseFromString(gzip.decompress(otlp))
    [metric] = [
        metric
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == IN_FLIGHT
    ]
    assert metric.WhichOneof("data") == "gauge"
    assert [point.as_int for point in metric.gauge.data_points] == [2]
