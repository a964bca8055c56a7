"""The scrape's content negotiation under generated headers: whatever a scraper
sends in ``Accept`` and ``Accept-Encoding``, the answer is 200 with a body its
content type says, which a parser of that format reads, and the middleware's
series are in it. Headers are composed from the grammar's pieces (media
ranges, parameters, q-values, separators) and from arbitrary text, so that
both near misses and garbage reach the parser."""

from __future__ import annotations

import gzip

from gateway_metrics import GatewayMetricsMiddleware
from gateway_metrics._protobuf import accepts_protobuf
from gateway_metrics._serving import exposition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families
from support import decode_delimited_families

MEDIA = st.sampled_from(
    [
        "application/vnd.google.protobuf",
        "application/openmetrics-text",
        "text/plain",
        "*/*",
        "text/*",
        "application/json",
        "",
        "TEXT/PLAIN",
    ]
)
PARAMETER = st.one_of(
    st.sampled_from(
        [
            "proto=io.prometheus.client.MetricFamily",
            "encoding=delimited",
            "escaping=allow-utf-8",
            "escaping=underscores",
            "escaping=values",
            "version=0.0.4",
            "version=1.0.0",
            "version=1.0-rc1",
            "version=",
            "version=abc",
            "charset=utf-8",
            "q=",
            "q=0",
            "q=1",
            "q=nan",
            "q=inf",
            "q=-1",
            "q=1e400",
            "q=0.5",
            "=",
            "q",
        ]
    ),
    st.text(max_size=12),
)
MEDIA_RANGE = st.builds(
    lambda media, parameters, space: (";" + space).join([media, *parameters]),
    MEDIA,
    st.lists(PARAMETER, max_size=5),
    st.sampled_from(["", " ", "\t"]),
)
ACCEPT = st.one_of(
    st.lists(MEDIA_RANGE, max_size=5).map(", ".join),
    st.lists(MEDIA_RANGE, max_size=3).map(",".join),
    st.text(max_size=80),
)
ACCEPT_ENCODING = st.one_of(
    st.sampled_from(["", "gzip", "gzip;q=0", "identity", "*", "br, gzip;q=0.5", "gzip;q=nan"]),
    st.text(max_size=30),
)


def body_of(parts: list[bytes], headers: dict[str, str]) -> bytes:
    body = b"".join(parts)
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return body


def series_names(content_type: str, body: bytes) -> set[str]:
    """The family names a parser of ``content_type`` reads from ``body``."""
    if content_type.startswith("application/vnd.google.protobuf"):
        return {family.name for family in decode_delimited_families(body)}
    if content_type.startswith("application/openmetrics-text"):
        return {family.name for family in openmetrics(body.decode())}
    assert content_type.startswith("text/plain"), content_type
    return {family.name for family in text_string_to_metric_families(body.decode())}


REGISTRY = CollectorRegistry()
METRICS = GatewayMetricsMiddleware(registry=REGISTRY, native_histograms=True)
METRICS.record_request(
    provider="openai", model="gpt-4o", operation="chat", status="ok", latency_s=0.25
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(accept=ACCEPT, accept_encoding=ACCEPT_ENCODING)
def test_every_accept_header_gets_a_body_its_content_type_describes(accept, accept_encoding):
    # The chooser alone never raises either.
    escaping = accepts_protobuf(accept)
    assert escaping is None or isinstance(escaping, str)
    status, headers, parts = exposition(REGISTRY, accept, accept_encoding, {})
    assert status == "200 OK"
    headers = dict(headers)
    names = series_names(headers["Content-Type"], body_of(parts, headers))
    assert names & {
        "ractogateway_requests",
        "ractogateway_requests_total",
    }, (accept, headers)
