"""GatewayMetricsMiddleware: the drop-in middleware and its registry collector."""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import prometheus_client
import prometheus_client.metrics as _prometheus_metrics
from prometheus_client.exposition import default_handler
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

try:  # prometheus_client 0.22 and later escape UTF-8 names as the scraper asks.
    from prometheus_client.validation import get_legacy_validation as _get_legacy_validation
except ImportError:  # pragma: no cover - older prometheus_client

    def _get_legacy_validation() -> bool:
        return True


from gateway_metrics._core import NATIVE_HISTOGRAM_DEFAULTS, MetricsStore
from gateway_metrics._instrument import instrument as instrument_client
from gateway_metrics._instrument import uninstrument as uninstrument_client
from gateway_metrics._otlp import OtlpTarget
from gateway_metrics._pricing import (
    DEFAULT_COST_TABLE,
    ModelPricing,
    checked_price_table,
    checked_prices,
    merged_price_table,
)
from gateway_metrics._remote_write import DEFAULT_JOB, Target
from gateway_metrics._track import TrackedCall


def _created_series_enabled() -> bool:
    # prometheus_client keeps this switch (PROMETHEUS_DISABLE_CREATED_SERIES,
    # disable_created_metrics()) in a module global; reading it per scrape keeps
    # our output in step with every other metric of the process.
    return bool(getattr(_prometheus_metrics, "_use_created", True))


#: Set while a native scrape renders the middleware's families itself and has
#: ``prometheus_client`` render the registry's other collectors.
RENDERED_NATIVELY: ContextVar[bool] = ContextVar("gateway_metrics_rendered_natively", default=False)

#: The middleware registered with each registry, for native serving. Both sides
#: are weak: a middleware refers to its registry, and must stay collectable.
_MIDDLEWARES: weakref.WeakKeyDictionary[
    CollectorRegistry, weakref.ReferenceType[GatewayMetricsMiddleware]
] = weakref.WeakKeyDictionary()


def middleware_of(registry: CollectorRegistry) -> GatewayMetricsMiddleware | None:
    """The middleware registered with ``registry``, if any."""
    reference = _MIDDLEWARES.get(registry)
    return None if reference is None else reference()


class _GatewayCollector(Collector):
    """Shows a middleware's families to a ``prometheus_client`` registry."""

    def __init__(self, store: MetricsStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        if RENDERED_NATIVELY.get():
            return
        for name, documentation, kind, samples in self._store._collect(
            _created_series_enabled(), Sample, _utf8_names()
        ):
            family = Metric(name, documentation, kind)
            family.samples = samples
            yield family

    def describe(self) -> list[Metric]:
        return [
            Metric(name, documentation, kind)
            for name, documentation, kind in self._store._families(_utf8_names())
        ]


def _utf8_names() -> bool:
    """Whether ``prometheus_client`` takes UTF-8 metric names and escapes them
    as each scraper asks (0.22 and later, unless its legacy name validation is
    on): then the collector gives a convention's dotted names, else their
    underscore translation."""
    return not _get_legacy_validation()


#: The environment variable naming the multi-process directory when the
#: constructor's ``multiprocess_dir`` is None.
MULTIPROCESS_DIR_VARIABLE = "GATEWAY_METRICS_MULTIPROC_DIR"


def prometheus_multiproc_dir() -> str | None:
    """The directory of ``prometheus_client``'s multi-process mode, if it is on.

    ``PROMETHEUS_MULTIPROC_DIR``, or the lower-case name ``prometheus_client``
    still honours.
    """
    return (
        os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        # prometheus_client still reads the lower-case spelling it used to document.
        or os.environ.get("prometheus_multiproc_dir")  # noqa: SIM112
        or None
    )


def _bucket_bounds(latency_buckets: Iterable[float]) -> list[float]:
    """The bounds as floats, or a ``TypeError`` naming the argument."""
    if isinstance(latency_buckets, (str, bytes)) or not isinstance(latency_buckets, Iterable):
        raise TypeError(
            f"latency_buckets must be an iterable of numbers, not {type(latency_buckets).__name__}"
        )
    bounds = []
    for bound in latency_buckets:
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise TypeError(f"latency_buckets must hold numbers, not {type(bound).__name__}")
        bounds.append(float(bound))
    return bounds


def _native_config(native_histograms: object) -> tuple[int, float, int] | None:
    """``native_histograms=`` as the core takes it: ``(schema, zero threshold,
    max buckets)``, or None when they are not kept."""
    if native_histograms is False or native_histograms is None:
        return None
    schema, zero_threshold, max_buckets = NATIVE_HISTOGRAM_DEFAULTS
    if native_histograms is True:
        return schema, zero_threshold, max_buckets
    if not isinstance(native_histograms, Mapping):
        raise TypeError(
            "native_histograms must be a bool or a dict of schema, zero_threshold and "
            f"max_buckets, not {type(native_histograms).__name__}"
        )
    unknown = sorted(set(native_histograms) - {"schema", "zero_threshold", "max_buckets"})
    if unknown:
        raise ValueError(
            f"native_histograms: unknown setting {unknown[0]!r} (schema, zero_threshold "
            "and max_buckets are known)"
        )
    settings = {"schema": schema, "zero_threshold": zero_threshold, "max_buckets": max_buckets}
    settings.update(native_histograms)
    for name in ("schema", "max_buckets"):
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"native_histograms['{name}'] must be an int, not {type(value).__name__}"
            )
    zero = settings["zero_threshold"]
    if isinstance(zero, bool) or not isinstance(zero, (int, float)):
        raise TypeError(
            f"native_histograms['zero_threshold'] must be a number, not {type(zero).__name__}"
        )
    if not -128 <= settings["schema"] <= 127:
        raise ValueError(
            f"native_histograms: schema must be from -4 to 8, got {settings['schema']}"
        )
    if settings["max_buckets"] < 0:
        raise ValueError(
            f"native_histograms: max_buckets must not be negative, got {settings['max_buckets']}"
        )
    return int(settings["schema"]), float(zero), int(settings["max_buckets"])


def _label_names(extra_labels: Iterable[str]) -> list[str]:
    """The extra label names as a list, or a ``TypeError`` naming the argument."""
    if isinstance(extra_labels, (str, bytes)) or not isinstance(extra_labels, Iterable):
        raise TypeError(
            f"extra_labels must be an iterable of label names, not {type(extra_labels).__name__}"
        )
    names = list(extra_labels)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"extra_labels must hold str, not {type(name).__name__}")
    return names


class GatewayMetricsMiddleware(MetricsStore):
    """Prometheus metrics for LLM requests; pass it as ``metrics=`` to a gateway kit.

    A drop-in replacement for ``ractogateway.telemetry.GatewayMetricsMiddleware``:
    the same seven ``ractogateway_*`` families, labels, help texts, buckets and
    values, recorded by a lock-free native core. One instance can be shared by
    many kits and threads. Its data reaches ``registry`` (the global
    ``prometheus_client.REGISTRY`` when ``None``) through a collector, so every
    ``prometheus_client`` exposition helper sees it. A second middleware on the
    same registry raises ``ValueError``.

    Despite its name it is not ASGI or WSGI middleware: it wraps no web app.
    Serve its metrics by mounting ``gateway_metrics.make_asgi_app()`` (FastAPI,
    Starlette) or ``gateway_metrics.make_wsgi_app()`` (Flask) at ``/metrics``,
    or with ``PrometheusExporter``; both render its families natively.

    With ``multiprocess_dir`` (or, when it is None, the environment variable
    ``GATEWAY_METRICS_MULTIPROC_DIR``) each process records into its own
    memory-mapped file in that directory, and a scrape of any process shows the
    sum over every file there; see ``gateway_metrics.multiprocess``. Without
    either, but with ``prometheus_client``'s ``PROMETHEUS_MULTIPROC_DIR`` set,
    each process records natively into files in ``prometheus_client``'s own
    format there, which its ``MultiProcessCollector`` sums with the
    application's other metrics.

    ``extra_labels`` names labels (valid Prometheus label names, not the
    families' own) that the requests, duration, tokens, cost and streaming
    families carry besides theirs; a call's ``labels=`` maps them to values
    (a missing name records ``""``; an unknown one is a ``ValueError``).

    ``prices="genai-prices"`` (the ``gateway-metrics[prices]`` extra) prices
    each new (provider, model) once through genai-prices, with its cache prices
    and long-prompt tiers, after ``price_table`` and before
    ``DEFAULT_COST_TABLE``; the core then prices every request natively.
    Requests with tokens but no price count in
    ``ractogateway_unpriced_requests_total``, and a ``logging`` warning names
    each such model once.

    ``max_series`` caps the label sets each family holds (per process; for the
    whole directory in our multi-process mode): past
    it, a new label set records into the family's overflow series, whose every
    label value is ``"__overflow__"``, so totals stay exact while memory and
    scrapes stop growing; ``ractogateway_overflow_requests_total{family}``
    counts what was folded, and a ``logging`` warning says so once per family.

    ``semconv="gen_ai"`` names the families and labels the OpenTelemetry GenAI
    semantic conventions define as they do (version ``GEN_AI_SEMCONV_VERSION``)
    in every exposition and push: a scraper that asks for UTF-8 names
    (Prometheus 3) gets ``gen_ai.client.operation.duration_seconds`` and
    ``gen_ai.provider.name``, any other ``gen_ai_client_operation_duration_seconds``
    and ``gen_ai_provider_name``; other families keep our names. Such a
    middleware also keeps two histograms only the conventions show:
    ``gen_ai.client.token.usage`` (each request's input and output tokens) and
    ``gen_ai.client.operation.duration`` (the latency by error type, a failed
    request's with ``error.type``). Files and snapshots
    keep our names, so such processes still share a directory and merge.

    ``namespace`` names every family ``<namespace>_...`` instead of
    ``ractogateway_...`` in every exposition, file, snapshot and push (a
    snapshot of another namespace is refused on ``merge``); the default keeps
    the reference's names.

    ``latency_buckets`` replaces the upper bounds of the request-duration
    histogram (finite, above zero, strictly increasing; ``+Inf`` is implied).
    The default is the reference's 0.05 to 60 seconds; bounds that fit the
    models served give truer quantiles. Every process sharing a multi-process
    directory must use the same buckets: files of other buckets are skipped with
    a ``RuntimeWarning``.

    Example::

        from prometheus_client import CollectorRegistry
        from gateway_metrics import GatewayMetricsMiddleware

        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
        metrics.record_request(provider="openai", model="gpt-4o", operation="chat",
                               status="ok", latency_s=0.42,
                               input_tokens=1000, output_tokens=200)
        print(metrics.generate_latest())
    """

    _price_table: dict[str, ModelPricing]
    _multiprocess_dir: str | None
    _prometheus_multiproc_dir: str | None
    _registry: CollectorRegistry
    _collector: _GatewayCollector

    def __new__(
        cls,
        *,
        price_table: Mapping[str, ModelPricing] | None = None,
        registry: CollectorRegistry | None = None,
        multiprocess_dir: str | os.PathLike[str] | None = None,
        latency_buckets: Iterable[float] | None = None,
        extra_labels: Iterable[str] = (),
        max_series: int | None = None,
        prices: str | None = None,
        native_histograms: bool | Mapping[str, Any] = False,
        exemplars: str | None = None,
        semconv: str | None = None,
        namespace: str = "ractogateway",
    ) -> GatewayMetricsMiddleware:
        source = checked_prices(prices)
        table = merged_price_table(price_table)
        if source is None:
            core_table, resolve = table, None
        else:
            from gateway_metrics._genai_prices import resolver

            # The caller's prices win; genai-prices then the default table price the rest.
            core_table, resolve = checked_price_table(price_table), resolver(DEFAULT_COST_TABLE)
        core_prices = [(model, *pricing.rates()) for model, pricing in core_table.items()]
        if multiprocess_dir is None:
            multiprocess_dir = os.environ.get(MULTIPROCESS_DIR_VARIABLE) or None
        prometheus_dir = None if multiprocess_dir is not None else prometheus_multiproc_dir()
        bounds = None if latency_buckets is None else _bucket_bounds(latency_buckets)
        names = _label_names(extra_labels)
        if max_series is not None:
            if isinstance(max_series, bool) or not isinstance(max_series, int):
                raise TypeError(
                    f"max_series must be an int or None, not {type(max_series).__name__}"
                )
            if max_series < 1:
                raise ValueError(f"max_series must be at least 1, got {max_series}")
        if semconv is not None and not isinstance(semconv, str):
            raise TypeError(f"semconv must be a str or None, not {type(semconv).__name__}")
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
        native = _native_config(native_histograms)
        if native is not None and prometheus_dir is not None:
            warnings.warn(
                "native_histograms are not kept in prometheus_client's multi-process mode: "
                "its files have no place for them (the classic buckets are kept as always). "
                "Use multiprocess_dir= (GATEWAY_METRICS_MULTIPROC_DIR) to keep them.",
                RuntimeWarning,
                stacklevel=2,
            )
            native = None
        self = super().__new__(
            cls,
            core_prices,
            multiprocess_dir,
            prometheus_dir,
            bounds,
            names,
            max_series,
            resolve,
            native,
            semconv,
            namespace,
        )
        self._price_table = table
        self._multiprocess_dir = None if multiprocess_dir is None else os.fspath(multiprocess_dir)
        self._prometheus_multiproc_dir = prometheus_dir
        return self

    def __init__(
        self,
        *,
        price_table: Mapping[str, ModelPricing] | None = None,
        registry: CollectorRegistry | None = None,
        multiprocess_dir: str | os.PathLike[str] | None = None,
        latency_buckets: Iterable[float] | None = None,
        extra_labels: Iterable[str] = (),
        max_series: int | None = None,
        prices: str | None = None,
        native_histograms: bool | Mapping[str, Any] = False,
        exemplars: str | None = None,
        semconv: str | None = None,
        namespace: str = "ractogateway",
    ) -> None:
        self._registry = prometheus_client.REGISTRY if registry is None else registry
        self._collector = _GatewayCollector(self)
        try:
            self._registry.register(self._collector)
        except ValueError as duplicate:
            raise ValueError(
                f"this registry already has the {self.namespace}_* metrics, most likely from "
                "another GatewayMetricsMiddleware (one made before a fork counts too). "
                "Either reuse that instance (it keeps working in forked children), or give "
                "this one a registry of its own: "
                "GatewayMetricsMiddleware(registry=CollectorRegistry())"
            ) from duplicate
        _MIDDLEWARES[self._registry] = weakref.ref(self)
        if exemplars is not None:
            self._take_exemplars_from(exemplars)

    def _take_exemplars_from(self, source: str) -> None:
        """Gives each ``record_request`` call without an ``exemplar`` the current
        OpenTelemetry span's ids (``exemplars="opentelemetry"``)."""
        if source != "opentelemetry":
            raise ValueError(f"exemplars must be None or 'opentelemetry', got {source!r}")
        try:
            from opentelemetry import trace
        except ImportError:
            raise ValueError(
                "exemplars='opentelemetry' needs opentelemetry-api installed"
            ) from None
        record = super().record_request

        def record_request(**arguments: Any) -> None:
            if arguments.get("exemplar") is None:
                context = trace.get_current_span().get_span_context()
                if context.is_valid:
                    arguments["exemplar"] = {
                        "trace_id": format(context.trace_id, "032x"),
                        "span_id": format(context.span_id, "016x"),
                    }
            record(**arguments)

        # An instance attribute wins over the class's method for this middleware only.
        self.record_request = record_request  # type: ignore[method-assign]

    @property
    def price_table(self) -> Mapping[str, ModelPricing]:
        """The prices in use: ``DEFAULT_COST_TABLE`` merged with the caller's table."""
        return dict(self._price_table)

    @property
    def extra_labels(self) -> tuple[str, ...]:
        """The label names every request family carries besides its own."""
        return tuple(self._extra_labels())

    @property
    def latency_buckets(self) -> tuple[float, ...]:
        """Upper bounds of the request-duration histogram's buckets (``+Inf`` implied)."""
        return tuple(self._latency_buckets())

    @property
    def multiprocess_dir(self) -> str | None:
        """The directory whose files a scrape sums, in our multi-process mode; else None."""
        return self._multiprocess_dir

    @property
    def prometheus_multiproc_dir(self) -> str | None:
        """The directory recorded into in ``prometheus_client``'s format; else None.

        Set when ``PROMETHEUS_MULTIPROC_DIR`` is and neither ``multiprocess_dir``
        nor ``GATEWAY_METRICS_MULTIPROC_DIR`` is given.
        """
        return self._prometheus_multiproc_dir

    @property
    def namespace(self) -> str:
        """The prefix of every family name: ``"ractogateway"`` unless given."""
        return self._namespace()

    @property
    def registry(self) -> CollectorRegistry:
        """The registry this middleware's collector is registered with."""
        return self._registry

    def generate_latest(self) -> str:
        """This middleware's metrics in the Prometheus text format.

        Byte for byte what ``prometheus_client.generate_latest`` prints for these
        families, rendered natively. Other collectors of the registry (such as the
        process metrics of the global registry) are not included: serve the whole
        registry with ``PrometheusExporter`` or ``prometheus_client`` for those.

        Example::

            text = metrics.generate_latest()
            assert "ractogateway_requests_total" in text
        """
        return self._render_str(_created_series_enabled())

    def push_to_gateway(
        self,
        gateway: str,
        *,
        job: str,
        grouping_key: Mapping[str, Any] | None = None,
        timeout: float | None = 30.0,
        handler: Callable[..., Any] | None = None,
    ) -> None:
        """Pushes this middleware's metrics to a Pushgateway, replacing the group (PUT).

        For batch jobs that end before Prometheus could scrape them. Semantics,
        grouping-key encoding and ``handler`` are those of
        ``prometheus_client.push_to_gateway``; in multi-process mode the sum over
        the directory is pushed.

        Example::

            metrics.push_to_gateway("localhost:9091", job="nightly-eval",
                                    grouping_key={"shard": "3"})
        """
        self._send(prometheus_client.push_to_gateway, gateway, job, grouping_key, timeout, handler)

    def pushadd_to_gateway(
        self,
        gateway: str,
        *,
        job: str,
        grouping_key: Mapping[str, Any] | None = None,
        timeout: float | None = 30.0,
        handler: Callable[..., Any] | None = None,
    ) -> None:
        """Pushes this middleware's metrics, replacing only same-named metrics (POST).

        As ``prometheus_client.pushadd_to_gateway``.

        Example::

            metrics.pushadd_to_gateway("localhost:9091", job="nightly-eval")
        """
        self._send(
            prometheus_client.pushadd_to_gateway, gateway, job, grouping_key, timeout, handler
        )

    def delete_from_gateway(
        self,
        gateway: str,
        *,
        job: str,
        grouping_key: Mapping[str, Any] | None = None,
        timeout: float | None = 30.0,
        handler: Callable[..., Any] | None = None,
    ) -> None:
        """Deletes the group of ``job`` and ``grouping_key`` from a Pushgateway (DELETE).

        As ``prometheus_client.delete_from_gateway``.

        Example::

            metrics.delete_from_gateway("localhost:9091", job="nightly-eval")
        """
        prometheus_client.delete_from_gateway(
            gateway,
            job=job,
            grouping_key=None if grouping_key is None else dict(grouping_key),
            timeout=timeout,
            handler=handler or default_handler,
        )

    def _send(
        self,
        push: Callable[..., None],
        gateway: str,
        job: str,
        grouping_key: Mapping[str, Any] | None,
        timeout: float | None,
        handler: Callable[..., Any] | None,
    ) -> None:
        """Calls a prometheus_client push function with a registry of this middleware only."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_GatewayCollector(self))
        push(
            gateway,
            job=job,
            registry=registry,
            grouping_key=grouping_key,
            timeout=timeout,
            handler=handler or default_handler,
        )

    def remote_write(
        self,
        url: str,
        *,
        job: str = DEFAULT_JOB,
        instance: str | None = None,
        headers: Mapping[str, str] | None = None,
        basic_auth: tuple[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Sends every sample a scrape would show to a Prometheus remote-write receiver.

        For jobs Prometheus cannot scrape; ``RemoteWriter`` sends periodically,
        with retries. One remote-write 1.0 request (protobuf, snappy), every
        sample stamped with the current time, histograms as ``_bucket``,
        ``_count`` and ``_sum`` series, each series labelled ``job`` and
        ``instance`` (the host name when None) unless it has such a label. Give
        each sending process an ``instance`` of its own: two senders of one
        ``job`` and ``instance`` overwrite each other's series. In multi-process
        mode the sum over the directory is sent. Raises ``RemoteWriteError``
        (an ``OSError``) unless the receiver accepts the request: the whole
        exchange ends within ``timeout`` seconds, and a redirect is refused,
        not followed (it would drop the body and send the credentials to
        another host).

        Example::

            metrics.remote_write("http://127.0.0.1:9090/api/v1/write", job="nightly-eval")
        """
        target = Target(url, job, instance, headers, basic_auth, timeout)
        target.post(target.body(self))

    def otlp_push(
        self,
        endpoint: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        resource: Mapping[str, str] | None = None,
        timeout: float | None = None,
        semconv: str | None = None,
    ) -> None:
        """Pushes every series to an OpenTelemetry OTLP/HTTP metrics receiver, once.

        For jobs and platforms that collect OpenTelemetry; ``OtlpExporter``
        pushes periodically, with retries. One ``ExportMetricsServiceRequest``
        (protobuf, gzip): counters as cumulative monotonic sums starting when
        their series was created, histograms as explicit-bucket histograms (or
        exponential ones with native histograms on), the buckets' exemplars with
        their points, under our family names (a counter's without ``_total``),
        or the OpenTelemetry GenAI conventions' with ``semconv="gen_ai"`` (see
        ``OtlpExporter``; None names them as the middleware does). ``endpoint``,
        ``headers``, ``resource`` and ``timeout`` default as ``OtlpExporter``
        says (the ``OTEL_EXPORTER_OTLP_*``, ``OTEL_RESOURCE_ATTRIBUTES`` and
        ``OTEL_SERVICE_NAME`` variables). In
        multi-process mode the sum over the directory is pushed. Raises
        ``OtlpError`` (an ``OSError``) unless the receiver accepts the request:
        the whole exchange ends within the timeout, and a redirect is refused.

        Example::

            metrics.otlp_push("http://127.0.0.1:4318/v1/metrics",
                              resource={"service.name": "nightly-eval"})
        """
        target = OtlpTarget(endpoint, headers, resource, timeout, semconv)
        target.post(target.body(self))

    def track(
        self,
        provider: str,
        model: str,
        operation: str = "chat",
        *,
        labels: Mapping[str, str] | None = None,
        exemplar: Mapping[str, str] | None = None,
        queue_s: float | None = None,
        upstream_latency_s: float | None = None,
        error_type: str | None = None,
    ) -> TrackedCall:
        """Times one LLM request and records it when the block exits.

        A context manager for ``with`` and ``async with``: latency from
        ``time.perf_counter``; ``call.first_token()`` marks time to first token
        (once); ``call.usage(...)`` reads the token counts of an OpenAI (Chat
        Completions or Responses), Anthropic, Google or LiteLLM response, usage
        object or stream event, or a dict of the same shape, merging a stream's
        reports; ``call.tokens(...)`` sets them; ``call.tool_calls(...)`` adds
        the tool calls of a response, chunk or event by name. The status is
        ``"ok"``, ``"error"`` when an exception leaves the block (it is
        re-raised) or ``"cancelled"`` (``asyncio.CancelledError``, or a
        streaming generator closed early); our own parsing never changes it.
        ``exemplar`` (labels such as ``trace_id``) is kept on the buckets the
        request's duration and time to first token fall in. A failed call is
        counted in ``ractogateway_request_errors_total`` by its ``error_type``:
        the one given (here or by ``call.error(...)``), else the exception's
        (``gateway_metrics.error_type_of``). ``queue_s`` and
        ``upstream_latency_s`` (or ``call.queue(...)``, ``call.upstream(...)``)
        are ``record_request``'s, parts of the measured latency.

        As a decorator, it tracks every call of a function, sync or async; the
        result is read with ``usage_from`` when it carries usage, and a
        generator's items as stream events.

        Example::

            async with metrics.track("openai", "gpt-4o") as call:
                stream = await client.chat.completions.create(
                    ..., stream=True, stream_options={"include_usage": True})
                async for chunk in stream:
                    call.first_token()
                    call.usage(chunk)
                    call.tool_calls(chunk)

            @metrics.track("anthropic", "claude-sonnet-4-5")
            def ask(question):
                return client.messages.create(...)
        """
        return TrackedCall(
            self,
            provider,
            model,
            operation,
            labels,
            exemplar,
            queue_s,
            upstream_latency_s,
            error_type,
        )

    def instrument(self, client: Any) -> Any:
        """Records every call of one SDK client, as ``track()`` would; returns the client.

        ``client`` is an ``openai.OpenAI`` or ``AsyncOpenAI`` (chat completions,
        with ``stream=True`` and the ``.chat.completions.stream(...)`` helper;
        Responses, streamed or not; embeddings), an ``anthropic.Anthropic`` or
        ``AsyncAnthropic`` (messages, with ``stream=True`` and the
        ``messages.stream(...)`` helper) or a ``google.genai.Client``
        (``models.generate_content``, ``generate_content_stream`` and
        ``embed_content``, and their ``client.aio`` forms). Each call is
        recorded once: the provider, the model asked for, the operation
        (``chat``, ``stream``, ``embed``), the status (``ok``, ``error``, or
        ``cancelled`` when a stream is closed early or the task cancelled) with
        the error type, latency, time to first token, every token type the
        provider reports and the tool calls. The caller gets exactly what the
        SDK returns. Only this client object is changed (its resource objects'
        methods are shadowed); ``uninstrument`` undoes it. See docs/instrument.md.

        Example::

            client = metrics.instrument(openai.OpenAI())
            client.chat.completions.create(model="gpt-4o", messages=messages)
        """
        return instrument_client(self, client)

    def uninstrument(self, client: Any) -> Any:
        """Undoes ``instrument(client)``: the client's methods are its class's
        again; returns the client."""
        return uninstrument_client(client)

    def unregister(self) -> None:
        """Removes this middleware's collector from its registry."""
        self._registry.unregister(self._collector)
        if middleware_of(self._registry) is self:
            del _MIDDLEWARES[self._registry]

    def _exposition(self, openmetrics: bool, utf8: bool = False) -> bytes:
        """This middleware's families for an HTTP response (OpenMetrics without
        ``# EOF``), UTF-8 names when the scraper asked for them."""
        return self._render(_created_series_enabled(), openmetrics, utf8)

    def _exposition_gzip(self, openmetrics: bool, utf8: bool, others: bytes) -> bytes:
        """``_exposition`` followed by ``others``, as one gzip member."""
        return self._render_gzip(_created_series_enabled(), openmetrics, utf8, others)

    def _protobuf_exposition(self, utf8: bool = False) -> bytes:
        """This middleware's families in the delimited protobuf format."""
        return self._render_protobuf(_created_series_enabled(), utf8)

    @property
    def semconv(self) -> str | None:
        """Whose names the expositions and pushes use: None for ours, or
        ``"gen_ai"`` for the OpenTelemetry GenAI conventions'."""
        return self._semconv()

    @property
    def native_histograms(self) -> dict[str, float] | None:
        """The native histograms' ``schema``, ``zero_threshold`` and ``max_buckets``,
        or None when they are not kept."""
        native = self._native_histograms()
        if native is None:
            return None
        schema, zero_threshold, max_buckets = native
        return {"schema": schema, "zero_threshold": zero_threshold, "max_buckets": max_buckets}

    def __repr__(self) -> str:
        return f"<GatewayMetricsMiddleware models_priced={len(self._price_table)}>"
