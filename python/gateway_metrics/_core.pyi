"""The native core of gateway-metrics. Private: use the ``gateway_metrics`` package."""

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, final, overload

from typing_extensions import Self, disjoint_base

__all__ = [
    "DEFAULT_NAMESPACE",
    "ERROR_TYPES",
    "FAMILIES",
    "GEN_AI_SEMCONV_NAMES",
    "GEN_AI_SEMCONV_VERSION",
    "HISTOGRAM_BUCKETS",
    "NATIVE_HISTOGRAM_DEFAULTS",
    "PROTOBUF_CONTENT_TYPE",
    "REQUEST_FIELDS",
    "TOKEN_TYPES",
    "VERSION",
    "ArrowColumn",
    "MetricsStore",
    "arrow_table",
    "check_exemplar",
    "check_extra_labels",
    "check_namespace",
    "cleanup",
    "compact",
    "encode_collected",
    "finish_native_work",
    "gzip_compressor",
    "gzip_parts",
    "price_names",
    "request_cost",
]

FAMILIES: list[tuple[str, str, str, list[str], list[float] | None, str | None, str]]
"""``(name, help, type, label names, bucket bounds of a histogram, what a request
gives it to observe)`` of each metric family of the default configuration, in
exposition order (the core's family table)."""

def gzip_parts(parts: list[bytes], compressor: str | None = None) -> bytes:
    """``parts``, one after the other, as one gzip member, compressed as scrapes are
    (``compressor``: ``"builtin"``, ``"zlib"`` or ``"zlib:N"``; None, the process's
    ``GATEWAY_METRICS_GZIP`` setting)."""

def gzip_compressor() -> tuple[str, str | None]:
    """The process's gzip compressor (``"builtin"`` or ``"zlib:N"``, from
    ``GATEWAY_METRICS_GZIP``, read once), and why the setting was not taken, if it was not."""

def encode_collected(families: Iterable[Any], utf8: bool) -> bytes:
    """The protobuf exposition (delimited ``MetricFamily`` messages) of the
    ``prometheus_client`` families ``families`` (a registry's other collectors);
    names as they are when ``utf8``, else underscore-escaped."""

PROTOBUF_CONTENT_TYPE: str
"""The protobuf exposition's media type, as the core writes it and Prometheus asks for it."""

def check_exemplar(labels: object) -> None:
    """Raises ``TypeError``/``ValueError`` naming ``exemplar`` unless ``labels`` may
    be an exemplar's: a dict of label names to values, at most 128 characters in all."""

def compact(
    directory: str, *, timeout: float
) -> tuple[int, int, Path | None, list[tuple[Path, str]]]:
    """Folds the files of processes that are gone.

    Returns ``(folded, discarded, new file, [(file not removed, why), ...])``;
    raises ``TimeoutError`` when the directory lock stays held for ``timeout`` seconds.
    """

def cleanup(directory: str, *, force: bool, timeout: float) -> int:
    """Removes the files of processes that are gone; returns how many.

    Unless ``force``, raises ``RuntimeError`` (removing nothing) while a live
    process holds a file of the directory.
    """

def check_extra_labels(names: list[str]) -> None:
    """Raises ``ValueError`` unless a middleware accepts ``names`` as its extra labels."""

def check_namespace(namespace: str) -> None:
    """Raises ``ValueError`` unless a middleware accepts ``namespace`` as the
    prefix of its family names."""

def finish_native_work(timeout: float) -> bool:
    """Registered with ``atexit`` when the module loads: from then on no native
    call releases the GIL, and it waits up to ``timeout`` seconds for the calls
    that did to take it back; returns whether they all did."""

REQUEST_FIELDS: list[tuple[str, str, str | None, str, str, tuple[str, int] | None]]
"""``(keyword, kind, default as Python source or None when required, annotation,
doc line, (whole, group) it is part of or None)`` of each argument of
``record_request`` and ``record_batch``, in signature order (the core's request
table, which the signatures below and the docs' field list are generated from)."""

TOKEN_TYPES: list[tuple[str, str, str]]
#: The ``error_type`` label values: why a failed request failed.
#: The prefix of every family name unless a middleware is given its own.
DEFAULT_NAMESPACE: str
ERROR_TYPES: list[str]
"""``(token_type label, keyword, price it is billed at)`` of each token type."""

def request_cost(
    price: tuple[float, float, float, float, list[tuple[int, float, float, float, float]], float],
    tokens: dict[str, int],
) -> float:
    """The USD cost of a request of ``tokens`` (token type to count) at ``price``
    (``(input, output, cache read, cache write, tiers, per request)``), as the
    middleware computes it."""

def price_names(model: str) -> list[str]:
    """The names ``model``'s price is looked up under, in order: the name, then
    without each leading ``provider/`` part (``openai/gpt-4o``, then ``gpt-4o``)."""

NATIVE_HISTOGRAM_DEFAULTS: tuple[int, float, int]
"""``(schema, zero threshold, max buckets)`` of ``native_histograms=True``: schema 3
(bucket bounds a factor 2^(1/8) = 1.0905 apart), 2^-128, and 160."""

VERSION: str
"""The package's release, as Cargo.toml names it (the wheel's version too)."""

GEN_AI_SEMCONV_VERSION: str
"""The OpenTelemetry semantic conventions version whose GenAI names ``semconv="gen_ai"``
uses (``1.41.0``)."""

GEN_AI_SEMCONV_NAMES: tuple[list[tuple[str, str]], list[tuple[str, str]]]
"""Under ``semconv="gen_ai"``: our families the conventions define with their names
there, and our labels with their attribute names."""

HISTOGRAM_BUCKETS: list[float]
"""Upper bounds of the latency histogram buckets in seconds (``+Inf`` implied)."""

@disjoint_base
class MetricsStore:
    """The lock-free metric store behind ``GatewayMetricsMiddleware``.

    Every method validates all its arguments before it records anything: a call
    that raises leaves the metrics exactly as they were.
    """

    def __new__(
        cls,
        prices: list[tuple[str, float, float, float, float]],
        multiprocess_dir: str | os.PathLike[str] | None = None,
        prometheus_multiproc_dir: str | os.PathLike[str] | None = None,
        latency_buckets: list[float] | None = None,
        extra_labels: list[str] | None = None,
        max_series: int | None = None,
        price_resolver: Any = None,
        native_histograms: tuple[int, float, int] | None = None,
        semconv: str | None = None,
        namespace: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Self:
        """Creates an empty store.

        ``prices`` lists ``(model, input, output, cache read, cache write)`` USD
        per million tokens. With
        ``multiprocess_dir`` the values live in a file of that directory; else,
        with ``prometheus_multiproc_dir``, in ``prometheus_client``'s files there.
        ``semconv="gen_ai"`` names the expositions and pushes as the
        OpenTelemetry GenAI conventions do. ``namespace`` prefixes every family
        name (``"ractogateway"`` when None).
        """

    def _in_flight(
        self,
        provider: str,
        model: str,
        operation: str,
        labels: Mapping[str, str] | None,
        delta: int,
    ) -> None:
        """Adds ``delta`` to the requests in flight of a call's labels (+1 when it
        starts, -1 when it ends); ``labels`` maps the extra labels."""

    def _extra_labels(self) -> list[str]:
        """The extra label names of the request families, in their configured order."""

    def _namespace(self) -> str:
        """The prefix of every family name."""

    def _latency_buckets(self) -> list[float]:
        """Upper bounds of the latency histogram's buckets (``+Inf`` implied)."""

    def _multiprocess_file(self) -> Path | None:
        """This process's metrics file in multi-process mode."""

    def record_request(
        self,
        *,
        # BEGIN GENERATED: record_request (tools/generate.py, from _core.REQUEST_FIELDS)
        provider: str,
        model: str,
        operation: str,
        status: str,
        latency_s: float,
        input_tokens: int = 0,
        output_tokens: int = 0,
        tool_calls: Iterable[Any] | None = None,
        time_to_first_token_s: float | None = None,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        queue_s: float | None = None,
        upstream_latency_s: float | None = None,
        audio_input_tokens: int = 0,
        audio_output_tokens: int = 0,
        labels: Mapping[str, str] | None = None,
        exemplar: Mapping[str, str] | None = None,
        error_type: str | None = None,
        # END GENERATED: record_request
    ) -> None:
        """Records one completed LLM request.

        Adds 1 to ``ractogateway_requests_total``, observes ``latency_s`` in
        ``ractogateway_request_duration_seconds``, adds positive token counts to
        ``ractogateway_tokens_total``, the priced cost to
        ``ractogateway_cost_usd_total`` and 1 per tool call (by its ``.name``;
        ``"unknown"`` when missing or empty) to ``ractogateway_tool_calls_total``.

        Token semantics follow the OpenTelemetry GenAI conventions:
        ``input_tokens`` counts every prompt token, cached or not;
        ``cache_read_tokens`` and ``cache_write_tokens`` are the parts of it read
        from and written to the provider's prompt cache; ``reasoning_tokens`` is
        the part of ``output_tokens`` spent on reasoning. Each positive count
        feeds ``ractogateway_tokens_total{token_type=...}``. A streamed
        request's ``time_to_first_token_s`` (at most ``latency_s``) feeds
        ``ractogateway_time_to_first_token_seconds`` and, with two or more
        output tokens, ``ractogateway_time_per_output_token_seconds`` observes
        ``(latency_s - time_to_first_token_s) / (output_tokens - 1)``. Those
        families appear with their first series. ``labels`` maps the
        middleware's ``extra_labels`` to values (missing ones record ``""``).

        Raises ``TypeError`` for a label that is not ``str``, a latency that is not
        a real number, a token count that is not an ``int`` or ``tool_calls`` that
        is not an iterable; ``ValueError`` for a label that is not valid UTF-8, a
        NaN, infinite or negative latency, a negative token count or one past
        2**64-1, a part larger than its whole, or a time to first token past the
        latency.

        Example::

            metrics.record_request(provider="openai", model="gpt-4o",
                                   operation="chat", status="ok", latency_s=0.42,
                                   input_tokens=1000, output_tokens=200)
        """

    @overload
    def record_batch(
        self, table: Any, /, *, columns: Mapping[str, str] | None = None, **keywords: Any
    ) -> int:
        """Records the rows of ``table`` (a pandas DataFrame, or an object with
        Arrow's PyCapsule interface: a pyarrow Table or RecordBatch, a Polars
        DataFrame, a DuckDB result), whose columns are named as the keywords
        below, or mapped to them by ``columns`` (``{"latency_s": "lat"}``); a
        keyword passed too applies to every row, and other columns are ignored."""

    @overload
    def record_batch(
        self,
        *,
        # BEGIN GENERATED: record_batch (tools/generate.py, from _core.REQUEST_FIELDS)
        provider: str | Sequence[str],
        model: str | Sequence[str],
        operation: str | Sequence[str],
        status: str | Sequence[str],
        latency_s: float | Sequence[float] | Any,
        input_tokens: int | Sequence[int] | Any | None = 0,
        output_tokens: int | Sequence[int] | Any | None = 0,
        tool_calls: Sequence[Iterable[Any] | None] | None = None,
        time_to_first_token_s: float | Sequence[float | None] | Any | None = None,
        cache_read_tokens: int | Sequence[int] | Any | None = 0,
        cache_write_tokens: int | Sequence[int] | Any | None = 0,
        reasoning_tokens: int | Sequence[int] | Any | None = 0,
        queue_s: float | Sequence[float | None] | Any | None = None,
        upstream_latency_s: float | Sequence[float | None] | Any | None = None,
        audio_input_tokens: int | Sequence[int] | Any | None = 0,
        audio_output_tokens: int | Sequence[int] | Any | None = 0,
        labels: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
        exemplar: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
        error_type: str | Sequence[str | None] | None = None,
        # END GENERATED: record_batch
    ) -> int:
        """Records many requests in one call, given as columns; returns the row count.

        For batch-inference jobs that account for thousands of requests at once.
        Each argument is a scalar that applies to every row, or a column with one
        value per row: a list or tuple; for ``latency_s`` and the token counts
        any 1-dimensional buffer (a numpy array, an ``array.array``, a ctypes
        array; strided views too) of integers, or for ``latency_s`` also of
        float32/float64, in either byte order; an Arrow array or chunked array
        (anything with Arrow's PyCapsule interface: pyarrow, Polars, nanoarrow),
        read in place, labels as ``string``, ``large_string``, ``string_view``
        or dictionary-encoded; a pandas Series (numpy-backed, nullable,
        categorical or Arrow-backed); and for labels a numpy text or object
        array. A null latency or label is an error naming its row; a null token
        count is 0, a null optional duration absent. ``tool_calls``
        is None or a column holding, per row, an iterable of tool calls or None.
        ``None`` token counts mean 0; a ``time_to_first_token_s`` column holds
        ``None`` (or NaN in a numeric buffer) for rows that did not stream. The
        result equals one ``record_request`` per
        row in row order (sums up to float rounding). Every row is validated before
        any is recorded; an error names the argument and the row.

        Example::

            metrics.record_batch(provider="openai", model="gpt-4o", operation="chat",
                                 status="ok", latency_s=numpy_latencies,
                                 input_tokens=numpy_prompt_tokens,
                                 output_tokens=numpy_completion_tokens)
        """

    def record_cache_hit(
        self,
        cache_type: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        """Adds one to ``ractogateway_cache_hits_total{cache_type}``.

        With ``provider`` and ``model`` (together), the hit avoided a call of
        that model: ``input_tokens`` and ``output_tokens`` are added to
        ``ractogateway_cache_saved_tokens_total{model,provider,token_type}`` and
        their cost, priced as a request of that model would be, to
        ``ractogateway_cache_saved_usd_total{model,provider}``.

        Example::

            metrics.record_cache_hit("exact")
            metrics.record_cache_hit(
                "semantic", provider="openai", model="gpt-4o", input_tokens=1200, output_tokens=300
            )
        """

    def record_cache_miss(self, cache_type: str) -> None:
        """Adds one to ``ractogateway_cache_misses_total{cache_type}``.

        Example::

            metrics.record_cache_miss("semantic")
        """

    def snapshot(self, *, reset: bool = False) -> bytes:
        """This process's values as compact, versioned, checksummed bytes.

        The unit a batch job ships from its workers (Ray actors or tasks,
        ``multiprocessing`` or ``concurrent.futures`` workers) to a driver,
        which adds them up with ``merge``. Every family, series, count, bucket
        and sum is in it; prices are not (the cost is already counted).

        With ``reset=True`` the values are taken, leaving zeros, and series
        with nothing new are left out: each recording lands in exactly one
        snapshot, so a worker that ships a snapshot now and then never double
        counts, even while other threads record. Refused (``ValueError``) in
        multi-process mode, where other processes' scrapes read these values.
        Without it, the values stay (a worker's final snapshot, say).

        Create the middleware in the worker: one created before a fork carries
        the parent's values into the child.

        Example::

            delta = metrics.snapshot(reset=True)   # in the worker
            driver_metrics.merge(delta)            # in the driver
        """

    def merge(self, snapshot: bytes | bytearray | memoryview) -> int:
        """Adds a snapshot's values to this middleware; returns its number of series.

        Counts add exactly, in any order; float sums (latency seconds, cost)
        with one addition each. A snapshot of other families (other latency
        buckets or extra labels, another layout version) is a ``ValueError``
        that says which, as is a damaged one (its checksum, lengths and values
        are all checked before anything is added). Label sets past
        ``max_series`` fold into the overflow series as recordings do.

        Example::

            for delta in deltas_from_workers:
                metrics.merge(delta)
        """

    def _remote_write_body(self, job: str, instance: str, timestamp_ms: int) -> bytes: ...
    def _otlp_body(
        self, resource: list[tuple[str, str]], now: float, semconv: str | None = None
    ) -> bytes: ...
    def _semconv(self) -> str | None: ...
    def _families(self, utf8: bool) -> list[tuple[str, str, str]]:
        """Every family as ``(name, help, type)``, named as the expositions name it."""

    def _render(self, include_created: bool, openmetrics: bool, utf8: bool = False) -> bytes:
        """Every family in the text format 0.0.4, or OpenMetrics 1.0 without
        ``# EOF``; UTF-8 names when ``utf8``."""

    def _render_gzip(
        self, include_created: bool, openmetrics: bool, utf8: bool, others: bytes
    ) -> bytes:
        """``_render`` followed by ``others``, as one gzip member."""

    def _render_str(self, include_created: bool) -> str:
        """Every family in the Prometheus text format (0.0.4)."""

    def _render_protobuf(self, include_created: bool, utf8: bool = False) -> bytes:
        """Every family in the delimited protobuf format, native histograms included."""

    def _native_histograms(self) -> tuple[int, float, int] | None:
        """The native histograms' ``(schema, zero threshold, max buckets)``, if kept."""

    def _collect(
        self, include_created: bool, sample_type: type, utf8: bool = False
    ) -> list[tuple[str, str, str, list[Any]]]:
        """Every family as ``(name, help, type, samples)`` built with ``sample_type``."""

@final
class ArrowColumn:
    """A column of an Arrow table (from ``arrow_table``), which ``record_batch``
    reads in place."""

def arrow_table(table: Any) -> dict[str, ArrowColumn]:
    """The columns of ``table`` (an object with Arrow's PyCapsule interface whose
    type is a struct: a pyarrow Table or RecordBatch, a Polars DataFrame), by
    name, imported once."""
