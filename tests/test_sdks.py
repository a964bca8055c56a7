"""The real SDKs against a local server that answers as each provider documents.

``openai``, ``anthropic`` and ``google-genai`` clients (sync, async, streamed,
stream helpers, errors, cancellation) talk to ``providers.ProviderServer`` on
127.0.0.1; ``track()``, ``usage_from``, ``tool_call_names`` and
``record_request(tool_calls=...)`` must record exactly the numbers the server
sent, in this package's semantics (``providers.EXPECTED``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator

import pytest
from gateway_metrics import (
    GatewayMetricsMiddleware,
    ModelPricing,
    Usage,
    tool_call_names,
    usage_from,
)
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from providers import EXPECTED, EXPECTED_PLAIN, TOOLS, ProviderServer

openai = pytest.importorskip("openai", reason="the test dependency group installs the SDKs")
anthropic = pytest.importorskip("anthropic", reason="the test dependency group installs the SDKs")
genai = pytest.importorskip("google.genai", reason="the test dependency group installs the SDKs")

#: One price for every model the tests use (USD per million tokens).
PRICE = ModelPricing(2.0, 8.0, cache_read_per_million=0.5, cache_write_per_million=2.5)
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")
#: The audio counts, which these fixtures do not report.
NO_AUDIO = {"audio_input": 0, "audio_output": 0}


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as running:
        yield running


def fresh(*models: str) -> GatewayMetricsMiddleware:
    return GatewayMetricsMiddleware(
        registry=CollectorRegistry(), price_table=dict.fromkeys(models, PRICE)
    )


def recorded(metrics: GatewayMetricsMiddleware, model: str) -> dict:
    """What ``metrics`` holds for ``model``: requests by status, tokens by type,
    tool calls by name, the TTFT count and the cost."""
    found: dict = {"requests": {}, "tokens": {}, "tools": {}, "ttft": 0.0, "cost": 0.0}
    for family in text_string_to_metric_families(metrics.generate_latest()):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "ractogateway_tool_calls_total":
                found["tools"][labels["tool_name"]] = sample.value
            elif labels.get("model") != model:
                continue
            elif sample.name == "ractogateway_requests_total":
                found["requests"][labels["status"]] = sample.value
            elif sample.name == "ractogateway_tokens_total":
                found["tokens"][labels["token_type"]] = sample.value
            elif sample.name == "ractogateway_time_to_first_token_seconds_count":
                found["ttft"] = sample.value
            elif sample.name == "ractogateway_cost_usd_total":
                found["cost"] = sample.value
    return found


def cost_of(counts: dict[str, int]) -> float:
    read, written = counts.get("cache_read", 0), counts.get("cache_write", 0)
    return (
        (counts.get("input", 0) - read - written) * 2.0
        + read * 0.5
        + written * 2.5
        + counts.get("output", 0) * 8.0
    ) / 1e6


def assert_recorded(
    metrics: GatewayMetricsMiddleware,
    model: str,
    counts: dict[str, int],
    *,
    status: str = "ok",
    tools: tuple[str, ...] = (),
    ttft: float = 0.0,
) -> None:
    found = recorded(metrics, model)
    assert found["requests"] == {status: 1.0}
    assert found["tokens"] == {kind: float(n) for kind, n in counts.items() if n}
    assert found["tools"] == dict.fromkeys(tools, 1.0)
    assert found["ttft"] == ttft
    assert found["cost"] == pytest.approx(cost_of(counts), rel=1e-12, abs=0.0)


def openai_client(server: ProviderServer, asynchronous: bool = False):
    kind = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    return kind(base_url=f"{server.url}/v1", api_key="test", max_retries=0)


def anthropic_client(server: ProviderServer, asynchronous: bool = False):
    kind = anthropic.AsyncAnthropic if asynchronous else anthropic.Anthropic
    return kind(base_url=server.url, api_key="test", max_retries=0)


def google_client(server: ProviderServer):
    return genai.Client(
        api_key="test",
        http_options=genai.types.HttpOptions(
            base_url=server.url, retry_options=genai.types.HttpRetryOptions(attempts=1)
        ),
    )


MESSAGES = [{"role": "user", "content": "Hi"}]


# ----------------------------------------------------------------- OpenAI Chat


@pytest.mark.parametrize("variant", ["", "-tools", "-plain"])
def test_openai_chat_completion(server, variant):
    model = f"gpt-chat{variant}"
    metrics = fresh(model)
    client = openai_client(server)
    with metrics.track("openai", model) as call:
        response = client.chat.completions.create(model=model, messages=MESSAGES)
        call.usage(response)
        call.tool_calls(response)
    expected = EXPECTED_PLAIN["openai-chat"] if variant == "-plain" else EXPECTED["openai-chat"]
    assert_recorded(metrics, model, expected, tools=TOOLS if variant == "-tools" else ())
    assert usage_from(response) == Usage(**{k: expected.get(k) for k in TOKEN_TYPES})
    # record_request reads the SDK's tool-call objects (.function.name) itself.
    direct = fresh(model)
    direct.record_request(
        provider="openai",
        model=model,
        operation="chat",
        status="ok",
        latency_s=0.1,
        tool_calls=response.choices[0].message.tool_calls,
    )
    assert recorded(direct, model)["tools"] == (
        dict.fromkeys(TOOLS, 1.0) if variant == "-tools" else {}
    )


@pytest.mark.parametrize("variant", ["", "-tools"])
def test_openai_chat_stream_with_usage(server, variant):
    model = f"gpt-chat{variant}"
    metrics = fresh(model)
    client = openai_client(server)
    with metrics.track("openai", model) as call:
        stream = client.chat.completions.create(
            model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        for chunk in stream:
            call.first_token()
            call.usage(chunk)
            call.tool_calls(chunk)
    assert_recorded(
        metrics, model, EXPECTED["openai-chat"], tools=TOOLS if variant else (), ttft=1.0
    )


def test_openai_chat_stream_without_usage_keeps_its_status_and_says_why(server, caplog):
    model = "gpt-chat-tools"
    metrics = fresh(model)
    client = openai_client(server)
    with metrics.track("openai", model) as call:
        for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
            call.usage(chunk)
            call.tool_calls(chunk.choices[0].delta.tool_calls if chunk.choices else None)
    assert_recorded(metrics, model, {}, tools=TOOLS)
    hints = [r for r in caplog.records if "include_usage" in r.getMessage()]
    assert len(hints) == 1


def cancel_after_first_chunk(consume: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Runs ``consume`` and cancels it once it has set the event (at its first chunk)."""

    async def main() -> None:
        first = asyncio.Event()
        task = asyncio.create_task(consume(first))
        await asyncio.wait_for(first.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_openai_async_stream_cancelled_midway(server):
    model = "gpt-chat-slow"
    metrics = fresh(model)
    client = openai_client(server, asynchronous=True)

    async def consume() -> None:
        async with metrics.track("openai", model) as call:
            stream = await client.chat.completions.create(
                model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            async for chunk in stream:
                call.first_token()
                call.usage(chunk)

    async def main() -> None:
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.close()

    asyncio.run(main())
    assert_recorded(metrics, model, {}, status="cancelled", ttft=1.0)


@pytest.mark.parametrize(
    ("model", "error"),
    [("error-429", "RateLimitError"), ("error-500", "InternalServerError")],
)
def test_openai_errors_are_recorded_as_errors(server, model, error):
    metrics = fresh(model)
    client = openai_client(server)
    with pytest.raises(getattr(openai, error)), metrics.track("openai", model) as call:
        call.usage(client.chat.completions.create(model=model, messages=MESSAGES))
    assert_recorded(metrics, model, {}, status="error")


def test_openai_error_event_midstream(server):
    model = "gpt-chat-midstream"
    metrics = fresh(model)
    client = openai_client(server)
    with pytest.raises(openai.APIError, match="overloaded"), metrics.track("openai", model) as c:  # noqa: PT012
        for chunk in client.chat.completions.create(
            model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ):
            c.first_token()
            c.usage(chunk)
    assert_recorded(metrics, model, {}, status="error", ttft=1.0)


# ------------------------------------------------------------ OpenAI Responses


@pytest.mark.parametrize("variant", ["", "-tools", "-plain"])
def test_openai_responses(server, variant):
    model = f"gpt-resp{variant}"
    metrics = fresh(model)
    client = openai_client(server)
    with metrics.track("openai", model, operation="responses") as call:
        response = client.responses.create(model=model, input="Hi")
        call.usage(response)
        call.tool_calls(response.output)  # reasoning and message items are not tools
    plain = variant == "-plain"
    expected = EXPECTED_PLAIN["openai-responses"] if plain else EXPECTED["openai-responses"]
    assert_recorded(metrics, model, expected, tools=TOOLS if variant == "-tools" else ())
    assert tool_call_names(response) == (list(TOOLS) if variant == "-tools" else [])


def test_openai_responses_stream_events_and_helper(server):
    model = "gpt-resp-tools"
    metrics = fresh(model)
    client = openai_client(server)
    with metrics.track("openai", model, operation="responses") as call:
        for event in client.responses.create(model=model, input="Hi", stream=True):
            call.usage(event)  # response.completed carries the usage
            call.tool_calls(event)
    assert_recorded(metrics, model, EXPECTED["openai-responses"], tools=TOOLS)
    helper = fresh(model)
    with (
        helper.track("openai", model, operation="responses") as call,
        client.responses.stream(model=model, input="Hi") as stream,
    ):
        for _ in stream:
            pass
        final = stream.get_final_response()
        call.usage(final)
        call.tool_calls(final)
    assert_recorded(helper, model, EXPECTED["openai-responses"], tools=TOOLS)


# ------------------------------------------------------------------- Anthropic


@pytest.mark.parametrize("variant", ["", "-tools", "-plain"])
def test_anthropic_message(server, variant):
    model = f"claude-test{variant}"
    metrics = fresh(model)
    client = anthropic_client(server)
    with metrics.track("anthropic", model) as call:
        message = client.messages.create(model=model, max_tokens=100, messages=MESSAGES)
        call.usage(message)
        call.tool_calls(message.content)  # thinking and text blocks are not tools
    expected = EXPECTED_PLAIN["anthropic"] if variant == "-plain" else EXPECTED["anthropic"]
    assert_recorded(metrics, model, expected, tools=TOOLS if variant == "-tools" else ())


@pytest.mark.parametrize("variant", ["", "-tools"])
def test_anthropic_raw_stream_merges_start_and_deltas(server, variant):
    model = f"claude-test{variant}"
    metrics = fresh(model)
    client = anthropic_client(server)
    with metrics.track("anthropic", model) as call:
        for event in client.messages.create(
            model=model, max_tokens=100, messages=MESSAGES, stream=True
        ):
            if event.type == "content_block_delta":
                call.first_token()
            call.usage(event)  # message_start's input side stays when message_delta's is None
            call.tool_calls(event)
    assert_recorded(metrics, model, EXPECTED["anthropic"], tools=TOOLS if variant else (), ttft=1.0)


def test_anthropic_stream_helper_async(server):
    model = "claude-test-tools"
    metrics = fresh(model)
    client = anthropic_client(server, asynchronous=True)

    async def main() -> None:
        async with metrics.track("anthropic", model) as call:
            async with client.messages.stream(
                model=model, max_tokens=100, messages=MESSAGES
            ) as stream:
                async for _ in stream.text_stream:
                    call.first_token()
                message = await stream.get_final_message()
            call.usage(message)
            call.tool_calls(message)
        await client.close()

    asyncio.run(main())
    assert_recorded(metrics, model, EXPECTED["anthropic"], tools=TOOLS, ttft=1.0)


def test_anthropic_async_stream_cancelled_midway(server):
    model = "claude-test-slow"
    metrics = fresh(model)
    client = anthropic_client(server, asynchronous=True)

    async def consume(first: asyncio.Event) -> None:
        async with metrics.track("anthropic", model) as call:
            stream = await client.messages.create(
                model=model, max_tokens=100, messages=MESSAGES, stream=True
            )
            async for event in stream:
                call.first_token()
                call.usage(event)
                first.set()

    cancel_after_first_chunk(consume)
    # message_start's input side arrived before the cancellation, and is kept.
    assert_recorded(
        metrics,
        model,
        {"input": 600, "output": 1, "cache_read": 500, "cache_write": 80},
        status="cancelled",
        ttft=1.0,
    )


def test_anthropic_error_event_midstream_and_refusals(server):
    model = "claude-test-midstream"
    metrics = fresh(model)
    client = anthropic_client(server)
    with pytest.raises(anthropic.APIStatusError), metrics.track("anthropic", model) as call:  # noqa: PT012
        for event in client.messages.create(
            model=model, max_tokens=100, messages=MESSAGES, stream=True
        ):
            call.usage(event)
    # The input side was reported before the error, and is kept.
    assert_recorded(
        metrics,
        model,
        {"input": 600, "output": 1, "cache_read": 500, "cache_write": 80},
        status="error",
    )
    refused = fresh("error-429")
    with pytest.raises(anthropic.RateLimitError), refused.track("anthropic", "error-429"):
        client.messages.create(model="error-429", max_tokens=10, messages=MESSAGES)
    assert_recorded(refused, "error-429", {}, status="error")


# ---------------------------------------------------------------------- Google


@pytest.mark.parametrize("variant", ["", "-tools", "-plain"])
def test_google_generate_content(server, variant):
    model = f"gemini-test{variant}"
    metrics = fresh(model)
    client = google_client(server)
    with metrics.track("google", model) as call:
        response = client.models.generate_content(model=model, contents="Hi")
        call.usage(response)
        call.tool_calls(response)  # text and thought parts are not tools
    expected = EXPECTED_PLAIN["google"] if variant == "-plain" else EXPECTED["google"]
    assert_recorded(metrics, model, expected, tools=TOOLS if variant == "-tools" else ())
    if variant == "-tools":
        assert tool_call_names(response.function_calls) == list(TOOLS)


def test_google_stream_sync_and_async(server):
    model = "gemini-test-tools"
    metrics = fresh(model)
    client = google_client(server)
    with metrics.track("google", model) as call:
        for chunk in client.models.generate_content_stream(model=model, contents="Hi"):
            call.first_token()
            call.usage(chunk)  # the last chunk carries the totals
            call.tool_calls(chunk)
    assert_recorded(metrics, model, EXPECTED["google"], tools=TOOLS, ttft=1.0)

    async def main() -> GatewayMetricsMiddleware:
        later = fresh(model)
        async with later.track("google", model) as call:
            async for chunk in await client.aio.models.generate_content_stream(
                model=model, contents="Hi"
            ):
                call.usage(chunk)
                call.tool_calls(chunk)
        return later

    assert_recorded(asyncio.run(main()), model, EXPECTED["google"], tools=TOOLS)


def test_google_async_stream_cancelled_midway(server):
    model = "gemini-test-slow"
    metrics = fresh(model)
    client = google_client(server)

    async def consume(first: asyncio.Event) -> None:
        async with metrics.track("google", model) as call:
            async for chunk in await client.aio.models.generate_content_stream(
                model=model, contents="Hi"
            ):
                call.first_token()
                call.usage(chunk)
                first.set()

    cancel_after_first_chunk(consume)
    # The first chunk's running prompt count arrived before the cancellation.
    assert_recorded(metrics, model, {"input": 400}, status="cancelled", ttft=1.0)


def test_google_errors(server):
    for model in ("error-429", "error-500", "gemini-test-midstream"):
        metrics = fresh(model)
        client = google_client(server)
        with pytest.raises(genai.errors.APIError), metrics.track("google", model) as call:  # noqa: PT012
            for chunk in client.models.generate_content_stream(model=model, contents="Hi"):
                call.usage(chunk)
        found = recorded(metrics, model)
        assert found["requests"] == {"error": 1.0}
        expected = {"input": 400.0} if "midstream" in model else {}
        assert found["tokens"] == expected


def test_usage_and_tool_names_read_dicts_of_every_shape(caplog):
    caplog.set_level(logging.WARNING)
    from providers import ANTHROPIC_USAGE, OPENAI_CHAT_USAGE, OPENAI_RESPONSES_USAGE

    assert usage_from({"usage": OPENAI_CHAT_USAGE}).counts() == {
        **NO_AUDIO,
        **EXPECTED["openai-chat"],
    }
    assert usage_from(OPENAI_RESPONSES_USAGE).counts() == {
        **NO_AUDIO,
        **EXPECTED["openai-responses"],
    }
    assert usage_from({"type": "message", "usage": ANTHROPIC_USAGE}).counts() == {
        **NO_AUDIO,
        **EXPECTED["anthropic"],
    }
    google = {
        "prompt_token_count": 400,
        "cached_content_token_count": 100,
        "candidates_token_count": 60,
        "thoughts_token_count": 40,
        "tool_use_prompt_token_count": 25,
    }
    assert usage_from({"usage_metadata": google}).counts() == {**NO_AUDIO, **EXPECTED["google"]}
    start = {"type": "message_start", "message": {"usage": {**ANTHROPIC_USAGE, "output_tokens": 1}}}
    delta = {"type": "message_delta", "usage": {"input_tokens": None, "output_tokens": 70}}
    assert usage_from(start).merged(usage_from(delta)).counts() == {
        **NO_AUDIO,
        **EXPECTED["anthropic"],
        "reasoning": 30,
    }
    assert usage_from({"usage": None}) == Usage()
    with pytest.raises(TypeError, match="does not know the shape"):
        usage_from({"tokens": 5})
    items = [
        {"type": "reasoning", "summary": []},
        {"type": "message", "content": []},
        {"type": "function_call", "name": "search", "call_id": "c1"},
        {"type": "web_search_call", "id": "ws1"},
        {"type": "text", "text": "x"},
        {"type": "tool_use", "id": "t1", "name": "calculator"},
        {"function": {"name": "lookup"}},
        {"index": 0, "function": {"arguments": "{}"}},
        {"name": ""},
    ]
    assert tool_call_names(items) == ["search", "web_search", "calculator", "lookup", "unknown"]
