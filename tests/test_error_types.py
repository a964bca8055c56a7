"""``ractogateway_request_errors_total{error_type}``: a row of the core's tables,
recorded by ``record_request(error_type=...)``, ``record_batch`` and ``track()``,
in every path (single, batch, snapshots, both multi-process modes, the
collector, protobuf, OTLP, remote write)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
from gateway_metrics import ERROR_TYPES, GatewayMetricsMiddleware, _core
from prometheus_client import CollectorRegistry, generate_latest
from support import (
    decode_delimited_families,
    otlp_metrics,
    prometheus_multiprocess_run,
    prometheus_server,
    promtool_check,
    sample_value,
    samples_by_series,
    wait_for_values,
)

ERRORS = "ractogateway_request_errors_total"
LABELS = {"provider": "openai", "model": "gpt-4o", "operation": "chat"}
#: (status, error_type) of the calls every path records.
CALLS = [
    ("error", "rate_limit"),
    ("error", "rate_limit"),
    ("error", "timeout"),
    ("cancelled", "cancelled"),
    ("error", None),
    ("ok", None),
]
EXPECTED = {"rate_limit": 2.0, "timeout": 1.0, "cancelled": 1.0}


def record(metrics: GatewayMetricsMiddleware) -> None:
    for status, error_type in CALLS:
        metrics.record_request(**LABELS, status=status, latency_s=0.25, error_type=error_type)


def errors_in(text: str) -> dict[str, float]:
    return {
        error_type: value
        for error_type in ERROR_TYPES
        if (value := sample_value(text, ERRORS, **LABELS, error_type=error_type)) is not None
    }


def test_the_vocabulary_is_the_cores():
    assert list(ERROR_TYPES) == list(_core.ERROR_TYPES)
    assert len(set(ERROR_TYPES)) == 11 and "other" in ERROR_TYPES


def test_calls_count_their_error_types_and_pass_promtool():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record(metrics)
    text = metrics.generate_latest()
    assert errors_in(text) == EXPECTED
    assert sample_value(text, "ractogateway_requests_total", **LABELS, status="error") == 4
    promtool_check(text)
    assert errors_in(generate_latest(metrics.registry).decode()) == EXPECTED


def test_the_reference_arguments_print_no_errors_family():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    metrics.record_request(**LABELS, status="error", latency_s=0.5)
    assert "request_errors" not in metrics.generate_latest()


@pytest.mark.parametrize(
    ("status", "error_type", "error", "message"),
    [
        ("ok", "timeout", ValueError, 'error_type is given for a request whose status is "ok"'),
        ("error", "Timeout", ValueError, "error_type must be one of rate_limit, timeout"),
        ("error", "", ValueError, "error_type must be one of"),
        ("error", 3, TypeError, "error_type must be str, not int"),
        ("error", b"timeout", TypeError, "error_type must be str, not bytes"),
    ],
)
def test_a_bad_error_type_is_refused_by_name_and_records_nothing(
    status, error_type, error, message
):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with pytest.raises(error, match=message):
        metrics.record_request(**LABELS, status=status, latency_s=0.5, error_type=error_type)
    with pytest.raises(error, match=message.replace("error_type", r"error_type\[1\]")):
        metrics.record_batch(
            **LABELS,
            status=["error", status],
            latency_s=[0.5, 0.5],
            error_type=["timeout", error_type],
        )
    assert "ractogateway_requests_total{" not in metrics.generate_latest()


def test_a_scalar_error_type_is_checked_against_each_rows_status():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with pytest.raises(ValueError, match=r"error_type\[2\] is given for a request whose status"):
        metrics.record_batch(
            **LABELS, status=["error", "error", "ok"], latency_s=[1, 2, 3], error_type="timeout"
        )
    with pytest.raises(ValueError, match="columns differ in length: provider"):
        metrics.record_batch(
            provider=["openai"] * 2,
            model="m",
            operation="chat",
            status="error",
            latency_s=1,
            error_type=["timeout"] * 3,
        )
    assert "ractogateway_requests_total{" not in metrics.generate_latest()


def test_a_batch_records_what_single_calls_record():
    single = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record(single)
    batched = GatewayMetricsMiddleware(registry=CollectorRegistry())
    batched.record_batch(
        **LABELS,
        status=[status for status, _ in CALLS],
        latency_s=0.25,
        error_type=[error_type for _, error_type in CALLS],
    )
    scalar = GatewayMetricsMiddleware(registry=CollectorRegistry())
    scalar.record_batch(**LABELS, status="error", latency_s=[0.25] * 3, error_type="timeout")
    assert samples_by_series(batched.generate_latest()) == samples_by_series(
        single.generate_latest()
    )
    assert errors_in(scalar.generate_latest()) == {"timeout": 3.0}


def test_snapshots_carry_them_exactly():
    source = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record(source)
    target = GatewayMetricsMiddleware(registry=CollectorRegistry())
    target.merge(source.snapshot())
    target.merge(source.snapshot())
    assert errors_in(target.generate_latest()) == {k: 2 * v for k, v in EXPECTED.items()}


RECORD_IN_CHILD = """
    from prometheus_client import CollectorRegistry
    from gateway_metrics import GatewayMetricsMiddleware
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), {mode})
    for status, error_type in {calls!r}:
        metrics.record_request(provider="openai", model="gpt-4o", operation="chat",
                               status=status, latency_s=0.25, error_type=error_type)
"""


def test_our_multiprocess_files_carry_them(tmp_path):
    for _ in range(2):
        code = RECORD_IN_CHILD.format(mode=f"multiprocess_dir={str(tmp_path)!r}", calls=CALLS)
        subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, timeout=120)
    reader = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=str(tmp_path))
    assert errors_in(reader.generate_latest()) == {k: 2 * v for k, v in EXPECTED.items()}


def test_prometheus_clients_multiprocess_files_carry_them(tmp_path):
    text = prometheus_multiprocess_run(RECORD_IN_CHILD.format(mode="", calls=CALLS), tmp_path)
    assert errors_in(text) == EXPECTED


def test_protobuf_and_otlp_carry_them():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record(metrics)
    families = {
        family.name: family for family in decode_delimited_families(metrics._protobuf_exposition())
    }
    found = {
        {label.name: label.value for label in metric.label}["error_type"]: metric.counter.value
        for metric in families[ERRORS].metric
    }
    assert found == EXPECTED
    points = {}
    for metric in otlp_metrics(metrics):
        if metric.name == "ractogateway_request_errors":
            assert metric.sum.is_monotonic
            for point in metric.sum.data_points:
                attributes = {a.key: a.value.string_value for a in point.attributes}
                points[attributes["error_type"]] = point.as_int
    assert points == EXPECTED


@pytest.mark.integration
def test_remote_write_carries_them_into_prometheus(tmp_path):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record(metrics)
    with prometheus_server(tmp_path, "--web.enable-remote-write-receiver") as server:
        server.wait_ready()
        metrics.remote_write(f"{server.base}/api/v1/write", job="batch", instance="w")
        found = wait_for_values(server, f'{ERRORS}{{job="batch",error_type="rate_limit"}}')
        assert list(found.values()) == [2.0]


# ---------------------------------------------------------------- track()


def test_track_classifies_the_exception_or_takes_the_one_given():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with pytest.raises(TimeoutError), metrics.track("openai", "gpt-4o"):
        raise TimeoutError
    with pytest.raises(RuntimeError), metrics.track("openai", "gpt-4o") as call:  # noqa: PT012
        call.error("content_filter")
        raise RuntimeError("refused")
    with pytest.raises(KeyError), metrics.track("openai", "gpt-4o", error_type="not_found"):
        raise KeyError("model")
    with metrics.track("openai", "gpt-4o") as call:
        call.error("timeout")  # the call did not fail: no error type is recorded
    text = metrics.generate_latest()
    assert errors_in(text) == {"timeout": 1.0, "content_filter": 1.0, "not_found": 1.0}
    assert sample_value(text, "ractogateway_requests_total", **LABELS, status="ok") == 1
    with pytest.raises(ValueError, match="error_type must be one of"):
        metrics.track("openai", "gpt-4o", error_type="slow")
    with pytest.raises(ValueError, match="seconds must be finite and not negative"):
        metrics.track("openai", "gpt-4o").queue(-1.0)


def test_track_takes_queue_upstream_and_audio_tokens():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with metrics.track("openai", "gpt-4o", queue_s=0.0) as call:
        call.upstream(0.0)
        call.tokens(input=100, output=20, audio_input=30, audio_output=5)
    text = metrics.generate_latest()
    assert sample_value(text, "ractogateway_queue_time_seconds_count", **LABELS) == 1
    assert sample_value(text, "ractogateway_upstream_latency_seconds_count", **LABELS) == 1
    assert sample_value(text, "ractogateway_gateway_overhead_seconds_count", **LABELS) == 1
    pair = {"provider": "openai", "model": "gpt-4o"}
    assert sample_value(text, "ractogateway_tokens_total", **pair, token_type="audio_input") == 30


def test_track_decorates_sync_async_and_generator_functions():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    usage = {"usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}

    @metrics.track("openai", "gpt-4o")
    def answer(fail: bool = False) -> dict:
        if fail:
            raise ConnectionResetError
        return usage

    @metrics.track("openai", "gpt-4o")
    async def answer_later() -> str:
        return "no usage here"

    @metrics.track("openai", "gpt-4o", operation="stream")
    def chunks():
        yield {"choices": [{"delta": {"content": "Hi"}}]}
        yield {"choices": [], **usage}

    @metrics.track("openai", "gpt-4o", operation="stream")
    async def async_chunks():
        yield {"choices": [{"delta": {"content": "Hi"}}]}
        await asyncio.sleep(0)
        yield {"choices": [{"delta": {"content": "!"}}]}

    async def consume() -> list:
        return [chunk async for chunk in async_chunks()]

    assert answer() is usage
    with pytest.raises(ConnectionResetError):
        answer(fail=True)
    assert asyncio.run(answer_later()) == "no usage here"
    assert len(list(chunks())) == 2
    assert len(asyncio.run(consume())) == 2
    assert answer.__name__ == "answer"
    text = metrics.generate_latest()
    requests = "ractogateway_requests_total"
    assert sample_value(text, requests, **LABELS, status="ok") == 2
    assert sample_value(text, requests, **LABELS, status="error") == 1
    stream = {**LABELS, "operation": "stream"}
    assert sample_value(text, requests, **stream, status="ok") == 2
    assert sample_value(text, "ractogateway_time_to_first_token_seconds_count", **stream) == 2
    pair = {"provider": "openai", "model": "gpt-4o"}
    assert sample_value(text, "ractogateway_tokens_total", **pair, token_type="input") == 20
    assert errors_in(text) == {"connection": 1.0}
    assert sample_value(text, "ractogateway_tool_calls_total", tool_name="unknown") is None
