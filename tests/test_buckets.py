"""Configurable latency buckets: a Python model of the histogram, prometheus_client's
own histogram, batches, both multi-process modes, and refusals."""

from __future__ import annotations

import bisect
import gc
import math
import os
import warnings
from pathlib import Path

import pytest
from gateway_metrics import GatewayMetricsMiddleware, multiprocess
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import ReferenceModel, prometheus_multiprocess_run, promtool_check

DURATION = "ractogateway_request_duration_seconds"
REQUEST = {"provider": "openai", "model": "gpt-4o", "operation": "chat", "status": "ok"}
LABELS = (("model", "gpt-4o"), ("operation", "chat"), ("provider", "openai"))
BOUNDS = (0.5, 1, 2.5, 4, 7.5, 1e6)

LATENCIES = st.lists(
    st.one_of(
        st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0, 7.5, 1e6, 2e6]),
        st.floats(min_value=0, max_value=20, allow_nan=False),
    ),
    min_size=1,
    max_size=60,
)


def duration_samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == DURATION
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def model(latencies: list[float], bounds: tuple[float, ...]) -> dict[tuple[str, tuple], float]:
    """The duration family a straightforward histogram would show."""
    counts = [0] * (len(bounds) + 1)
    for latency in latencies:
        counts[bisect.bisect_left(bounds, latency)] += 1
    samples: dict[tuple[str, tuple], float] = {}
    running = 0
    for bound, count in zip([*bounds, math.inf], counts):
        running += count
        le = "+Inf" if bound == math.inf else repr(float(bound)).replace("1000000.0", "1e+06")
        samples[(f"{DURATION}_bucket", tuple(sorted((*LABELS, ("le", le)))))] = running
    samples[(f"{DURATION}_count", LABELS)] = running
    samples[(f"{DURATION}_sum", LABELS)] = sum(latencies)
    return samples


@settings(max_examples=60, deadline=None)
@given(LATENCIES)
def test_custom_buckets_count_as_a_plain_model_and_as_prometheus_client(latencies):
    ours = GatewayMetricsMiddleware(registry=CollectorRegistry(), latency_buckets=BOUNDS)
    reference = ReferenceModel(latency_buckets=list(BOUNDS))
    for latency in latencies:
        ours.record_request(**REQUEST, latency_s=latency)
        reference.record(**REQUEST, latency_s=latency)
    text = ours.generate_latest()
    samples = duration_samples(text)
    expected = model(latencies, BOUNDS)
    assert samples.keys() == expected.keys()
    for key, value in expected.items():
        assert math.isclose(samples[key], value, rel_tol=1e-12), key
    assert samples == duration_samples(generate_latest(reference.registry).decode())
    assert ours.latency_buckets == tuple(float(bound) for bound in BOUNDS)


def test_custom_buckets_pass_promtool_and_batches_equal_single_calls(no_created):
    latencies = [0.1, 0.5, 0.7, 3.0, 9.0, 2e6]
    single = GatewayMetricsMiddleware(registry=CollectorRegistry(), latency_buckets=BOUNDS)
    for latency in latencies:
        single.record_request(**REQUEST, latency_s=latency)
    batched = GatewayMetricsMiddleware(registry=CollectorRegistry(), latency_buckets=BOUNDS)
    batched.record_batch(**REQUEST, latency_s=latencies)
    text = single.generate_latest()
    assert batched.generate_latest() == text
    promtool_check(text)
    assert f'{DURATION}_bucket{{le="1e+06",' in text


@pytest.mark.parametrize(
    ("buckets", "error", "message"),
    [
        ([], ValueError, "latency_buckets must hold at least one bound"),
        ([0, 1], ValueError, "latency_buckets must be finite and above zero"),
        ([1, math.inf], ValueError, "latency_buckets must be finite and above zero"),
        ([1, math.nan], ValueError, "latency_buckets must be finite and above zero"),
        ([2, 1], ValueError, "latency_buckets must increase strictly"),
        ([1, 1], ValueError, "latency_buckets must increase strictly"),
        ("1,2", TypeError, "latency_buckets must be an iterable of numbers"),
        ([1, "2"], TypeError, "latency_buckets must hold numbers, not str"),
        ([True], TypeError, "latency_buckets must hold numbers, not bool"),
    ],
)
def test_bad_buckets_are_refused_by_name(buckets, error, message):
    with pytest.raises(error, match=message):
        GatewayMetricsMiddleware(registry=CollectorRegistry(), latency_buckets=buckets)


def test_our_multiprocess_mode_sums_custom_buckets_and_skips_other_buckets(tmp_path):
    first = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), multiprocess_dir=tmp_path, latency_buckets=BOUNDS
    )
    second = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), multiprocess_dir=tmp_path, latency_buckets=BOUNDS
    )
    first.record_request(**REQUEST, latency_s=0.7)
    second.record_request(**REQUEST, latency_s=9.0)
    other = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=tmp_path)
    other.record_request(**REQUEST, latency_s=0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        samples = duration_samples(first.generate_latest())
    assert samples == model([0.7, 9.0], BOUNDS)
    with pytest.warns(RuntimeWarning, match="written with another schema"):
        other_view = duration_samples(other.generate_latest())
    assert other_view[(f"{DURATION}_count", LABELS)] == 1.0
    # Compaction folds the files of the first file's buckets and leaves the others.
    del first, second
    gc.collect()
    assert multiprocess.compact(tmp_path).folded == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reader = GatewayMetricsMiddleware(
            registry=CollectorRegistry(), multiprocess_dir=tmp_path, latency_buckets=BOUNDS
        )
        assert duration_samples(reader.generate_latest()) == model([0.7, 9.0], BOUNDS)


def test_prometheus_clients_mode_with_custom_buckets(tmp_path):
    collected = prometheus_multiprocess_run(
        f"""
        from prometheus_client import CollectorRegistry
        from gateway_metrics import GatewayMetricsMiddleware
        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), latency_buckets={BOUNDS!r})
        for latency in (0.7, 9.0, 2e6):
            metrics.record_request(provider="openai", model="gpt-4o", operation="chat",
                                   status="ok", latency_s=latency)
        """,
        tmp_path,
    )
    samples = duration_samples(collected)
    assert samples == model([0.7, 9.0, 2e6], BOUNDS)
    assert all(Path(tmp_path, name).suffix == ".db" for name in os.listdir(tmp_path))
