"""Bad input: a clear error naming the argument, and nothing recorded."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from gateway_metrics import GatewayMetricsMiddleware, ToolCall
from support import parse, sample_value

GOOD = {
    "provider": "openai",
    "model": "gpt-4o",
    "operation": "chat",
    "status": "ok",
    "latency_s": 0.25,
    "input_tokens": 10,
    "output_tokens": 5,
}


class ExplodingName:
    @property
    def name(self):
        raise RuntimeError("tool name lookup failed")


class Truthy:
    """A non-str name object."""

    def __bool__(self) -> bool:
        return True


BAD_CALLS = [
    ({"latency_s": math.nan}, ValueError, "latency_s"),
    ({"latency_s": math.inf}, ValueError, "latency_s"),
    ({"latency_s": -math.inf}, ValueError, "latency_s"),
    ({"latency_s": -0.001}, ValueError, "latency_s"),
    ({"latency_s": -1}, ValueError, "latency_s"),
    ({"latency_s": 10**400}, ValueError, "latency_s"),
    ({"latency_s": "0.3"}, TypeError, "latency_s"),
    ({"latency_s": b"0.3"}, TypeError, "latency_s"),
    ({"latency_s": None}, TypeError, "latency_s"),
    ({"latency_s": [0.3]}, TypeError, "latency_s"),
    ({"input_tokens": -1}, ValueError, "input_tokens"),
    ({"output_tokens": -(2**70)}, ValueError, "output_tokens"),
    ({"input_tokens": 2**64}, ValueError, "input_tokens"),
    ({"output_tokens": 10**30}, ValueError, "output_tokens"),
    ({"input_tokens": 1.0}, TypeError, "input_tokens"),
    ({"input_tokens": 1.5}, TypeError, "input_tokens"),
    ({"output_tokens": "3"}, TypeError, "output_tokens"),
    ({"output_tokens": None}, TypeError, "output_tokens"),
    ({"input_tokens": Decimal(3)}, TypeError, "input_tokens"),
    ({"provider": 1}, TypeError, "provider"),
    ({"model": None}, TypeError, "model"),
    ({"operation": b"chat"}, TypeError, "operation"),
    ({"status": ["ok"]}, TypeError, "status"),
    ({"provider": "bad\ud800"}, ValueError, "provider"),
    ({"model": "\udfff"}, ValueError, "model"),
    ({"operation": "x\udc80y"}, ValueError, "operation"),
    ({"status": "\ud83d"}, ValueError, "status"),
    ({"tool_calls": "search"}, TypeError, "tool_calls"),
    ({"tool_calls": 3}, TypeError, "tool_calls"),
    ({"tool_calls": [ToolCall("ok"), ToolCall("bad\ud800")]}, ValueError, r"tool_calls\[1\]"),
    ({"tool_calls": [ToolCall(7)]}, TypeError, r"tool_calls\[0\].name"),
    ({"tool_calls": [ToolCall(Truthy())]}, TypeError, r"tool_calls\[0\].name"),
    ({"tool_calls": [ExplodingName()]}, RuntimeError, "tool name lookup failed"),
]


@pytest.mark.parametrize(("override", "error", "message"), BAD_CALLS)
def test_bad_request_raises_and_records_nothing(metrics, override, error, message, no_created):
    metrics.record_request(**GOOD, tool_calls=[ToolCall("search")])
    before = metrics.generate_latest()
    with pytest.raises(error, match=message):
        metrics.record_request(**{**GOOD, **override})
    assert metrics.generate_latest() == before
    with pytest.raises(error, match=message):
        metrics.record_request(**{**GOOD, "model": "fresh-model", **override})
    assert metrics.generate_latest() == before


def test_a_failing_generator_of_tool_calls_records_nothing(metrics, no_created):
    def tool_calls():
        yield ToolCall("a")
        raise KeyError("generator broke")

    before = metrics.generate_latest()
    with pytest.raises(KeyError, match="generator broke"):
        metrics.record_request(**GOOD, tool_calls=tool_calls())
    assert metrics.generate_latest() == before


@pytest.mark.parametrize("method", ["record_cache_hit", "record_cache_miss"])
@pytest.mark.parametrize(
    ("value", "error"),
    [(None, TypeError), (1, TypeError), (b"x", TypeError), ("\ud800", ValueError)],
)
def test_bad_cache_type_raises_and_records_nothing(metrics, method, value, error, no_created):
    before = metrics.generate_latest()
    with pytest.raises(error, match="cache_type"):
        getattr(metrics, method)(value)
    assert metrics.generate_latest() == before


def test_missing_or_unknown_keywords_raise_type_error(metrics):
    with pytest.raises(TypeError, match="latency_s"):
        metrics.record_request(provider="p", model="m", operation="o", status="s")
    with pytest.raises(TypeError, match="colour"):
        metrics.record_request(**GOOD, colour="blue")
    with pytest.raises(TypeError):
        metrics.record_request("openai", "gpt-4o", "chat", "ok", 0.1)


def test_a_lone_surrogate_never_breaks_later_scrapes(metrics, registry, no_created):
    with pytest.raises(ValueError, match="model"):
        metrics.record_request(**{**GOOD, "model": "\ud800"})
    metrics.record_request(**GOOD)
    families = parse(metrics.generate_latest())
    assert families[0][3][0][2] == 1.0


@pytest.mark.parametrize("latency", [0, 1, Fraction(1, 4), Decimal("0.25"), 0.0, 1e300])
def test_real_numbers_are_accepted_as_latency(metrics, latency, no_created):
    metrics.record_request(**{**GOOD, "latency_s": latency})
    families = {f[0]: f[3] for f in parse(metrics.generate_latest())}
    count = [
        s for s in families["ractogateway_request_duration_seconds"] if s[0].endswith("_count")
    ]
    assert count[0][2] == 1.0


def test_int_like_token_counts_are_accepted(metrics, no_created):
    import numpy as np

    metrics.record_request(**{**GOOD, "input_tokens": np.int64(7), "output_tokens": 2**64 - 1})
    families = {f[0]: f[3] for f in parse(metrics.generate_latest())}
    tokens = {s[1]["token_type"]: s[2] for s in families["ractogateway_tokens"]}
    assert tokens == {"input": 7.0, "output": float(2**64 - 1)}


def test_cache_methods_take_one_argument_by_position_or_keyword(metrics, no_created):
    metrics.record_cache_hit("exact")
    metrics.record_cache_hit(cache_type="exact")
    metrics.record_cache_miss(cache_type="semantic")
    before = metrics.generate_latest()
    for call in (
        metrics.record_cache_hit,
        lambda: metrics.record_cache_hit("a", "b"),
        lambda: metrics.record_cache_hit("a", cache_type="b"),
        lambda: metrics.record_cache_miss(kind="exact"),
    ):
        with pytest.raises(TypeError):
            call()
    assert metrics.generate_latest() == before
    assert sample_value(before, "ractogateway_cache_hits_total", cache_type="exact") == 2.0
    assert sample_value(before, "ractogateway_cache_misses_total", cache_type="semantic") == 1.0


def test_signatures_are_introspectable(metrics):
    import inspect

    assert str(inspect.signature(metrics.record_request)) == (
        "(*, provider, model, operation, status, latency_s, input_tokens=0, output_tokens=0, "
        "tool_calls=None, time_to_first_token_s=None, cache_read_tokens=0, cache_write_tokens=0, "
        "reasoning_tokens=0, queue_s=None, upstream_latency_s=None, audio_input_tokens=0, "
        "audio_output_tokens=0, labels=None, exemplar=None, error_type=None)"
    )
    assert str(inspect.signature(metrics.record_cache_hit)) == (
        "(cache_type, *, provider=None, model=None, input_tokens=0, output_tokens=0)"
    )
    assert str(inspect.signature(metrics.record_cache_miss)) == "(cache_type)"


@pytest.mark.parametrize(
    ("method", "arguments"),
    [
        ("record_request", GOOD),
        ("record_batch", GOOD),
        ("record_cache_hit", {"cache_type": "exact"}),
        ("record_cache_miss", {"cache_type": "exact"}),
    ],
)
def test_a_recording_method_called_on_another_object_is_a_type_error(method, arguments):
    unbound = getattr(GatewayMetricsMiddleware, method)
    with pytest.raises(TypeError, match=f"'{method}'.*doesn't apply to a 'object' object"):
        unbound(object(), **arguments)
