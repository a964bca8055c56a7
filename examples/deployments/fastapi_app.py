"""A FastAPI gateway that meters its LLM calls and serves /metrics.

Run it under gunicorn with one of the two configs beside it:

    gunicorn -c gunicorn_gateway_metrics.conf.py fastapi_app:app
    gunicorn -c gunicorn_prometheus_client.conf.py fastapi_app:app
"""

from __future__ import annotations

import os
import time

from fastapi import FastAPI
from gateway_metrics import GatewayMetricsMiddleware, make_asgi_app
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import BaseModel

# One middleware per process, on the global registry. It is not ASGI middleware:
# it records what the handlers tell it, and the app routed below serves it.
# `add_route` serves /metrics itself; `app.mount("/metrics", ...)` would answer
# /metrics with a 307 redirect to /metrics/, which curl and many health checks
# do not follow.
metrics = GatewayMetricsMiddleware()

app = FastAPI()
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and not os.environ.get(
    "GATEWAY_METRICS_MULTIPROC_DIR"
):
    # prometheus_client's mode: serve every process's files, ours and the app's.
    serving = CollectorRegistry()
    MultiProcessCollector(serving)
    app.add_route("/metrics", make_asgi_app(serving))
else:
    # Single process, or our own multi-process mode: the sum over the directory.
    app.add_route("/metrics", make_asgi_app())


class Chat(BaseModel):
    model: str
    prompt: str


@app.post("/v1/chat")
async def chat(request: Chat) -> dict[str, str]:
    started = time.perf_counter()
    answer = request.prompt[::-1]  # stands in for the provider's API call
    metrics.record_request(
        provider="openai",
        model=request.model,
        operation="chat",
        status="ok",
        latency_s=time.perf_counter() - started,
        input_tokens=len(request.prompt.split()),
        output_tokens=len(answer.split()),
    )
    return {"answer": answer}
