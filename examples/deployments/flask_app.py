"""A Flask gateway with /metrics, for gunicorn's sync workers.

    GATEWAY_METRICS_MULTIPROC_DIR=/run/gateway-metrics \\
        gunicorn -c gunicorn_gateway_metrics.conf.py -k sync -w 2 flask_app:app

The config's hooks clean the directory up at start and compact the files of
workers that are gone; `-k sync -w 2` override its uvicorn workers.
"""

from __future__ import annotations

import time

from flask import Flask, jsonify, request
from gateway_metrics import GatewayMetricsMiddleware, make_wsgi_app
from werkzeug.middleware.dispatcher import DispatcherMiddleware

metrics = GatewayMetricsMiddleware()

app = Flask(__name__)
app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": make_wsgi_app()})


@app.post("/v1/chat")
def chat():
    started = time.perf_counter()
    body = request.get_json()
    answer = body["prompt"][::-1]  # stands in for the provider's API call
    metrics.record_request(
        provider="openai",
        model=body["model"],
        operation="chat",
        status="ok",
        latency_s=time.perf_counter() - started,
        input_tokens=len(body["prompt"].split()),
        output_tokens=len(answer.split()),
    )
    return jsonify(answer=answer)
