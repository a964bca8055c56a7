"""Exemplars: a request's trace ids on the buckets its duration and time to first
token fell in, in OpenMetrics, protobuf and remote write, read by a real Prometheus."""

from __future__ import annotations

import multiprocessing
import time

import mp_workers
import pytest
from gateway_metrics import GatewayMetricsMiddleware, PrometheusExporter, multiprocess
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from support import decode_delimited_families, prometheus_server, scrape_every_second, wait_until

CALL = {"provider": "openai", "model": "gpt-4o", "operation": "chat", "status": "ok"}
DURATION = "ractogateway_request_duration_seconds"
FIRST_TOKEN = "ractogateway_time_to_first_token_seconds"
TRACE = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}


def openmetrics(metrics: GatewayMetricsMiddleware) -> str:
    return metrics._exposition(True).decode() + "# EOF\n"


def bucket_exemplars(text: str, family: str) -> dict[str, tuple[dict, float]]:
    """``le`` to the exemplar's labels and value, as prometheus_client's
    OpenMetrics parser reads them."""
    found = {}
    for parsed in text_string_to_metric_families(text):
        if parsed.name != family:
            continue
        for sample in parsed.samples:
            if sample.name.endswith("_bucket") and sample.exemplar is not None:
                found[sample.labels["le"]] = (sample.exemplar.labels, sample.exemplar.value)
    return found


def test_the_buckets_observed_carry_the_exemplar_in_openmetrics_only():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    before = time.time()
    metrics.record_request(
        **CALL, latency_s=0.3, time_to_first_token_s=0.07, output_tokens=5, exemplar=TRACE
    )
    metrics.record_request(**CALL, latency_s=7.0)
    text = openmetrics(metrics)
    assert bucket_exemplars(text, DURATION) == {"0.5": (TRACE, 0.3)}
    assert bucket_exemplars(text, FIRST_TOKEN) == {"0.08": (TRACE, 0.07)}
    [line] = [line for line in text.splitlines() if " # {" in line and DURATION in line]
    timestamp = float(line.rsplit(" ", 1)[1])
    assert before <= timestamp <= time.time()
    # The text format 0.0.4 has no exemplars: its bytes do not change.
    assert " # " not in metrics.generate_latest()


def test_prometheus_clients_openmetrics_rendering_of_the_registry_shows_them(tmp_path):
    from prometheus_client.openmetrics.exposition import generate_latest

    registry = CollectorRegistry()
    metrics = GatewayMetricsMiddleware(registry=registry)
    metrics.record_request(
        **CALL, latency_s=0.3, time_to_first_token_s=0.07, output_tokens=5, exemplar=TRACE
    )
    text = generate_latest(registry).decode()
    assert text == openmetrics(metrics)
    assert bucket_exemplars(text, DURATION) == {"0.5": (TRACE, 0.3)}
    # In multi-process mode, from the workers' files.
    run_exemplar_workers(tmp_path)
    workers = CollectorRegistry()
    GatewayMetricsMiddleware(registry=workers, multiprocess_dir=tmp_path)
    text = generate_latest(workers).decode()
    assert bucket_exemplars(text, DURATION) == WORKER_DURATION_EXEMPLARS


def test_each_bucket_keeps_its_last_exemplar_and_a_batch_does_as_calls_do():
    single = GatewayMetricsMiddleware(registry=CollectorRegistry())
    batched = GatewayMetricsMiddleware(registry=CollectorRegistry())
    rows = [
        (0.3, {"trace_id": "a"}),
        (0.4, {"trace_id": "b"}),
        (9.0, None),
        (8.0, {"trace_id": "c"}),
    ]
    for latency, exemplar in rows:
        single.record_request(**CALL, latency_s=latency, exemplar=exemplar)
    batched.record_batch(
        **CALL, latency_s=[latency for latency, _ in rows], exemplar=[e for _, e in rows]
    )
    expected = {"0.5": ({"trace_id": "b"}, 0.4), "10.0": ({"trace_id": "c"}, 8.0)}
    assert bucket_exemplars(openmetrics(single), DURATION) == expected
    assert bucket_exemplars(openmetrics(batched), DURATION) == expected


def test_bad_exemplars_are_refused_by_name_and_record_nothing():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with pytest.raises(TypeError, match="exemplar must be a dict"):
        metrics.record_request(**CALL, latency_s=0.3, exemplar="abc")
    with pytest.raises(ValueError, match="exemplar: its label names and values have 129"):
        metrics.record_request(**CALL, latency_s=0.3, exemplar={"trace_id": "x" * 121})
    with pytest.raises(ValueError, match=r"exemplar: .* is not a label name"):
        metrics.record_request(**CALL, latency_s=0.3, exemplar={"0bad": "x"})
    with pytest.raises(TypeError, match=r"exemplar\[trace_id\] must be str"):
        metrics.record_request(**CALL, latency_s=0.3, exemplar={"trace_id": 5})
    with pytest.raises(ValueError, match=r"exemplar\[1\]: its label names"):
        metrics.record_batch(**CALL, latency_s=[1.0, 2.0], exemplar=[None, {"t": "x" * 200}])
    with pytest.raises(ValueError, match="exemplar: its label names"):
        metrics.track("openai", "gpt-4o", exemplar={"t": "x" * 200})
    assert "ractogateway_requests_total{" not in metrics.generate_latest()


def test_track_and_the_current_opentelemetry_span_give_them():
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext

    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), exemplars="opentelemetry")
    context = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736, span_id=0x00F067AA0BA902B7, is_remote=False
    )
    with trace.use_span(NonRecordingSpan(context)):
        metrics.record_request(**CALL, latency_s=0.3)
        with metrics.track("openai", "gpt-4o", exemplar={"trace_id": "given"}) as call:
            call.tokens(input=1)
    metrics.record_request(**CALL, latency_s=20.0)  # no span: no exemplar
    found = bucket_exemplars(openmetrics(metrics), DURATION)
    assert found["0.5"][0] == TRACE
    assert {"trace_id": "given"} in [labels for labels, _ in found.values()]
    assert "30.0" not in found
    with pytest.raises(ValueError, match="exemplars must be None or 'opentelemetry'"):
        GatewayMetricsMiddleware(registry=CollectorRegistry(), exemplars="zipkin")


def test_protobuf_carries_them_on_buckets_and_native_histograms():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms=True)
    metrics.record_request(**CALL, latency_s=0.3, exemplar=TRACE)
    metrics.record_request(**CALL, latency_s=100.0, exemplar={"trace_id": "slow"})
    families = {f.name: f for f in decode_delimited_families(metrics._protobuf_exposition())}
    histogram = families[DURATION].metric[0].histogram
    carried = {
        bucket.upper_bound: (
            {label.name: label.value for label in bucket.exemplar.label},
            bucket.exemplar.value,
        )
        for bucket in histogram.bucket
        if bucket.HasField("exemplar")
    }
    assert carried == {0.5: (TRACE, 0.3), float("inf"): ({"trace_id": "slow"}, 100.0)}
    assert sorted(e.value for e in histogram.exemplars) == [0.3, 100.0]
    assert all(e.timestamp.seconds > 0 for e in histogram.exemplars)


def test_snapshots_carry_them_and_a_damaged_exemplar_section_adds_nothing():
    import struct
    import zlib

    source = GatewayMetricsMiddleware(registry=CollectorRegistry())
    source.record_request(
        **CALL, latency_s=0.3, time_to_first_token_s=0.07, output_tokens=5, exemplar=TRACE
    )
    snapshot = source.snapshot()
    target = GatewayMetricsMiddleware(registry=CollectorRegistry())
    target.merge(snapshot)
    text = openmetrics(target)
    assert bucket_exemplars(text, DURATION) == {"0.5": (TRACE, 0.3)}
    assert bucket_exemplars(text, FIRST_TOKEN) == {"0.08": (TRACE, 0.07)}
    # An exemplar naming a bucket its series lacks: refused whole.
    body = bytearray(snapshot[:-4])
    section = body.index(b"EXEMPLAR")
    struct.pack_into("<H", body, section + 12 + 8, 999)
    damaged = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    fresh = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with pytest.raises(ValueError, match="has no such bucket"):
        fresh.merge(damaged)
    assert "ractogateway_requests_total{" not in fresh.generate_latest()
    # A snapshot without exemplars has no section (the layout of version 1).
    plain = GatewayMetricsMiddleware(registry=CollectorRegistry())
    plain.record_request(**CALL, latency_s=0.3)
    assert b"EXEMPLAR" not in plain.snapshot()


#: What two worker processes record in turn: ``(latency, first token, trace id)``.
WORKER_ROWS = (
    [(0.3, 0.07, "first-a"), (2.0, None, "first-b")],
    [(0.4, 0.075, "second-a"), (7.0, None, "second-b")],
)
#: What a scrape of their directory shows: each bucket's newest exemplar.
WORKER_DURATION_EXEMPLARS = {
    "0.5": ({"trace_id": "second-a"}, 0.4),
    "2.0": ({"trace_id": "first-b"}, 2.0),
    "10.0": ({"trace_id": "second-b"}, 7.0),
}


def run_exemplar_workers(directory) -> None:
    """The two workers of :data:`WORKER_ROWS`, one after the other (so the second's
    exemplars are the newer), each a forked process that exits."""
    context = multiprocessing.get_context("fork")
    for rows in WORKER_ROWS:
        worker = context.Process(target=mp_workers.record_exemplars, args=(str(directory), rows))
        worker.start()
        worker.join(timeout=60)
        assert worker.exitcode == 0


def test_workers_exemplars_reach_a_scrape_in_any_process_and_survive_compaction(tmp_path):
    # Each exemplar is kept in its worker's file, so the scrape of any process
    # of the directory shows it, after the worker is gone too.
    run_exemplar_workers(tmp_path)
    scraper = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=tmp_path)
    text = openmetrics(scraper)
    assert bucket_exemplars(text, DURATION) == WORKER_DURATION_EXEMPLARS
    assert bucket_exemplars(text, FIRST_TOKEN) == {"0.08": ({"trace_id": "second-a"}, 0.075)}
    families = {f.name: f for f in decode_delimited_families(scraper._protobuf_exposition())}
    [series] = families[DURATION].metric
    carried = {
        bucket.upper_bound: bucket.exemplar.label[0].value
        for bucket in series.histogram.bucket
        if bucket.HasField("exemplar")
    }
    assert carried == {0.5: "second-a", 2.0: "first-b", 10.0: "second-b"}
    # The workers are gone: compaction folds their files, exemplars and all.
    assert multiprocess.compact(tmp_path).folded == 2
    assert bucket_exemplars(openmetrics(scraper), DURATION) == WORKER_DURATION_EXEMPLARS


def query_exemplars(server, expression: str) -> list[dict]:
    now = time.time()
    return server.get_json(
        "/api/v1/query_exemplars", query=expression, start=now - 600, end=now + 60
    )["data"]


def wait_for_exemplars(server, expression: str) -> list[dict]:
    return wait_until(
        lambda: query_exemplars(server, expression), f"exemplars of {expression}", server, 60.0
    )


@pytest.mark.integration
def test_prometheus_stores_them_from_scrapes_in_both_modes_and_from_remote_write(tmp_path):
    registry = CollectorRegistry()
    metrics = GatewayMetricsMiddleware(registry=registry)
    metrics.record_request(**CALL, latency_s=0.3, exemplar=TRACE)
    # Multi-process mode: workers that are gone, scraped through another process.
    run_exemplar_workers(tmp_path / "workers")
    workers_registry = CollectorRegistry()
    GatewayMetricsMiddleware(registry=workers_registry, multiprocess_dir=tmp_path / "workers")
    exporters = {
        "gateway": PrometheusExporter(0, registry=registry, addr="127.0.0.1"),
        "workers": PrometheusExporter(0, registry=workers_registry, addr="127.0.0.1"),
    }
    for exporter in exporters.values():
        exporter.start()
    config = scrape_every_second({job: exporter.port for job, exporter in exporters.items()})
    try:
        with prometheus_server(
            tmp_path,
            "--enable-feature=exemplar-storage",
            "--web.enable-remote-write-receiver",
            config=config,
        ) as server:
            server.wait_ready()
            scraped = wait_for_exemplars(server, f'{DURATION}_bucket{{job="gateway"}}')
            labels = [e["labels"] for series in scraped for e in series["exemplars"]]
            assert TRACE in labels

            def from_workers() -> dict:
                found = query_exemplars(server, f'{DURATION}_bucket{{job="workers"}}')
                return {
                    series["seriesLabels"]["le"]: (e["labels"], float(e["value"]))
                    for series in found
                    for e in series["exemplars"]
                }

            wait_until(lambda: len(from_workers()) == 3, "the workers' exemplars", server, 60.0)
            assert from_workers() == WORKER_DURATION_EXEMPLARS
            pushed = GatewayMetricsMiddleware(registry=CollectorRegistry())
            pushed.record_request(**CALL, latency_s=2.5, exemplar={"trace_id": "written"})
            pushed.remote_write(f"{server.base}/api/v1/write", job="batch", instance="w")
            written = wait_for_exemplars(server, f'{DURATION}_bucket{{job="batch"}}')
            [series] = written
            assert series["seriesLabels"]["le"] == "5.0"
            assert [e["labels"] for e in series["exemplars"]] == [{"trace_id": "written"}]
            assert float(series["exemplars"][0]["value"]) == 2.5
    finally:
        for exporter in exporters.values():
            exporter.stop()
