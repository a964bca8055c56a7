"""Worker functions for the multi-process tests (importable by spawned children)."""

from __future__ import annotations

from gateway_metrics import GatewayMetricsMiddleware
from prometheus_client import CollectorRegistry


def record_requests(directory: str, count: int, model: str) -> None:
    """A fresh process: its own middleware on ``directory``, ``count`` requests."""
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=directory)
    for _ in range(count):
        metrics.record_request(
            provider="openai",
            model=model,
            operation="chat",
            status="ok",
            latency_s=0.5,
            input_tokens=10,
            output_tokens=2,
        )
    metrics.record_cache_hit("exact")
