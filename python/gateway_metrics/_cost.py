"""``compute_cost``: the cost of one call, priced as the middleware prices it."""

from __future__ import annotations

from collections.abc import Mapping

from gateway_metrics import _core
from gateway_metrics._genai_prices import Rates, resolver
from gateway_metrics._pricing import (
    DEFAULT_COST_TABLE,
    ModelPricing,
    checked_price_table,
    checked_prices,
    merged_price_table,
)


def compute_cost(
    model: str,
    input_tokens: int,
    output_tokens: int,
    extra_table: Mapping[str, ModelPricing] | None = None,
    *,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    provider: str | None = None,
    prices: str | None = None,
) -> float:
    """Estimated USD cost of one call; ``0.0`` for a model with no price.

    ``input_tokens`` counts every prompt token; the cached parts are priced at
    the model's cache prices. With ``prices="genai-prices"`` (and the
    ``provider``), a model ``extra_table`` lacks is priced as the middleware
    prices it: through genai-prices, then ``DEFAULT_COST_TABLE``.

    Use it to show a cost next to a response: it is the core's own cost
    function, so it gives the figure ``ractogateway_cost_usd_total`` adds, bit
    for bit.

    Example::

        compute_cost("gpt-4o", 1000, 200)  # 0.0045000000000000005
    """
    price: Rates | None
    if checked_prices(prices) is None:
        pricing = merged_price_table(extra_table).get(model)
        price = None if pricing is None else (*pricing.rates(), [], 0.0)
    else:
        own = checked_price_table(extra_table).get(model)
        price = (
            (*own.rates(), [], 0.0) if own else resolver(DEFAULT_COST_TABLE)(provider or "", model)
        )
    if price is None:
        return 0.0
    tokens = {
        "input": input_tokens,
        "output": output_tokens,
        "cache_read": cache_read_tokens,
        "cache_write": cache_write_tokens,
    }
    return _core.request_cost(price, tokens)
