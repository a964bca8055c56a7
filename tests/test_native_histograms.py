"""Native histograms: recorded beside the classic buckets, exposed over protobuf,
scraped by a real Prometheus."""

from __future__ import annotations

import gzip
import math
import random
import subprocess
import sys
import textwrap
import time
import urllib.request
import warnings

import pytest
from gateway_metrics import GatewayMetricsMiddleware, PrometheusExporter
from gateway_metrics._protobuf import CONTENT_TYPE, accepts_protobuf
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from support import (
    PROMETHEUS_3,
    decode_delimited_families,
    native_buckets,
    prometheus_server,
    query_values,
    sample_value,
    scrape_every_second,
    wait_for_values,
)

CALL = {"provider": "openai", "model": "gpt-4o", "operation": "chat", "status": "ok"}
DURATION = "ractogateway_request_duration_seconds"
PROTOBUF_ACCEPT = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
    "encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


def python_index(value: float, schema: int) -> int:
    """The native bucket of ``value``, computed here from the definition: the
    smallest ``i`` with ``value <= 2^(i / 2^schema)``."""
    index = math.ceil(math.log2(value) * 2**schema)
    # Guard the float rounding of log2 at a bucket's edge.
    while value <= 2 ** ((index - 1) / 2**schema):
        index -= 1
    while value > 2 ** (index / 2**schema):
        index += 1
    return index


def long_tailed(count: int, seed: int = 7) -> list[float]:
    """Latencies of LLM calls: log-normal around 0.8 s, a few minutes-long ones.
    Multiples of 1/1024 s, so their sums are exact."""
    rng = random.Random(seed)
    values = []
    for _ in range(count):
        value = rng.lognormvariate(math.log(0.8), 1.3)
        values.append(max(1, round(value * 1024)) / 1024)
    return values


def families_of(metrics: GatewayMetricsMiddleware) -> dict:
    return {
        family.name: family for family in decode_delimited_families(metrics._protobuf_exposition())
    }


def duration_histogram(metrics: GatewayMetricsMiddleware):
    [metric] = families_of(metrics)[DURATION].metric
    return metric.histogram


def test_observations_land_in_the_buckets_the_definition_gives():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms=True)
    values = [0.0, 0.001, 0.05, 0.3, 0.3, 1.0, 2.0, 7.5, 61.0]
    for value in values:
        metrics.record_request(**CALL, latency_s=value)
    histogram = duration_histogram(metrics)
    assert histogram.schema == 3
    assert histogram.zero_count == 1
    assert histogram.zero_threshold == 2.0**-128
    expected: dict[int, int] = {}
    for value in values[1:]:
        expected[python_index(value, 3)] = expected.get(python_index(value, 3), 0) + 1
    assert native_buckets(histogram) == sorted(expected.items())
    assert histogram.sample_count == len(values)
    assert histogram.sample_sum == sum(values)
    # The classic buckets are the text format's.
    text = metrics.generate_latest()
    for bucket in histogram.bucket:
        le = str(bucket.upper_bound)
        assert (
            sample_value(text, f"{DURATION}_bucket", **CALL_LABELS, le=le)
            == bucket.cumulative_count
        )


CALL_LABELS = {"provider": "openai", "model": "gpt-4o", "operation": "chat"}


def test_every_latency_like_histogram_keeps_one_and_the_reference_bytes_stay():
    plain = GatewayMetricsMiddleware(registry=CollectorRegistry())
    native = GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms=True)
    for metrics in (plain, native):
        metrics.record_request(
            **CALL,
            latency_s=2.0,
            time_to_first_token_s=0.5,
            output_tokens=4,
            queue_s=0.25,
            upstream_latency_s=1.5,
        )
    # The text formats are the same (but for the time each series was made).
    assert [line for line in plain.generate_latest().splitlines() if "_created" not in line] == [
        line for line in native.generate_latest().splitlines() if "_created" not in line
    ]
    for family in families_of(native).values():
        for metric in family.metric:
            if family.type == 4:
                assert len(metric.histogram.positive_span) >= 1, family.name
    for family in families_of(plain).values():
        for metric in family.metric:
            assert not metric.histogram.positive_span, family.name


def test_a_wide_range_halves_the_resolution_and_keeps_every_observation():
    metrics = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), native_histograms={"max_buckets": 132}
    )
    values = [0.0001, 0.01, 1.0, 100.0, 10_000.0]
    for value in values:
        metrics.record_request(**CALL, latency_s=value)
    histogram = duration_histogram(metrics)
    assert histogram.schema < 3
    buckets = native_buckets(histogram)
    assert buckets[-1][0] - buckets[0][0] < 132
    assert [index for index, _ in buckets] == [python_index(v, histogram.schema) for v in values]
    assert sum(count for _, count in buckets) == len(values)


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="native_histograms: schema must be from -4 to 8"):
        GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms={"schema": 9})
    with pytest.raises(ValueError, match="max_buckets must be from 132"):
        GatewayMetricsMiddleware(
            registry=CollectorRegistry(), native_histograms={"max_buckets": 10}
        )
    with pytest.raises(ValueError, match="unknown setting 'factor'"):
        GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms={"factor": 1.1})
    with pytest.raises(TypeError, match="native_histograms must be a bool or a dict"):
        GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms="yes")


def test_a_batch_records_what_single_calls_record():
    values = long_tailed(500)
    single = GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms=True)
    for value in values:
        single.record_request(**CALL, latency_s=value)
    batched = GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms=True)
    batched.record_batch(**CALL, latency_s=values)
    a, b = duration_histogram(single), duration_histogram(batched)
    assert native_buckets(a) == native_buckets(b)
    assert (a.schema, a.zero_count, a.sample_count) == (b.schema, b.zero_count, b.sample_count)


def test_snapshots_carry_them_exactly():
    source = GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms=True)
    for value in long_tailed(300):
        source.record_request(**CALL, latency_s=value)
    target = GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms=True)
    target.merge(source.snapshot())
    target.merge(source.snapshot())
    ours, theirs = duration_histogram(target), duration_histogram(source)
    assert native_buckets(ours) == [(index, 2 * count) for index, count in native_buckets(theirs)]
    with pytest.raises(ValueError, match="snapshot"):
        # A snapshot of other native settings is another family: refused.
        GatewayMetricsMiddleware(registry=CollectorRegistry()).merge(source.snapshot())


RECORD = """
    import sys
    from prometheus_client import CollectorRegistry
    from gateway_metrics import GatewayMetricsMiddleware
    metrics = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), multiprocess_dir=sys.argv[1], native_histograms=True)
    for value in {values!r}:
        metrics.record_request(provider="openai", model="gpt-4o", operation="chat",
                               status="ok", latency_s=value)
"""


def test_our_multiprocess_files_sum_them(tmp_path):
    halves = [long_tailed(200, seed=1), long_tailed(200, seed=2)]
    for values in halves:
        code = textwrap.dedent(RECORD.format(values=values))
        subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)
    reader = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), multiprocess_dir=str(tmp_path), native_histograms=True
    )
    histogram = duration_histogram(reader)
    expected: dict[int, int] = {}
    for value in halves[0] + halves[1]:
        index = python_index(value, histogram.schema)
        expected[index] = expected.get(index, 0) + 1
    assert native_buckets(histogram) == sorted(expected.items())
    assert histogram.sample_count == 400


def test_prometheus_clients_multiprocess_mode_says_it_cannot_keep_them(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.delenv("GATEWAY_METRICS_MULTIPROC_DIR", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms=True)
    assert any("prometheus_client's multi-process mode" in str(w.message) for w in caught)
    assert metrics.native_histograms is None


def test_the_scraper_that_prefers_protobuf_gets_it():
    assert accepts_protobuf(PROTOBUF_ACCEPT) == ""
    assert accepts_protobuf(PROTOBUF_ACCEPT.replace(";q=0.7", ";escaping=allow-utf-8;q=0.7")) == (
        "allow-utf-8"
    )
    assert accepts_protobuf("text/plain;version=0.0.4") is None
    assert (
        accepts_protobuf(
            "application/openmetrics-text;version=1.0.0,application/vnd.google.protobuf;"
            "proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5"
        )
        is None
    )
    assert (
        accepts_protobuf("application/vnd.google.protobuf;proto=other;encoding=delimited") is None
    )


def test_the_exporter_answers_protobuf_with_the_registrys_other_collectors():
    registry = CollectorRegistry()
    metrics = GatewayMetricsMiddleware(registry=registry, native_histograms=True)
    metrics.record_request(**CALL, latency_s=0.3)
    Counter("app_logins", "Logins.", ["method"], registry=registry).labels("sso").inc(3)
    Gauge("app_queue", "Queue.", registry=registry).set(7)
    Histogram("app_sizes", "Sizes.", buckets=[10, 100], registry=registry).observe(42)
    Summary("app_latency", "Latency.", registry=registry).observe(0.5)
    exporter = PrometheusExporter(0, registry=registry, addr="127.0.0.1")
    exporter.start()
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{exporter.port}/metrics",
            headers={"Accept": PROTOBUF_ACCEPT, "Accept-Encoding": "gzip"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Type"] == CONTENT_TYPE
            body = gzip.decompress(response.read())
    finally:
        exporter.stop()
    families = {family.name: family for family in decode_delimited_families(body)}
    assert families["app_logins_total"].metric[0].counter.value == 3
    assert families["app_queue"].metric[0].gauge.value == 7
    sizes = families["app_sizes"].metric[0].histogram
    assert (sizes.sample_count, sizes.sample_sum, len(sizes.bucket)) == (1, 42, 2)
    assert families["app_latency"].type == 2
    assert native_buckets(families[DURATION].metric[0].histogram) == [(python_index(0.3, 3), 1)]


def query(server, expression: str) -> float:
    """The first value an instant query returns."""
    found = query_values(server, expression)
    assert found, f"{expression} returned nothing:\n{server.output()}"
    return next(iter(found.values()))


def wait_for(server, expression: str) -> None:
    wait_for_values(server, expression, timeout=60.0)


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@pytest.mark.integration
@pytest.mark.parametrize("prometheus", ["2.42", "3.5"])
def test_prometheus_scrapes_them_over_protobuf_and_answers_quantiles_within_the_schemas_error(
    tmp_path, prometheus
):
    # Bookworm's 2.42 is on PATH; forky's 3.5 is unpacked beside it.
    binary = PROMETHEUS_3 if prometheus == "3.5" else None
    registry = CollectorRegistry()
    metrics = GatewayMetricsMiddleware(registry=registry, native_histograms=True)
    values = long_tailed(5000)
    metrics.record_batch(**CALL, latency_s=values)
    exporter = PrometheusExporter(0, registry=registry, addr="127.0.0.1")
    exporter.start()
    job = scrape_every_second({"gateway": exporter.port})
    try:
        with (
            prometheus_server(
                tmp_path / "native",
                "--enable-feature=native-histograms",
                config=job,
                binary=binary,
            ) as native,
            prometheus_server(tmp_path / "classic", config=job) as classic,
        ):
            native.wait_ready()
            classic.wait_ready()
            wait_for(native, f"histogram_count({DURATION})")
            wait_for(classic, f"{DURATION}_count")
            assert query(native, f"histogram_count({DURATION})") == len(values)
            assert query(native, f"histogram_sum({DURATION})") == sum(values)
            # The schema's bound: a bucket's upper bound is 2^(1/8) times its lower.
            bound = 2 ** (1 / 8) - 1
            errors = {}
            for q in (0.5, 0.9, 0.99, 0.999):
                exact = exact_quantile(values, q)
                native_estimate = query(native, f"histogram_quantile({q}, {DURATION})")
                classic_estimate = query(
                    classic, f"histogram_quantile({q}, sum by (le) ({DURATION}_bucket))"
                )
                errors[q] = (
                    abs(native_estimate - exact) / exact,
                    abs(classic_estimate - exact) / exact,
                )
                assert errors[q][0] <= bound, (q, exact, native_estimate)
            print(f"Prometheus {prometheus}, relative errors (native, classic):", errors)
            # At the tail the classic buckets (the reference's, to 60 s) miss by far more.
            assert errors[0.999][1] > 3 * errors[0.999][0]
    finally:
        exporter.stop()


@pytest.mark.integration
@pytest.mark.parametrize("prometheus", ["2.42", "3.5"])
def test_remote_write_carries_them_into_prometheus(tmp_path, prometheus):
    binary = PROMETHEUS_3 if prometheus == "3.5" else None
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms=True)
    values = long_tailed(2000, seed=11)
    metrics.record_request(**CALL, latency_s=values[0], exemplar={"trace_id": "pushed"})
    metrics.record_batch(**CALL, latency_s=values[1:])
    with prometheus_server(
        tmp_path,
        "--enable-feature=native-histograms,exemplar-storage",
        "--web.enable-remote-write-receiver",
        binary=binary,
    ) as server:
        server.wait_ready()
        metrics.remote_write(f"{server.base}/api/v1/write", job="batch", instance="w")
        selector = f'{DURATION}{{job="batch"}}'
        wait_for(server, f"histogram_count({selector})")
        assert query(server, f"histogram_count({selector})") == len(values)
        assert query(server, f"histogram_sum({selector})") == sum(values)
        exact = exact_quantile(values, 0.99)
        estimate = query(server, f"histogram_quantile(0.99, {selector})")
        assert abs(estimate - exact) / exact <= 2 ** (1 / 8) - 1
        # The classic series went too, with the exemplar on its bucket.
        assert query(server, f'{DURATION}_count{{job="batch"}}') == len(values)
        now = time.time()
        [series] = server.get_json(
            "/api/v1/query_exemplars",
            query=f'{DURATION}_bucket{{job="batch"}}',
            start=now - 600,
            end=now + 60,
        )["data"]
        assert [e["labels"] for e in series["exemplars"]] == [{"trace_id": "pushed"}]
        assert float(series["exemplars"][0]["value"]) == values[0]
