"""``track()`` against stand-in responses shaped like each SDK's (no SDK installed)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from gateway_metrics import GatewayMetricsMiddleware
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

OPENAI_CHAT = SimpleNamespace(
    usage=SimpleNamespace(
        prompt_tokens=1200,
        completion_tokens=300,
        prompt_tokens_details=SimpleNamespace(cached_tokens=1000),
        completion_tokens_details=SimpleNamespace(reasoning_tokens=120),
    )
)
OPENAI_RESPONSES = {
    "usage": {
        "input_tokens": 900,
        "output_tokens": 50,
        "input_tokens_details": {"cached_tokens": 800},
        "output_tokens_details": {"reasoning_tokens": 10},
    }
}
ANTHROPIC = SimpleNamespace(
    usage=SimpleNamespace(
        input_tokens=20,
        cache_read_input_tokens=500,
        cache_creation_input_tokens=80,
        output_tokens=7,
    )
)
GOOGLE = SimpleNamespace(
    usage_metadata=SimpleNamespace(
        prompt_token_count=400,
        cached_content_token_count=100,
        candidates_token_count=60,
        thoughts_token_count=40,
    )
)


def fresh() -> GatewayMetricsMiddleware:
    return GatewayMetricsMiddleware(registry=CollectorRegistry())


def sample(metrics, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics.generate_latest()):
        for one in family.samples:
            if one.name == name and one.labels == labels:
                return one.value
    return None


def tokens(metrics, model: str) -> dict[str, float]:
    found = {}
    for kind in ("input", "output", "cache_read", "cache_write", "reasoning"):
        value = sample(
            metrics, "ractogateway_tokens_total", model=model, provider="p", token_type=kind
        )
        if value is not None:
            found[kind] = value
    return found


def requests(metrics, model: str, status: str) -> float | None:
    return sample(
        metrics,
        "ractogateway_requests_total",
        model=model,
        operation="chat",
        provider="p",
        status=status,
    )


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (OPENAI_CHAT, {"input": 1200, "output": 300, "cache_read": 1000, "reasoning": 120}),
        (OPENAI_CHAT.usage, {"input": 1200, "output": 300, "cache_read": 1000, "reasoning": 120}),
        (OPENAI_RESPONSES, {"input": 900, "output": 50, "cache_read": 800, "reasoning": 10}),
        # Anthropic's input_tokens leaves out what the cache read and wrote.
        (ANTHROPIC, {"input": 600, "output": 7, "cache_read": 500, "cache_write": 80}),
        # Gemini's thoughts are output tokens.
        (GOOGLE, {"input": 400, "output": 100, "cache_read": 100, "reasoning": 40}),
    ],
)
def test_usage_of_each_sdk_shape_is_normalised(response, expected):
    metrics = fresh()
    with metrics.track("p", "m") as call:
        call.usage(response)
    assert tokens(metrics, "m") == expected
    assert requests(metrics, "m", "ok") == 1.0


def test_an_exception_records_an_error_and_is_re_raised():
    metrics = fresh()
    with pytest.raises(KeyError, match="boom"), metrics.track("p", "m") as call:  # noqa: PT012
        call.tokens(input=5)
        raise KeyError("boom")
    assert requests(metrics, "m", "error") == 1.0
    assert requests(metrics, "m", "ok") is None
    assert tokens(metrics, "m") == {"input": 5}


def test_async_streaming_with_first_token_and_cancellation():
    metrics = fresh()

    async def stream_all() -> None:
        async with metrics.track("p", "m") as call:
            await asyncio.sleep(0.01)
            call.first_token()
            await asyncio.sleep(0.01)
            call.first_token()  # no-op: the first one counts
            call.tokens(input=10, output=3)

    async def cancelled() -> None:
        async with metrics.track("p", "m"):
            await asyncio.sleep(10)

    async def main() -> None:
        await stream_all()
        task = asyncio.create_task(cancelled())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert requests(metrics, "m", "ok") == 1.0
    assert requests(metrics, "m", "cancelled") == 1.0
    labels = {"model": "m", "operation": "chat", "provider": "p"}
    first = sample(metrics, "ractogateway_time_to_first_token_seconds_sum", **labels)
    latency = sample(metrics, "ractogateway_request_duration_seconds_sum", **labels)
    assert first is not None and 0.005 <= first < latency
    per_token = sample(metrics, "ractogateway_time_per_output_token_seconds_count", **labels)
    assert per_token == 1.0


def test_a_generator_stopped_early_records_what_it_saw():
    metrics = fresh()

    def chunks():
        with metrics.track("p", "m") as call:
            for index in range(100):
                call.first_token()
                call.tokens(input=7, output=index + 1)
                yield index

    stream = chunks()
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert requests(metrics, "m", "cancelled") == 1.0
    assert tokens(metrics, "m") == {"input": 7, "output": 3}


def test_tool_calls_by_name_from_objects_sdk_objects_and_dicts():
    metrics = fresh()
    with metrics.track("p", "m") as call:
        call.tool_calls(
            [
                SimpleNamespace(name="search"),
                SimpleNamespace(function=SimpleNamespace(name="calc")),
                {"name": "lookup"},
                {"function": {"name": "calc"}},
                {"type": "function"},
                42,
            ]
        )
    for name, count in (("search", 1), ("calc", 2), ("lookup", 1), ("unknown", 2)):
        assert sample(metrics, "ractogateway_tool_calls_total", tool_name=name) == count


def test_bad_use_is_refused_clearly():
    metrics = fresh()
    with pytest.raises(TypeError, match="model must be str"):
        metrics.track("p", 5)
    with pytest.raises(ValueError, match="labels names tenant"):
        metrics.track("p", "m", labels={"tenant": "acme"})
    call = metrics.track("p", "m")
    with call, pytest.raises(RuntimeError, match="entered once"), call:
        pass


def test_usage_of_an_unknown_shape_is_logged_once_and_the_block_keeps_its_status(caplog):
    metrics = fresh()
    for _ in range(3):
        with metrics.track("p", "m") as call:
            call.tokens(input=5, output=1)
            call.usage(object())
    assert requests(metrics, "m", "ok") == 3.0
    assert tokens(metrics, "m") == {"input": 15.0, "output": 3.0}
    assert sum("does not know the shape" in r.getMessage() for r in caplog.records) == 1


def test_contradictory_usage_records_what_it_can_and_never_fails_the_block(caplog):
    metrics = fresh()
    contradictory = {
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 50},
        }
    }
    with metrics.track("p", "m") as call:
        call.usage(contradictory)
    assert requests(metrics, "m", "ok") == 1.0
    assert tokens(metrics, "m") == {"input": 10.0, "output": 4.0}
    assert "cache_read + cache_write must not exceed input" in caplog.text
    # The block's own exception is the one raised, and the request is recorded.
    with pytest.raises(KeyError, match="the caller's"), metrics.track("p", "m") as call:  # noqa: PT012
        call.usage(contradictory)
        raise KeyError("the caller's")
    assert requests(metrics, "m", "error") == 1.0
    assert tokens(metrics, "m") == {"input": 20.0, "output": 8.0}


def test_bad_counts_are_refused_where_they_are_given_and_the_request_is_still_recorded():
    metrics = fresh()
    with pytest.raises(ValueError, match="input must be between"), metrics.track("p", "m") as call:  # noqa: PT012
        call.tokens(input=5, output=1)
        call.tokens(input=-1)
        raise KeyError("never reached")
    with pytest.raises(TypeError, match="output must be an int"), metrics.track("p", "m") as call:
        call.tokens(output="12")
    with (
        pytest.raises(ValueError, match="reasoning must not exceed output"),
        metrics.track("p", "m") as call,
    ):
        call.tokens(output=1, reasoning=2)
    assert requests(metrics, "m", "error") == 3.0
    # The counts given before the bad call are kept.
    assert tokens(metrics, "m") == {"input": 5.0, "output": 1.0}
