"""The protobuf exposition format for the registry's other collectors, and its negotiation.

The middleware's own families are encoded by the core; a registry's other
collectors (``prometheus_client``'s process and GC metrics, an application's own
metrics) are encoded here, from the families ``prometheus_client`` collects, as
``io.prometheus.client.MetricFamily`` messages, each prefixed by its length
(the delimited encoding Prometheus asks for when it scrapes native histograms).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

try:  # prometheus_client 0.22 and later allow UTF-8 names, escaped on output.
    from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
except ImportError:  # pragma: no cover - older prometheus_client: legacy names only

    def escape_metric_name(s: str, escaping: str = "underscores") -> str:
        return s

    def escape_label_name(s: str, escaping: str = "underscores") -> str:
        return s


#: The media type, as the core writes it and Prometheus asks for it.
CONTENT_TYPE = (
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)

_COUNTER, _GAUGE, _SUMMARY, _UNTYPED, _HISTOGRAM, _GAUGE_HISTOGRAM = 0, 1, 2, 3, 4, 5


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a string or a message)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _double(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + struct.pack("<d", value)


def _uint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _timestamp(seconds: float) -> bytes:
    whole = math.floor(seconds)
    nanos = min(round((seconds - whole) * 1e9), 999_999_999)
    return _uint(1, whole) + _uint(2, nanos)


def _labels(labels: dict[str, str], utf8: bool) -> bytes:
    return b"".join(
        _field(1, _field(1, _label_name(name, utf8).encode()) + _field(2, value.encode()))
        for name, value in labels.items()
    )


def _label_name(name: str, utf8: bool) -> str:
    """A label name as the scraper takes it: as it is, or underscore-escaped."""
    return name if utf8 else escape_label_name(name, "underscores")


def _series(
    samples: Iterable[Sample], without: str = ""
) -> dict[tuple[tuple[str, str], ...], list[Sample]]:
    """Samples by label set, ``without`` (``le`` or ``quantile``) left out of it."""
    grouped: dict[tuple[tuple[str, str], ...], list[Sample]] = {}
    for sample in samples:
        key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != without))
        grouped.setdefault(key, []).append(sample)
    return grouped


def _metric(family: Metric, labels: dict[str, str], samples: list[Sample], utf8: bool) -> bytes:
    """One ``Metric`` message of ``family``."""
    body = _labels(labels, utf8)
    by_suffix = {sample.name[len(family.name) :]: sample for sample in samples}
    created = by_suffix.get("_created")
    if family.type == "counter":
        total = by_suffix.get("_total") or by_suffix.get("")
        counter = _double(1, total.value if total else 0.0)
        if created is not None:
            counter += _field(3, _timestamp(created.value))
        return body + _field(3, counter)
    if family.type in ("histogram", "gaugehistogram"):
        count = by_suffix.get("_count") or by_suffix.get("_gcount")
        total = by_suffix.get("_sum") or by_suffix.get("_gsum")
        histogram = _uint(1, int(count.value) if count else 0)
        histogram += _double(2, total.value if total else 0.0)
        for sample in samples:
            if sample.name.endswith("_bucket") and sample.labels.get("le") != "+Inf":
                bucket = _uint(1, int(sample.value)) + _double(2, float(sample.labels["le"]))
                histogram += _field(3, bucket)
        if created is not None:
            histogram += _field(15, _timestamp(created.value))
        return body + _field(7, histogram)
    if family.type == "summary":
        count, total = by_suffix.get("_count"), by_suffix.get("_sum")
        summary = _uint(1, int(count.value) if count else 0)
        summary += _double(2, total.value if total else 0.0)
        for sample in samples:
            if "quantile" in sample.labels:
                quantile = float(sample.labels["quantile"])
                summary += _field(3, _double(1, quantile) + _double(2, sample.value))
        return body + _field(4, summary)
    value = samples[0].value if samples else 0.0
    if family.type in ("gauge", "info", "stateset"):
        return body + _field(2, _double(1, value))
    return body + _field(5, _double(1, value))


def _families(family: Metric, utf8: bool) -> Iterable[tuple[str, int, list[bytes]]]:
    """``(name, type, metric messages)`` of one collected family."""
    if family.type in ("histogram", "gaugehistogram"):
        kind = _HISTOGRAM if family.type == "histogram" else _GAUGE_HISTOGRAM
        grouped = _series(family.samples, "le")
        yield family.name, kind, [_metric(family, dict(k), s, utf8) for k, s in grouped.items()]
    elif family.type == "summary":
        grouped = _series(family.samples, "quantile")
        yield family.name, _SUMMARY, [_metric(family, dict(k), s, utf8) for k, s in grouped.items()]
    elif family.type == "counter":
        grouped = _series(family.samples)
        yield (
            f"{family.name}_total",
            _COUNTER,
            [_metric(family, dict(k), s, utf8) for k, s in grouped.items()],
        )
    else:
        # Gauges, and what protobuf has no type for (info, stateset, unknown):
        # one sample per series.
        kind = _UNTYPED if family.type in ("unknown", "untyped") else _GAUGE
        by_name: dict[str, list[bytes]] = {}
        for sample in family.samples:
            by_name.setdefault(sample.name, []).append(
                _metric(family, dict(sample.labels), [sample], utf8)
            )
        for name, metrics in by_name.items():
            yield name, kind, metrics


def encode(families: Iterable[Metric], utf8: bool = False) -> bytes:
    """Delimited ``MetricFamily`` messages of ``families``; UTF-8 names as they
    are when ``utf8`` (the scraper asked for ``escaping=allow-utf-8``), else
    underscore-escaped."""
    out = bytearray()
    for family in families:
        for name, kind, metrics in _families(family, utf8):
            if not metrics:
                continue
            spelt = name if utf8 else escape_metric_name(name, "underscores")
            message = _field(1, spelt.encode()) + _field(2, family.documentation.encode())
            message += _uint(3, kind) + b"".join(_field(4, metric) for metric in metrics)
            out += _varint(len(message)) + message
    return bytes(out)


#: The ``escaping`` a scraper names to take UTF-8 names as they are.
ALLOW_UTF8 = "allow-utf-8"


def accepts_protobuf(accept_header: str) -> str | None:
    """The ``escaping`` parameter of the delimited protobuf range (``""`` when
    absent) if the scraper prefers that format to the text formats, else None.

    Each media range's ``q`` (1 when absent) decides; a tie goes to the range
    listed first, as Prometheus lists its preferred format first.
    """
    best: tuple[float, int, str | None] | None = None
    for position, part in enumerate(accept_header.split(",")):
        pieces = [piece.strip() for piece in part.split(";")]
        media = pieces[0].lower()
        params = {
            name.strip().lower(): value.strip()
            for name, _, value in (piece.partition("=") for piece in pieces[1:])
        }
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 0.0
        if media == "application/vnd.google.protobuf":
            ours = (
                params.get("proto") == "io.prometheus.client.MetricFamily"
                and params.get("encoding") == "delimited"
            )
            if not ours:
                continue
            protobuf: str | None = params.get("escaping", "")
        elif media in ("text/plain", "application/openmetrics-text", "*/*", "text/*"):
            protobuf = None
        else:
            continue
        if q > 0 and (best is None or q > best[0]):
            best = (q, position, protobuf)
    return None if best is None else best[2]
