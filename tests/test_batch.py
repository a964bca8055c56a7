"""record_batch equals one record_request per row, and records nothing from a bad batch."""

from __future__ import annotations

import array
import math

import numpy as np
import pytest
from gateway_metrics import GatewayMetricsMiddleware, ToolCall
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from support import Nameless, assert_same_families

MODELS = ["gpt-4o", "gemini-2.0-flash", "mystery", 'we"ird\n', "claude-3-haiku-20240307"]
ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "provider": st.sampled_from(["openai", "google", "anthropic"]),
            "model": st.sampled_from(MODELS),
            "operation": st.sampled_from(["chat", "stream", "embed"]),
            "status": st.sampled_from(["ok", "error"]),
            "latency_s": st.one_of(
                st.sampled_from([0.0, 0.05, 0.1, 60.0]),
                st.floats(min_value=0, max_value=100, allow_nan=False),
            ),
            "input_tokens": st.integers(min_value=0, max_value=100_000),
            "output_tokens": st.integers(min_value=0, max_value=100_000),
            "tool_calls": st.one_of(
                st.none(),
                st.lists(
                    st.one_of(
                        st.builds(ToolCall, st.sampled_from(["search", "", None, "calc"])),
                        st.builds(Nameless),
                    ),
                    max_size=2,
                ),
            ),
        }
    ),
    min_size=1,
    max_size=40,
)
COLUMN_KINDS = st.sampled_from(["list", "tuple", "numpy", "array"])


def as_column(values, kind, integer):
    if kind == "list":
        return list(values)
    if kind == "tuple":
        return tuple(values)
    if kind == "numpy":
        return np.array(values, dtype=np.int64 if integer else np.float64)
    return array.array("q" if integer else "d", values)


def fresh():
    return GatewayMetricsMiddleware(registry=CollectorRegistry())


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=ROWS, kind=COLUMN_KINDS, scalar_labels=st.booleans())
def test_a_batch_equals_one_call_per_row(rows, kind, scalar_labels, no_created):
    if scalar_labels:
        rows = [{**row, "provider": "openai", "operation": "chat", "status": "ok"} for row in rows]
    single, batched = fresh(), fresh()
    for row in rows:
        single.record_request(**row)
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    recorded = batched.record_batch(
        provider="openai" if scalar_labels else columns["provider"],
        model=columns["model"],
        operation="chat" if scalar_labels else tuple(columns["operation"]),
        status="ok" if scalar_labels else columns["status"],
        latency_s=as_column(columns["latency_s"], kind, integer=False),
        input_tokens=as_column(columns["input_tokens"], kind, integer=True),
        output_tokens=as_column(columns["output_tokens"], kind, integer=True),
        tool_calls=columns["tool_calls"],
    )
    assert recorded == len(rows)
    ours, expected = batched.generate_latest(), single.generate_latest()
    assert_same_families(ours, expected, float_tolerance=1e-12)


def test_scalars_apply_to_every_row(no_created):
    single, batched = fresh(), fresh()
    for latency in (0.2, 0.3, 7.0):
        single.record_request(
            provider="openai",
            model="gpt-4o",
            operation="chat",
            status="ok",
            latency_s=latency,
            input_tokens=100,
            output_tokens=20,
        )
    assert (
        batched.record_batch(
            provider="openai",
            model="gpt-4o",
            operation="chat",
            status="ok",
            latency_s=[0.2, 0.3, 7.0],
            input_tokens=100,
            output_tokens=20,
        )
        == 3
    )
    assert_same_families(batched.generate_latest(), single.generate_latest(), float_tolerance=1e-12)


def test_all_scalars_is_one_row(no_created):
    metrics = fresh()
    assert (
        metrics.record_batch(provider="p", model="m", operation="chat", status="ok", latency_s=1.0)
        == 1
    )
    assert "ractogateway_requests_total{" in metrics.generate_latest()


def test_float32_and_small_integer_dtypes(no_created):
    metrics = fresh()
    metrics.record_batch(
        provider="p",
        model="gpt-4o",
        operation="chat",
        status="ok",
        latency_s=np.array([0.5, 1.5], dtype=np.float32),
        input_tokens=np.array([10, 20], dtype=np.uint16),
        output_tokens=np.array([1, 2], dtype=np.int8),
    )
    text = metrics.generate_latest()
    assert 'token_type="input"} 30.0' in text
    assert 'token_type="output"} 3.0' in text


GOOD = {
    "provider": "openai",
    "model": ["gpt-4o", "gpt-4o", "mystery"],
    "operation": "chat",
    "status": "ok",
    "latency_s": [0.1, 0.2, 0.3],
    "input_tokens": [1, 2, 3],
    "output_tokens": 0,
}

BAD_BATCHES = [
    ({"latency_s": [0.1, math.nan, 0.3]}, ValueError, r"latency_s\[1\]"),
    ({"latency_s": np.array([0.1, 0.2, -1.0])}, ValueError, r"latency_s\[2\]"),
    ({"latency_s": np.array([0.1, np.inf, 0.3])}, ValueError, r"latency_s\[1\]"),
    ({"latency_s": [0.1, "0.2", 0.3]}, TypeError, r"latency_s\[1\]"),
    ({"latency_s": np.array(["a", "b", "c"])}, TypeError, "latency_s"),
    ({"latency_s": np.zeros((3, 1))}, ValueError, "latency_s"),
    ({"input_tokens": [1, -2, 3]}, ValueError, r"input_tokens\[1\]"),
    ({"input_tokens": np.array([1, 2, -3])}, ValueError, r"input_tokens\[2\]"),
    ({"input_tokens": array.array("i", [1, -2, 3])}, ValueError, r"input_tokens\[1\]"),
    ({"input_tokens": np.array([1.0, 2.0, 3.0])}, TypeError, "input_tokens"),
    ({"output_tokens": [1, 2.5, 3]}, TypeError, r"output_tokens\[1\]"),
    ({"output_tokens": [0, 0, 2**64]}, ValueError, r"output_tokens\[2\]"),
    ({"model": ["gpt-4o", 5, "m"]}, TypeError, r"model\[1\]"),
    ({"model": ["gpt-4o", "m", "\ud800"]}, ValueError, r"model\[2\]"),
    ({"provider": None}, TypeError, "provider"),
    ({"status": ["ok", "ok"]}, ValueError, "differ in length"),
    ({"latency_s": np.array([0.1, 0.2])}, ValueError, "differ in length"),
    ({"tool_calls": [None, "search", None]}, TypeError, r"tool_calls\[1\]"),
    ({"tool_calls": [None, None, [ToolCall("\ud800")]]}, ValueError, r"tool_calls\[2\]\[0\].name"),
    ({"tool_calls": "search"}, TypeError, "tool_calls"),
]


@pytest.mark.parametrize(("override", "error", "message"), BAD_BATCHES)
def test_a_bad_batch_records_nothing(metrics, override, error, message, no_created):
    metrics.record_batch(**GOOD)
    before = metrics.generate_latest()
    with pytest.raises(error, match=message):
        metrics.record_batch(**{**GOOD, **override})
    assert metrics.generate_latest() == before


def test_an_empty_batch_records_nothing(metrics, no_created):
    before = metrics.generate_latest()
    assert (
        metrics.record_batch(
            provider="p", model=[], operation="chat", status="ok", latency_s=np.array([])
        )
        == 0
    )
    assert metrics.generate_latest() == before
