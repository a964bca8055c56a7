"""Time to first token, time per output token and token types, against a model of
them built from prometheus_client's own metrics, in every path."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from gateway_metrics import GatewayMetricsMiddleware, _core
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import ReferenceModel, prometheus_multiprocess_run, promtool_check

FIRST_TOKEN = "ractogateway_time_to_first_token_seconds"
PER_TOKEN = "ractogateway_time_per_output_token_seconds"
TOKENS = "ractogateway_tokens"
FIRST_TOKEN_BOUNDS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5]
FIRST_TOKEN_BOUNDS += [7.5, 10]
PER_TOKEN_BOUNDS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5]
LABELS = {"provider": "openai", "operation": "chat", "status": "ok"}


@st.composite
def requests(draw):
    latency = draw(st.floats(min_value=0, max_value=30, allow_nan=False))
    streamed = draw(st.booleans())
    first = draw(st.floats(min_value=0, max_value=latency)) if streamed else None
    input_tokens = draw(st.integers(min_value=0, max_value=5000))
    cache_read = draw(st.integers(min_value=0, max_value=input_tokens))
    cache_write = draw(st.integers(min_value=0, max_value=input_tokens - cache_read))
    output_tokens = draw(st.integers(min_value=0, max_value=3000))
    reasoning = draw(st.integers(min_value=0, max_value=output_tokens))
    return {
        "model": draw(st.sampled_from(["gpt-4o", "o3-mini", "claude-3-5-sonnet"])),
        "latency_s": latency,
        "time_to_first_token_s": first,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "reasoning_tokens": reasoning,
    }


WORKLOADS = st.lists(requests(), min_size=1, max_size=30)


def modelled(rows: list[dict]) -> str:
    """The new families as prometheus_client itself would keep them."""
    model = ReferenceModel()
    for row in rows:
        model.record(**LABELS, **row)
    return generate_latest(model.registry).decode()


def test_the_family_table_has_vllms_buckets():
    bounds = {name: bounds for name, _, _, _, bounds, *_ in _core.FAMILIES}
    assert bounds[FIRST_TOKEN] == FIRST_TOKEN_BOUNDS
    assert bounds[PER_TOKEN] == PER_TOKEN_BOUNDS


def samples(text: str, families=(FIRST_TOKEN, PER_TOKEN, TOKENS)) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.name in families
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def assert_close(ours: dict, expected: dict) -> None:
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        assert math.isclose(ours[key], value, rel_tol=1e-9, abs_tol=1e-12), (key, ours[key], value)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(WORKLOADS)
def test_new_families_equal_prometheus_clients_model(rows):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    for row in rows:
        metrics.record_request(**LABELS, **row)
    text = metrics.generate_latest()
    assert_close(samples(text), samples(modelled(rows)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(WORKLOADS, st.booleans())
def test_a_batch_records_what_one_call_per_row_records(rows, as_numpy):
    single = GatewayMetricsMiddleware(registry=CollectorRegistry())
    for row in rows:
        single.record_request(**LABELS, **row)
    batched = GatewayMetricsMiddleware(registry=CollectorRegistry())
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    if as_numpy:
        columns["time_to_first_token_s"] = np.array(
            [math.nan if first is None else first for first in columns["time_to_first_token_s"]]
        )
        for key in ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens"):
            columns[key] = np.array(columns[key], dtype=np.uint32)
    assert batched.record_batch(**LABELS, **columns) == len(rows)
    assert_close(samples(batched.generate_latest()), samples(single.generate_latest()))


def test_every_family_passes_promtool_and_the_seed_only_output_has_none_of_the_new():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    metrics.record_request(**LABELS, model="gpt-4o", latency_s=1.0, input_tokens=5)
    seed_only = metrics.generate_latest()
    assert FIRST_TOKEN not in seed_only and PER_TOKEN not in seed_only
    assert 'token_type="cache_read"' not in seed_only
    metrics.record_request(
        **LABELS,
        model="gpt-4o",
        latency_s=2.0,
        time_to_first_token_s=0.5,
        input_tokens=100,
        output_tokens=31,
        cache_read_tokens=60,
        cache_write_tokens=10,
        reasoning_tokens=20,
    )
    text = metrics.generate_latest()
    promtool_check(text)
    found = samples(text)
    labels = (("model", "gpt-4o"), ("operation", "chat"), ("provider", "openai"))
    assert found[(f"{FIRST_TOKEN}_sum", labels)] == 0.5
    assert found[(f"{PER_TOKEN}_sum", labels)] == 1.5 / 30
    assert found[(f"{PER_TOKEN}_bucket", (("le", "0.05"), *labels))] == 1.0
    token_labels = (("model", "gpt-4o"), ("provider", "openai"))
    counts = [
        found[(f"{TOKENS}_total", (*token_labels, ("token_type", kind)))]
        for kind in ("input", "output", "cache_read", "cache_write", "reasoning")
    ]
    assert counts == [105, 31, 60, 10, 20]


PARTS = r"cache_read_tokens \+ cache_write_tokens must not exceed input_tokens"


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (
            {"input_tokens": 10, "cache_read_tokens": 8, "cache_write_tokens": 3},
            ValueError,
            PARTS + r", got 8 \+ 3 > 10",
        ),
        (
            {"output_tokens": 2, "reasoning_tokens": 3},
            ValueError,
            "reasoning_tokens must not exceed output_tokens, got 3 > 2",
        ),
        (
            {"time_to_first_token_s": 1.5},
            ValueError,
            "time_to_first_token_s must not exceed latency_s, got 1.5 > 1.0",
        ),
        ({"time_to_first_token_s": -0.1}, ValueError, "time_to_first_token_s must not be negative"),
        ({"time_to_first_token_s": math.nan}, ValueError, "time_to_first_token_s must be finite"),
        ({"time_to_first_token_s": "0.1"}, TypeError, "time_to_first_token_s must be a real"),
        ({"cache_read_tokens": 1.0}, TypeError, "cache_read_tokens must be an int"),
        ({"reasoning_tokens": -1}, ValueError, "reasoning_tokens must not be negative"),
    ],
)
def test_bad_new_arguments_are_refused_by_name_and_record_nothing(arguments, error, message):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with pytest.raises(error, match=message):
        metrics.record_request(**LABELS, model="gpt-4o", latency_s=1.0, **arguments)
    # In a batch the same refusal names the row.
    first_argument = message.split(" ")[0]
    columns = {key: [value] for key, value in arguments.items()}
    with pytest.raises(error, match=rf"{first_argument}\[0\]"):
        metrics.record_batch(**LABELS, model=["gpt-4o"], latency_s=[1.0], **columns)
    assert "ractogateway_requests_total{" not in metrics.generate_latest()


def test_our_multiprocess_mode_sums_the_new_families(tmp_path, no_created):
    rows = [
        {
            "model": "gpt-4o",
            "latency_s": 2.0,
            "time_to_first_token_s": 0.25,
            "output_tokens": 5,
            "input_tokens": 9,
            "cache_read_tokens": 4,
            "reasoning_tokens": 1,
        },
        {"model": "gpt-4o", "latency_s": 1.0, "time_to_first_token_s": 0.5, "output_tokens": 1},
    ]
    single = GatewayMetricsMiddleware(registry=CollectorRegistry())
    first = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=tmp_path)
    second = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=tmp_path)
    for target, row in ((first, rows[0]), (second, rows[1]), (single, rows[0]), (single, rows[1])):
        target.record_request(**LABELS, **row)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sorted(first.generate_latest().splitlines()) == sorted(
            single.generate_latest().splitlines()
        )


def test_prometheus_clients_mode_shows_the_new_families(tmp_path):
    collected = prometheus_multiprocess_run(
        """
        from prometheus_client import CollectorRegistry
        from gateway_metrics import GatewayMetricsMiddleware
        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
        metrics.record_request(provider="openai", model="gpt-4o", operation="chat", status="ok",
                               latency_s=2.0, time_to_first_token_s=0.25, output_tokens=5,
                               input_tokens=9, cache_write_tokens=9, reasoning_tokens=2)
        """,
        tmp_path,
    )
    rows = [
        {
            "model": "gpt-4o",
            "latency_s": 2.0,
            "time_to_first_token_s": 0.25,
            "output_tokens": 5,
            "input_tokens": 9,
            "cache_read_tokens": 0,
            "cache_write_tokens": 9,
            "reasoning_tokens": 2,
        }
    ]
    assert_close(samples(collected), samples(modelled(rows)))
