"""A LiteLLM logger that records every call LiteLLM makes into a middleware.

``GatewayMetricsLogger`` is a ``litellm.integrations.custom_logger.CustomLogger``:
give it to LiteLLM as a callback, and every ``completion``/``acompletion`` (and
the other calls LiteLLM logs), streamed or not, successful or failed, is
recorded once: provider and model as LiteLLM resolved them, the operation in
the gateway kits' words (``chat``, ``stream`` for a streamed chat call,
``embed``), status ``ok`` or ``error``, latency from LiteLLM's start and end
times, time to first token for streamed calls only (LiteLLM reports the end
time as a non-streamed call's first token), every token type of the response's
usage, its tool calls, and the cost
from the middleware's own prices, not LiteLLM's.

An async call made in ``asyncio.run(main())`` is recorded by the time
``asyncio.run`` returns, even when ``main`` returns right after its last
``await litellm.acompletion(...)``: LiteLLM queues its callbacks on a worker
task that a closing loop would cancel, so the loop's shutdown runs them first
(at most 5 s).

Example::

    import litellm
    from gateway_metrics import GatewayMetricsMiddleware
    from gateway_metrics.integrations.litellm import GatewayMetricsLogger

    metrics = GatewayMetricsMiddleware(extra_labels=["team"])
    litellm.callbacks = [GatewayMetricsLogger(metrics, labels={"team": "user_api_key_team_alias"})]
    litellm.completion(model="openai/gpt-4o", messages=[{"role": "user", "content": "Hi"}])
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

from litellm.integrations.custom_logger import CustomLogger

from gateway_metrics._errors import error_type_of
from gateway_metrics._track import ToolCall, record_counted
from gateway_metrics._usage import Usage, recordable_counts, tool_call_names, usage_from

if TYPE_CHECKING:
    from gateway_metrics._middleware import GatewayMetricsMiddleware

__all__ = ["OPERATIONS", "GatewayMetricsLogger"]

_LOGGER = logging.getLogger("gateway_metrics")

#: LiteLLM's call types (``a`` prefix: the async form) to this package's
#: ``operation`` label, in the reference's words where it has one (``chat``,
#: ``stream``, ``embed``, as the gateway kits record); a call type not listed is
#: recorded as it is named. A streamed ``chat`` call is ``stream``.
#: At most this many calls are counted in flight by one logger at once.
MAX_CALLS_IN_FLIGHT = 100_000


def _call_id(kwargs: Mapping[str, Any]) -> str | None:
    """LiteLLM's id of a call, the same in its pre-call and end hooks."""
    params = kwargs.get("litellm_params") or {}
    call_id = kwargs.get("litellm_call_id") or params.get("litellm_call_id")
    return call_id if isinstance(call_id, str) and call_id else None


OPERATIONS = {
    "completion": "chat",
    "text_completion": "completion",
    "embedding": "embed",
    "responses": "responses",
    "image_generation": "image",
    "transcription": "transcription",
    "speech": "speech",
    "rerank": "rerank",
    "anthropic_messages": "chat",
}


#: The event loops whose shutdown flushes LiteLLM's queued callbacks (see ``_flush_at_loop_close``).
_WATCHED_LOOPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = (
    weakref.WeakKeyDictionary()
)
#: How long a closing loop waits for LiteLLM's queued callbacks.
_FLUSH_TIMEOUT_S = 5.0


async def _until_loop_closes() -> AsyncGenerator[None, None]:
    """Suspended until its loop shuts its async generators down (``asyncio.run``
    does, after its main coroutine returns), then runs LiteLLM's queued callbacks."""
    try:
        yield
    finally:
        await _flush_litellm_callbacks()


async def _flush_litellm_callbacks() -> None:
    # LiteLLM hands an async call's success callback to a worker task that a
    # closing loop cancels: a script that returns right after `await
    # acompletion(...)` would record nothing. Its worker's own flush() runs them.
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
    except ImportError:  # a LiteLLM without the worker runs callbacks itself
        return
    try:
        await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), _FLUSH_TIMEOUT_S)
        await GLOBAL_LOGGING_WORKER.stop(timeout=_FLUSH_TIMEOUT_S)
    except Exception as error:  # a loop's shutdown must not fail because of its logger
        _LOGGER.warning(
            "LiteLLM's queued callbacks not flushed as the event loop closed: %s: %s",
            type(error).__name__,
            error,
        )


def _flush_at_loop_close() -> None:
    """Makes the running event loop, if any, flush LiteLLM's callbacks as it closes.

    An async generator started here is one the loop finalizes in
    ``shutdown_asyncgens()``, after its tasks were cancelled and before it
    closes: the one hook asyncio gives for a loop's end. It is started by hand
    (its body reaches ``yield`` without awaiting), since this runs in a sync hook.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # a sync call outside any loop: LiteLLM calls the sync hook itself
    if loop in _WATCHED_LOOPS:
        return
    watcher = _until_loop_closes()
    with contextlib.suppress(StopIteration):
        watcher.__anext__().send(None)
    _WATCHED_LOOPS[loop] = watcher  # the loop holds it weakly


def _seconds(value: Any) -> float | None:
    """A LiteLLM time (a ``datetime`` or epoch seconds) as epoch seconds."""
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


class GatewayMetricsLogger(CustomLogger):  # type: ignore[misc]
    """Records each LiteLLM call into ``metrics``.

    ``labels`` maps the middleware's extra labels to keys of LiteLLM's
    request metadata (the proxy's ``user_api_key_team_alias``,
    ``user_api_key_alias``, ``user_api_key_user_id``, ... or any key of
    ``metadata=``): each call's value of that key becomes the label's value
    (``""`` when absent). Recording never raises into LiteLLM: a call that
    cannot be recorded is logged.
    """

    def __init__(
        self,
        metrics: GatewayMetricsMiddleware,
        *,
        labels: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        known = metrics.extra_labels
        mapping = dict(labels or {})
        for name, key in mapping.items():
            if name not in known:
                raise ValueError(
                    f"labels names {name!r}, which is not among the middleware's extra "
                    f"labels ({', '.join(known) or 'none'})"
                )
            if not isinstance(key, str):
                raise TypeError(f"labels[{name!r}] must name a metadata key (str)")
        self.metrics = metrics
        self.labels = mapping
        #: The calls in flight this logger raised, by LiteLLM call id: their labels.
        self._calls_in_flight: collections.OrderedDict[str, tuple[str, str, str, Any]] = (
            collections.OrderedDict()
        )
        self._calls_lock = threading.Lock()
        # LiteLLM keeps one logger per class and public str/int/bool attributes,
        # and drops the others as duplicates: this one tells loggers of two
        # middlewares apart.
        self.middleware_id = f"{id(metrics):x}"

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        # Called inline, in the caller's event loop for an async call.
        _flush_at_loop_close()
        try:
            self._raise_in_flight(kwargs or {})
        except Exception as error:  # LiteLLM's call must not fail because of its logger
            _LOGGER.warning(
                "LiteLLM call not counted in flight: %s: %s", type(error).__name__, error
            )

    def _raise_in_flight(self, kwargs: Mapping[str, Any]) -> None:
        """Counts a call that starts (once per LiteLLM call id, whatever its retries)."""
        call_id = _call_id(kwargs)
        if call_id is None:
            return
        provider, model, operation, labels = self._call_labels(kwargs)
        with self._calls_lock:
            if call_id in self._calls_in_flight:
                return
            self.metrics._in_flight(provider, model, operation, labels, 1)
            self._calls_in_flight[call_id] = (provider, model, operation, labels)
            # A call LiteLLM never reports the end of does not stay in flight forever.
            if len(self._calls_in_flight) > MAX_CALLS_IN_FLIGHT:
                _, oldest = self._calls_in_flight.popitem(last=False)
                self.metrics._in_flight(*oldest, -1)

    def _lower_in_flight(self, kwargs: Mapping[str, Any]) -> None:
        """Uncounts a call that ended, with the labels it was counted under."""
        call_id = _call_id(kwargs)
        with self._calls_lock:
            held = self._calls_in_flight.pop(call_id, None) if call_id is not None else None
            if held is not None:
                self.metrics._in_flight(*held, -1)

    # LiteLLM calls the sync hooks for sync calls and the async ones for async calls.
    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=False)

    def log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=True)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=False)

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=True)

    def _record(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any, *, failed: bool
    ) -> None:
        try:
            self._lower_in_flight(kwargs or {})
        except Exception as error:  # LiteLLM's call must not fail because of its logger
            _LOGGER.warning("LiteLLM call not uncounted: %s: %s", type(error).__name__, error)
        try:
            self._record_call(kwargs or {}, response_obj, start_time, end_time, failed)
        except Exception as error:  # LiteLLM's call must not fail because of its logger
            _LOGGER.warning("LiteLLM call not recorded: %s: %s", type(error).__name__, error)

    def _call_labels(self, kwargs: Mapping[str, Any]) -> tuple[str, str, str, Any]:
        """A call's provider, model, operation and extra label values, as recorded."""
        payload = kwargs.get("standard_logging_object") or {}
        params = kwargs.get("litellm_params") or {}
        provider = payload.get("custom_llm_provider") or params.get("custom_llm_provider") or ""
        model = payload.get("model") or kwargs.get("model") or ""
        call_type = str(payload.get("call_type") or kwargs.get("call_type") or "completion")
        plain_type = (
            call_type[1:]
            if call_type.startswith("a") and call_type[1:] in OPERATIONS
            else call_type
        )
        operation = OPERATIONS.get(plain_type, plain_type)
        streamed = bool(kwargs.get("stream") or payload.get("stream"))
        if streamed and operation == "chat":
            operation = "stream"
        metadata = payload.get("metadata") or params.get("metadata") or {}
        labels = {name: str(metadata.get(key) or "") for name, key in self.labels.items()}
        return str(provider), str(model), operation, labels or None

    def _record_call(
        self, kwargs: Mapping[str, Any], response: Any, start_time: Any, end_time: Any, failed: bool
    ) -> None:
        provider, model, operation, labels = self._call_labels(kwargs)
        payload = kwargs.get("standard_logging_object") or {}
        started, ended = _seconds(start_time), _seconds(end_time)
        latency_s = max(0.0, ended - started) if started is not None and ended is not None else 0.0
        first_token_s = None
        streamed = bool(kwargs.get("stream") or payload.get("stream"))
        first = _seconds(kwargs.get("completion_start_time"))
        if streamed and not failed and started is not None and first is not None:
            first_token_s = min(max(0.0, first - started), latency_s)
        usage = Usage()
        tools: list[str] = []
        if not failed and response is not None:
            try:
                usage = usage_from(response)
            except TypeError:
                usage = Usage()  # an answer without token usage (an image, a rerank)
            try:
                tools = tool_call_names(response) if hasattr(response, "choices") else []
            except Exception as unreadable:  # the call is recorded without its tool calls
                _LOGGER.warning("LiteLLM tool calls of %s not read: %s", model, unreadable)
                tools = []
        counts, problem = recordable_counts(usage)
        if problem is not None:
            _LOGGER.warning(
                "LiteLLM usage of %s is inconsistent (%s): input and output kept", model, problem
            )
        error_type = None
        if failed:
            exception = kwargs.get("exception")
            error_type = (
                error_type_of(exception) if isinstance(exception, BaseException) else "other"
            )
        record_counted(
            self.metrics,
            provider=provider,
            model=model,
            operation=operation,
            status="error" if failed else "ok",
            latency_s=latency_s,
            first_token_s=first_token_s,
            tokens=counts,
            tool_calls=[ToolCall(name) for name in tools],
            labels=labels,
            error_type=error_type,
        )
