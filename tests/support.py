"""Test helpers: a nameless tool call, parsed expositions, promtool, servers on loopback,
and the prometheus_client reference model the differential tests share."""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families


class Nameless:
    """A tool-call object without a ``name`` attribute."""


def parse(text: str) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]:
    """Families as ``(name, type, help, [(sample, labels, value), ...])``, in order."""
    return [
        (
            family.name,
            family.type,
            family.documentation,
            [(s.name, dict(s.labels), s.value) for s in family.samples],
        )
        for family in text_string_to_metric_families(text)
    ]


def sample_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a text exposition, or None when it is absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def assert_same_families(ours: str, reference: str, float_tolerance: float = 0.0) -> None:
    """Parsed expositions are equal family by family and sample by sample.

    Token totals are compared with a relative tolerance: the reference adds them
    as floats, we add integers (exact) and convert once, which can differ in the
    last bit once a total passes 2**53. ``float_tolerance`` allows the same for
    float sums (latency sums and cost), whose additions a batch groups differently.
    """
    ours_families, reference_families = parse(ours), parse(reference)
    assert [f[:3] for f in ours_families] == [f[:3] for f in reference_families]
    for mine, theirs in zip(ours_families, reference_families):
        assert [s[:2] for s in mine[3]] == [s[:2] for s in theirs[3]], mine[0]
        for (name, labels, value), (_, _, expected) in zip(mine[3], theirs[3]):
            if name == "ractogateway_tokens_total":
                assert math.isclose(value, expected, rel_tol=1e-12), (name, labels)
            elif float_tolerance and name.endswith(("_sum", "cost_usd_total")):
                assert math.isclose(value, expected, rel_tol=float_tolerance), (name, labels)
            else:
                assert value == expected, (name, labels, value, expected)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def promtool_check(text: str) -> str:
    """Runs ``promtool check metrics`` and returns what it reported (empty when clean)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make deps` unpacks it into target/"
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    report = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, report
    return report.strip()


def prometheus_multiprocess_run(code: str, directory: Path) -> str:
    """Runs ``code`` (dedented) in a child process in prometheus_client's
    multi-process mode on ``directory``; returns what ``MultiProcessCollector``
    then shows, as text."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry).decode()


def samples_by_series(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample but ``_created`` by name and label set: equal however series are ordered."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def assert_same_totals(ours: str, expected: str, float_tolerance: float) -> None:
    """Same series with the same values in any order: counts and buckets
    exactly, float sums (``_sum``, cost) within ``float_tolerance``, relative."""
    mine, theirs = samples_by_series(ours), samples_by_series(expected)
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():
        if key[0].endswith(("_sum", "cost_usd_total")):
            assert math.isclose(mine[key], value, rel_tol=float_tolerance), key
        else:
            assert mine[key] == value, (key, mine[key], value)


class RunningServer:
    """A server process on 127.0.0.1, stopped (and its output kept) on exit.

    ``ready`` is a URL path that answers 200 once the server serves.
    """

    def __init__(self, argv: list[str], port: int, ready: str) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self._ready = ready
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                with urllib.request.urlopen(self.base + self._ready, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.base} not ready in {timeout} s:\n{self.output()}")

    def get_json(self, path: str, **query: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self._log.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


#: Debian forky's Prometheus 3.5, which ``make deps`` unpacks beside bookworm's 2.42.
PROMETHEUS_3 = (
    Path(__file__).resolve().parent.parent
    / "target"
    / "debian"
    / "forky"
    / "root"
    / "usr"
    / "bin"
    / "prometheus"
)


def prometheus_command(
    data: Path, *flags: str, config: dict | None = None, binary: Path | None = None
) -> tuple[list[str], int]:
    """The command line of Debian's Prometheus (or ``binary``) on a free loopback
    port, storing in ``data``, and that port."""
    prometheus = str(binary) if binary is not None else shutil.which("prometheus")
    assert prometheus, "prometheus is missing: `make deps` unpacks it into target/"
    assert Path(prometheus).exists(), f"{prometheus} is missing: `make deps` unpacks it"
    data.mkdir(parents=True, exist_ok=True)
    config_file = data / "prometheus.yml"
    # JSON is YAML: no YAML writer needed.
    config_file.write_text(json.dumps(config or {}))
    port = free_port()
    argv = [
        prometheus,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        *flags,
    ]
    return argv, port


def wait_until(fetch: Any, what: str, server: Any, timeout: float = 30.0) -> Any:
    """``fetch()``'s first non-empty answer, polled until ``timeout``; an
    assertion naming ``what`` (and the server's output) when none comes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = fetch()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} never returned data:\n{server.output()}")


def query_values(server: Any, expression: str) -> dict[frozenset, float]:
    """An instant query's result by label set."""
    result = server.get_json("/api/v1/query", query=expression)["data"]["result"]
    return {frozenset(r["metric"].items()): float(r["value"][1]) for r in result}


def wait_for_values(server: Any, expression: str, timeout: float = 30.0) -> dict:
    """``query_values`` once the query returns data."""
    return wait_until(lambda: query_values(server, expression), expression, server, timeout)


def scrape_every_second(ports: dict[str, int]) -> dict:
    """A Prometheus configuration scraping ``127.0.0.1:port`` every second as each job."""
    return {
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": "1s",
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
            }
            for job, port in ports.items()
        ]
    }


def prometheus_server(
    data: Path, *flags: str, config: dict | None = None, binary: Path | None = None
) -> RunningServer:
    """Debian's Prometheus started as ``prometheus_command`` says (see ``wait_ready``)."""
    argv, port = prometheus_command(data, *flags, config=config, binary=binary)
    return RunningServer(argv, port, "/-/ready")


class ReferenceModel:
    """What a middleware records, kept by ``prometheus_client`` itself: the model
    the differential tests compare the core with.

    The families, labels and buckets come from the core's family table
    (``_core.FAMILIES``); what a call adds to each is written here again, plainly,
    from the documented semantics, so that a rule the core gets wrong shows up.
    Prices are left out (cost is compared with the reference middleware elsewhere).
    """

    def __init__(
        self,
        extra_labels: tuple[str, ...] = (),
        latency_buckets: list[float] | None = None,
    ) -> None:
        from gateway_metrics import _core
        from prometheus_client import Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.extra_labels = extra_labels
        self.metrics: dict[str, Any] = {}
        for name, help_text, kind, labels, bounds, *_ in _core.FAMILIES:
            request_family = "model" in labels
            names = [*labels, *extra_labels] if request_family else list(labels)
            if kind == "counter":
                metric: Any = Counter(name, help_text, names, registry=self.registry)
            elif kind == "gauge":
                # Requests in flight: raised and lowered around calls, which
                # record_request (recording calls already over) never does.
                metric = Gauge(name, help_text, names, registry=self.registry)
            else:
                custom = name == "ractogateway_request_duration_seconds" and latency_buckets
                buckets = latency_buckets if custom else bounds
                metric = Histogram(name, help_text, names, buckets=buckets, registry=self.registry)
            self.metrics[name] = metric

    def _series(self, name: str, values: dict[str, str]) -> Any:
        metric = self.metrics[name]
        return metric.labels(**{label: values[label] for label in metric._labelnames})

    def record(self, **call: Any) -> None:
        """Records one ``record_request`` call (tool calls given as names)."""
        extra = {name: (call.get("labels") or {}).get(name) or "" for name in self.extra_labels}
        values = {
            "provider": call["provider"],
            "model": call["model"],
            "operation": call["operation"],
            "status": call["status"],
            **extra,
        }
        latency = call["latency_s"]
        self._series("ractogateway_requests", values).inc()
        self._series("ractogateway_request_duration_seconds", values).observe(latency)
        for token_type in (
            "input",
            "output",
            "cache_read",
            "cache_write",
            "reasoning",
            "audio_input",
            "audio_output",
        ):
            count = call.get(f"{token_type}_tokens") or 0
            if count > 0:
                self._series("ractogateway_tokens", {**values, "token_type": token_type}).inc(count)
        first = call.get("time_to_first_token_s")
        if first is not None:
            self._series("ractogateway_time_to_first_token_seconds", values).observe(first)
            output = call.get("output_tokens") or 0
            if output >= 2:
                self._series("ractogateway_time_per_output_token_seconds", values).observe(
                    (latency - first) / (output - 1)
                )
        queue, upstream = call.get("queue_s"), call.get("upstream_latency_s")
        if queue is not None:
            self._series("ractogateway_queue_time_seconds", values).observe(queue)
        if upstream is not None:
            self._series("ractogateway_upstream_latency_seconds", values).observe(upstream)
            overhead = max(0.0, latency - upstream - (queue or 0.0))
            self._series("ractogateway_gateway_overhead_seconds", values).observe(overhead)
        for tool in call.get("tool_calls") or ():
            self.metrics["ractogateway_tool_calls"].labels(tool_name=tool).inc()

    def samples(self, families: tuple[str, ...] | None = None) -> dict:
        """Every sample but ``_created``, as ``model_samples`` reads ours."""
        return model_samples(generate_latest(self.registry).decode(), families)


def model_samples(text: str, families: tuple[str, ...] | None = None) -> dict:
    """Every sample but ``_created`` of ``families`` (all when None), by name and
    sorted labels, of the families that have samples."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if families is None or family.name in families
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def assert_close_samples(ours: dict, expected: dict, rel_tol: float = 1e-9) -> None:
    """The same samples, floats within ``rel_tol`` (sums may add in another order)."""
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        assert math.isclose(ours[key], value, rel_tol=rel_tol, abs_tol=1e-12), (
            key,
            ours[key],
            value,
        )


def wire_descriptors() -> bytes:
    """The FileDescriptorSet of the wire schemas in proto/, compiled by Google's
    protoc (tools/wire_descriptors.py): the files the core's types are generated
    from, read by another compiler. A copy of the tests outside the source tree
    (an installed wheel's run) is given the set's path in
    ``GATEWAY_METRICS_WIRE_DESCRIPTORS``."""
    given = os.environ.get("GATEWAY_METRICS_WIRE_DESCRIPTORS")
    if given:
        return Path(given).read_bytes()
    tools = Path(__file__).resolve().parent.parent / "tools"
    sys.path.insert(0, str(tools))
    try:
        import wire_descriptors
    finally:
        sys.path.remove(str(tools))
    return wire_descriptors.compile_descriptors().read_bytes()


@functools.cache
def wire_message(full_name: str) -> Any:
    """The message class of ``full_name`` (``io.prometheus.client.MetricFamily``),
    built by Python's protobuf runtime from :func:`wire_descriptors`: a decoder
    independent of the core's encoder."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(wire_descriptors()).file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))


def decode_delimited_families(body: bytes) -> list[Any]:
    """The ``MetricFamily`` messages of a delimited protobuf exposition."""
    family_class = wire_message("io.prometheus.client.MetricFamily")
    families, position = [], 0
    while position < len(body):
        length, shift = 0, 0
        while True:
            byte = body[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        family = family_class()
        family.ParseFromString(body[position : position + length])
        families.append(family)
        position += length
    assert position == len(body), "a message runs past the body"
    return families


def native_buckets(histogram: Any) -> list[tuple[int, int]]:
    """A decoded histogram's native buckets as ``(index, count)``."""
    buckets, index, count = [], 0, 0
    deltas = iter(histogram.positive_delta)
    for number, span in enumerate(histogram.positive_span):
        index = span.offset if number == 0 else index + span.offset
        for _ in range(span.length):
            count += next(deltas)
            buckets.append((index, count))
            index += 1
    return buckets


def otlp_metrics(metrics: Any) -> list[Any]:
    """Every metric of the OTLP export body ``metrics`` would push, decoded by
    the protobuf runtime from the wire schemas (not by our encoder)."""
    import gzip

    from gateway_metrics._otlp import OtlpTarget

    request = wire_message("opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest")()
    target = OtlpTarget("http://127.0.0.1:9/v1/metrics", None, None, None, None)
    request.ParseFromString(gzip.decompress(target.body(metrics)))
    return [
        metric
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    ]
