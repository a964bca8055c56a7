"""``track()``: one request recorded by a ``with`` or ``async with`` block."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway_metrics._middleware import GatewayMetricsMiddleware

_LOGGER = logging.getLogger("gateway_metrics")
#: Token counts of a request, in this package's semantics, and their order.
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")


def _report_once(metrics: GatewayMetricsMiddleware, kind: str, message: str) -> None:
    """Logs ``message`` the first time ``metrics`` sees a problem of ``kind``."""
    if kind not in metrics._reported_usage_problems:
        metrics._reported_usage_problems.add(kind)
        _LOGGER.warning("%s (reported once)", message)


def check_tokens(counts: Mapping[str, object]) -> dict[str, int]:
    """``counts`` (token type to count) as ``record_request`` will take them, or a
    ``TypeError``/``ValueError`` naming the argument: counts are ints from 0 to
    2**64-1, the cache parts fit in ``input`` and ``reasoning`` in ``output``."""
    checked = {}
    for name in TOKEN_TYPES:
        value = counts.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if not 0 <= value < 2**64:
            raise ValueError(f"{name} must be between 0 and 2**64-1, got {value}")
        checked[name] = value
    if checked["cache_read"] + checked["cache_write"] > checked["input"]:
        raise ValueError(
            "cache_read + cache_write must not exceed input, got "
            f"{checked['cache_read']} + {checked['cache_write']} > {checked['input']}"
        )
    if checked["reasoning"] > checked["output"]:
        raise ValueError(
            f"reasoning must not exceed output, got {checked['reasoning']} > {checked['output']}"
        )
    return checked


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


def _field(source: Any, name: str) -> Any:
    """``source.name`` or ``source[name]``; None when it has neither."""
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def _count(source: Any, *path: str) -> int:
    """The int at ``path`` inside ``source`` (attributes or keys); 0 when absent or None."""
    for name in path:
        source = _field(source, name)
        if source is None:
            return 0
    if isinstance(source, bool) or not isinstance(source, int):
        raise TypeError(f"usage field {'.'.join(path)} must be an int, not {type(source).__name__}")
    return source


def _has(source: Any, name: str) -> bool:
    return name in source if isinstance(source, Mapping) else hasattr(source, name)


def usage_tokens(usage: Any) -> dict[str, int]:
    """Token counts of an OpenAI, Anthropic or Google response or usage object (or a
    dict of the same shape), in this package's semantics: ``input`` counts every
    prompt token, ``cache_read``/``cache_write`` the parts of it read from or written
    to the prompt cache, ``reasoning`` the part of ``output`` spent on reasoning."""
    for container in ("usage", "usage_metadata"):
        inner = _field(usage, container)
        if inner is not None and not isinstance(inner, (int, float)):
            usage = inner
            break
    if _has(usage, "prompt_token_count") or _has(usage, "candidates_token_count"):
        # Google: the prompt count includes cached content; thoughts are output.
        thoughts = _count(usage, "thoughts_token_count")
        return {
            "input": _count(usage, "prompt_token_count"),
            "output": _count(usage, "candidates_token_count") + thoughts,
            "cache_read": _count(usage, "cached_content_token_count"),
            "cache_write": 0,
            "reasoning": thoughts,
        }
    if _has(usage, "prompt_tokens") or _has(usage, "completion_tokens"):
        # OpenAI Chat Completions: the prompt count includes cached tokens.
        return {
            "input": _count(usage, "prompt_tokens"),
            "output": _count(usage, "completion_tokens"),
            "cache_read": _count(usage, "prompt_tokens_details", "cached_tokens"),
            "cache_write": 0,
            "reasoning": _count(usage, "completion_tokens_details", "reasoning_tokens"),
        }
    if _has(usage, "cache_read_input_tokens") or _has(usage, "cache_creation_input_tokens"):
        # Anthropic: input_tokens excludes what was read from or written to the cache.
        read = _count(usage, "cache_read_input_tokens")
        written = _count(usage, "cache_creation_input_tokens")
        return {
            "input": _count(usage, "input_tokens") + read + written,
            "output": _count(usage, "output_tokens"),
            "cache_read": read,
            "cache_write": written,
            "reasoning": 0,
        }
    if _has(usage, "input_tokens") or _has(usage, "output_tokens"):
        # OpenAI Responses: input_tokens includes cached tokens.
        return {
            "input": _count(usage, "input_tokens"),
            "output": _count(usage, "output_tokens"),
            "cache_read": _count(usage, "input_tokens_details", "cached_tokens"),
            "cache_write": 0,
            "reasoning": _count(usage, "output_tokens_details", "reasoning_tokens"),
        }
    raise TypeError(
        f"usage() does not know the shape of {type(usage).__name__}: pass an OpenAI, "
        "Anthropic or Google response or usage object, or set counts with tokens()"
    )


def tool_call_name(call: Any) -> str:
    """The name of a tool call: ``.name``, ``.function.name`` (OpenAI SDK objects),
    or the same keys of a dict; ``"unknown"`` for anything else."""
    name = _field(call, "name")
    if not isinstance(name, str) or not name:
        function = _field(call, "function")
        name = None if function is None else _field(function, "name")
    return name if isinstance(name, str) and name else "unknown"


class TrackedCall:
    """One LLM request being timed; records itself once when its block exits.

    Made by ``GatewayMetricsMiddleware.track``. Status ``"ok"`` on a normal exit,
    ``"error"`` when an exception leaves the block (it is re-raised),
    ``"cancelled"`` on ``asyncio.CancelledError`` or when a generator holding the
    block is closed early; what was seen until then is recorded.
    """

    def __init__(
        self,
        metrics: GatewayMetricsMiddleware,
        provider: str,
        model: str,
        operation: str,
        labels: Mapping[str, str] | None,
    ) -> None:
        for argument, value in (("provider", provider), ("model", model), ("operation", operation)):
            if not isinstance(value, str):
                raise TypeError(f"{argument} must be str, not {type(value).__name__}")
        known = metrics.extra_labels
        unknown = sorted(str(name) for name in (labels or {}) if name not in known)
        if unknown:
            raise ValueError(
                f"labels names {', '.join(unknown)}, which are not among this middleware's "
                f"extra labels ({', '.join(known)})"
            )
        self._metrics = metrics
        self._labels = dict(labels) if labels else None
        self._provider, self._model, self._operation = provider, model, operation
        self._started: float | None = None
        self._first_token_s: float | None = None
        self._tokens = dict.fromkeys(TOKEN_TYPES, 0)
        self._tool_calls: list[ToolCall] = []
        self._recorded = False

    def first_token(self) -> None:
        """Marks the first token of a streamed response; later calls do nothing."""
        if self._first_token_s is None and self._started is not None:
            self._first_token_s = time.perf_counter() - self._started

    def usage(self, response_or_usage: Any) -> None:
        """Takes the token counts from an SDK response or usage object (or dict).

        Never raises: the block's own outcome decides the request's status.
        A shape it does not know is logged once and leaves the counts as they
        were; counts that contradict each other (cached tokens beyond the
        prompt, reasoning beyond the output) keep what is consistent, input
        and output, and are logged once.
        """
        try:
            counts = usage_tokens(response_or_usage)
        except TypeError as unknown:
            _report_once(
                self._metrics, f"shape:{type(response_or_usage).__name__}", f"track(): {unknown}"
            )
            return
        try:
            self._tokens = check_tokens(counts)
            return
        except (TypeError, ValueError) as contradiction:
            problem = str(contradiction)
        try:
            self._tokens = check_tokens({"input": counts["input"], "output": counts["output"]})
            kept = "only its input and output are recorded"
        except (TypeError, ValueError):
            kept = "its counts are not recorded"
        _report_once(
            self._metrics,
            f"counts:{problem.split(',')[0]}",
            f"track(): usage of {type(response_or_usage).__name__} is inconsistent "
            f"({problem}); {kept}",
        )

    def tokens(
        self,
        *,
        input: int = 0,
        output: int = 0,
        cache_read: int = 0,
        cache_write: int = 0,
        reasoning: int = 0,
    ) -> None:
        """Sets the token counts directly, in this package's semantics.

        Checked here, as ``record_request`` checks them: a bad count raises
        ``TypeError`` or ``ValueError`` naming it at this call, and the
        request is still recorded (as ``error``, if the exception leaves the
        block), with the counts it had before.
        """
        self._tokens = check_tokens(
            {
                "input": input,
                "output": output,
                "cache_read": cache_read,
                "cache_write": cache_write,
                "reasoning": reasoning,
            }
        )

    def tool_calls(self, calls: Iterable[Any] | None) -> None:
        """Records the response's tool calls (objects or dicts), by name."""
        self._tool_calls = [ToolCall(tool_call_name(call)) for call in (calls or ())]

    def _start(self) -> TrackedCall:
        if self._started is not None:
            raise RuntimeError("a tracked call is entered once")
        self._started = time.perf_counter()
        return self

    def _finish(self, error: BaseException | None) -> None:
        if self._recorded or self._started is None:
            return
        self._recorded = True
        latency_s = time.perf_counter() - self._started
        if error is None:
            status = "ok"
        elif isinstance(error, (asyncio.CancelledError, GeneratorExit)):
            status = "cancelled"
        else:
            status = "error"
        first = self._first_token_s
        first_token_s = None if first is None else min(first, latency_s)
        try:
            self._record(status, latency_s, first_token_s, self._tokens, self._tool_calls)
        except (TypeError, ValueError) as refused:
            # Every part was checked when it was given; should one still be
            # refused, the request is recorded without its parts rather than
            # lost, and the block's own exception (if any) stays the one raised.
            _report_once(self._metrics, f"record:{type(refused).__name__}", f"track(): {refused}")
            try:
                self._record(status, latency_s, first_token_s, dict.fromkeys(TOKEN_TYPES, 0), [])
            except (TypeError, ValueError) as still:
                _report_once(self._metrics, f"record:{type(still).__name__}", f"track(): {still}")

    def _record(
        self,
        status: str,
        latency_s: float,
        first_token_s: float | None,
        tokens: Mapping[str, int],
        tool_calls: list[ToolCall],
    ) -> None:
        self._metrics.record_request(
            provider=self._provider,
            model=self._model,
            operation=self._operation,
            status=status,
            latency_s=latency_s,
            input_tokens=tokens["input"],
            output_tokens=tokens["output"],
            cache_read_tokens=tokens["cache_read"],
            cache_write_tokens=tokens["cache_write"],
            reasoning_tokens=tokens["reasoning"],
            time_to_first_token_s=first_token_s,
            tool_calls=tool_calls,
            labels=self._labels,
        )

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
