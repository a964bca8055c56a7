"""The dashboard's panels, as data: each panel's title, unit and queries.

The histograms of the core's family table past the three drawn by hand get
their quantiles from the table, so a family added there appears here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway_metrics._core import FAMILIES


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel and its legend."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """One dashboard panel: what it shows, in which unit, by which queries.

    ``expr`` strings use ``{filter}`` for the request families' selector (job,
    provider, model and the extra labels' variables) and ``{job}`` for the
    selector of the families without those labels; ``$__rate_interval`` and
    ``$__range`` are Grafana's.
    """

    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"
    width: int = 12


def _quantiles(family: str, by: str, quantiles: Sequence[float]) -> tuple[Query, ...]:
    rate = f"rate({family}_bucket" + "{{{filter}}}[$__rate_interval])"
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le, {by}) ({rate}))",
            f"p{round(q * 100)} " + "{{" + by + "}}",
        )
        for q in quantiles
    )


def hit_ratio(window: str, selector: str, by: str = "cache_type") -> str:
    """Hits over lookups by cache type; a type without misses has the ratio 1, not none."""
    hits = f"sum by ({by}) (rate(ractogateway_cache_hits_total{selector}{window}))"
    misses = f"sum by ({by}) (rate(ractogateway_cache_misses_total{selector}{window}))"
    return f"{hits} / ({hits} + ({misses} or {hits} * 0))"


REQUESTS_RATE = "sum by (model) (rate(ractogateway_requests_total{{{filter}}}[$__rate_interval]))"

#: Grafana's unit for a family's unit (UCUM, as ``_core.FAMILIES`` gives it).
GRAFANA_UNITS = {"s": "s"}

#: The dashboard's panels, in order (two per row of 24 columns).
#: The histograms the hand-made panels below show.
SHOWN_BY_HAND = frozenset(
    {
        "ractogateway_request_duration_seconds",
        "ractogateway_time_to_first_token_seconds",
        "ractogateway_time_per_output_token_seconds",
    }
)

#: Histograms only a middleware of the OpenTelemetry GenAI names keeps
#: (``semconv="gen_ai"``), whose series go by those names, not the ones this
#: kit queries.
GEN_AI_ONLY = frozenset({"ractogateway_request_tokens", "ractogateway_operation_duration_seconds"})

PANELS: tuple[Panel, ...] = (
    Panel(
        "Request rate by model",
        "Requests per second, every status.",
        "reqps",
        (Query(REQUESTS_RATE, "{{model}}"),),
    ),
    Panel(
        "Error ratio by model",
        'Share of requests with status="error".',
        "percentunit",
        (
            Query(
                'sum by (model) (rate(ractogateway_requests_total{{{filter},status="error"}}'
                "[$__rate_interval])) / " + REQUESTS_RATE,
                "{{model}}",
            ),
        ),
    ),
    Panel(
        "Requests in flight by provider",
        "Calls started and not yet ended (track(), instrument(), the LiteLLM logger).",
        "short",
        (
            Query(
                "sum by (provider) (ractogateway_requests_in_flight{{{filter}}})",
                "{{provider}}",
            ),
        ),
    ),
    Panel(
        "Errors by type",
        "Failed requests per second by error_type (rate_limit, timeout, server_error, ...).",
        "reqps",
        (
            Query(
                "sum by (error_type) (rate(ractogateway_request_errors_total{{{filter}}}"
                "[$__rate_interval]))",
                "{{error_type}}",
            ),
        ),
    ),
    Panel(
        "Latency p50 / p95 / p99 by model",
        "Request duration quantiles from ractogateway_request_duration_seconds.",
        "s",
        _quantiles("ractogateway_request_duration_seconds", "model", (0.5, 0.95, 0.99)),
    ),
    Panel(
        "Time to first token p50 / p95 / p99 by model",
        "Streamed requests only (ractogateway_time_to_first_token_seconds).",
        "s",
        _quantiles("ractogateway_time_to_first_token_seconds", "model", (0.5, 0.95, 0.99)),
    ),
    Panel(
        "Time per output token p50 / p95 by model",
        "After the first token (ractogateway_time_per_output_token_seconds).",
        "s",
        _quantiles("ractogateway_time_per_output_token_seconds", "model", (0.5, 0.95)),
    ),
    Panel(
        "Tokens per second by type",
        "input includes cache_read and cache_write; output includes reasoning.",
        "short",
        (
            Query(
                "sum by (token_type) (rate(ractogateway_tokens_total{{{filter}}}"
                "[$__rate_interval]))",
                "{{token_type}}",
            ),
        ),
    ),
    Panel(
        "Cost per hour by model",
        "Estimated USD per hour at the current rate.",
        "currencyUSD",
        (
            Query(
                "sum by (model) (rate(ractogateway_cost_usd_total{{{filter}}}"
                "[$__rate_interval])) * 3600",
                "{{model}}",
            ),
        ),
    ),
    Panel(
        "Cost over the last day by model",
        "Estimated USD spent in the 24 hours before each point.",
        "currencyUSD",
        (
            Query(
                "sum by (model) (increase(ractogateway_cost_usd_total{{{filter}}}[1d]))",
                "{{model}}",
            ),
        ),
    ),
    Panel(
        "Unpriced requests by model",
        "Requests with tokens but no price: their cost is missing from the cost panels.",
        "reqps",
        (
            Query(
                "sum by (provider, model) (rate(ractogateway_unpriced_requests_total"
                "{{{filter}}}[$__rate_interval]))",
                "{{provider}} {{model}}",
            ),
        ),
    ),
    Panel(
        "Cache hit ratio by cache type",
        "Hits / (hits + misses) of the gateway's response caches.",
        "percentunit",
        (Query(hit_ratio("[$__rate_interval]", "{{{job}}}"), "{{cache_type}}"),),
    ),
    Panel(
        "Saved by the cache per hour by model",
        "Estimated USD per hour that responses served from the gateway's cache did not "
        "cost (record_cache_hit with a model), beside the cost per hour spent.",
        "currencyUSD",
        (
            Query(
                "sum by (model) (rate(ractogateway_cache_saved_usd_total{{{job}}}"
                "[$__rate_interval])) * 3600",
                "saved {{model}}",
            ),
            Query(
                "sum(rate(ractogateway_cost_usd_total{{{filter}}}[$__rate_interval])) * 3600",
                "spent",
            ),
        ),
    ),
    Panel(
        "Top 10 tool calls",
        "Tool calls over the dashboard's time range.",
        "short",
        (
            Query(
                "topk(10, sum by (tool_name) (increase(ractogateway_tool_calls_total"
                "{{{job}}}[$__range])))",
                "{{tool_name}}",
            ),
        ),
        kind="bargauge",
    ),
    # Every other histogram a request feeds gets its quantiles, from the core's
    # family table: a family added there appears here.
    *(
        Panel(
            f"{name.removeprefix('ractogateway_').replace('_', ' ').capitalize()} "
            "p50 / p95 by model",
            f"{help_text} Observes {observes}.",
            GRAFANA_UNITS[unit],
            _quantiles(name, "model", (0.5, 0.95)),
        )
        for name, help_text, kind, _labels, _bounds, observes, unit in FAMILIES
        if kind == "histogram" and name not in SHOWN_BY_HAND | GEN_AI_ONLY
    ),
    Panel(
        "Recordings folded into overflow series",
        "Per second, by family: label sets past max_series go to __overflow__ series.",
        "short",
        (
            Query(
                "sum by (family) (rate(ractogateway_overflow_requests_total{{{job}}}"
                "[$__rate_interval]))",
                "{{family}}",
            ),
        ),
    ),
)
