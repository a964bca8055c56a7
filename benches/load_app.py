"""The ASGI app the load benchmark serves (``benches/load.py``), one per uvicorn process.

``LOAD_CONTENDER`` (``ours`` or ``reference``) and ``LOAD_LABEL_SETS`` say
what it holds: the contender's middleware with that many label sets recorded,
served at ``/metrics`` by the contender's ASGI app (ours, or
``prometheus_client.make_asgi_app``). ``/work`` records one request, as a
gateway handler does; ``/lag`` answers how late the event loop woke up for a
10 ms sleep since the last ``/lag``, as JSON milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import prometheus_client
import workloads
from gateway_metrics import GatewayMetricsMiddleware, make_asgi_app
from prometheus_client import CollectorRegistry

#: How often the loop-lag monitor asks to be woken.
TICK_S = 0.010


def make_app() -> Callable[..., Any]:
    # The workload's models have no price, as in the other scrape benchmarks:
    # one warning per model would only fill the log.
    logging.getLogger("gateway_metrics").setLevel(logging.ERROR)
    contender = os.environ["LOAD_CONTENDER"]
    label_sets = int(os.environ["LOAD_LABEL_SETS"])
    if contender == "ours":
        registry = CollectorRegistry()
        middleware: Any = GatewayMetricsMiddleware(registry=registry)
        metrics_app = make_asgi_app(registry)
    else:
        middleware = workloads.new_middleware("reference")
        registry = middleware._registry
        metrics_app = prometheus_client.make_asgi_app(registry)
    workloads.populate_for_scrape(middleware, models=label_sets)
    record = middleware.record_request
    lags: list[float] = []
    monitor: list[asyncio.Task[None]] = []

    async def watch_the_loop() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append(max(0.0, time.perf_counter() - started - TICK_S))

    async def respond(send: Callable[..., Any], body: bytes, content_type: str) -> None:
        headers = [(b"content-type", content_type.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    monitor.append(asyncio.get_running_loop().create_task(watch_the_loop()))
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    monitor[0].cancel()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path == "/metrics":
            await metrics_app(scope, receive, send)
        elif path == "/work":
            await receive()
            record(
                provider="openai",
                model="model-00001",
                operation="chat",
                status="ok",
                latency_s=0.3,
                input_tokens=1000,
                output_tokens=200,
            )
            await respond(send, b"ok", "text/plain")
        elif path == "/lag":
            await receive()
            seen, lags[:] = list(lags), []
            await respond(send, json.dumps([lag * 1e3 for lag in seen]).encode(), "text/json")
        else:
            await receive()
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    return app
