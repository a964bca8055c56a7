"""``metrics.instrument(client)`` with the real SDKs against the local provider server.

Every call form records what ``track()`` records for it (``test_sdks.py``
checks ``track()`` against the same server's numbers, ``providers.EXPECTED``):
one request, the operation, the status, every token type, the tool calls and a
time to first token for streams; errors by type for every error form the
server answers; the caller gets the SDK's own objects and exceptions; and
``uninstrument`` restores the class's methods.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from gateway_metrics import ERROR_TYPES, GatewayMetricsMiddleware, error_type_of
from gateway_metrics import _track as track_module
from gateway_metrics._instrument import _SDKS, _resource, is_instrumented
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from providers import EMBEDDING_TOKENS, ERROR_FORMS, EXPECTED, TOOLS, ProviderServer

openai = pytest.importorskip("openai", reason="the test dependency group installs the SDKs")
anthropic = pytest.importorskip("anthropic", reason="the test dependency group installs the SDKs")
genai = pytest.importorskip("google.genai", reason="the test dependency group installs the SDKs")

MESSAGES = [{"role": "user", "content": "Hi"}]
INCLUDE_USAGE = {"include_usage": True}


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as running:
        yield running


def fresh() -> GatewayMetricsMiddleware:
    return GatewayMetricsMiddleware(registry=CollectorRegistry())


def clients(server: ProviderServer, *, timeout: float | None = None, url: str | None = None):
    """A new client of each SDK (sync, async), not instrumented."""
    base = url or server.url
    options: dict[str, Any] = {"max_retries": 0}
    if timeout is not None:
        options["timeout"] = timeout
    google_options = genai.types.HttpOptions(
        base_url=base,
        retry_options=genai.types.HttpRetryOptions(attempts=1),
        timeout=None if timeout is None else int(timeout * 1000),
    )
    return {
        "openai": openai.OpenAI(base_url=f"{base}/v1", api_key="test", **options),
        "openai-async": openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="test", **options),
        "anthropic": anthropic.Anthropic(base_url=base, api_key="test", **options),
        "anthropic-async": anthropic.AsyncAnthropic(base_url=base, api_key="test", **options),
        "google": genai.Client(api_key="test", http_options=google_options),
    }


def samples(metrics: GatewayMetricsMiddleware) -> dict[tuple[str, tuple], float]:
    """Every counter sample and histogram count, by name and labels (no timings)."""
    found = {}
    for family in text_string_to_metric_families(metrics.generate_latest()):
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_sum", "_created")):
                continue
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def expected_samples(
    provider: str,
    model: str,
    operation: str,
    counts: dict[str, int],
    *,
    status: str = "ok",
    tools: tuple[str, ...] = (),
    streamed: bool = False,
    error_type: str | None = None,
) -> dict[tuple[str, tuple], float]:
    """What ``track()`` records for one such call."""
    request = (("model", model), ("operation", operation), ("provider", provider))
    found = {
        (
            "ractogateway_requests_total",
            tuple(sorted((*request, ("status", status)))),
        ): 1.0,
        ("ractogateway_request_duration_seconds_count", request): 1.0,
        # Raised while the call ran, lowered when it ended.
        ("ractogateway_requests_in_flight", request): 0.0,
    }
    for token_type, count in counts.items():
        if count:
            labels = (("model", model), ("provider", provider), ("token_type", token_type))
            found[("ractogateway_tokens_total", labels)] = float(count)
    for name in tools:
        found[("ractogateway_tool_calls_total", (("tool_name", name),))] = 1.0
    if streamed:
        found[("ractogateway_time_to_first_token_seconds_count", request)] = 1.0
        if counts.get("output", 0) >= 2:
            found[("ractogateway_time_per_output_token_seconds_count", request)] = 1.0
    if error_type is not None:
        labels = tuple(sorted((*request, ("error_type", error_type))))
        found[("ractogateway_request_errors_total", labels)] = 1.0
    return found


# ----------------------------------------------------------------- call forms


def openai_chat(client, model):
    return client.chat.completions.create(model=model, messages=MESSAGES)


def openai_chat_stream(client, model):
    stream = client.chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options=INCLUDE_USAGE
    )
    assert isinstance(stream, openai.Stream)
    return [chunk.model_dump() for chunk in stream]


def openai_chat_helper(client, model):
    with client.chat.completions.stream(
        model=model, messages=MESSAGES, stream_options=INCLUDE_USAGE
    ) as stream:
        return [event.type for event in stream]


def openai_responses(client, model):
    return client.responses.create(model=model, input="Hi")


def openai_responses_stream(client, model):
    return [event.type for event in client.responses.create(model=model, input="Hi", stream=True)]


def openai_responses_helper(client, model):
    with client.responses.stream(model=model, input="Hi") as stream:
        return [event.type for event in stream]


def openai_embed(client, model):
    return client.embeddings.create(model=model, input="Hi")


async def openai_chat_async(client, model):
    return await client.chat.completions.create(model=model, messages=MESSAGES)


async def openai_chat_stream_async(client, model):
    stream = await client.chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options=INCLUDE_USAGE
    )
    assert isinstance(stream, openai.AsyncStream)
    return [chunk.model_dump() async for chunk in stream]


async def openai_chat_helper_async(client, model):
    async with client.chat.completions.stream(
        model=model, messages=MESSAGES, stream_options=INCLUDE_USAGE
    ) as stream:
        return [event.type async for event in stream]


async def openai_responses_stream_async(client, model):
    stream = await client.responses.create(model=model, input="Hi", stream=True)
    return [event.type async for event in stream]


def anthropic_create(client, model):
    return client.messages.create(model=model, max_tokens=64, messages=MESSAGES)


def anthropic_stream(client, model):
    stream = client.messages.create(model=model, max_tokens=64, messages=MESSAGES, stream=True)
    return [event.model_dump() for event in stream]


def anthropic_helper(client, model):
    with client.messages.stream(model=model, max_tokens=64, messages=MESSAGES) as stream:
        return [event.type for event in stream]


async def anthropic_create_async(client, model):
    return await client.messages.create(model=model, max_tokens=64, messages=MESSAGES)


async def anthropic_stream_async(client, model):
    stream = await client.messages.create(
        model=model, max_tokens=64, messages=MESSAGES, stream=True
    )
    return [event.model_dump() async for event in stream]


async def anthropic_helper_async(client, model):
    async with client.messages.stream(model=model, max_tokens=64, messages=MESSAGES) as stream:
        return [event.type async for event in stream]


def google_generate(client, model):
    return client.models.generate_content(model=model, contents="Hi")


def google_stream(client, model):
    return [
        chunk.model_dump()
        for chunk in client.models.generate_content_stream(model=model, contents="Hi")
    ]


def google_embed(client, model):
    return client.models.embed_content(model=model, contents="Hi")


async def google_generate_async(client, model):
    return await client.aio.models.generate_content(model=model, contents="Hi")


async def google_stream_async(client, model):
    stream = await client.aio.models.generate_content_stream(model=model, contents="Hi")
    return [chunk.model_dump() async for chunk in stream]


async def google_embed_async(client, model):
    return await client.aio.models.embed_content(model=model, contents="Hi")


#: (client, call, operation, what the provider reports, streamed).
FORMS = {
    "openai-chat": ("openai", openai_chat, "chat", "openai-chat", False),
    "openai-chat-stream": ("openai", openai_chat_stream, "stream", "openai-chat", True),
    "openai-chat-helper": ("openai", openai_chat_helper, "stream", "openai-chat", True),
    "openai-responses": ("openai", openai_responses, "chat", "openai-responses", False),
    "openai-responses-stream": (
        "openai",
        openai_responses_stream,
        "stream",
        "openai-responses",
        True,
    ),
    "openai-responses-helper": (
        "openai",
        openai_responses_helper,
        "stream",
        "openai-responses",
        True,
    ),
    "openai-embed": ("openai", openai_embed, "embed", "embed", False),
    "openai-chat-async": ("openai-async", openai_chat_async, "chat", "openai-chat", False),
    "openai-chat-stream-async": (
        "openai-async",
        openai_chat_stream_async,
        "stream",
        "openai-chat",
        True,
    ),
    "openai-chat-helper-async": (
        "openai-async",
        openai_chat_helper_async,
        "stream",
        "openai-chat",
        True,
    ),
    "openai-responses-stream-async": (
        "openai-async",
        openai_responses_stream_async,
        "stream",
        "openai-responses",
        True,
    ),
    "anthropic-create": ("anthropic", anthropic_create, "chat", "anthropic", False),
    "anthropic-stream": ("anthropic", anthropic_stream, "stream", "anthropic", True),
    "anthropic-helper": ("anthropic", anthropic_helper, "stream", "anthropic", True),
    "anthropic-create-async": (
        "anthropic-async",
        anthropic_create_async,
        "chat",
        "anthropic",
        False,
    ),
    "anthropic-stream-async": (
        "anthropic-async",
        anthropic_stream_async,
        "stream",
        "anthropic",
        True,
    ),
    "anthropic-helper-async": (
        "anthropic-async",
        anthropic_helper_async,
        "stream",
        "anthropic",
        True,
    ),
    "google-generate": ("google", google_generate, "chat", "google", False),
    "google-stream": ("google", google_stream, "stream", "google", True),
    "google-embed": ("google", google_embed, "embed", None, False),
    "google-generate-async": ("google", google_generate_async, "chat", "google", False),
    "google-stream-async": ("google", google_stream_async, "stream", "google", True),
    "google-embed-async": ("google", google_embed_async, "embed", None, False),
}


def run(call, client, model):
    result = call(client, model)
    if asyncio.iscoroutine(result):
        return asyncio.run(result)
    return result


def without_http_response(items: list) -> list:
    """Stream items without the HTTP response google-genai copies into each: its
    Date header differs between two calls a second boundary apart."""
    return [
        {key: value for key, value in item.items() if key != "sdk_http_response"}
        if isinstance(item, dict)
        else item
        for item in items
    ]


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("with_tools", [False, True], ids=["plain", "tools"])
def test_every_call_form_is_recorded_once_as_track_records_it(server, form, with_tools):
    kind, call, operation, reported, streamed = FORMS[form]
    if with_tools and operation == "embed":
        pytest.skip("embeddings have no tool calls")
    provider = kind.removesuffix("-async")
    model = f"{provider}-{form}" + ("-tools" if with_tools else "")
    metrics = fresh()
    client = metrics.instrument(clients(server)[kind])
    bare = run(call, clients(server)[kind], model)
    got = run(call, client, model)
    # The caller gets what the SDK gives: the same type, the same content.
    assert type(got) is type(bare)
    if isinstance(bare, list):
        assert without_http_response(got) == without_http_response(bare)
    counts = (
        {"input": EMBEDDING_TOKENS}
        if reported == "embed"
        else ({} if reported is None else EXPECTED[reported])
    )
    assert samples(metrics) == expected_samples(
        provider,
        model,
        operation,
        counts,
        tools=TOOLS if with_tools else (),
        streamed=streamed,
    )


def _error_cases():
    for form, (error_type, answers) in sorted(ERROR_FORMS.items()):
        for provider in sorted(answers):
            yield pytest.param(provider, form, error_type, id=f"{provider}-{form}")


@pytest.mark.parametrize(("provider", "form", "error_type"), list(_error_cases()))
@pytest.mark.parametrize("streamed", [False, True], ids=["call", "stream"])
def test_every_error_form_is_recorded_with_its_type(server, provider, form, error_type, streamed):
    model = f"error-{form}"
    call = {
        ("openai", False): openai_chat,
        ("openai", True): openai_chat_stream,
        ("anthropic", False): anthropic_create,
        ("anthropic", True): anthropic_stream,
        ("google", False): google_generate,
        ("google", True): google_stream,
    }[(provider, streamed)]
    metrics = fresh()
    client = metrics.instrument(clients(server)[provider])
    with pytest.raises(Exception) as bare:  # noqa: PT011 - the SDK's own exception
        run(call, clients(server)[provider], model)
    with pytest.raises(type(bare.value)) as instrumented:
        run(call, client, model)
    assert str(instrumented.value) == str(bare.value)
    assert error_type_of(bare.value) == error_type
    operation = "stream" if streamed else "chat"
    assert samples(metrics) == expected_samples(
        provider, model, operation, {}, status="error", error_type=error_type
    )


MIDSTREAM = {
    # The first chunk's running prompt count arrives before the error.
    "openai": (openai_chat_stream, {}),
    "openai-responses": (openai_responses_stream, {}),
    # Anthropic's message_start reports its first output token.
    "anthropic": (
        anthropic_stream,
        {"input": 600, "cache_read": 500, "cache_write": 80, "output": 1},
    ),
    "google": (google_stream, {"input": 400}),
}


@pytest.mark.parametrize("case", sorted(MIDSTREAM))
def test_an_error_mid_stream_is_a_server_error(server, case):
    call, counts = MIDSTREAM[case]
    provider = case.split("-")[0]
    model = f"{provider}-midstream"
    metrics = fresh()
    client = metrics.instrument(clients(server)[provider])
    if case == "openai-responses":
        # The Responses stream reports its error as an event, not an exception.
        assert "error" in run(call, client, model)
    else:
        with pytest.raises((openai.APIError, anthropic.APIError, genai.errors.APIError)):
            run(call, client, model)
    found = samples(metrics)
    expected = expected_samples(
        provider, model, "stream", counts, status="error", error_type="server_error"
    )
    ttft = ("ractogateway_time_to_first_token_seconds_count",)
    # Whether a first token came before the error depends on the provider's first event.
    assert {k: v for k, v in found.items() if k[:1] != ttft} == {
        k: v for k, v in expected.items() if k[:1] != ttft
    }


def test_timeouts_and_refused_connections_are_typed(server):
    metrics = fresh()
    for provider, call in (
        ("openai", openai_chat),
        ("anthropic", anthropic_create),
        ("google", google_generate),
    ):
        client = metrics.instrument(clients(server, timeout=0.3)[provider])
        with pytest.raises(Exception) as timed_out:  # noqa: PT011
            run(call, client, f"{provider}-hang")
        assert error_type_of(timed_out.value) == "timeout", repr(timed_out.value)
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        refused = metrics.instrument(clients(server, url=url)[provider])
        with pytest.raises(Exception) as unreachable:  # noqa: PT011
            run(call, refused, f"{provider}-refused")
        assert error_type_of(unreachable.value) == "connection", repr(unreachable.value)
    errors = {
        (labels["provider"], labels["error_type"])
        for (name, pairs), value in samples(metrics).items()
        if name == "ractogateway_request_errors_total"
        for labels in [dict(pairs)]
        if value == 1.0
    }
    assert errors == {
        (provider, kind)
        for provider in ("openai", "anthropic", "google")
        for kind in ("timeout", "connection")
    }


def test_a_stream_closed_early_is_cancelled(server):
    metrics = fresh()
    client = metrics.instrument(clients(server)["openai"])
    stream = client.chat.completions.create(
        model="openai-slow", messages=MESSAGES, stream=True, stream_options=INCLUDE_USAGE
    )
    next(iter(stream))
    stream.close()
    del stream
    anthropic_client = metrics.instrument(clients(server)["anthropic"])
    with anthropic_client.messages.stream(
        model="anthropic-slow", max_tokens=64, messages=MESSAGES
    ) as events:
        next(iter(events))
    del events
    found = samples(metrics)
    for provider in ("openai", "anthropic"):
        request = (("model", f"{provider}-slow"), ("operation", "stream"), ("provider", provider))
        status = tuple(sorted((*request, ("status", "cancelled"))))
        assert found[("ractogateway_requests_total", status)] == 1.0
        errors = tuple(sorted((*request, ("error_type", "cancelled"))))
        assert found[("ractogateway_request_errors_total", errors)] == 1.0


def test_a_cancelled_task_is_cancelled(server):
    metrics = fresh()
    client = metrics.instrument(clients(server)["anthropic-async"])

    async def main() -> None:
        first = asyncio.Event()

        async def consume() -> None:
            stream = await client.messages.create(
                model="anthropic-slow", max_tokens=64, messages=MESSAGES, stream=True
            )
            async for _event in stream:
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    request = (("model", "anthropic-slow"), ("operation", "stream"), ("provider", "anthropic"))
    found = samples(metrics)
    assert (
        found[("ractogateway_requests_total", tuple(sorted((*request, ("status", "cancelled")))))]
        == 1.0
    )


def test_uninstrument_restores_the_class_methods(server):
    metrics = fresh()
    for kind, client in clients(server).items():
        provider = kind.removesuffix("-async")
        assert metrics.instrument(client) is client
        assert is_instrumented(client)
        with pytest.raises(ValueError, match="instrumented already"):
            metrics.instrument(client)
        assert metrics.uninstrument(client) is client
        assert not is_instrumented(client)
        for method in _SDKS[provider][1]:
            owner = _resource(client, method.path)
            if owner is None:
                continue
            name = method.path[-1]
            assert name not in vars(owner)
            bound = getattr(owner, name)
            assert bound.__func__ is getattr(type(owner), name)
        with pytest.raises(ValueError, match="not instrumented"):
            metrics.uninstrument(client)
    with pytest.raises(TypeError, match="instrument\\(\\) takes"):
        metrics.instrument(object())


def test_only_that_client_is_changed(server):
    metrics = fresh()
    made = clients(server)
    metrics.instrument(made["openai"])
    other = clients(server)["openai"]
    openai_chat(other, "other-model")
    assert samples(metrics) == {}
    assert "create" not in vars(other.chat.completions)


def test_our_failure_never_reaches_the_caller(server, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="gateway_metrics")
    metrics = fresh()
    client = metrics.instrument(clients(server)["openai"])

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("recording broke")

    monkeypatch.setattr(track_module, "record_counted", broken)
    response = openai_chat(client, "openai-chat")
    assert response.usage.prompt_tokens == 1200
    chunks = openai_chat_stream(client, "openai-chat")
    assert chunks
    assert "recording broke" in caplog.text
    assert {name for name, _labels in samples(metrics)} == {"ractogateway_requests_in_flight"}


def test_error_type_of_never_raises_and_stays_in_the_vocabulary():
    class HostileError(Exception):
        @property
        def status_code(self) -> int:
            raise RuntimeError("no")

        def __str__(self) -> str:
            raise RuntimeError("no")

    assert error_type_of(HostileError()) == "other"
    assert error_type_of(asyncio.CancelledError()) == "cancelled"
    assert error_type_of(TimeoutError()) == "timeout"
    assert error_type_of(ConnectionResetError()) == "connection"
    assert error_type_of(ValueError("x")) == "other"
    assert set(ERROR_TYPES) >= {error_type for error_type, _ in ERROR_FORMS.values()}


def test_a_call_is_in_flight_from_its_start_to_its_streams_end(server):
    metrics = fresh()
    client = metrics.instrument(clients(server)["openai"])

    def in_flight() -> float | None:
        return metrics.registry.get_sample_value(
            "ractogateway_requests_in_flight",
            {"provider": "openai", "model": "openai-slow", "operation": "stream"},
        )

    stream = client.chat.completions.create(
        model="openai-slow", messages=MESSAGES, stream=True, stream_options=INCLUDE_USAGE
    )
    assert in_flight() == 1
    chunks = sum(1 for _ in stream)
    assert chunks > 1 and in_flight() == 0
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="error-429", messages=MESSAGES)
    assert (
        metrics.registry.get_sample_value(
            "ractogateway_requests_in_flight",
            {"provider": "openai", "model": "error-429", "operation": "chat"},
        )
        == 0
    )


def test_an_sdk_shape_it_does_not_know_is_read_in_full_and_warned_once(server, caplog):
    """As a newer SDK version's objects would be: the reader that fails falls
    back to reading each item as track() reads it, with one warning."""
    from gateway_metrics import _instrument

    caplog.set_level(logging.WARNING, logger="gateway_metrics")
    chunks = list(
        clients(server)["openai"].chat.completions.create(
            model="openai-chat", messages=MESSAGES, stream=True, stream_options=INCLUDE_USAGE
        )
    )
    metrics = fresh()

    def unknown(watch, item):
        raise AttributeError("no such field")

    call = _instrument._start(metrics, "openai", _instrument._OPENAI[0], True, "shape")
    assert list(_instrument._observed(iter(chunks), _instrument._Watch(call, unknown))) == chunks
    assert caplog.text.count("could not be read") == 1
    response = openai_chat(clients(server)["openai"], "openai-chat")
    broken = _instrument._Method(("x",), "chat", "chat", "", None, unknown)
    later = _instrument._start(metrics, "openai", broken, False, "shape-response")
    _instrument._ended(later, response, broken)
    call_without_stream = _instrument._start(metrics, "openai", broken, True, "no-stream")
    assert _instrument._watch_stream(
        object(), _instrument._Watch(call_without_stream, unknown), False
    )
    found = samples(metrics)
    for model, operation in (("shape", "stream"), ("shape-response", "chat")):
        labels = (("model", model), ("provider", "openai"), ("token_type", "input"))
        assert found[("ractogateway_tokens_total", labels)] == 1200.0, model
        request = (("model", model), ("operation", operation), ("provider", "openai"))
        assert found[("ractogateway_requests_total", (*request, ("status", "ok")))] == 1.0
    no_stream = (("model", "no-stream"), ("operation", "chat"), ("provider", "openai"))
    assert found[("ractogateway_requests_total", (*no_stream, ("status", "ok")))] == 1.0
    assert "cannot be observed" in caplog.text
