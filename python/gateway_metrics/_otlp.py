"""OpenTelemetry OTLP/HTTP metrics export: one push now, or a thread pushing periodically.

Configuration follows the OpenTelemetry SDKs' environment variables
(https://opentelemetry.io/docs/specs/otel/protocol/exporter/ and
https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/):
an argument given wins over its variable, the metrics-specific variable over
the general one.
"""

from __future__ import annotations

import gzip
import os
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway_metrics._net import MAX_SECONDS
from gateway_metrics._push import PeriodicSender, PushError, Receiver

if TYPE_CHECKING:
    from gateway_metrics._core import MetricsStore

#: Where an OTLP/HTTP receiver listens when nothing says otherwise.
DEFAULT_ENDPOINT = "http://localhost:4318/v1/metrics"
#: The SDKs' default export timeout and interval, in seconds.
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_INTERVAL_S = 60.0
#: The statuses OTLP/HTTP says to retry
#: (https://opentelemetry.io/docs/specs/otlp/#retryable-response-codes).
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
#: One identity per process, as the SDKs' `service.instance.id` suggests.
_INSTANCE_ID = str(uuid.uuid4())


class OtlpError(PushError):
    """An OTLP export that did not succeed.

    ``status`` is the HTTP status (None when no response came: refused
    connection, timeout); ``retryable`` says whether sending again may succeed
    (429, 502, 503, 504 and connection errors, as OTLP/HTTP says), or not.
    """


def _environment(*names: str) -> str | None:
    """The first of the variables ``names`` that is set and not empty."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _pairs(text: str, variable: str) -> dict[str, str]:
    """``key1=value1,key2=value2`` with percent-encoded values, as the
    OpenTelemetry variables give headers and resource attributes."""
    pairs = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"{variable}: {item.strip()!r} is not key=value")
        pairs[key.strip()] = urllib.parse.unquote(value.strip())
    return pairs


def _milliseconds(variable: str) -> float | None:
    """A positive number of milliseconds from ``variable``, in seconds."""
    text = _environment(variable)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{variable} must be a number of milliseconds, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"{variable} must be above zero, got {text!r}")
    if not value / 1000 <= MAX_SECONDS:  # NaN and inf fail too
        raise ValueError(
            f"{variable} must be at most {MAX_SECONDS * 1000:.0f} milliseconds (a week), "
            f"got {text!r}"
        )
    return value / 1000


def _endpoint(endpoint: object) -> object:
    """The argument, else the metrics endpoint variable, else the general
    endpoint with ``/v1/metrics`` added, else the default."""
    if endpoint is not None:
        return endpoint
    specific = _environment("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if specific is not None:
        return specific
    general = _environment("OTEL_EXPORTER_OTLP_ENDPOINT")
    if general is not None:
        return general.rstrip("/") + "/v1/metrics"
    return DEFAULT_ENDPOINT


def _resource(resource: object) -> dict[str, str]:
    """``service.name`` and ``service.instance.id``, the variables' attributes,
    then the argument's."""
    attributes = {"service.name": "unknown_service:python", "service.instance.id": _INSTANCE_ID}
    variable = _environment("OTEL_RESOURCE_ATTRIBUTES")
    if variable is not None:
        attributes.update(_pairs(variable, "OTEL_RESOURCE_ATTRIBUTES"))
    service = _environment("OTEL_SERVICE_NAME")
    if service is not None:
        attributes["service.name"] = service
    if resource is not None:
        if not isinstance(resource, Mapping):
            raise TypeError(f"resource must be a mapping, not {type(resource).__name__}")
        for key, value in resource.items():
            if not isinstance(key, str) or not isinstance(value, str) or not key:
                raise TypeError("resource must map non-empty str to str")
            attributes[key] = value
    return attributes


class OtlpTarget(Receiver):
    """A validated OTLP/HTTP metrics receiver: endpoint, headers and resource."""

    protocol = "OTLP export"
    error = OtlpError

    def __init__(
        self,
        endpoint: object,
        headers: object,
        resource: object,
        timeout: object,
        semconv: object = None,
    ) -> None:
        if semconv not in (None, "gen_ai"):
            raise ValueError(f"semconv must be None or 'gen_ai', got {semconv!r}")
        self.semconv = semconv
        variable = _environment("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
        configured = _pairs(variable, "OTEL_EXPORTER_OTLP_HEADERS") if variable else {}
        if headers is not None:
            if not isinstance(headers, Mapping):
                raise TypeError(f"headers must be a mapping, not {type(headers).__name__}")
            configured.update(headers)
        if timeout is None:
            timeout = _milliseconds("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT") or _milliseconds(
                "OTEL_EXPORTER_OTLP_TIMEOUT"
            )
        protocol_headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
        super().__init__(
            _endpoint(endpoint),
            protocol_headers,
            configured,
            None,
            DEFAULT_TIMEOUT_S if timeout is None else timeout,
        )
        self.resource = _resource(resource)

    def body(self, metrics: MetricsStore) -> bytes:
        """Every series now, as a gzip-compressed ``ExportMetricsServiceRequest``."""
        encoded = metrics._otlp_body(list(self.resource.items()), time.time(), self.semconv)
        return gzip.compress(encoded, compresslevel=6, mtime=0)

    def retryable(self, status: int) -> bool:
        return status in RETRYABLE_STATUSES


class OtlpExporter(PeriodicSender):
    """Pushes a middleware's metrics to an OTLP/HTTP receiver every ``interval_s``.

    For jobs and platforms that collect OpenTelemetry rather than scrape: a
    daemon thread sends every series as cumulative OTLP points (counters as
    monotonic sums starting at their series' creation, histograms as
    explicit-bucket histograms, or exponential ones with native histograms on),
    gzip-compressed protobuf to ``endpoint``. A 429, 502, 503 or 504 answer or a
    connection error is retried up to ``max_retries`` times with exponential
    backoff (``backoff_s``, doubling, at most ``max_backoff_s``); another
    answer is logged and not retried, since the receiver refuses the data.
    Every push carries the current totals, so one given up on loses nothing
    the next does not carry. ``close()`` (also run at interpreter exit) stops
    the thread and pushes once more, within ``timeout`` seconds whatever the
    receiver does. In multi-process mode the directory's sum is pushed: run one
    exporter per directory.

    ``endpoint``, ``headers``, ``timeout`` and ``interval_s`` default to
    ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` (else ``OTEL_EXPORTER_OTLP_ENDPOINT``
    plus ``/v1/metrics``, else ``http://localhost:4318/v1/metrics``),
    ``OTEL_EXPORTER_OTLP_METRICS_HEADERS``/``OTEL_EXPORTER_OTLP_HEADERS``
    (the argument's headers are added to them), the ``..._TIMEOUT`` variables
    and ``OTEL_METRIC_EXPORT_INTERVAL`` (milliseconds; else 10 s and 60 s). The
    resource has ``service.name`` (``OTEL_SERVICE_NAME``, else
    ``unknown_service:python``), ``service.instance.id`` (random per process),
    the attributes of ``OTEL_RESOURCE_ATTRIBUTES``, then ``resource``'s.

    ``semconv="gen_ai"`` names the series as the OpenTelemetry GenAI semantic
    conventions do (version ``GEN_AI_SEMCONV_VERSION``): the request duration as
    ``gen_ai.client.operation.duration`` (by ``error.type`` where the middleware
    keeps it so, as one made with ``semconv="gen_ai"`` does), time to first token
    as ``gen_ai.client.operation.time_to_first_chunk``, time per output token as
    ``gen_ai.client.operation.time_per_output_chunk``, and the labels provider,
    model, operation, token type and error type as ``gen_ai.provider.name``,
    ``gen_ai.request.model``, ``gen_ai.operation.name``, ``gen_ai.token.type`` and
    ``error.type``;
    families the conventions do not define keep our names. The default, None,
    names them as the middleware does (its own ``semconv``).

    ``sent``, ``failed`` (failed attempts) and ``last_error`` tell how it went;
    the first failure of each kind since the last success is logged.

    Example::

        exporter = OtlpExporter(metrics, "http://127.0.0.1:4318/v1/metrics",
                                interval_s=15.0, resource={"service.name": "eval-job"})
        ...  # the job records
        exporter.close()  # one last push with the final totals
    """

    def __init__(
        self,
        metrics: MetricsStore,
        endpoint: str | None = None,
        *,
        interval_s: float | None = None,
        headers: Mapping[str, str] | None = None,
        resource: Mapping[str, str] | None = None,
        timeout: float | None = None,
        semconv: str | None = None,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        target = OtlpTarget(endpoint, headers, resource, timeout, semconv)
        if interval_s is None:
            interval_s = _milliseconds("OTEL_METRIC_EXPORT_INTERVAL") or DEFAULT_INTERVAL_S
        super().__init__(
            metrics,
            target,
            interval_s=interval_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            thread_name="gateway-metrics-otlp",
        )
