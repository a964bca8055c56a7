"""Prices: the reference table kept, new models added, the cost formula and its validation."""

from __future__ import annotations

import importlib.metadata
import math

import genai_prices
import pytest
from gateway_metrics import DEFAULT_COST_TABLE, GatewayMetricsMiddleware, ModelPricing, compute_cost
from gateway_metrics._pricing import GENAI_PRICES_0_2_3
from prometheus_client import CollectorRegistry
from ractogateway.telemetry import ModelPricing as ReferencePricing
from ractogateway.telemetry._pricing import DEFAULT_COST_TABLE as REFERENCE_TABLE
from ractogateway.telemetry._pricing import compute_cost as reference_cost
from support import sample_value


def test_every_reference_entry_and_price_is_kept():
    for model, pricing in REFERENCE_TABLE.items():
        ours = DEFAULT_COST_TABLE[model]
        assert (ours.input_per_million, ours.output_per_million) == (
            pricing.input_per_million,
            pricing.output_per_million,
        )


def test_current_models_of_each_provider_are_priced():
    for model in [
        "gpt-5",
        "gpt-4.1",
        "o4-mini",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-opus-4-5",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
    ]:
        assert DEFAULT_COST_TABLE[model].input_per_million > 0


@pytest.mark.parametrize(
    ("model", "tokens_in", "tokens_out"),
    [
        ("gpt-4o", 1000, 200),
        ("gemini-1.5-flash-8b", 12345, 678),
        ("nope", 5, 5),
        ("o1", 0, 0),
        ("gpt-4", 2**60, 3),
    ],
)
def test_compute_cost_matches_the_reference(model, tokens_in, tokens_out):
    assert compute_cost(model, tokens_in, tokens_out) == reference_cost(
        model, tokens_in, tokens_out
    )


def test_compute_cost_with_an_extra_table():
    extra = {"mine": ModelPricing(1.0, 2.0), "gpt-4o": ModelPricing(100.0, 100.0)}
    assert compute_cost("mine", 1_000_000, 500_000, extra) == 2.0
    assert compute_cost("gpt-4o", 10, 0, extra) == 10 * 100.0 / 1_000_000


@pytest.mark.parametrize("bad", [-1.0, -1e-300, math.nan, math.inf, -math.inf])
def test_prices_must_be_finite_and_not_negative(bad):
    with pytest.raises(ValueError, match="input_per_million"):
        ModelPricing(bad, 1.0)
    with pytest.raises(ValueError, match="output_per_million"):
        ModelPricing(1.0, bad)
    with pytest.raises(ValueError, match="cache_read_per_million"):
        ModelPricing(1.0, 1.0, cache_read_per_million=bad)
    with pytest.raises(ValueError, match="cache_write_per_million"):
        ModelPricing(1.0, 1.0, cache_write_per_million=bad)


def test_a_free_model_costs_nothing_and_creates_no_cost_series(no_created):
    metrics = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), price_table={"local-llama": ModelPricing(0, 0)}
    )
    metrics.record_request(
        provider="vllm", model="local-llama", operation="chat", status="ok", latency_s=1.0,
        input_tokens=1000, output_tokens=100,
    )  # fmt: skip
    assert compute_cost("local-llama", 1000, 100, {"local-llama": ModelPricing(0, 0)}) == 0.0
    assert "ractogateway_cost_usd_total{" not in metrics.generate_latest()


def test_cached_tokens_are_priced_at_cache_prices_or_else_the_input_price(no_created):
    table = {
        "cached": ModelPricing(2.0, 8.0, cache_read_per_million=0.5, cache_write_per_million=2.5),
        "plain": ModelPricing(2.0, 8.0),
    }
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), price_table=table)
    for model in table:
        metrics.record_request(
            provider="p", model=model, operation="chat", status="ok", latency_s=1.0,
            input_tokens=10_000, output_tokens=1_000, cache_read_tokens=6_000,
            cache_write_tokens=1_000,
        )  # fmt: skip
    text = metrics.generate_latest()
    cached = (3_000 * 2.0 + 1_000 * 8.0 + 6_000 * 0.5 + 1_000 * 2.5) / 1e6
    plain = (10_000 * 2.0 + 1_000 * 8.0) / 1e6
    for model, expected in (("cached", cached), ("plain", plain)):
        value = sample_value(text, "ractogateway_cost_usd_total", model=model, provider="p")
        assert value == pytest.approx(expected, rel=1e-12)
        assert compute_cost(
            model, 10_000, 1_000, table, cache_read_tokens=6_000, cache_write_tokens=1_000
        ) == pytest.approx(expected, rel=1e-12)
    assert repr(table["cached"]) == (
        "ModelPricing(input_per_million=2.0, output_per_million=8.0, "
        "cache_read_per_million=0.5, cache_write_per_million=2.5)"
    )


@pytest.mark.parametrize("bad", ["1", None, True, [1]])
def test_prices_must_be_numbers(bad):
    with pytest.raises(TypeError, match="input_per_million"):
        ModelPricing(bad, 1.0)


def test_model_pricing_is_frozen_and_comparable():
    price = ModelPricing(input_per_million=2, output_per_million=8.0)
    assert price == ModelPricing(2.0, 8.0)
    assert hash(price) == hash(ModelPricing(2.0, 8.0))
    assert price.input_per_million == 2.0 and isinstance(price.input_per_million, float)
    with pytest.raises(AttributeError):
        price.input_per_million = 3.0  # type: ignore[misc]


def test_caller_prices_win_and_reference_pricing_objects_are_accepted(no_created):
    metrics = GatewayMetricsMiddleware(
        price_table={
            "gpt-4o": ModelPricing(1.0, 1.0),
            "house-model": ReferencePricing(input_per_million=4.0, output_per_million=8.0),
        },
        registry=CollectorRegistry(),
    )
    assert metrics.price_table["gpt-4o"] == ModelPricing(1.0, 1.0)
    for model in ("gpt-4o", "house-model"):
        metrics.record_request(
            provider="p",
            model=model,
            operation="chat",
            status="ok",
            latency_s=0.1,
            input_tokens=1_000_000,
            output_tokens=1_000_000,
        )
    text = metrics.generate_latest()
    assert sample_value(text, "ractogateway_cost_usd_total", model="gpt-4o", provider="p") == 2.0
    assert (
        sample_value(text, "ractogateway_cost_usd_total", model="house-model", provider="p") == 12.0
    )


@pytest.mark.parametrize(
    ("table", "error"),
    [(["gpt-4o"], TypeError), ({1: ModelPricing(1, 1)}, TypeError), ({"m": 3.0}, TypeError)],
)
def test_bad_price_tables_are_rejected(table, error):
    with pytest.raises(error, match="price_table"):
        GatewayMetricsMiddleware(price_table=table, registry=CollectorRegistry())


@pytest.mark.parametrize(("provider", "model"), sorted(GENAI_PRICES_0_2_3))
def test_every_added_price_is_genai_prices_0_2_3s(provider, model):
    assert importlib.metadata.version("genai-prices") == "0.2.3"
    ours = GENAI_PRICES_0_2_3[(provider, model)]
    # Below every long-prompt tier: a thousand tokens each way.
    usage = genai_prices.Usage(input_tokens=1000, output_tokens=1000)
    theirs = genai_prices.calc_price(usage, model_ref=model, provider_id=provider)
    assert float(theirs.input_price) * 1000 == pytest.approx(ours.input_per_million, rel=1e-12)
    assert float(theirs.output_price) * 1000 == pytest.approx(ours.output_per_million, rel=1e-12)
    assert DEFAULT_COST_TABLE[model] == ours
