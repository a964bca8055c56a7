"""Worker functions for the multi-process tests (importable by spawned children)."""

from __future__ import annotations

from gateway_metrics import GatewayMetricsMiddleware, ModelPricing, ToolCall
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


def record_exemplars(directory: str, rows: list[tuple[float, float | None, str]]) -> None:
    """A fresh process records one request per ``(latency, first token, trace id)``
    row on ``directory``, each with its trace id as the exemplar."""
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=directory)
    for latency, first_token, trace_id in rows:
        metrics.record_request(
            provider="openai",
            model="gpt-4o",
            operation="chat",
            status="ok",
            latency_s=latency,
            time_to_first_token_s=first_token,
            output_tokens=5,
            exemplar={"trace_id": trace_id},
        )


#: Free models: no cost series, so every sum of the workload below is exact.
FREE_MODELS = {name: ModelPricing(0.0, 0.0) for name in ("model-a", "model-b", "model-c")}


def free_metrics(**options: object) -> GatewayMetricsMiddleware:
    """A middleware of its own registry that prices the workload's models at zero."""
    return GatewayMetricsMiddleware(
        registry=CollectorRegistry(), price_table=FREE_MODELS, **options
    )


def workload_row(index: int) -> dict:
    """Request ``index`` of the snapshot tests' workload. Latencies are multiples
    of 1/64 s and output token counts one more than a power of two, so latency,
    time-to-first-token and time-per-output-token sums are exact in any order."""
    models = sorted(FREE_MODELS)
    return {
        "provider": "openai" if index % 3 else "anthropic",
        "model": models[index % len(models)],
        "operation": "chat",
        "status": "error" if index % 11 == 0 else "ok",
        "latency_s": (index % 200 + 8) / 64,
        "input_tokens": index % 97,
        "output_tokens": [0, 1, 2, 3, 5, 9, 17][index % 7],
        "cache_read_tokens": index % 5 if index % 97 >= 5 else 0,
        "time_to_first_token_s": (index % 7) / 64 if index % 2 else None,
        "tool_calls": [ToolCall("search")] if index % 4 == 0 else None,
    }


def recorded_snapshot(start: int, count: int) -> bytes:
    """A fresh process records rows ``[start, start + count)`` and returns its snapshot."""
    metrics = free_metrics()
    for index in range(start, start + count):
        metrics.record_request(**workload_row(index))
    metrics.record_cache_hit("exact")
    return metrics.snapshot()
