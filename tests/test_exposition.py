"""The exposition: byte-compatible with the reference, valid for every parser and promtool."""

from __future__ import annotations

import os
import time
from pathlib import Path

import prometheus_client
import pytest
from gateway_metrics import GatewayMetricsMiddleware, ToolCall
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from support import Nameless, parse, promtool_check, sample_value

SAMPLE = Path(__file__).parent / "data" / "reference-exposition-sample.txt"


def record_reference_sample(metrics: GatewayMetricsMiddleware) -> None:
    """The calls whose reference output is in tests/data/reference-exposition-sample.txt."""
    metrics.record_request(
        provider="openai",
        model="gpt-4o",
        operation="chat",
        status="ok",
        latency_s=0.3,
        input_tokens=1000,
        output_tokens=200,
        tool_calls=[ToolCall("search"), ToolCall(None)],
    )
    metrics.record_request(
        provider="anthropic",
        model='we"ird\\mo\ndel',
        operation="stream",
        status="error",
        latency_s=61,
    )
    metrics.record_request(
        provider="google",
        model="gemini-2.0-flash",
        operation="embed",
        status="ok",
        latency_s=0.05,
        input_tokens=300,
    )
    metrics.record_cache_hit("exact")
    metrics.record_cache_miss("semantic")


def test_output_is_byte_identical_to_the_reference_sample(metrics, registry, no_created):
    record_reference_sample(metrics)
    expected = SAMPLE.read_text(encoding="utf-8")
    assert metrics.generate_latest() == expected
    assert prometheus_client.generate_latest(registry).decode() == expected


def test_empty_middleware_prints_every_family_header(metrics, no_created):
    families = parse(metrics.generate_latest())
    assert [(name, kind) for name, kind, _, _ in families] == [
        ("ractogateway_requests", "counter"),
        ("ractogateway_request_duration_seconds", "histogram"),
        ("ractogateway_tokens", "counter"),
        ("ractogateway_cost_usd", "counter"),
        ("ractogateway_cache_hits", "counter"),
        ("ractogateway_cache_misses", "counter"),
        ("ractogateway_tool_calls", "counter"),
    ]
    assert all(samples == [] for *_, samples in families)
    assert families[2][2] == "Total tokens consumed \u2014 labelled by token_type (input / output)."


def test_created_series_follow_prometheus_client(metrics, registry):
    before = time.time()
    record_reference_sample(metrics)
    text = metrics.generate_latest()
    assert text == prometheus_client.generate_latest(registry).decode()
    created = sample_value(text, "ractogateway_cache_hits_created", cache_type="exact")
    assert created is not None and before - 1 <= created <= time.time() + 1
    assert "# TYPE ractogateway_requests_created gauge\n" in text
    assert (
        sample_value(
            text,
            "ractogateway_request_duration_seconds_created",
            model="gpt-4o",
            operation="chat",
            provider="openai",
        )
        is not None
    )


def test_created_series_vanish_when_disabled(metrics, no_created):
    record_reference_sample(metrics)
    assert "_created" not in metrics.generate_latest()


def test_collector_serves_prometheus_client_helpers(metrics, registry):
    record_reference_sample(metrics)
    value = registry.get_sample_value(
        "ractogateway_cost_usd_total", {"model": "gpt-4o", "provider": "openai"}
    )
    assert value == 0.0045000000000000005
    assert (
        registry.get_sample_value(
            "ractogateway_request_duration_seconds_bucket",
            {"model": "gpt-4o", "operation": "chat", "provider": "openai", "le": "0.5"},
        )
        == 1.0
    )
    assert registry.get_sample_value("ractogateway_tool_calls_total", {"tool_name": "unknown"}) == 1


def test_tool_calls_without_a_usable_name_count_as_unknown(metrics, no_created):
    metrics.record_request(
        provider="p",
        model="m",
        operation="chat",
        status="ok",
        latency_s=0.1,
        tool_calls=(ToolCall(""), ToolCall(None), Nameless(), ToolCall("lookup")),
    )
    text = metrics.generate_latest()
    assert sample_value(text, "ractogateway_tool_calls_total", tool_name="unknown") == 3.0
    assert sample_value(text, "ractogateway_tool_calls_total", tool_name="lookup") == 1.0


def test_a_second_middleware_on_the_same_registry_is_rejected_with_both_fixes(metrics, registry):
    with pytest.raises(ValueError, match="already has the ractogateway_") as refused:
        GatewayMetricsMiddleware(registry=registry)
    message = str(refused.value)
    assert "already has the ractogateway_* metrics" in message
    assert "reuse that instance" in message
    assert "GatewayMetricsMiddleware(registry=CollectorRegistry())" in message
    assert "Duplicated timeseries" in str(refused.value.__cause__)


def test_a_middleware_made_in_a_forked_child_is_told_to_reuse_its_parents(tmp_path):
    parent = GatewayMetricsMiddleware()  # on the global registry, as most users do
    try:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                GatewayMetricsMiddleware()
                message = b"no error"
            except ValueError as error:
                message = str(error).encode()
            os.write(write_end, message)
            os._exit(0)
        os.close(write_end)
        message = os.read(read_end, 4096).decode()
        os.waitpid(pid, 0)
        assert "reuse that instance (it keeps working in forked children)" in message
    finally:
        parent.unregister()


def test_the_reference_and_ours_cannot_share_a_registry(metrics, registry):
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("ractogateway_requests_total", "clash", registry=registry)


def test_global_registry_is_the_default():
    metrics = GatewayMetricsMiddleware()
    try:
        assert metrics.registry is prometheus_client.REGISTRY
        metrics.record_cache_hit("global-default-test")
        assert (
            prometheus_client.REGISTRY.get_sample_value(
                "ractogateway_cache_hits_total", {"cache_type": "global-default-test"}
            )
            == 1.0
        )
    finally:
        metrics.unregister()


def test_promtool_reports_nothing(metrics):
    record_reference_sample(metrics)
    metrics.record_request(
        provider="openai",
        model='ünï\\cödé "q"',
        operation="stream",
        status="ok",
        latency_s=1e-9,
        input_tokens=2**60,
        output_tokens=7,
    )
    assert promtool_check(metrics.generate_latest()) == ""


def test_openmetrics_rendering_parses(metrics, registry):
    record_reference_sample(metrics)
    text = openmetrics_latest(registry).decode()
    families = {f.name: f for f in openmetrics_families(text)}
    requests = families["ractogateway_requests"]
    assert requests.type == "counter"
    assert [s.value for s in requests.samples if s.name.endswith("_total")] == [1.0, 1.0, 1.0]
    histogram = families["ractogateway_request_duration_seconds"]
    counts = [s.value for s in histogram.samples if s.name.endswith("_count")]
    assert counts == [1.0, 1.0, 1.0]


def test_large_values_use_go_float_formatting(metrics, registry, no_created):
    metrics.record_request(
        provider="p",
        model="m",
        operation="chat",
        status="ok",
        latency_s=1234567.5,
        input_tokens=10**7,
    )
    text = metrics.generate_latest()
    assert 'ractogateway_tokens_total{model="m",provider="p",token_type="input"} 1e+07\n' in text
    assert "ractogateway_request_duration_seconds_sum" in text
    assert '{model="m",operation="chat",provider="p"} 1.2345675e+06\n' in text
    assert text == prometheus_client.generate_latest(registry).decode()


def test_registries_are_independent():
    first, second = CollectorRegistry(), CollectorRegistry()
    a = GatewayMetricsMiddleware(registry=first)
    GatewayMetricsMiddleware(registry=second)
    a.record_cache_miss("exact")
    assert first.get_sample_value("ractogateway_cache_misses_total", {"cache_type": "exact"}) == 1
    assert (
        second.get_sample_value("ractogateway_cache_misses_total", {"cache_type": "exact"}) is None
    )


@settings(max_examples=300, deadline=None)
@given(
    latencies=st.lists(
        st.one_of(
            st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
            st.integers(min_value=0, max_value=2**53).map(lambda n: n / 1024),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_every_float_prints_as_prometheus_client_prints_it(latencies):
    from prometheus_client.utils import floatToGoString

    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    for index, latency in enumerate(latencies):
        metrics.record_request(
            provider="p", model=f"m{index}", operation="o", status="s", latency_s=latency
        )
    text = metrics.generate_latest()
    for index, latency in enumerate(latencies):
        line = (
            f'ractogateway_request_duration_seconds_sum{{model="m{index}",operation="o",'
            f'provider="p"}} {floatToGoString(latency)}\n'
        )
        assert line in text


@settings(max_examples=200, deadline=None)
@given(
    models=st.lists(
        st.one_of(
            st.text(max_size=12),
            st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=12),
            st.text(alphabet='ab\u2014\u00e9\U0001f600"\\\n', max_size=12),
        ),
        min_size=1,
        max_size=8,
    ),
    counts=st.lists(st.integers(min_value=1, max_value=3), min_size=8, max_size=8),
)
def test_generate_latest_is_the_str_prometheus_client_decodes(models, counts):
    # Our `str` is written as code units, not decoded: it must still equal (and
    # so be stored at the width of) the text prometheus_client renders, whatever
    # characters the label values hold.
    registry = CollectorRegistry()
    metrics = GatewayMetricsMiddleware(registry=registry)
    for model, count in zip(models, counts):
        for _ in range(count):
            metrics.record_request(
                provider="p", model=model, operation="o", status="s", latency_s=0.25
            )
    expected = prometheus_client.generate_latest(registry).decode()
    assert metrics.generate_latest() == expected
    assert metrics.generate_latest().encode() == prometheus_client.generate_latest(registry)
