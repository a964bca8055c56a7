"""The identity caches of the hot path never change what is recorded."""

from __future__ import annotations

import pytest
from gateway_metrics import ToolCall
from support import sample_value


def fresh(text: str) -> str:
    """An equal ``str`` that is a different object."""
    return "".join(list(text))


def test_equal_strings_from_different_objects_share_one_series(metrics, no_created):
    for provider in ("openai", fresh("openai"), fresh("openai")):
        metrics.record_request(
            provider=provider,
            model=fresh("gpt-4o"),
            operation="chat",
            status=fresh("ok"),
            latency_s=0.1,
            tool_calls=[ToolCall(fresh("search")), ToolCall("search")],
        )
        metrics.record_cache_hit(fresh("exact"))
        metrics.record_cache_hit("exact")
    text = metrics.generate_latest()
    assert text.count("ractogateway_requests_total{") == 1
    labels = {"model": "gpt-4o", "operation": "chat", "provider": "openai", "status": "ok"}
    assert sample_value(text, "ractogateway_requests_total", **labels) == 3.0
    assert sample_value(text, "ractogateway_tool_calls_total", tool_name="search") == 6.0
    assert sample_value(text, "ractogateway_cache_hits_total", cache_type="exact") == 6.0


@pytest.mark.core_loop
def test_more_label_sets_than_cache_slots_are_counted_exactly(metrics, no_created):
    models = [f"model-{i}" for i in range(100)]
    for round_number in range(5):
        for model in models:
            metrics.record_request(
                provider="p",
                model=model,
                operation="chat",
                status="ok",
                latency_s=0.2,
                input_tokens=round_number + 1,
            )
    text = metrics.generate_latest()
    for model in models:
        labels = {"model": model, "operation": "chat", "provider": "p", "status": "ok"}
        assert sample_value(text, "ractogateway_requests_total", **labels) == 5.0
        assert (
            sample_value(
                text, "ractogateway_tokens_total", model=model, provider="p", token_type="input"
            )
            == 15.0
        )


def test_a_cached_label_set_still_validates_the_values(metrics, no_created):
    metrics.record_request(provider="p", model="m", operation="chat", status="ok", latency_s=1.0)
    before = metrics.generate_latest()
    for bad in ({"latency_s": -1.0}, {"latency_s": 1.0, "input_tokens": -5}):
        try:
            metrics.record_request(provider="p", model="m", operation="chat", status="ok", **bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"{bad} was accepted")
    assert metrics.generate_latest() == before


def test_a_cached_tool_name_object_still_counts_per_call(metrics, no_created):
    call = ToolCall("lookup")
    for _ in range(10):
        metrics.record_request(
            provider="p",
            model="m",
            operation="chat",
            status="ok",
            latency_s=0.1,
            tool_calls=[call, call],
        )
    text = metrics.generate_latest()
    assert sample_value(text, "ractogateway_tool_calls_total", tool_name="lookup") == 20.0
