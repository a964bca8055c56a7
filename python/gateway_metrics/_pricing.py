"""Model prices and the per-request cost formula."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class ModelPricing:
    """USD price per one million tokens of one model.

    Use it to extend or override ``DEFAULT_COST_TABLE`` through
    ``GatewayMetricsMiddleware(price_table=...)`` or ``compute_cost(extra_table=...)``.
    Prices must be finite and not negative; 0 prices a free (self-hosted) model.
    ``cache_read_per_million`` and ``cache_write_per_million`` price the prompt
    tokens read from and written to the provider's cache (part of the input
    tokens); without them, cached tokens cost the input price.

    Example::

        ModelPricing(input_per_million=2.5, output_per_million=10.0,
                     cache_read_per_million=1.25)
    """

    __slots__ = (
        "cache_read_per_million",
        "cache_write_per_million",
        "input_per_million",
        "output_per_million",
    )

    input_per_million: float
    output_per_million: float
    cache_read_per_million: float | None
    cache_write_per_million: float | None

    def __init__(
        self,
        input_per_million: float,
        output_per_million: float,
        *,
        cache_read_per_million: float | None = None,
        cache_write_per_million: float | None = None,
    ) -> None:
        for name, value in (
            ("input_per_million", input_per_million),
            ("output_per_million", output_per_million),
            ("cache_read_per_million", cache_read_per_million),
            ("cache_write_per_million", cache_write_per_million),
        ):
            if value is None and name.startswith("cache_"):
                object.__setattr__(self, name, None)
                continue
            if isinstance(value, (str, bytes, bool)) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a real number, not {type(value).__name__}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and not negative, got {value!r}")
            object.__setattr__(self, name, float(value))

    def _key(self) -> tuple[float, float, float | None, float | None]:
        return (
            self.input_per_million,
            self.output_per_million,
            self.cache_read_per_million,
            self.cache_write_per_million,
        )

    def rates(self) -> tuple[float, float, float, float]:
        """``(input, output, cache read, cache write)`` USD per million tokens,
        cached tokens at the input price where no cache price is set."""
        read = self.cache_read_per_million
        write = self.cache_write_per_million
        return (
            self.input_per_million,
            self.output_per_million,
            self.input_per_million if read is None else read,
            self.input_per_million if write is None else write,
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"ModelPricing is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"ModelPricing is immutable; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelPricing):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        text = (
            f"ModelPricing(input_per_million={self.input_per_million!r}, "
            f"output_per_million={self.output_per_million!r}"
        )
        for name in ("cache_read_per_million", "cache_write_per_million"):
            value = getattr(self, name)
            if value is not None:
                text += f", {name}={value!r}"
        return text + ")"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_pricing, self._key())


def _pricing(
    input_per_million: float,
    output_per_million: float,
    cache_read_per_million: float | None,
    cache_write_per_million: float | None,
) -> ModelPricing:
    """Unpickles a ``ModelPricing``."""
    return ModelPricing(
        input_per_million,
        output_per_million,
        cache_read_per_million=cache_read_per_million,
        cache_write_per_million=cache_write_per_million,
    )


def _price(input_per_million: float, output_per_million: float) -> ModelPricing:
    return ModelPricing(input_per_million, output_per_million)


#: Every entry and price of the middleware this package replaces, unchanged, so
#: that costs stay comparable with it.
_REFERENCE_TABLE: dict[str, ModelPricing] = {
    # OpenAI
    "gpt-4o": _price(2.50, 10.00),
    "gpt-4o-mini": _price(0.15, 0.60),
    "gpt-4-turbo": _price(10.00, 30.00),
    "gpt-4": _price(30.00, 60.00),
    "gpt-3.5-turbo": _price(0.50, 1.50),
    "o1": _price(15.00, 60.00),
    "o1-mini": _price(3.00, 12.00),
    "o3-mini": _price(1.10, 4.40),
    # Anthropic
    "claude-opus-4-6": _price(15.00, 75.00),
    "claude-sonnet-4-6": _price(3.00, 15.00),
    "claude-haiku-4-5-20251001": _price(0.80, 4.00),
    "claude-sonnet-4-5-20250929": _price(3.00, 15.00),
    "claude-3-5-sonnet-20241022": _price(3.00, 15.00),
    "claude-3-5-haiku-20241022": _price(0.80, 4.00),
    "claude-3-opus-20240229": _price(15.00, 75.00),
    "claude-3-haiku-20240307": _price(0.25, 1.25),
    # Google
    "gemini-2.0-flash": _price(0.10, 0.40),
    "gemini-2.0-flash-lite": _price(0.075, 0.30),
    "gemini-2.5-pro": _price(1.25, 10.00),
    "gemini-1.5-pro": _price(1.25, 5.00),
    "gemini-1.5-flash": _price(0.075, 0.30),
    "gemini-1.5-flash-8b": _price(0.0375, 0.15),
    "gemini-1.0-pro": _price(0.50, 1.50),
}

#: Models the reference's table lacks, by (provider, model), with their prices as
#: the genai-prices 0.2.3 package's bundled data gives them for prompts below its
#: first long-prompt tier (no caching or batch discount). tests/test_pricing.py
#: checks every one against that package.
GENAI_PRICES_0_2_3: dict[tuple[str, str], ModelPricing] = {
    # OpenAI
    ("openai", "gpt-5.4"): _price(2.50, 15.00),
    ("openai", "gpt-5.4-mini"): _price(0.75, 4.50),
    ("openai", "gpt-5.2"): _price(1.75, 14.00),
    ("openai", "gpt-5.1"): _price(1.25, 10.00),
    ("openai", "gpt-5"): _price(1.25, 10.00),
    ("openai", "gpt-5-mini"): _price(0.25, 2.00),
    ("openai", "gpt-5-nano"): _price(0.05, 0.40),
    ("openai", "gpt-4.1"): _price(2.00, 8.00),
    ("openai", "gpt-4.1-mini"): _price(0.40, 1.60),
    ("openai", "gpt-4.1-nano"): _price(0.10, 0.40),
    ("openai", "o3"): _price(2.00, 8.00),
    ("openai", "o3-pro"): _price(20.00, 80.00),
    ("openai", "o4-mini"): _price(1.10, 4.40),
    # Anthropic
    ("anthropic", "claude-opus-4-5"): _price(5.00, 25.00),
    ("anthropic", "claude-opus-4-5-20251101"): _price(5.00, 25.00),
    ("anthropic", "claude-sonnet-4-5"): _price(3.00, 15.00),
    ("anthropic", "claude-haiku-4-5"): _price(1.00, 5.00),
    ("anthropic", "claude-opus-4-1"): _price(15.00, 75.00),
    ("anthropic", "claude-opus-4-1-20250805"): _price(15.00, 75.00),
    ("anthropic", "claude-opus-4-20250514"): _price(15.00, 75.00),
    ("anthropic", "claude-sonnet-4-20250514"): _price(3.00, 15.00),
    ("anthropic", "claude-3-7-sonnet-20250219"): _price(3.00, 15.00),
    # Google
    ("google", "gemini-3-pro-preview"): _price(2.00, 12.00),
    ("google", "gemini-2.5-flash"): _price(0.30, 2.50),
    ("google", "gemini-2.5-flash-lite"): _price(0.10, 0.40),
}

#: USD per 1M tokens (input, output) by model identifier: the reference's table,
#: then the models it lacks.
DEFAULT_COST_TABLE: dict[str, ModelPricing] = {
    **_REFERENCE_TABLE,
    **{model: price for (_, model), price in GENAI_PRICES_0_2_3.items()},
}


def merged_price_table(extra_table: Mapping[str, Any] | None) -> dict[str, ModelPricing]:
    """``DEFAULT_COST_TABLE`` with ``extra_table`` laid over it (the extra entries win).

    Values may be ``ModelPricing`` or any object with ``input_per_million`` and
    ``output_per_million`` attributes (such as the reference package's pydantic model).
    """
    return {**DEFAULT_COST_TABLE, **checked_price_table(extra_table)}


#: The price sources ``prices=`` accepts besides the default table.
PRICE_SOURCES = ("genai-prices",)


def checked_prices(prices: str | None) -> str | None:
    """``prices`` if it names a known source, with genai-prices importable."""
    if prices is None:
        return None
    if prices not in PRICE_SOURCES:
        raise ValueError(f"prices must be None or one of {PRICE_SOURCES}, got {prices!r}")
    try:
        import genai_prices  # noqa: F401
    except ImportError:
        raise ImportError(
            'prices="genai-prices" needs the genai-prices package: '
            "pip install 'gateway-metrics[prices]'"
        ) from None
    return prices


def checked_price_table(extra_table: Mapping[str, Any] | None) -> dict[str, ModelPricing]:
    """The caller's price table, each value a ``ModelPricing``."""
    if extra_table is None:
        return {}
    if not isinstance(extra_table, Mapping):
        raise TypeError(
            f"price_table must be a mapping of model name to ModelPricing, "
            f"not {type(extra_table).__name__}"
        )
    table: dict[str, ModelPricing] = {}
    for model, pricing in extra_table.items():
        if not isinstance(model, str):
            raise TypeError(f"price_table keys must be str, not {type(model).__name__}")
        if not isinstance(pricing, ModelPricing):
            try:
                pricing = ModelPricing(  # noqa: PLW2901 (the converted value replaces it)
                    pricing.input_per_million, pricing.output_per_million
                )
            except AttributeError:
                raise TypeError(
                    f"price_table[{model!r}] must be a ModelPricing, not {type(pricing).__name__}"
                ) from None
        table[model] = pricing
    return table
