"""prices="genai-prices": costs equal genai_prices.calc_price across its models and
random usages; unpriced requests are counted and named; the caller's prices win."""

from __future__ import annotations

import logging
import math
import random

import genai_prices
import genai_prices.data
import pytest
from gateway_metrics import GatewayMetricsMiddleware, ModelPricing, compute_cost
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from support import sample_value


def every_model() -> list[tuple[str, str]]:
    return [
        (provider.id, model.id)
        for provider in genai_prices.data.providers
        for model in provider.models
    ]


def usage(rng: random.Random) -> dict[str, int]:
    input_tokens = rng.choice([0, rng.randint(1, 5_000), rng.randint(150_000, 400_000)])
    cache_read = rng.randint(0, input_tokens) if rng.random() < 0.5 else 0
    cache_write = rng.randint(0, input_tokens - cache_read) if rng.random() < 0.3 else 0
    return {
        "input_tokens": input_tokens,
        "output_tokens": rng.randint(0, 20_000),
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
    }


def test_costs_equal_genai_prices_across_its_models():
    rng = random.Random(20261127)
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), prices="genai-prices")
    expected: dict[tuple[str, str], tuple[dict[str, int], float]] = {}
    for provider, model in every_model():
        tokens = usage(rng)
        try:
            price = genai_prices.calc_price(
                genai_prices.Usage(**tokens), model_ref=model, provider_id=provider
            )
        except (LookupError, ValueError):
            continue  # a model genai-prices cannot price at today's date
        expected[(provider, model)] = (tokens, float(price.total_price))
        metrics.record_request(
            provider=provider, model=model, operation="chat", status="ok", latency_s=0.1, **tokens
        )
    costs = {
        (sample.labels["provider"], sample.labels["model"]): sample.value
        for family in text_string_to_metric_families(metrics.generate_latest())
        for sample in family.samples
        if sample.name == "ractogateway_cost_usd_total"
    }
    assert len(expected) > 1_500
    for (provider, model), (tokens, price) in expected.items():
        ours = costs.get((provider, model), 0.0)
        assert math.isclose(ours, price, rel_tol=1e-9, abs_tol=1e-15), (provider, model, tokens)
        again = compute_cost(model, provider=provider, prices="genai-prices", **tokens)
        assert again == ours, (provider, model, tokens)


def test_model_names_as_the_apis_return_them_are_priced(no_created):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), prices="genai-prices")
    for provider, model in [
        ("openai", "gpt-4o-2024-08-06"),
        ("openai", "GPT-4o"),
        ("anthropic", "claude-3-5-sonnet-latest"),
    ]:
        metrics.record_request(
            provider=provider, model=model, operation="chat", status="ok", latency_s=0.1,
            input_tokens=1_000_000,
        )  # fmt: skip
        cost = sample_value(
            metrics.generate_latest(), "ractogateway_cost_usd_total", model=model,
            provider=provider,
        )  # fmt: skip
        assert cost is not None and cost > 0, model


def test_unpriced_requests_are_counted_and_named_once(caplog, no_created):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), prices="genai-prices")
    with caplog.at_level(logging.WARNING, logger="gateway_metrics"):
        for tokens in (10, 0, 20):
            for operation in ("chat", "embed"):
                metrics.record_request(
                    provider="acme", model="house-model", operation=operation, status="ok",
                    latency_s=0.1, input_tokens=tokens,
                )  # fmt: skip
        metrics.record_batch(
            provider="acme", model="house-model", operation="chat", status="ok",
            latency_s=[0.1, 0.2], input_tokens=[5, 0],
        )  # fmt: skip
    text = metrics.generate_latest()
    unpriced = sample_value(
        text, "ractogateway_unpriced_requests_total", model="house-model", provider="acme"
    )
    assert unpriced == 5.0
    assert "ractogateway_cost_usd_total{" not in text
    named = [r.getMessage() for r in caplog.records if "house-model" in r.getMessage()]
    assert len(named) == 1


def test_the_callers_prices_win_and_the_default_table_backs_genai_prices(no_created):
    mine = ModelPricing(1.0, 1.0)
    metrics = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), prices="genai-prices", price_table={"gpt-4o": mine}
    )
    for provider, model in [("openai", "gpt-4o"), ("unknown-cloud", "gemini-1.0-pro")]:
        metrics.record_request(
            provider=provider, model=model, operation="chat", status="ok", latency_s=0.1,
            input_tokens=1_000_000,
        )  # fmt: skip
    text = metrics.generate_latest()
    assert (
        sample_value(text, "ractogateway_cost_usd_total", model="gpt-4o", provider="openai") == 1.0
    )
    # genai-prices knows no provider "unknown-cloud"; the default table prices the model.
    fallback = sample_value(
        text, "ractogateway_cost_usd_total", model="gemini-1.0-pro", provider="unknown-cloud"
    )
    assert fallback == 0.5


def test_an_unknown_price_source_is_refused():
    with pytest.raises(ValueError, match="prices must be None or one of"):
        GatewayMetricsMiddleware(registry=CollectorRegistry(), prices="litellm")
