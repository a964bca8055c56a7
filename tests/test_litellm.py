"""``GatewayMetricsLogger`` inside real LiteLLM calls to the local provider server.

LiteLLM (``completion`` and ``acompletion``, streamed and not, OpenAI and
Anthropic routes) calls the logger's hooks itself; the middleware must then
hold exactly what the server reported, each call once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

# LiteLLM fetches a price list from the network when imported unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm", reason="the test dependency group installs LiteLLM")
openai = pytest.importorskip("openai", reason="the test dependency group installs the SDKs")

from gateway_metrics import GatewayMetricsMiddleware  # noqa: E402
from gateway_metrics.integrations.litellm import GatewayMetricsLogger  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from providers import ERROR_FORMS, EXPECTED, TOOLS, ProviderServer  # noqa: E402
from test_sdks import PRICE, recorded  # noqa: E402

MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as running:
        yield running


@pytest.fixture
def logged() -> Iterator[GatewayMetricsMiddleware]:
    metrics = GatewayMetricsMiddleware(
        registry=CollectorRegistry(),
        extra_labels=["team"],
        price_table=dict.fromkeys(
            ["gpt-chat", "gpt-chat-tools", "claude-test", "claude-test-tools", "error-500"], PRICE
        ),
    )
    logger = GatewayMetricsLogger(metrics, labels={"team": "team_alias"})
    litellm.callbacks = [logger]
    try:
        yield metrics
    finally:
        # LiteLLM copies callbacks into lists of its own on first use.
        litellm.logging_callback_manager.remove_callback_from_all_lists(logger)


def settle(metrics: GatewayMetricsMiddleware, model: str, requests: float) -> dict:
    """What ``metrics`` holds for ``model`` once LiteLLM's logging (which may run
    after the call returns, in its own worker) has recorded ``requests`` calls."""
    deadline = time.monotonic() + 10
    found = recorded(metrics, model)
    while sum(found["requests"].values()) < requests and time.monotonic() < deadline:
        time.sleep(0.02)
        found = recorded(metrics, model)
    time.sleep(0.2)  # and no second recording of the same call follows
    return recorded(metrics, model)


def operations(metrics: GatewayMetricsMiddleware, model: str) -> set[str]:
    """The ``operation`` labels of ``model``'s requests."""
    return {
        sample.labels["operation"]
        for family in text_string_to_metric_families(metrics.generate_latest())
        for sample in family.samples
        if sample.name == "ractogateway_requests_total" and sample.labels["model"] == model
    }


def route(server: ProviderServer, provider: str) -> dict:
    if provider == "openai":
        return {"api_base": f"{server.url}/v1", "api_key": "test"}
    return {"api_base": server.url, "api_key": "test"}


def expected_tokens(provider: str) -> dict:
    counts = EXPECTED["openai-chat" if provider == "openai" else "anthropic"]
    return {kind: float(count) for kind, count in counts.items() if count}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
def test_completion_is_recorded_once_with_every_number(server, logged, provider, stream):
    model = "gpt-chat-tools" if provider == "openai" else "claude-test-tools"
    options = {"stream_options": {"include_usage": True}} if stream else {}
    response = litellm.completion(
        model=f"{provider}/{model}",
        messages=MESSAGES,
        stream=stream,
        metadata={"team_alias": "search-team"},
        max_tokens=100,
        **route(server, provider),
        **options,
    )
    if stream:
        for _ in response:
            pass
    found = settle(logged, model, 1)
    assert found["requests"] == {"ok": 1.0}
    # The gateway kits' words: a streamed chat call is "stream".
    assert operations(logged, model) == {"stream" if stream else "chat"}
    assert found["tokens"] == expected_tokens(provider)
    assert found["tools"] == dict.fromkeys(TOOLS, 1.0)
    # LiteLLM reports a non-streamed call's end as its first token: not a TTFT.
    assert found["ttft"] == (1.0 if stream else 0.0)
    counts = EXPECTED["openai-chat" if provider == "openai" else "anthropic"]
    cost = (
        (counts["input"] - counts["cache_read"] - counts["cache_write"]) * 2.0
        + counts["cache_read"] * 0.5
        + counts["cache_write"] * 2.5
        + counts["output"] * 8.0
    ) / 1e6
    assert found["cost"] == pytest.approx(cost, rel=1e-12)
    assert 'team="search-team"' in logged.generate_latest()


@pytest.mark.parametrize("stream", [False, True])
def test_acompletion_is_recorded_once(server, logged, stream):
    async def main() -> None:
        response = await litellm.acompletion(
            model="openai/gpt-chat",
            messages=MESSAGES,
            stream=stream,
            stream_options={"include_usage": True} if stream else None,
            **route(server, "openai"),
        )
        if stream:
            async for _ in response:
                pass
        # LiteLLM logs async calls from a task of this loop: let it run.
        for _ in range(500):
            if recorded(logged, "gpt-chat")["requests"]:
                break
            await asyncio.sleep(0.02)

    asyncio.run(main())
    found = settle(logged, "gpt-chat", 1)
    assert found["requests"] == {"ok": 1.0}
    assert found["tokens"] == expected_tokens("openai")
    assert found["ttft"] == (1.0 if stream else 0.0)


@pytest.mark.parametrize(
    ("provider", "form"),
    [
        (provider, form)
        for provider in ("openai", "anthropic")
        for form in ("500", "429", "context", "401")
    ],
)
def test_a_failed_call_is_recorded_as_an_error_of_its_type(server, logged, provider, form):
    model = f"error-{form}"
    with pytest.raises(openai.APIError):  # every LiteLLM error is one
        litellm.completion(
            model=f"{provider}/{model}", messages=MESSAGES, num_retries=0, **route(server, provider)
        )
    found = settle(logged, model, 1)
    assert found["requests"] == {"error": 1.0}
    assert found["tokens"] == {}
    errors = {
        sample.labels["error_type"]: sample.value
        for family in text_string_to_metric_families(logged.generate_latest())
        for sample in family.samples
        if sample.name == "ractogateway_request_errors_total" and sample.labels["model"] == model
    }
    assert errors == {ERROR_FORMS[form][0]: 1.0}


def test_labels_must_be_extra_labels_of_the_middleware():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with pytest.raises(ValueError, match="not among the middleware's extra labels"):
        GatewayMetricsLogger(metrics, labels={"team": "user_api_key_team_alias"})


@pytest.mark.parametrize("stream", [False, True])
def test_a_script_that_returns_right_after_acompletion_is_recorded(server, stream):
    """asyncio.run(main()) where main returns at once: LiteLLM's callback task
    would be cancelled by the closing loop; the logger has the loop flush it."""
    script = textwrap.dedent(
        f"""
        import asyncio
        import litellm
        from prometheus_client import CollectorRegistry
        from gateway_metrics import GatewayMetricsMiddleware
        from gateway_metrics.integrations.litellm import GatewayMetricsLogger

        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
        litellm.callbacks = [GatewayMetricsLogger(metrics)]

        async def main():
            response = await litellm.acompletion(
                model="openai/gpt-chat", messages=[{{"role": "user", "content": "Hi"}}],
                api_base="{server.url}/v1", api_key="test", stream={stream},
                stream_options={{"include_usage": True}} if {stream} else None)
            if {stream}:
                async for _ in response:
                    pass

        asyncio.run(main())
        print([line for line in metrics.generate_latest().splitlines()
               if line.startswith("ractogateway_requests_total{{")])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    operation = "stream" if stream else "chat"
    expected = (
        f'ractogateway_requests_total{{model="gpt-chat",operation="{operation}",'
        f'provider="openai",status="ok"}} 1.0'
    )
    assert done.stdout.strip() == repr([expected]), done.stdout + done.stderr[-2000:]
    assert "Event loop is closed" not in done.stderr


def test_an_embedding_is_recorded_as_embed():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    logger = GatewayMetricsLogger(metrics)
    for call_type in ("embedding", "aembedding"):
        logger.log_success_event(
            {
                "call_type": call_type,
                "model": "text-embedding-3-small",
                "litellm_params": {"custom_llm_provider": "openai"},
            },
            None,
            1_700_000_000.0,
            1_700_000_000.5,
        )
    assert operations(metrics, "text-embedding-3-small") == {"embed"}


def test_a_streamed_call_is_in_flight_until_it_ends(server, logged):
    def in_flight() -> float:
        return sum(
            sample.value
            for family in text_string_to_metric_families(logged.generate_latest())
            for sample in family.samples
            if sample.name == "ractogateway_requests_in_flight"
        )

    stream = litellm.completion(
        model="openai/gpt-chat-slow",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        **route(server, "openai"),
    )
    next(iter(stream))
    assert in_flight() == 1
    for _ in stream:
        pass
    deadline = time.monotonic() + 10
    while in_flight() != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert in_flight() == 0
    settle(logged, "gpt-chat-slow", 1)
