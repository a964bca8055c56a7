"""One workload through a middleware in prometheus_client's multi-process mode.

Run as ``python prom_mp_workload.py ours|reference`` with ``PROMETHEUS_MULTIPROC_DIR``
set: four worker processes (two forked from this one, sharing its middleware, two
spawned, each with its own) record a deterministic workload; one forked worker is
killed with SIGKILL halfway through its share. For ``ours``, the parent then prints
the middleware's own exposition of the directory's sum.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from typing import Any

from gateway_metrics import ToolCall
from prometheus_client import CollectorRegistry

REQUESTS_PER_WORKER = 600
MODELS = ["gpt-4o", "claude-3-5-sonnet-20241022", 'we"ird\nmodel \u00e9']


def new_middleware(kind: str) -> Any:
    if kind == "ours":
        from gateway_metrics import GatewayMetricsMiddleware
    else:
        from ractogateway.telemetry.metrics import GatewayMetricsMiddleware
    return GatewayMetricsMiddleware(registry=CollectorRegistry())


def record(middleware: Any, worker: int, stop_after: int | None = None) -> None:
    for i in range(REQUESTS_PER_WORKER):
        if i == stop_after:
            os.kill(os.getpid(), signal.SIGKILL)
        middleware.record_request(
            provider="anthropic" if i % 4 == 0 else "openai",
            model=MODELS[(worker + i) % len(MODELS)],
            operation="stream" if i % 5 == 0 else "chat",
            status="error" if i % 11 == 0 else "ok",
            latency_s=((i * 7 + worker) % 500) * 0.125,
            input_tokens=(i * 13) % 900,
            output_tokens=(i * 5) % 120,
            tool_calls=[ToolCall("search")] * (i % 3),
        )
        if i % 4 == 0:
            middleware.record_cache_hit("exact" if i % 8 == 0 else "semantic")
        else:
            middleware.record_cache_miss("semantic")


def spawned_worker(kind: str, worker: int) -> None:
    record(new_middleware(kind), worker)


PARENT: Any = None


def forked_worker(worker: int, stop_after: int | None) -> None:
    record(PARENT, worker, stop_after)


def main(kind: str) -> None:
    global PARENT
    PARENT = new_middleware(kind)
    fork, spawn = multiprocessing.get_context("fork"), multiprocessing.get_context("spawn")
    workers = [
        fork.Process(target=forked_worker, args=(0, None)),
        fork.Process(target=forked_worker, args=(1, REQUESTS_PER_WORKER // 2)),
        spawn.Process(target=spawned_worker, args=(kind, 2)),
        spawn.Process(target=spawned_worker, args=(kind, 3)),
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    exit_codes = [process.exitcode for process in workers]
    assert exit_codes == [0, -signal.SIGKILL, 0, 0], exit_codes
    if kind == "ours":
        sys.stdout.write(PARENT.generate_latest())


if __name__ == "__main__":
    main(sys.argv[1])
