"""Fields added as rows of the core's tables alone: ``queue_s``, ``upstream_latency_s``
(with the gateway's own overhead) and audio tokens, in every path."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from gateway_metrics import GatewayMetricsMiddleware, Usage, compute_cost, usage_from
from gateway_metrics.ops import dashboard, recording_rules
from prometheus_client import CollectorRegistry, generate_latest
from support import (
    ReferenceModel,
    assert_close_samples,
    model_samples,
    parse,
    prometheus_multiprocess_run,
    prometheus_server,
    promtool_check,
    sample_value,
    samples_by_series,
    wait_for_values,
)

LABELS = {"provider": "openai", "model": "gpt-4o", "operation": "chat"}
CALL = {**LABELS, "status": "ok"}
QUEUE = "ractogateway_queue_time_seconds"
UPSTREAM = "ractogateway_upstream_latency_seconds"
OVERHEAD = "ractogateway_gateway_overhead_seconds"
NEW = (QUEUE, UPSTREAM, OVERHEAD)

#: Latencies are multiples of 1/1024 s, so every sum below is exact.
ROWS = [
    {"latency_s": 1.0, "queue_s": 0.125, "upstream_latency_s": 0.75},
    {"latency_s": 2.0, "upstream_latency_s": 1.5},
    {"latency_s": 0.5, "queue_s": 0.25},
    {"latency_s": 0.25},
]


#: A call with audio tokens.
AUDIO_CALL = {
    "latency_s": 0.5,
    "input_tokens": 1000,
    "audio_input_tokens": 300,
    "cache_read_tokens": 200,
    "output_tokens": 50,
    "audio_output_tokens": 40,
    "reasoning_tokens": 5,
}


def record_rows(metrics: GatewayMetricsMiddleware) -> None:
    for row in ROWS:
        metrics.record_request(**CALL, input_tokens=100, output_tokens=10, **row)
    metrics.record_request(**CALL, **AUDIO_CALL)


def check_values(text: str) -> None:
    """What ``record_rows`` records, read back by prometheus_client's parser."""

    def value(name: str, **extra: str) -> float | None:
        return sample_value(text, name, **LABELS, **extra)

    assert value(f"{QUEUE}_count") == 2
    assert value(f"{QUEUE}_sum") == 0.375
    assert value(f"{UPSTREAM}_count") == 2
    assert value(f"{UPSTREAM}_sum") == 2.25
    # Overhead where upstream is given: 1 - 0.75 - 0.125, and 2 - 1.5 (queue 0).
    assert value(f"{OVERHEAD}_count") == 2
    assert value(f"{OVERHEAD}_sum") == 0.625
    assert value(f"{OVERHEAD}_bucket", le="0.25") == 1
    assert value(f"{OVERHEAD}_bucket", le="0.5") == 2
    tokens = "ractogateway_tokens_total"
    pair = {"model": "gpt-4o", "provider": "openai"}
    assert sample_value(text, tokens, **pair, token_type="audio_input") == 300
    assert sample_value(text, tokens, **pair, token_type="audio_output") == 40
    assert sample_value(text, tokens, **pair, token_type="input") == 1400


def test_a_call_records_the_new_families_and_token_types():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record_rows(metrics)
    text = metrics.generate_latest()
    check_values(text)
    promtool_check(text)


def test_they_equal_the_prometheus_client_reference_model():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record_rows(metrics)
    model = ReferenceModel()
    for row in ROWS:
        model.record(**CALL, input_tokens=100, output_tokens=10, **row)
    model.record(**CALL, **AUDIO_CALL)
    families = (*NEW, "ractogateway_tokens", "ractogateway_request_duration_seconds")
    assert_close_samples(
        model_samples(metrics.generate_latest(), families), model.samples(families)
    )


def test_the_reference_arguments_print_none_of_them():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    metrics.record_request(**CALL, latency_s=0.5, input_tokens=10, output_tokens=5)
    text = metrics.generate_latest()
    assert not any(name in text for name in NEW)
    assert "audio" not in text


def test_parts_that_exceed_their_whole_are_refused_by_name_and_record_nothing():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with pytest.raises(
        ValueError,
        match=r"queue_s \+ upstream_latency_s must not exceed latency_s, got 0\.5 \+ 0\.75 > 1\.0",
    ):
        metrics.record_request(**CALL, latency_s=1.0, queue_s=0.5, upstream_latency_s=0.75)
    with pytest.raises(ValueError, match="audio_input_tokens must not exceed input_tokens"):
        metrics.record_request(**CALL, latency_s=1.0, input_tokens=1, audio_input_tokens=2)
    with pytest.raises(ValueError, match=r"queue_s\[1\] must not exceed latency_s\[1\]"):
        metrics.record_batch(**CALL, latency_s=[1.0, 1.0], queue_s=[0.5, 2.0])
    with pytest.raises(ValueError, match="upstream_latency_s must not be negative"):
        metrics.record_request(**CALL, latency_s=1.0, upstream_latency_s=-1.0)
    assert "ractogateway_requests_total{" not in metrics.generate_latest()


def test_audio_tokens_are_billed_with_their_whole():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    metrics.record_request(
        **CALL,
        latency_s=1.0,
        input_tokens=1000,
        audio_input_tokens=400,
        output_tokens=200,
        audio_output_tokens=100,
    )
    cost = sample_value(
        metrics.generate_latest(), "ractogateway_cost_usd_total", model="gpt-4o", provider="openai"
    )
    assert cost == compute_cost("gpt-4o", 1000, 200)


def test_a_batch_records_what_single_calls_record():
    single = GatewayMetricsMiddleware(registry=CollectorRegistry(), max_series=None)
    record_rows(single)
    batched = GatewayMetricsMiddleware(registry=CollectorRegistry())
    batched.record_batch(
        **CALL,
        latency_s=[row["latency_s"] for row in ROWS],
        queue_s=[row.get("queue_s") for row in ROWS],
        upstream_latency_s=[row.get("upstream_latency_s") for row in ROWS],
        input_tokens=100,
        output_tokens=10,
    )
    batched.record_batch(
        **CALL,
        latency_s=[0.5],
        input_tokens=[1000],
        audio_input_tokens=[300],
        cache_read_tokens=[200],
        output_tokens=[50],
        audio_output_tokens=[40],
        reasoning_tokens=[5],
    )
    assert samples_by_series(batched.generate_latest()) == samples_by_series(
        single.generate_latest()
    )


def test_snapshots_carry_them_exactly():
    source = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record_rows(source)
    target = GatewayMetricsMiddleware(registry=CollectorRegistry())
    target.merge(source.snapshot())
    check_values(target.generate_latest())


RECORD_IN_CHILD = """
    from prometheus_client import CollectorRegistry
    from gateway_metrics import GatewayMetricsMiddleware
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), {mode})
    calls = {calls!r}
    for call in calls:
        metrics.record_request(**call)
"""


def child_calls() -> list[dict]:
    calls = [{**CALL, "input_tokens": 100, "output_tokens": 10, **row} for row in ROWS]
    calls.append({**CALL, **AUDIO_CALL})
    return calls


def test_our_multiprocess_files_carry_them(tmp_path):
    for _ in range(2):
        code = RECORD_IN_CHILD.format(
            mode=f"multiprocess_dir={str(tmp_path)!r}", calls=child_calls()
        )
        subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, timeout=120)
    reader = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=str(tmp_path))
    text = reader.generate_latest()
    assert sample_value(text, f"{OVERHEAD}_count", **LABELS) == 4
    assert sample_value(text, f"{OVERHEAD}_sum", **LABELS) == 1.25
    assert sample_value(text, f"{QUEUE}_sum", **LABELS) == 0.75


def test_prometheus_clients_multiprocess_files_carry_them(tmp_path):
    code = RECORD_IN_CHILD.format(mode="", calls=child_calls())
    text = prometheus_multiprocess_run(code, tmp_path)
    check_values(text)


def test_the_ops_kit_draws_and_records_them():
    titles = [panel["title"] for panel in dashboard()["panels"]]
    assert any("Queue time seconds" in title for title in titles)
    assert any("Gateway overhead seconds" in title for title in titles)
    records = [rule["record"] for group in recording_rules()["groups"] for rule in group["rules"]]
    assert any("upstream_latency_seconds:p95" in record for record in records)


def test_the_sdks_audio_counts_are_read():
    openai = {
        "prompt_tokens": 500,
        "completion_tokens": 80,
        "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 200},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 60},
    }
    assert usage_from({"usage": openai}) == Usage(
        input=500, output=80, cache_read=100, reasoning=0, audio_input=200, audio_output=60
    )
    google = {
        "prompt_token_count": 300,
        "candidates_token_count": 40,
        "prompt_tokens_details": [
            {"modality": "TEXT", "token_count": 100},
            {"modality": "AUDIO", "token_count": 200},
        ],
        "candidates_tokens_details": [{"modality": "AUDIO", "token_count": 40}],
    }
    usage = usage_from({"usage_metadata": google})
    assert (usage.input, usage.audio_input, usage.audio_output) == (300, 200, 40)


@pytest.mark.integration
def test_remote_write_carries_them_into_prometheus(tmp_path):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record_rows(metrics)
    with prometheus_server(tmp_path, "--web.enable-remote-write-receiver") as server:
        server.wait_ready()
        metrics.remote_write(f"{server.base}/api/v1/write", job="batch", instance="w")
        found = wait_for_values(server, f'{OVERHEAD}_sum{{job="batch"}}')
        assert list(found.values()) == [0.625]


def test_the_collector_shows_them_too():
    registry = CollectorRegistry()
    metrics = GatewayMetricsMiddleware(registry=registry)
    record_rows(metrics)
    check_values(generate_latest(registry).decode())
    assert [name for name, *_ in parse(generate_latest(registry).decode()) if name in NEW] == list(
        NEW
    )
