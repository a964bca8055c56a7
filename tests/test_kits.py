"""The real ractogateway kits with ``metrics=GatewayMetricsMiddleware(...)``.

Each kit's provider adapter is replaced by one returning a canned response (or
raising), as the kits' own tests do; everything else is the kits' own code.
"""

from __future__ import annotations

import pytest
from ractogateway import anthropic_developer_kit, google_developer_kit, openai_developer_kit
from ractogateway.adapters.base import FinishReason, LLMResponse, ToolCallResult
from ractogateway.cache.exact_cache import ExactMatchCache
from ractogateway.prompts.engine import RactoPrompt
from support import sample_value

PROMPT = RactoPrompt(
    role="assistant", aim="answer", constraints=["be brief"], tone="plain", output_format="text"
)

KITS = [
    pytest.param(openai_developer_kit.OpenAIDeveloperKit, "openai", "gpt-4o", id="openai"),
    pytest.param(
        anthropic_developer_kit.AnthropicDeveloperKit,
        "anthropic",
        "claude-sonnet-4-5-20250929",
        id="anthropic",
    ),
    pytest.param(
        google_developer_kit.GoogleDeveloperKit, "google", "gemini-2.0-flash", id="google"
    ),
]


class CannedAdapter:
    """Answers every call with the same response, or raises ``error``."""

    def __init__(self, response: LLMResponse | None = None, error: Exception | None = None):
        self.response = response
        self.error = error
        self.calls = 0

    def run(self, *args, **kwargs) -> LLMResponse:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.response


def canned_kit(kit_class, model, metrics, adapter, **kwargs):
    kit = kit_class(model=model, default_prompt=PROMPT, metrics=metrics, **kwargs)
    kit._get_adapter = lambda _model: adapter
    return kit


def chat_config(text="Hello"):
    return openai_developer_kit.ChatConfig(user_message=text)


@pytest.mark.parametrize(("kit_class", "provider", "model"), KITS)
def test_a_chat_records_request_latency_tokens_cost_and_tools(
    metrics, kit_class, provider, model, no_created
):
    response = LLMResponse(
        content="Hi there",
        finish_reason=FinishReason.TOOL_CALL,
        tool_calls=[
            ToolCallResult(id="1", name="search", arguments={}),
            ToolCallResult(id="2", name="calendar", arguments={"day": "mon"}),
        ],
        usage={"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200},
    )
    kit = canned_kit(kit_class, model, metrics, CannedAdapter(response))
    assert kit.chat(chat_config()).content == "Hi there"
    text = metrics.generate_latest()
    labels = {"model": model, "provider": provider}
    assert (
        sample_value(text, "ractogateway_requests_total", operation="chat", status="ok", **labels)
        == 1.0
    )
    assert (
        sample_value(
            text, "ractogateway_request_duration_seconds_count", operation="chat", **labels
        )
        == 1.0
    )
    assert sample_value(text, "ractogateway_tokens_total", token_type="input", **labels) == 1000
    assert sample_value(text, "ractogateway_tokens_total", token_type="output", **labels) == 200
    price = metrics.price_table[model]
    expected_cost = 1000 * price.input_per_million / 1e6 + 200 * price.output_per_million / 1e6
    assert sample_value(text, "ractogateway_cost_usd_total", **labels) == expected_cost
    assert sample_value(text, "ractogateway_tool_calls_total", tool_name="search") == 1.0
    assert sample_value(text, "ractogateway_tool_calls_total", tool_name="calendar") == 1.0


@pytest.mark.parametrize(("kit_class", "provider", "model"), KITS)
def test_a_failed_chat_records_an_error(metrics, kit_class, provider, model, no_created):
    kit = canned_kit(kit_class, model, metrics, CannedAdapter(error=RuntimeError("upstream down")))
    with pytest.raises(Exception, match="upstream down"):
        kit.chat(chat_config())
    text = metrics.generate_latest()
    assert (
        sample_value(
            text,
            "ractogateway_requests_total",
            model=model,
            provider=provider,
            operation="chat",
            status="error",
        )
        == 1.0
    )
    assert (
        sample_value(
            text, "ractogateway_tokens_total", model=model, provider=provider, token_type="input"
        )
        is None
    )


@pytest.mark.parametrize(("kit_class", "provider", "model"), KITS)
def test_the_exact_cache_records_a_miss_then_a_hit(metrics, kit_class, provider, model, no_created):
    response = LLMResponse(
        content="cached answer", usage={"prompt_tokens": 5, "completion_tokens": 1}
    )
    adapter = CannedAdapter(response)
    kit = canned_kit(kit_class, model, metrics, adapter, exact_cache=ExactMatchCache())
    kit.chat(chat_config("same question"))
    kit.chat(chat_config("same question"))
    assert adapter.calls == 1
    text = metrics.generate_latest()
    assert sample_value(text, "ractogateway_cache_misses_total", cache_type="exact") == 1.0
    assert sample_value(text, "ractogateway_cache_hits_total", cache_type="exact") == 1.0
    assert (
        sample_value(
            text,
            "ractogateway_requests_total",
            model=model,
            provider=provider,
            operation="chat",
            status="ok",
        )
        == 1.0
    )


def test_one_middleware_shared_by_three_kits(metrics, no_created):
    for kit_class, _, model in (p.values for p in KITS):
        response = LLMResponse(content="ok", usage={"prompt_tokens": 10, "completion_tokens": 2})
        canned_kit(kit_class, model, metrics, CannedAdapter(response)).chat(chat_config())
    text = metrics.generate_latest()
    for _, provider, model in (p.values for p in KITS):
        assert (
            sample_value(
                text,
                "ractogateway_requests_total",
                model=model,
                provider=provider,
                operation="chat",
                status="ok",
            )
            == 1.0
        )
