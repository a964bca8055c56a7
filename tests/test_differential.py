"""Randomized workloads through both middlewares give the same parsed exposition."""

from __future__ import annotations

from gateway_metrics import GatewayMetricsMiddleware, ToolCall
from gateway_metrics._core import HISTOGRAM_BUCKETS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from ractogateway.telemetry import ModelPricing as ReferencePricing
from ractogateway.telemetry.metrics import GatewayMetricsMiddleware as ReferenceMiddleware
from support import Nameless, assert_same_families

LABEL_VALUES = st.one_of(
    st.sampled_from(
        ["openai", "anthropic", "google", "", 'we"ird', "back\\slash", "new\nline", "ünï", "日本語"]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=12),
)
MODELS = st.one_of(
    st.sampled_from(
        [
            "gpt-4o",
            "gemini-2.0-flash",
            "claude-3-haiku-20240307",
            "custom-a",
            "custom-b",
            "unknown-model",
            'mo"del\n',
        ]
    ),
    LABEL_VALUES,
)
LATENCIES = st.one_of(
    st.sampled_from([0.0, *HISTOGRAM_BUCKETS]),
    st.floats(min_value=0.0, max_value=120.0, allow_nan=False),
    st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False),
)
# Every total stays below 2**64 (a workload has at most 30 requests), where our
# integer counters are exact and the reference's float ones are within rounding.
TOKENS = st.one_of(
    st.just(0),
    st.integers(min_value=0, max_value=5_000),
    st.integers(min_value=0, max_value=2**58),
)
TOOL_CALLS = st.one_of(
    st.none(),
    st.lists(
        st.one_of(
            st.builds(ToolCall, st.one_of(st.none(), st.just(""), LABEL_VALUES)),
            st.builds(Nameless),
        ),
        max_size=3,
    ),
)
REQUESTS = st.fixed_dictionaries(
    {
        "provider": LABEL_VALUES,
        "model": MODELS,
        "operation": st.sampled_from(["chat", "stream", "embed"]),
        "status": st.sampled_from(["ok", "error"]),
        "latency_s": LATENCIES,
        "input_tokens": TOKENS,
        "output_tokens": TOKENS,
        "tool_calls": TOOL_CALLS,
    }
)
CALLS = st.lists(
    st.one_of(
        st.tuples(st.just("request"), REQUESTS),
        st.tuples(st.sampled_from(["hit", "miss"]), st.sampled_from(["exact", "semantic", ""])),
    ),
    max_size=30,
)
PRICES = st.floats(min_value=1e-4, max_value=500.0, allow_nan=False)
PRICE_TABLES = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["custom-a", "custom-b", "gpt-4o", "gpt-5", "unknown-model"]),
        st.tuples(PRICES, PRICES),
        max_size=3,
    ),
)


def replay(target, calls) -> None:
    for kind, payload in calls:
        if kind == "request":
            target.record_request(**payload)
        elif kind == "hit":
            target.record_cache_hit(payload)
        else:
            target.record_cache_miss(payload)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(calls=CALLS, prices=PRICE_TABLES)
def test_random_workloads_match_the_reference(calls, prices, no_created):
    table = (
        None
        if prices is None
        else {
            model: ReferencePricing(input_per_million=i, output_per_million=o)
            for model, (i, o) in prices.items()
        }
    )
    ours = GatewayMetricsMiddleware(price_table=table, registry=CollectorRegistry())
    # Our default table adds current models; hand the reference the very same prices.
    same_prices = {
        model: ReferencePricing(
            input_per_million=p.input_per_million, output_per_million=p.output_per_million
        )
        for model, p in ours.price_table.items()
    }
    reference = ReferenceMiddleware(price_table=same_prices, registry=CollectorRegistry())
    replay(ours, calls)
    replay(reference, calls)
    assert_same_families(ours.generate_latest(), reference.generate_latest())


def test_empty_middlewares_match(no_created):
    ours = GatewayMetricsMiddleware(registry=CollectorRegistry())
    reference = ReferenceMiddleware(registry=CollectorRegistry())
    assert ours.generate_latest() == reference.generate_latest()


def test_a_long_fixed_workload_is_byte_identical(no_created):
    ours = GatewayMetricsMiddleware(registry=CollectorRegistry())
    reference = ReferenceMiddleware(registry=CollectorRegistry())
    models = ["gpt-4o", "gpt-4o-mini", "claude-3-haiku-20240307", "gemini-1.5-flash-8b", "mystery"]
    calls = []
    for i in range(2_000):
        calls.append(
            (
                "request",
                {
                    "provider": ["openai", "anthropic", "google"][i % 3],
                    "model": models[i % len(models)],
                    "operation": ["chat", "stream", "embed"][i % 3],
                    "status": "error" if i % 17 == 0 else "ok",
                    "latency_s": (i % 97) * 0.731,
                    "input_tokens": (i * 7919) % 4000,
                    "output_tokens": (i * 104729) % 900,
                    "tool_calls": [ToolCall(f"tool-{i % 4}")] if i % 5 == 0 else None,
                },
            )
        )
        if i % 11 == 0:
            calls.append(("hit", "exact"))
    replay(ours, calls)
    replay(reference, calls)
    assert ours.generate_latest() == reference.generate_latest()
