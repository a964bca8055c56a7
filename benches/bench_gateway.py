"""The benchmark suite: gateway-metrics against the reference and the do-nothing floor.

``make bench`` times every group; CI runs this file with ``--benchmark-disable``,
which calls each workload once, so the assertions below keep it correct.
"""

from __future__ import annotations

import gzip
import urllib.request

import prometheus_client
import pytest
import workloads
from gateway_metrics import GatewayMetricsMiddleware, ModelPricing, PrometheusExporter, _core
from gateway_metrics._otlp import OtlpTarget
from gateway_metrics._remote_write import Target
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from timings import FIGURES, TIMINGS
from workloads import interleaved_ratio

CONTENDERS = ["floor", "reference", "ours"]
#: Samples each contender's HTTP scrape returned, to check they are the same.
SCRAPED: dict[str, list] = {}


@pytest.fixture(scope="module")
def middlewares():
    return {
        "ours": workloads.new_middleware("ours"),
        "reference": workloads.new_middleware("reference"),
    }


def recorder(contender: str, middlewares, floor):
    return floor if contender == "floor" else middlewares[contender].record_request


def requests_seen(middleware, model: str, provider: str = "openai") -> float:
    return middleware._registry.get_sample_value(
        "ractogateway_requests_total",
        {"provider": provider, "model": model, "operation": "chat", "status": "ok"},
    )


@pytest.mark.parametrize("contender", CONTENDERS)
def test_record_request_fixed_labels_one_tool_call(measure, middlewares, contender):
    record = recorder(contender, middlewares, workloads.floor_record_request)
    measure(
        "record_request fixed + 1 tool",
        contender,
        workloads.fixed_request(record),
        calls_per_round=workloads.CALLS_PER_ROUND,
        floor=workloads.fixed_request(workloads.floor_record_request)
        if contender == "ours"
        else None,
    )
    if contender != "floor":
        assert requests_seen(middlewares[contender], "gpt-4o") >= 1


@pytest.mark.parametrize("contender", CONTENDERS)
def test_record_request_four_models_in_turn(measure, middlewares, contender):
    record = recorder(contender, middlewares, workloads.floor_record_request)
    measure(
        "record_request 4 models",
        contender,
        workloads.four_model_requests(record),
        calls_per_round=workloads.CALLS_PER_ROUND,
        floor=(
            workloads.four_model_requests(workloads.floor_record_request)
            if contender == "ours"
            else None
        ),
    )
    if contender != "floor":
        assert requests_seen(middlewares[contender], "gemini-2.0-flash", "google") >= 1


@pytest.mark.parametrize("contender", CONTENDERS)
def test_record_cache_hit(measure, middlewares, contender):
    hit = (
        workloads.floor_one_argument
        if contender == "floor"
        else middlewares[contender].record_cache_hit
    )
    measure(
        "record_cache_hit",
        contender,
        workloads.cache_hits(hit),
        calls_per_round=workloads.CALLS_PER_ROUND,
        floor=workloads.cache_hits(workloads.floor_one_argument) if contender == "ours" else None,
    )
    if contender != "floor":
        registry = middlewares[contender]._registry
        hits = registry.get_sample_value("ractogateway_cache_hits_total", {"cache_type": "exact"})
        assert hits >= 1


@pytest.mark.parametrize("contender", ["reference", "ours"])
def test_first_use_of_a_new_label_set(measure, contender):
    middleware = workloads.new_middleware(contender)
    measure(
        "new label set",
        contender,
        workloads.new_label_set_requests(middleware.record_request),
        calls_per_round=workloads.CALLS_PER_ROUND,
    )
    assert requests_seen(middleware, "model-0") == 1


@pytest.mark.parametrize("contender", ["ours", "ours, every field"])
def test_record_request_with_every_field(measure, contender):
    group = "record_request every field vs seed-only"
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), extra_labels=["tenant"])
    seed_only = workloads.fixed_request(metrics.record_request)
    workload = (
        seed_only if contender == "ours" else workloads.every_field_request(metrics.record_request)
    )
    measure(group, contender, workload, calls_per_round=workloads.CALLS_PER_ROUND)
    if contender != "ours" and TIMINGS.get((group, contender)):
        FIGURES[("record_request every field / seed-only, in alternation", "ratio")] = (
            interleaved_ratio(workload, seed_only)
        )
    assert requests_seen(metrics, "gpt-4o") is None  # the requests series carry a tenant


@pytest.mark.parametrize("contender", ["ours", workloads.NATIVE])
def test_record_request_with_native_histograms(measure, middlewares, contender):
    group = "record_request fixed + 1 tool, native histograms off vs on"
    metrics = middlewares["ours"] if contender == "ours" else workloads.new_middleware(contender)
    workload = workloads.fixed_request(metrics.record_request)
    measure(group, contender, workload, calls_per_round=workloads.CALLS_PER_ROUND)
    if contender != "ours" and TIMINGS.get((group, contender)):
        FIGURES[("record_request native histograms on / off, in alternation", "ratio")] = (
            interleaved_ratio(workload, workloads.fixed_request(middlewares["ours"].record_request))
        )
    assert requests_seen(metrics, "gpt-4o") >= 1


@pytest.fixture(scope="module")
def capped():
    """A middleware that saw the fixed workload's label set, then 1,000,000 model
    names under max_series=1000."""
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), max_series=1000)
    workloads.fixed_request(metrics.record_request)()
    for index in range(1_000_000):
        metrics.record_request(
            provider="openai",
            model=f"model-{index}",
            operation="chat",
            status="ok",
            latency_s=0.1,
            input_tokens=1,
        )
    return metrics


def test_scrape_after_a_million_model_names_under_a_cap(measure, capped):
    text = measure(
        "generate_latest after 1M model names, max_series=1000", "ours", capped.generate_latest
    )
    assert text.count("__overflow__") > 0


def test_record_request_on_a_known_label_set_under_a_cap(measure, capped, middlewares):
    group = "record_request fixed + 1 tool, known label set, after 1M names under a cap"
    workload = workloads.fixed_request(capped.record_request)
    measure(group, "ours", workload, calls_per_round=workloads.CALLS_PER_ROUND)
    if TIMINGS.get((group, "ours")):
        uncapped = workloads.fixed_request(middlewares["ours"].record_request)
        FIGURES[(f"{group} / uncapped, in alternation", "ratio")] = interleaved_ratio(
            workload, uncapped
        )


MULTI_PROCESS = {
    "ours, multi-process": "own files",
    "ours, prometheus_client files": "prometheus_client files",
}


@pytest.mark.parametrize("contender", ["floor", "ours", *MULTI_PROCESS])
def test_record_request_in_multi_process_mode(
    measure, middlewares, tmp_path, monkeypatch, contender
):
    group = "record_request multi-process"
    if contender == "floor":
        record = workloads.floor_record_request
    elif contender == "ours":
        record = middlewares["ours"].record_request
    elif contender == "ours, multi-process":
        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=tmp_path)
        record = metrics.record_request
    else:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
        assert metrics.prometheus_multiproc_dir == str(tmp_path)
        record = metrics.record_request
    measure(
        group, contender, workloads.fixed_request(record), calls_per_round=workloads.CALLS_PER_ROUND
    )
    if contender in MULTI_PROCESS:
        assert requests_seen(metrics, "gpt-4o") >= workloads.CALLS_PER_ROUND
        if TIMINGS.get((group, contender)):
            single = workloads.fixed_request(middlewares["ours"].record_request)
            ratio = interleaved_ratio(workloads.fixed_request(record), single)
            figure = f"record_request multi-process ({MULTI_PROCESS[contender]}) / single-process"
            FIGURES[(f"{figure}, in alternation", "ratio")] = ratio


@pytest.fixture(scope="module")
def process_files(tmp_path_factory):
    directories = {}
    for kind in ("ours", "prometheus_client"):
        directory = str(tmp_path_factory.mktemp(f"files-{kind.replace('_', '-')}"))
        workloads.write_process_files(kind, directory)
        directories[kind] = directory
    return directories


@pytest.mark.parametrize("contender", ["reference", "ours"])
def test_scrape_over_64_processes_files(measure, process_files, contender):
    group = "scrape 64 processes' files"
    if contender == "reference":
        scrape = workloads.prometheus_client_multiprocess_scrape(process_files["prometheus_client"])
    else:
        metrics = GatewayMetricsMiddleware(
            registry=CollectorRegistry(), multiprocess_dir=process_files["ours"]
        )
        scrape = metrics.generate_latest
    text = measure(group, contender, scrape)
    text = text.decode() if isinstance(text, bytes) else text
    labels = 'model="model-0",operation="chat",provider="openai",status="ok"'
    assert f"ractogateway_requests_total{{{labels}}} {float(workloads.SCRAPE_PROCESSES)}\n" in text


@pytest.mark.parametrize(
    "contender",
    [
        "floor",
        "ours, scalar labels",
        "ours, model column",
        "ours, pyarrow dictionary",
        "ours, pyarrow string",
        "ours, pandas categorical",
    ],
)
def test_record_batch_100k_rows(measure, middlewares, contender):
    group = "record_batch 100k rows (per row)"
    if contender == "floor":
        measure(
            group,
            contender,
            workloads.fixed_request(workloads.floor_record_request),
            calls_per_round=workloads.CALLS_PER_ROUND,
        )
        return
    record_batch = middlewares["ours"].record_batch
    if contender.endswith(("labels", "column")):
        columns = workloads.batch_columns(model_column=contender.endswith("model column"))
        record = lambda: record_batch(**columns)  # noqa: E731
    else:
        # A whole table, its model column as the frame holds it.
        table = workloads.batch_frame(contender.removeprefix("ours, "))
        record = lambda: record_batch(table, provider="openai", operation="chat", status="ok")  # noqa: E731
    rows = measure(
        group,
        contender,
        record,
        calls_per_round=workloads.BATCH_ROWS,
        floor=workloads.fixed_request(workloads.floor_record_request),
        floor_calls_per_round=workloads.CALLS_PER_ROUND,
    )
    assert rows == workloads.BATCH_ROWS


@pytest.fixture(scope="module")
def populated():
    populated = {}
    for contender in ("reference", "ours"):
        middleware = workloads.new_middleware(contender)
        workloads.populate_for_scrape(middleware)
        populated[contender] = middleware
    return populated


@pytest.mark.parametrize("contender", ["reference", "ours"])
def test_generate_latest_2500_models(measure, populated, contender):
    text = measure("generate_latest 2500 models", contender, populated[contender].generate_latest)
    assert text.count("\n") > 45_000
    assert (
        'ractogateway_tokens_total{model="model-02499",provider="openai",token_type="input"}'
        in text
    )


@pytest.fixture(scope="module")
def openmetrics_25000():
    """The middleware the load benchmark scrapes at its largest, and its OpenMetrics body."""
    middleware = workloads.new_middleware("ours")
    workloads.populate_for_scrape(middleware, models=workloads.LOAD_MODELS)
    return middleware, middleware._exposition(True) + b"# EOF\n"


@pytest.mark.parametrize(
    "contender",
    [
        "reference",
        "zlib level 1",
        "zlib-rs level 1",
        "zlib-rs level 2",
        "ours",
        "ours, rendered and compressed",
    ],
)
def test_gzip_of_a_25000_label_set_scrape(measure, openmetrics_25000, contender):
    # What a compressed scrape costs at the load benchmark's size: compression
    # alone (the reference is prometheus_client's gzip at level 9; zlib-rs is
    # what GATEWAY_METRICS_GZIP=zlib switches to), and ours whole, compressed a
    # chunk at a time as it is rendered.
    middleware, body = openmetrics_25000
    compress = {
        "reference": lambda: gzip.compress(body, compresslevel=9, mtime=0),
        "zlib level 1": lambda: gzip.compress(body, compresslevel=1, mtime=0),
        "zlib-rs level 1": lambda: _core.gzip_parts([body], "zlib:1"),
        "zlib-rs level 2": lambda: _core.gzip_parts([body], "zlib:2"),
        "ours": lambda: _core.gzip_parts([body], "builtin"),
        "ours, rendered and compressed": lambda: middleware._exposition_gzip(
            True, False, b"# EOF\n"
        ),
    }[contender]
    packed = measure("gzip of a 25,000 label set scrape (61 MB OpenMetrics)", contender, compress)
    assert gzip.decompress(packed) == body
    FIGURES[("gzip body of a 25,000 label set scrape, bytes", contender)] = len(packed)


@pytest.fixture(scope="module")
def populated_native():
    middleware = workloads.new_middleware(workloads.NATIVE)
    workloads.populate_for_scrape(middleware)
    return middleware


@pytest.mark.parametrize(
    "contender", ["OpenMetrics, off", "protobuf, off", "OpenMetrics, on", "protobuf, on"]
)
def test_scrape_body_2500_models_protobuf_vs_text(measure, populated, populated_native, contender):
    group = "scrape body 2500 models, native histograms off/on"
    fmt, native = contender.split(", ")
    metrics = populated_native if native == "on" else populated["ours"]
    render = (
        metrics._protobuf_exposition if fmt == "protobuf" else lambda: metrics._exposition(True)
    )
    body = measure(group, contender, render)
    FIGURES[(f"{group}: body bytes", contender)] = len(body)
    # The tests decode both formats; here each body is checked to be the one meant.
    if fmt == "protobuf":
        assert body.count(b"ractogateway_request_duration_seconds") == 1  # one family message
    else:
        assert (
            body.count(b"ractogateway_request_duration_seconds_count{") == workloads.SCRAPE_MODELS
        )


@pytest.mark.parametrize(
    "contender", ["ours, remote write", "ours, OTLP", "OpenTelemetry SDK, OTLP"]
)
def test_push_body_2500_models(measure, populated, contender):
    """What one push costs before it is sent: reading every series, encoding and compressing."""
    group = "push body 2500 models"
    metrics = populated["ours"]
    if contender == "ours, remote write":
        target = Target("http://127.0.0.1:1/api/v1/write", "bench", "bench", None, None, 30.0)
    elif contender == "ours, OTLP":
        target = OtlpTarget("http://127.0.0.1:1/v1/metrics", None, None, 30.0)
    else:
        sdk_body = workloads.opentelemetry_sdk_for_scrape()
        body = measure(group, contender, sdk_body)
        FIGURES[(f"{group}: body bytes", contender)] = len(body)
        return
    body = measure(group, contender, lambda: target.body(metrics))
    FIGURES[(f"{group}: body bytes", contender)] = len(body)
    assert len(body) > 50_000


PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def samples_without_created(body: bytes) -> list[tuple[str, tuple, float]]:
    return sorted(
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in openmetrics_families(body.decode())
        for sample in family.samples
        if not sample.name.endswith("_created")
    )


@pytest.fixture(scope="module")
def served(populated):
    """Each contender's registry served over HTTP on 127.0.0.1, as Prometheus scrapes it."""
    exporter = PrometheusExporter(0, registry=populated["ours"]._registry, addr="127.0.0.1")
    exporter.start()
    server, thread = prometheus_client.start_http_server(
        0, addr="127.0.0.1", registry=populated["reference"]._registry
    )
    ports = {"ours": exporter.port, "reference": server.server_address[1]}
    yield ports
    exporter.stop()
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.mark.parametrize("contender", ["reference", "ours"])
def test_http_scrape_2500_models(measure, served, contender):
    request = urllib.request.Request(
        f"http://127.0.0.1:{served[contender]}/metrics", headers={"Accept": PROMETHEUS_ACCEPT}
    )

    def scrape() -> bytes:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    body = measure("HTTP scrape 2500 models (OpenMetrics)", contender, scrape)
    SCRAPED[contender] = samples_without_created(body)
    assert len(SCRAPED[contender]) == 42_500  # 17 samples per model without _created
    if len(SCRAPED) == 2:
        assert SCRAPED["ours"] == SCRAPED["reference"]


def test_prometheus_client_renders_the_collector(measure, populated):
    registry = populated["ours"]._registry
    body = measure(
        "generate_latest 2500 models",
        "ours via prometheus_client",
        lambda: prometheus_client.generate_latest(registry),
    )
    assert body.decode() == populated["ours"].generate_latest()


def test_prometheus_client_formatting_alone(measure, populated):
    body = measure(
        "generate_latest 2500 models",
        "prometheus_client formatting alone",
        workloads.formatting_only(populated["ours"]),
    )
    assert body.decode() == populated["ours"].generate_latest()


@pytest.mark.parametrize("contender", ["reference", "ours", workloads.NATIVE])
def test_resident_memory_per_label_set(benchmark, contender):
    benchmark.group = "memory per label set (bytes)"
    label_sets = workloads.MEMORY_LABEL_SETS if benchmark.enabled else 2_000
    per_label_set = benchmark.pedantic(
        workloads.rss_per_label_set, args=(contender, label_sets), rounds=1, iterations=1
    )
    benchmark.extra_info["bytes_per_label_set"] = per_label_set
    FIGURES[("RSS bytes per label set", contender)] = per_label_set
    reference = FIGURES.get(("RSS bytes per label set", "reference"))
    if contender == "ours" and reference:
        benchmark.extra_info["fraction_of_reference"] = per_label_set / reference
    assert per_label_set < 50_000


#: Request label sets of the snapshot benchmarks; each makes 5 series
#: (requests, duration, input and output tokens, cost).
SNAPSHOT_LABEL_SETS = 20_000


@pytest.fixture(scope="module")
def worker_snapshot():
    """A worker's snapshot of 100,000 series, and the price table it was recorded with."""
    prices = {f"model-{index}": ModelPricing(1.0, 2.0) for index in range(SNAPSHOT_LABEL_SETS)}
    worker = GatewayMetricsMiddleware(registry=CollectorRegistry(), price_table=prices)
    for model in prices:
        worker.record_request(
            provider="openai",
            model=model,
            operation="chat",
            status="ok",
            latency_s=0.2,
            input_tokens=100,
            output_tokens=10,
        )
    snapshot = worker.snapshot()
    return snapshot, prices


def record_merge_rate(group: str, series: int) -> None:
    seconds = TIMINGS.get((group, "ours"))
    if seconds:
        FIGURES[(f"{group}: series merged per second", "ours")] = series / seconds


def test_merge_a_snapshot_into_existing_series(measure, worker_snapshot):
    snapshot, prices = worker_snapshot
    driver = GatewayMetricsMiddleware(registry=CollectorRegistry(), price_table=prices)
    driver.merge(snapshot)
    group = "merge a 100,000-series snapshot, series known"
    assert measure(group, "ours", lambda: driver.merge(snapshot)) == 5 * SNAPSHOT_LABEL_SETS
    record_merge_rate(group, 5 * SNAPSHOT_LABEL_SETS)


def test_merge_a_snapshot_into_an_empty_driver(benchmark, worker_snapshot):
    snapshot, prices = worker_snapshot

    def fresh_driver():
        driver = GatewayMetricsMiddleware(registry=CollectorRegistry(), price_table=prices)
        return (driver,), {}

    group = "merge a 100,000-series snapshot, series new"
    benchmark.group = group
    merged = benchmark.pedantic(lambda driver: driver.merge(snapshot), setup=fresh_driver, rounds=5)
    assert merged == 5 * SNAPSHOT_LABEL_SETS
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        TIMINGS[(group, "ours")] = stats.stats.median
        record_merge_rate(group, 5 * SNAPSHOT_LABEL_SETS)


def test_take_a_snapshot_of_100k_series(measure, worker_snapshot):
    snapshot, prices = worker_snapshot
    driver = GatewayMetricsMiddleware(registry=CollectorRegistry(), price_table=prices)
    driver.merge(snapshot)
    taken = measure("snapshot() of 100,000 series", "ours", driver.snapshot)
    assert len(taken) == len(snapshot)
