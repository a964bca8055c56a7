"""Prices from genai-prices, resolved once per (provider, model) for the core.

``GatewayMetricsMiddleware(prices="genai-prices")`` asks this module for the
price of each (provider, model) it sees for the first time: genai-prices
matches the model name (dated snapshots, provider prefixes, case) and gives its
per-token rates, cache prices and long-prompt tiers, which the core then applies
to every request natively. Models genai-prices does not know fall back to
``DEFAULT_COST_TABLE``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from gateway_metrics._pricing import ModelPricing

#: ``(above input tokens, input, output, cache read, cache write)`` USD per million.
Tier = tuple[int, float, float, float, float]
#: ``(input, output, cache read, cache write, tiers, per request)``: USD per
#: million tokens, and USD per request.
Rates = tuple[float, float, float, float, list[Tier], float]


def _rates_at(price: Any, threshold: int | None) -> float | None:
    """A unit's rate for requests above ``threshold`` input tokens (None: the base rate)."""
    if price is None:
        return None
    tiers = getattr(price, "tiers", None)
    if tiers is None:
        return float(price)
    rate = price.base
    for tier in tiers:
        if threshold is not None and tier.start <= threshold:
            rate = tier.price
    return float(rate)


def genai_prices_rates(provider: str, model: str) -> Rates | None:
    """The rates genai-prices gives (provider, model), or None when it does not know it."""
    import genai_prices

    try:
        found = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=0, output_tokens=0),
            model_ref=model,
            provider_id=provider,
        )
    except LookupError:
        return None
    # A model genai-prices knows is priced as it says, even at nothing.
    price = found.model_price
    units = [price.input_mtok, price.output_mtok, price.cache_read_mtok, price.cache_write_mtok]

    def rates(threshold: int | None) -> tuple[float, float, float, float]:
        input_rate, output_rate, read, write = (_rates_at(unit, threshold) for unit in units)
        base_input = input_rate or 0.0
        # Without a cache price, cached tokens cost the input price, as in genai-prices.
        return (
            base_input,
            output_rate or 0.0,
            base_input if read is None else read,
            base_input if write is None else write,
        )

    thresholds = sorted(
        {tier.start for unit in units for tier in (getattr(unit, "tiers", None) or ())}
    )
    per_request = float(cast("float", price.requests_kcount or 0)) / 1000
    return (*rates(None), [(int(start), *rates(start)) for start in thresholds], per_request)


def resolver(fallback: Mapping[str, ModelPricing]) -> Callable[[str, str], Rates | None]:
    """A resolver for the core: genai-prices first, then ``fallback`` by model."""
    memo: dict[tuple[str, str], Rates | None] = {}

    def resolve(provider: str, model: str) -> Rates | None:
        key = (provider, model)
        if key not in memo:
            rates = genai_prices_rates(provider, model)
            if rates is None and model in fallback:
                rates = (*fallback[model].rates(), [], 0.0)
            memo[key] = rates
        return memo[key]

    return resolve
