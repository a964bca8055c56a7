"""``track()``: one request recorded by a ``with`` or ``async with`` block."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from gateway_metrics._core import TOKEN_TYPES, MetricsStore, check_exemplar
from gateway_metrics._errors import ERROR_TYPES, error_type_of
from gateway_metrics._usage import (
    Usage,
    check_tokens,
    field_of,
    recordable_counts,
    tool_calls_in,
    usage_from,
    usage_object,
)

_LOGGER = logging.getLogger("gateway_metrics")

#: The kinds of usage problem each middleware has logged.
_REPORTED: weakref.WeakKeyDictionary[MetricsStore, set[str]] = weakref.WeakKeyDictionary()

#: ``record_request``'s keyword for each token type (``Usage`` field names).
_TOKEN_KEYWORDS = {name: keyword for name, keyword, _rate in TOKEN_TYPES}

#: The fields of a response, chunk or event that hold its tool calls, directly
#: or in their items (see ``tool_call_names``).
_TOOL_CALL_HOLDERS = (
    "choices",
    "content",
    "content_block",
    "output",
    "item",
    "candidates",
    "tool_calls",
)

_Function = TypeVar("_Function", bound=Callable[..., Any])


def _checked_seconds(value: Any, argument: str) -> float | None:
    """A duration given to a tracked call: None, or a finite number of seconds >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument} must be a real number or None, not {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{argument} must be finite and not negative, got {value!r}")
    return seconds


def _checked_error_type(value: Any) -> str | None:
    """An error type given to a tracked call: None, or one of ``ERROR_TYPES``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"error_type must be str or None, not {type(value).__name__}")
    if value not in ERROR_TYPES:
        raise ValueError(f"error_type must be one of {', '.join(ERROR_TYPES)}, not {value!r}")
    return value


def _report_once(metrics: MetricsStore, kind: str, message: str) -> None:
    """Logs ``message`` the first time ``metrics`` sees a problem of ``kind``."""
    reported = _REPORTED.setdefault(metrics, set())
    if kind not in reported:
        reported.add(kind)
        _LOGGER.warning("%s (reported once)", message)


@dataclass(frozen=True)
class ToolCall:
    """A tool call for ``record_request(tool_calls=...)`` when no SDK object is at hand.

    Only ``name`` is recorded, as the gateway kits' tool-call objects' ``name`` is.

    Example::

        metrics.record_request(provider="openai", model="gpt-4o", operation="chat",
                               status="ok", latency_s=0.8,
                               tool_calls=[ToolCall("search"), ToolCall("calculator")])
    """

    name: str
    id: str = ""


def record_counted(
    metrics: MetricsStore,
    *,
    provider: str,
    model: str,
    operation: str,
    status: str,
    latency_s: float,
    first_token_s: float | None,
    tokens: Mapping[str, int],
    tool_calls: list[ToolCall],
    labels: Mapping[str, str] | None,
    exemplar: Mapping[str, str] | None = None,
    error_type: str | None = None,
    queue_s: float | None = None,
    upstream_latency_s: float | None = None,
) -> None:
    """Records one request whose token counts are by type (``Usage`` field names),
    as ``track()`` and the LiteLLM logger collect them; a failed one (any
    status but ``"ok"``) with its ``error_type``."""
    counts: dict[str, Any] = {_TOKEN_KEYWORDS[name]: count for name, count in tokens.items()}
    if exemplar is not None:
        counts["exemplar"] = exemplar
    if error_type is not None and status != "ok":
        counts["error_type"] = error_type
    if queue_s is not None:
        counts["queue_s"] = queue_s
    if upstream_latency_s is not None:
        counts["upstream_latency_s"] = upstream_latency_s
    metrics.record_request(
        provider=provider,
        model=model,
        operation=operation,
        status=status,
        latency_s=latency_s,
        time_to_first_token_s=first_token_s,
        tool_calls=tool_calls,
        labels=labels,
        **counts,
    )


class TrackedCall:
    """One LLM request being timed; records itself once when its block exits.

    Made by ``GatewayMetricsMiddleware.track``. Status ``"ok"`` on a normal exit,
    ``"error"`` when an exception leaves the block (it is re-raised),
    ``"cancelled"`` on ``asyncio.CancelledError`` or when a generator holding the
    block is closed early; what was seen until then is recorded. A failed
    call's ``error_type`` is the one given (``error()``), else the
    exception's (``gateway_metrics.error_type_of``).

    Used as a decorator, it tracks each call of the function it decorates
    (see ``GatewayMetricsMiddleware.track``).
    """

    def __init__(
        self,
        metrics: MetricsStore,
        provider: str,
        model: str,
        operation: str,
        labels: Mapping[str, str] | None,
        exemplar: Mapping[str, str] | None = None,
        queue_s: float | None = None,
        upstream_latency_s: float | None = None,
        error_type: str | None = None,
    ) -> None:
        if exemplar is not None:
            check_exemplar(exemplar)
        self._queue_s = _checked_seconds(queue_s, "queue_s")
        self._upstream_s = _checked_seconds(upstream_latency_s, "upstream_latency_s")
        self._error_type = _checked_error_type(error_type)
        for argument, value in (("provider", provider), ("model", model), ("operation", operation)):
            if not isinstance(value, str):
                raise TypeError(f"{argument} must be str, not {type(value).__name__}")
        if labels:
            known = metrics._extra_labels()
            unknown = sorted(str(name) for name in labels if name not in known)
            if unknown:
                raise ValueError(
                    f"labels names {', '.join(unknown)}, which are not among this "
                    f"middleware's extra labels ({', '.join(known)})"
                )
        self._metrics = metrics
        self._labels = dict(labels) if labels else None
        self._exemplar = dict(exemplar) if exemplar is not None else None
        self._provider, self._model, self._operation = provider, model, operation
        self._started: float | None = None
        self._first_token_s: float | None = None
        self._usage = Usage()
        self._usage_given = False
        self._chat_chunks = False
        #: Tool calls seen, by what identifies them across stream events
        #: (their id, or stream index); calls without either are listed apart.
        self._keyed_calls: dict[object, str] = {}
        self._unkeyed_calls: list[str] = []
        self._recorded = False
        #: Whether this call raised the requests in flight (lowered when it ends).
        self._in_flight = False

    def _again(self) -> TrackedCall:
        """A new call tracked as this one is configured (a decorated function's next call)."""
        return TrackedCall(
            self._metrics,
            self._provider,
            self._model,
            self._operation,
            self._labels,
            self._exemplar,
            self._queue_s,
            self._upstream_s,
            self._error_type,
        )

    def queue(self, seconds: float) -> None:
        """Sets the seconds the request waited in the gateway before its upstream
        call (``record_request``'s ``queue_s``, part of the latency)."""
        self._queue_s = _checked_seconds(seconds, "seconds")

    def upstream(self, seconds: float) -> None:
        """Sets the seconds the request spent waiting on its provider
        (``record_request``'s ``upstream_latency_s``, part of the latency)."""
        self._upstream_s = _checked_seconds(seconds, "seconds")

    def error(self, error_type: str) -> None:
        """Sets why the request failed, one of ``ERROR_TYPES``: recorded if it
        ends in an error (or is cancelled), in place of the exception's type."""
        self._error_type = _checked_error_type(error_type)

    def first_token(self) -> None:
        """Marks the first token of a streamed response; later calls do nothing."""
        if self._first_token_s is None and self._started is not None:
            self._first_token_s = time.perf_counter() - self._started

    def usage(self, source: Any) -> None:
        """Takes the token counts of an SDK response, usage object, stream event or
        chunk (or a dict of one), merged into what earlier calls gave.

        Call it with each stream event or chunk: a count a later event reports
        replaces the earlier one, a count it leaves out (``None``) keeps it, as
        each provider's streams require (Anthropic's ``message_start`` then
        ``message_delta``, OpenAI's last chunk, Google's chunks). See
        ``gateway_metrics.usage_from``.

        Never raises: the block's own outcome decides the request's status. A
        shape it does not know is logged once and changes nothing; an event
        without usage changes nothing either, and when no call reported any
        usage by the end of the block, that is logged once, saying how to get
        it where it can (a Chat Completions stream's
        ``stream_options={"include_usage": True}``).
        """
        kind = type(source).__name__
        self._usage_given = True
        try:
            if field_of(source, "object") == "chat.completion.chunk":
                self._chat_chunks = True
            reported = usage_from(source)
        except Exception as unknown:  # usage_from's TypeError, or the source's own error
            _report_once(self._metrics, f"shape:{kind}", f"track(): {unknown}")
            return
        self._usage = self._usage.merged(reported)

    def _usage_object(self, usage: Any) -> None:
        """Takes a usage object an SDK typed as such (``usage()``, skipping the
        search for it in a response); None is no usage reported."""
        self._usage_given = True
        if usage is None:
            return
        try:
            reported = usage_object(usage)
        except Exception as unknown:  # a shape it does not know: as usage() says
            _report_once(self._metrics, f"shape:{type(usage).__name__}", f"track(): {unknown}")
            return
        self._usage = self._usage.merged(reported)

    def tokens(
        self,
        *,
        input: int = 0,
        output: int = 0,
        cache_read: int = 0,
        cache_write: int = 0,
        reasoning: int = 0,
        audio_input: int = 0,
        audio_output: int = 0,
    ) -> None:
        """Sets the token counts directly, in this package's semantics.

        Checked here, as ``record_request`` checks them: a bad count raises
        ``TypeError`` or ``ValueError`` naming it at this call, and the
        request is still recorded (as ``error``, if the exception leaves the
        block), with the counts it had before.
        """
        self._usage = Usage(
            **check_tokens(
                {
                    "input": input,
                    "output": output,
                    "cache_read": cache_read,
                    "cache_write": cache_write,
                    "reasoning": reasoning,
                    "audio_input": audio_input,
                    "audio_output": audio_output,
                }
            )
        )

    def tool_calls(self, source: Any) -> None:
        """Adds the tool calls in ``source`` to the request's, by name.

        ``source`` is anything ``gateway_metrics.tool_call_names`` reads: a
        response, chunk or event, or tool calls and items of any SDK. Calls
        accumulate across calls of this method, each counted once: a streamed
        call's deltas (by index), or the same call passed again (by id).
        """
        for key, name in tool_calls_in(source):
            if name is None:
                continue  # a later delta of a streamed call: named already
            if key is None:
                self._unkeyed_calls.append(name)
            else:
                self._keyed_calls.setdefault(key, name)

    def _start(self) -> TrackedCall:
        if self._started is not None:
            raise RuntimeError("a tracked call is entered once")
        self._started = time.perf_counter()
        try:
            self._metrics._in_flight(self._provider, self._model, self._operation, self._labels, 1)
            self._in_flight = True
        except Exception as refused:  # checked in __init__: the call goes on untracked there
            _report_once(self._metrics, "in-flight", f"track(): {refused}")
        return self

    def _land(self) -> None:
        """Lowers the requests in flight this call raised, once."""
        if self._in_flight:
            self._in_flight = False
            try:
                self._metrics._in_flight(
                    self._provider, self._model, self._operation, self._labels, -1
                )
            except Exception as refused:
                _report_once(self._metrics, "in-flight", f"track(): {refused}")

    def _finish(self, error: BaseException | None) -> None:
        if self._recorded or self._started is None:
            return
        self._recorded = True
        self._land()
        latency_s = time.perf_counter() - self._started
        error_type = None
        if error is None:
            status = "ok"
        else:
            cancelled = isinstance(error, (asyncio.CancelledError, GeneratorExit))
            status = "cancelled" if cancelled else "error"
            error_type = self._error_type or error_type_of(error)
        first = self._first_token_s
        first_token_s = None if first is None else min(first, latency_s)
        calls = [ToolCall(name) for name in [*self._keyed_calls.values(), *self._unkeyed_calls]]
        self._note_missing_usage()
        try:
            # The counts as reported: the core checks them (a refused call
            # records nothing), so the check below runs only when they disagree.
            self._record(
                status, latency_s, first_token_s, self._usage.counts(), calls, error_type, True
            )
            return
        except (TypeError, ValueError):
            pass
        try:
            self._record(
                status, latency_s, first_token_s, self._checked_counts(), calls, error_type, True
            )
        except (TypeError, ValueError) as refused:
            # Every part was checked when it was given; should one still be
            # refused, the request is recorded without its parts rather than
            # lost, and the block's own exception (if any) stays the one raised.
            _report_once(self._metrics, f"record:{type(refused).__name__}", f"track(): {refused}")
            try:
                self._record(
                    status, latency_s, first_token_s, Usage().counts(), [], error_type, False
                )
            except (TypeError, ValueError) as still:
                _report_once(self._metrics, f"record:{type(still).__name__}", f"track(): {still}")

    def _note_missing_usage(self) -> None:
        """Logs once that usage was asked for but none was reported."""
        if self._usage_given and not self._usage.reported:
            hint = "usage() was given nothing that carries usage"
            if self._chat_chunks:
                hint = (
                    "a Chat Completions stream reports usage in its last chunk, and only "
                    'when asked with stream_options={"include_usage": True}'
                )
            _report_once(self._metrics, f"no-usage:{self._chat_chunks}", f"track(): {hint}")

    def _checked_counts(self) -> dict[str, int]:
        """The counts to record: all of them when they agree with each other,
        else the consistent input and output (logged once)."""
        counts, problem = recordable_counts(self._usage)
        if problem is not None:
            _report_once(
                self._metrics,
                f"counts:{problem.split(',')[0]}",
                f"track(): the usage reported is inconsistent ({problem}); "
                "only its input and output are recorded",
            )
        return counts

    def _record(
        self,
        status: str,
        latency_s: float,
        first_token_s: float | None,
        tokens: Mapping[str, int],
        tool_calls: list[ToolCall],
        error_type: str | None,
        parts: bool,
    ) -> None:
        record_counted(
            self._metrics,
            provider=self._provider,
            model=self._model,
            operation=self._operation,
            status=status,
            latency_s=latency_s,
            first_token_s=first_token_s,
            tokens=tokens,
            tool_calls=tool_calls,
            labels=self._labels,
            exemplar=self._exemplar,
            error_type=error_type,
            queue_s=self._queue_s if parts else None,
            upstream_latency_s=self._upstream_s if parts else None,
        )

    def __call__(self, function: _Function) -> _Function:
        """Decorates ``function`` (sync or async, a generator or not): each call
        is tracked as this call is configured, its result read with
        ``usage_from`` and ``tool_call_names`` when it carries usage or tool
        calls; a generator's items are read as stream events, the first one
        marking the first token."""
        if self._started is not None:
            raise RuntimeError("a tracked call that was entered cannot decorate a function")
        template = self
        if inspect.isasyncgenfunction(function):

            @functools.wraps(function)
            async def async_generator(*args: Any, **kwargs: Any) -> Any:
                async with template._again() as call:
                    async for item in function(*args, **kwargs):
                        call._saw_item(item)
                        yield item

            return async_generator  # type: ignore[return-value]
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def coroutine(*args: Any, **kwargs: Any) -> Any:
                async with template._again() as call:
                    result = await function(*args, **kwargs)
                    call._saw_result(result)
                    return result

            return coroutine  # type: ignore[return-value]
        if inspect.isgeneratorfunction(function):

            @functools.wraps(function)
            def generator(*args: Any, **kwargs: Any) -> Any:
                with template._again() as call:
                    for item in function(*args, **kwargs):
                        call._saw_item(item)
                        yield item

            return generator  # type: ignore[return-value]

        @functools.wraps(function)
        def plain(*args: Any, **kwargs: Any) -> Any:
            with template._again() as call:
                result = function(*args, **kwargs)
                call._saw_result(result)
                return result

        return plain  # type: ignore[return-value]

    def _saw_result(self, result: Any) -> None:
        """Reads a decorated function's result, if it is an SDK response (never raises)."""
        if result is None or isinstance(result, (str, bytes, int, float, bool)):
            return
        try:
            usage = usage_from(result)
        except TypeError:
            return  # not an SDK response: the call is recorded without tokens
        self._usage = self._usage.merged(usage)
        self._quiet_tool_calls(result)

    def _saw_item(self, item: Any) -> None:
        """Reads one item a decorated generator yielded, as a stream event."""
        self.first_token()
        if item is None or isinstance(item, (str, bytes, int, float, bool)):
            return
        try:
            usage = usage_from(item)
        except TypeError:
            return
        self._usage = self._usage.merged(usage)
        self._quiet_tool_calls(item)

    def _quiet_tool_calls(self, source: Any) -> None:
        """Reads the tool calls of a response, chunk or event, if it has a
        part that holds them (an object or dict of no known shape has none)."""
        try:
            if not any(field_of(source, name) is not None for name in _TOOL_CALL_HOLDERS):
                return
            self.tool_calls(source)
        except Exception as unreadable:  # recorded without them, reported once
            _report_once(self._metrics, "tools", f"track(): tool calls not read: {unreadable}")

    def __enter__(self) -> TrackedCall:
        return self._start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._finish(error)

    async def __aenter__(self) -> TrackedCall:
        return self._start()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._finish(error)
