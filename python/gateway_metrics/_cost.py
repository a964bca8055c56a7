"""``compute_cost``: the cost of one call, priced as the middleware prices it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import overload

from gateway_metrics import _core
from gateway_metrics._genai_prices import Rates, resolver
from gateway_metrics._pricing import (
    DEFAULT_COST_TABLE,
    ModelPricing,
    checked_price_table,
    checked_prices,
    merged_price_table,
)

#: The model names ``compute_cost`` has said it has no price for (once each),
#: up to ``_UNPRICED_NAMED`` of them, so that callers' model names cannot grow it.
_UNPRICED_REPORTED: set[str] = set()
_UNPRICED_NAMED = 100
_LOGGER = logging.getLogger("gateway_metrics")


def _lookup(table: Mapping[str, ModelPricing], model: str) -> ModelPricing | None:
    """``model``'s entry under the names the core looks prices up under."""
    return next((table[name] for name in _core.price_names(model) if name in table), None)


@overload
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
    default: float = 0.0,
) -> float: ...


@overload
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
    default: None,
) -> float | None: ...


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
    default: float | None = 0.0,
) -> float | None:
    """Estimated USD cost of one call; ``default`` (``0.0``) for a model with no price.

    ``input_tokens`` counts every prompt token; the cached parts are priced at
    the model's cache prices. A model is looked up as the middleware looks it
    up: under its name, then without each leading ``provider/`` part
    (LiteLLM's ``openai/gpt-4o`` is priced as ``gpt-4o``). With
    ``prices="genai-prices"`` (and the ``provider``), a model ``extra_table``
    lacks is priced as the middleware prices it: through genai-prices, then
    ``DEFAULT_COST_TABLE``.

    A model with no price is logged once per name (on the ``gateway_metrics``
    logger) and costs ``default``: pass ``default=None`` to tell it from a
    free model.

    Use it to show a cost next to a response: it is the core's own cost
    function, so it gives the figure ``ractogateway_cost_usd_total`` adds, bit
    for bit.

    Example::

        compute_cost("gpt-4o", 1000, 200)  # 0.0045000000000000005
        compute_cost("my-finetune", 1000, 200, default=None)  # None: no price
    """
    price: Rates | None
    if checked_prices(prices) is None:
        pricing = _lookup(merged_price_table(extra_table), model)
        price = None if pricing is None else (*pricing.rates(), [], 0.0)
    else:
        own = _lookup(checked_price_table(extra_table), model)
        price = (
            (*own.rates(), [], 0.0) if own else resolver(DEFAULT_COST_TABLE)(provider or "", model)
        )
    if price is None:
        if model not in _UNPRICED_REPORTED and len(_UNPRICED_REPORTED) < _UNPRICED_NAMED:
            _UNPRICED_REPORTED.add(model)
            _LOGGER.warning(
                "compute_cost: no price for model %r; give it one with extra_table= "
                '(or prices="genai-prices"); pass default=None to tell it from a free model',
                model,
            )
        return default
    tokens = {
        "input": input_tokens,
        "output": output_tokens,
        "cache_read": cache_read_tokens,
        "cache_write": cache_write_tokens,
    }
    return _core.request_cost(price, tokens)
