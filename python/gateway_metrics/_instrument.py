"""``instrument(client)``: every call of one SDK client recorded as ``track()`` records it.

Only the client object given is changed: each instrumented method of its
resource objects (``client.chat.completions``, ``client.messages``,
``client.models``, ...) is shadowed by an attribute of that object, which
``uninstrument`` deletes, so the class's method is found again. The SDKs'
classes are never changed. The methods are described once, as ``_Method`` rows in ``_SDKS``.

A call is tracked from the method call to its response, or for a stream to
its last item: a stream object keeps its class and yields the same items, its
iterator observed (the SDKs' ``Stream._iterator``). Each item is looked at
for what marks the first token, the tool calls and the usage; the usage is
read once the stream ends, from the items that carry it. What cannot be read
is recorded as well as it can be and warned about once; the caller's call
never fails because of us.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway_metrics._errors import error_type_of_event
from gateway_metrics._track import TrackedCall, _report_once

_LOGGER = logging.getLogger("gateway_metrics")


def _close(call: TrackedCall, error: BaseException | None) -> None:
    """Ends ``call``; a failure of ours is reported once, never raised into the caller's call."""
    try:
        call._finish(error)
    except Exception as ours:
        _report_once(
            call._metrics,
            f"instrument-record:{type(ours).__name__}",
            f"instrument(): call not recorded: {type(ours).__name__}: {ours}",
        )


class _StreamFailedError(Exception):
    """A stream that reported an error as an event (OpenAI Responses' ``error``)
    rather than raising it: the call ends as an error of that type."""


# --------------------------------------------------------------------- readers
#
# A reader takes each item of a stream: it marks the first token, adds tool
# calls and keeps the items that carry usage (``watch.keep``), cheaply: it runs
# once per chunk. Usage is read from the kept items when the stream ends.


def _openai_chat_item(watch: _Watch, chunk: Any) -> None:
    choices = chunk.choices
    if choices:
        if watch.waiting:
            watch.first()
        for choice in choices:
            if choice.delta is not None and choice.delta.tool_calls:
                watch.call.tool_calls(chunk)
                break
    if chunk.usage is not None:
        watch.keep(chunk)


#: Responses events that come before any output.
_RESPONSES_PREAMBLE = frozenset({"response.created", "response.in_progress", "response.queued"})
#: Responses events that end a response and carry its usage and output.
_RESPONSES_END = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _openai_responses_item(watch: _Watch, event: Any) -> None:
    kind = event.type
    if kind in _RESPONSES_END:
        watch.keep(event)
        watch.call.tool_calls(event.response)
    elif kind == "error":
        watch.failed = error_type_of_event(event)
    elif watch.waiting and kind not in _RESPONSES_PREAMBLE:
        watch.first()


def _anthropic_item(watch: _Watch, event: Any) -> None:
    kind = event.type
    if kind == "content_block_start":
        if watch.waiting:
            watch.first()
        watch.call.tool_calls(event)
    elif kind == "content_block_delta":
        if watch.waiting:
            watch.first()
    elif kind in ("message_start", "message_delta"):
        watch.keep(event)


def _google_item(watch: _Watch, chunk: Any) -> None:
    candidates = chunk.candidates
    if candidates:
        if watch.waiting:
            watch.first()
        for candidate in candidates:
            content = candidate.content
            if content is not None and any(
                part.function_call is not None for part in content.parts or ()
            ):
                watch.call.tool_calls(chunk)
                break
    if chunk.usage_metadata is not None:
        watch.keep_last(chunk)


# ------------------------------------------------------------------ responses
#
# A response reader hands the call a response's usage object and, when the
# response has tool calls, the response: the shapes of the pinned SDKs read
# directly, rather than probed field by field as ``usage_from`` must.


def _openai_chat_response(call: TrackedCall, response: Any) -> None:
    call._usage_object(response.usage)
    if any(choice.message.tool_calls for choice in response.choices):
        call.tool_calls(response)


def _openai_responses_response(call: TrackedCall, response: Any) -> None:
    call._usage_object(response.usage)
    if any(item.type not in ("message", "reasoning") for item in response.output):
        call.tool_calls(response)


def _openai_embeddings_response(call: TrackedCall, response: Any) -> None:
    call._usage_object(response.usage)


def _anthropic_response(call: TrackedCall, response: Any) -> None:
    call._usage_object(response.usage)
    if any(block.type.endswith("tool_use") for block in response.content):
        call.tool_calls(response)


def _google_response(call: TrackedCall, response: Any) -> None:
    call._usage_object(response.usage_metadata)
    for candidate in response.candidates or ():
        content = candidate.content
        if content is not None and any(part.function_call for part in content.parts or ()):
            call.tool_calls(response)
            return


def _any_response(call: TrackedCall, response: Any) -> None:
    """The reader of a response of no known shape: read in full."""
    call.usage(response)
    call._quiet_tool_calls(response)


def _any_item(watch: _Watch, item: Any) -> None:
    """The reader of a stream whose items are of no known shape: each item
    read in full, as ``track()`` reads what it is given."""
    if watch.waiting:
        watch.first()
    watch.keep(item)
    watch.call._quiet_tool_calls(item)


class _Watch:
    """One tracked stream: its call, reader and the items that carry usage."""

    __slots__ = ("call", "failed", "kept", "reader", "waiting")

    def __init__(self, call: TrackedCall, reader: Callable[[_Watch, Any], None]) -> None:
        self.call = call
        self.reader = reader
        self.kept: list[Any] = []
        #: The error type of an error the stream reported as an event.
        self.failed: str | None = None
        #: Whether the first token is still to come (a flag, read per item).
        self.waiting = True

    def first(self) -> None:
        """Marks the first token."""
        self.waiting = False
        self.call.first_token()

    def keep(self, item: Any) -> None:
        self.kept.append(item)

    def keep_last(self, item: Any) -> None:
        """Keeps ``item`` in place of the earlier ones (running totals)."""
        if self.kept:
            self.kept[-1] = item
        else:
            self.kept.append(item)

    def unreadable(self, item: Any, unreadable: Exception) -> None:
        """An item the reader could not read (an SDK version whose items we do
        not know): reported once, and every item from it on read in full."""
        _report_once(
            self.call._metrics,
            f"instrument-item:{type(item).__name__}",
            f"instrument(): a stream item of type {type(item).__name__} could not be "
            f"read ({type(unreadable).__name__}: {unreadable}); reading each in full",
        )
        self.reader = _any_item
        try:
            _any_item(self, item)
        except Exception as still:  # read as track() reads it: never raises but to be sure
            _report_once(self.call._metrics, "instrument-any-item", f"instrument(): {still}")

    def end(self, error: BaseException | None) -> None:
        """Ends the call: the kept items' usage, then the outcome."""
        call = self.call
        if call._recorded:
            return
        kept, self.kept = self.kept, []
        for item in kept:
            call.usage(item)  # never raises: a shape it does not know is logged
        if error is None and self.failed is not None:
            call.error(self.failed)
            error = _StreamFailedError(self.failed)
        _close(call, error)


def _observed(inner: Any, watch: _Watch) -> Any:
    """A generator yielding ``inner``'s items, each seen by ``watch``."""
    try:
        for item in inner:
            try:
                watch.reader(watch, item)
            except Exception as unreadable:
                watch.unreadable(item, unreadable)
            yield item
    except BaseException as error:  # GeneratorExit when closed early: cancelled
        watch.end(error)
        raise
    watch.end(None)


async def _observed_async(inner: Any, watch: _Watch) -> Any:
    """``_observed`` of an async iterator."""
    try:
        async for item in inner:
            try:
                watch.reader(watch, item)
            except Exception as unreadable:
                watch.unreadable(item, unreadable)
            yield item
    except BaseException as error:
        watch.end(error)
        raise
    watch.end(None)


def _cancel_when_dropped(owner: Any, watch: _Watch) -> None:
    """Ends the call as cancelled if ``owner`` (a stream) is released unfinished."""
    # One that is not weakly referenceable is ended by its iterator only.
    with contextlib.suppress(TypeError):
        weakref.finalize(owner, watch.end, GeneratorExit())


def _watch_stream(stream: Any, watch: _Watch, asynchronous: bool) -> Any:
    """Observes an SDK stream object in place (its class unchanged); returns it."""
    try:
        inner = stream._iterator
        stream._iterator = (
            _observed_async(inner, watch) if asynchronous else _observed(inner, watch)
        )
    except Exception as unknown:  # a stream object of another shape
        _report_once(
            watch.call._metrics,
            f"instrument-stream:{type(stream).__name__}",
            f"instrument(): the {type(stream).__name__} returned cannot be observed "
            f"({type(unknown).__name__}: {unknown}); its calls are recorded without "
            "their stream",
        )
        watch.end(None)
        return stream
    _end_when_closed(stream, watch, asynchronous)
    _cancel_when_dropped(stream, watch)
    return stream


def _end_when_closed(stream: Any, watch: _Watch, asynchronous: bool) -> None:
    """Ends the call as cancelled when the stream is closed before its end
    (by the caller, or by a stream helper closing its raw stream)."""
    original = getattr(stream, "close", None)
    if original is None:
        return
    if asynchronous:

        async def close_async() -> None:
            try:
                await original()
            finally:
                watch.end(GeneratorExit())

        stream.close = close_async
        return

    def close() -> None:
        try:
            original()
        finally:
            watch.end(GeneratorExit())

    stream.close = close


# ------------------------------------------------------------------ the methods


@dataclass(frozen=True)
class _Method:
    """One SDK method that ``instrument`` tracks."""

    #: Attributes from the client to the resource object, then the method's name.
    path: tuple[str, ...]
    #: The operation recorded when not streamed, and when streamed.
    operation: str
    streamed_operation: str
    #: How it streams: ``"argument"`` (``stream=True``), ``"always"`` (the
    #: method streams), ``"manager"`` (a stream helper whose manager makes
    #: the raw stream), or ``""`` (never).
    streams: str
    #: The reader of its stream items.
    reader: Callable[[_Watch, Any], None] | None
    #: The reader of its response (None: one without usage or tool calls).
    responder: Callable[[TrackedCall, Any], None] | None


_OPENAI = (
    _Method(
        ("chat", "completions", "create"),
        "chat",
        "stream",
        "argument",
        _openai_chat_item,
        _openai_chat_response,
    ),
    _Method(
        ("responses", "create"),
        "chat",
        "stream",
        "argument",
        _openai_responses_item,
        _openai_responses_response,
    ),
    _Method(("embeddings", "create"), "embed", "embed", "", None, _openai_embeddings_response),
)
_ANTHROPIC = (
    _Method(
        ("messages", "create"), "chat", "stream", "argument", _anthropic_item, _anthropic_response
    ),
    _Method(("messages", "stream"), "stream", "stream", "manager", _anthropic_item, None),
)
_GOOGLE_MODELS = (
    _Method(("models", "generate_content"), "chat", "chat", "", None, _google_response),
    _Method(
        ("models", "generate_content_stream"), "stream", "stream", "always", _google_item, None
    ),
    # Google's embeddings report no token counts.
    _Method(("models", "embed_content"), "embed", "embed", "", None, None),
)
#: The same methods of the client's async side, ``client.aio``.
_GOOGLE = _GOOGLE_MODELS + tuple(
    _Method(
        ("aio", *method.path),
        method.operation,
        method.streamed_operation,
        method.streams,
        method.reader,
        method.responder,
    )
    for method in _GOOGLE_MODELS
)

#: Each SDK by its top-level module: its provider label and methods.
_SDKS: dict[str, tuple[str, tuple[_Method, ...]]] = {
    "openai": ("openai", _OPENAI),
    "anthropic": ("anthropic", _ANTHROPIC),
    "google": ("google", _GOOGLE),
}

#: What ``instrument`` changed on each client: (resource object, method name).
_PATCHED: weakref.WeakKeyDictionary[Any, list[tuple[Any, str]]] = weakref.WeakKeyDictionary()


def _sdk_of(client: Any) -> tuple[str, tuple[_Method, ...]]:
    module = type(client).__module__ or ""
    top = module.split(".")[0]
    if top == "google" and not module.startswith("google.genai"):
        top = ""
    if top not in _SDKS:
        raise TypeError(
            "instrument() takes an openai.OpenAI or AsyncOpenAI, anthropic.Anthropic or "
            f"AsyncAnthropic, or google.genai.Client, not {type(client).__module__}."
            f"{type(client).__qualname__}"
        )
    provider, methods = _SDKS[top]
    if top == "openai" and "Azure" in type(client).__name__:
        provider = "azure"
    return provider, methods


def _resource(client: Any, path: tuple[str, ...]) -> Any:
    """The object holding the method at ``path``, or None if the client has none."""
    owner = client
    for name in path[:-1]:
        owner = getattr(owner, name, None)
        if owner is None:
            return None
    return owner


def instrument(metrics: Any, client: Any) -> Any:
    """See ``GatewayMetricsMiddleware.instrument``."""
    provider, methods = _sdk_of(client)
    try:
        if client in _PATCHED:
            raise ValueError("this client is instrumented already: uninstrument() it first")
    except TypeError:
        raise TypeError(
            f"instrument() keeps a weak reference to the client; a {type(client).__name__} "
            "cannot have one"
        ) from None
    patched: list[tuple[Any, str]] = []
    for method in methods:
        owner = _resource(client, method.path)
        name = method.path[-1]
        original = getattr(owner, name, None) if owner is not None else None
        if original is None or not callable(original):
            _report_once(
                metrics,
                f"instrument-missing:{provider}:{'.'.join(method.path)}",
                f"instrument(): this {provider} SDK has no {'.'.join(method.path)}; "
                "it is not recorded",
            )
            continue
        if name in vars(owner):
            continue  # an attribute of the object itself: not a method we shadow
        setattr(owner, name, _wrapped(metrics, provider, method, original))
        patched.append((owner, name))
    _PATCHED[client] = patched
    return client


def uninstrument(client: Any) -> Any:
    """See ``GatewayMetricsMiddleware.uninstrument``."""
    try:
        patched = _PATCHED.pop(client)
    except (KeyError, TypeError):
        raise ValueError("this client is not instrumented") from None
    for owner, name in patched:
        vars(owner).pop(name, None)
    return client


def _model_of(kwargs: dict[str, Any]) -> str:
    model = kwargs.get("model")
    return model if isinstance(model, str) else ""


def _start(metrics: Any, provider: str, method: _Method, streamed: bool, model: str) -> Any:
    """A started tracked call, or None when it cannot be made (never raises)."""
    operation = method.streamed_operation if streamed else method.operation
    try:
        return TrackedCall(metrics, provider, model, operation, None)._start()
    except Exception as refused:
        _report_once(metrics, "instrument-start", f"instrument(): call not recorded: {refused}")
        return None


def _streamed(method: _Method, kwargs: dict[str, Any]) -> bool:
    if method.streams == "argument":
        return kwargs.get("stream") is True
    return method.streams in ("always", "manager")


def _ended(call: Any, response: Any, method: _Method) -> None:
    """Ends a call that returned ``response`` (not a stream)."""
    if method.responder is not None:
        try:
            method.responder(call, response)
        except Exception as unknown:  # an SDK version whose responses we do not know
            _report_once(
                call._metrics,
                f"instrument-response:{type(response).__name__}",
                f"instrument(): a {type(response).__name__} could not be read "
                f"({type(unknown).__name__}: {unknown}); reading it in full",
            )
            _any_response(call, response)
    _close(call, None)


def _wrapped(metrics: Any, provider: str, method: _Method, original: Any) -> Any:
    """The method that shadows ``original`` on its resource object."""
    reader = method.reader or _any_item

    def begin(kwargs: dict[str, Any]) -> tuple[Any, bool]:
        streamed = _streamed(method, kwargs)
        return _start(metrics, provider, method, streamed, _model_of(kwargs)), streamed

    if method.streams == "manager":

        @functools.wraps(original)
        def helper(*args: Any, **kwargs: Any) -> Any:
            manager = original(*args, **kwargs)
            _watch_manager(manager, metrics, provider, method, kwargs, reader)
            return manager

        return helper

    async def settled_async(call: Any, streamed: bool, pending: Any) -> Any:
        try:
            result = await pending
        except BaseException as error:
            _close(call, error)
            raise
        if streamed and method.streams == "always":
            return _stream_of(call, result, reader, asynchronous=True)
        _settle(call, result, streamed, method, reader, asynchronous=True)
        return result

    @functools.wraps(original)
    def tracked(*args: Any, **kwargs: Any) -> Any:
        call, streamed = begin(kwargs)
        if call is None:
            return original(*args, **kwargs)
        try:
            result = original(*args, **kwargs)
        except BaseException as error:
            _close(call, error)
            raise
        # An async client's method returns an awaitable (some are not
        # coroutine functions themselves): the call ends when it is awaited.
        if inspect.isawaitable(result):
            return settled_async(call, streamed, result)
        if streamed and method.streams == "always":
            return _stream_of(call, result, reader, asynchronous=False)
        _settle(call, result, streamed, method, reader, asynchronous=False)
        return result

    if inspect.iscoroutinefunction(original):
        # Keep it a coroutine function for callers (and frameworks) that check.
        @functools.wraps(original)
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            return await tracked(*args, **kwargs)

        return call_async
    return tracked


def _stream_of(call: Any, iterator: Any, reader: Any, asynchronous: bool) -> Any:
    """A method that returns a plain iterator (Google's): ours, yielding its items."""
    watch = _Watch(call, reader)
    if asynchronous:
        return _observed_async(iterator, watch)
    return _observed(iterator, watch)


def _settle(
    call: Any, result: Any, streamed: bool, method: _Method, reader: Any, asynchronous: bool
) -> None:
    """Records a returned response, or starts watching a returned stream object."""
    try:
        if not streamed:
            _ended(call, result, method)
        elif method.streams == "argument":
            _watch_stream(result, _Watch(call, reader), asynchronous)
    except Exception as ours:  # our failure never reaches the caller
        _report_once(call._metrics, "instrument-settle", f"instrument(): {ours}")
        _close(call, None)


def _watch_manager(
    manager: Any, metrics: Any, provider: str, method: _Method, kwargs: dict[str, Any], reader: Any
) -> None:
    """A stream helper's manager (Anthropic's ``messages.stream``): the raw
    stream it makes when entered is watched; the call starts then."""
    private = f"_{type(manager).__name__}__api_request"
    request = getattr(manager, private, None)
    if request is None:
        _report_once(
            metrics,
            f"instrument-manager:{type(manager).__name__}",
            f"instrument(): the {type(manager).__name__} returned cannot be observed; "
            "its calls are not recorded",
        )
        return
    model = _model_of(kwargs)
    if inspect.isawaitable(request):

        async def raw_stream_async() -> Any:
            call = _start(metrics, provider, method, True, model)
            if call is None:
                return await request
            try:
                stream = await request
            except BaseException as error:
                _close(call, error)
                raise
            return _watch_stream(stream, _Watch(call, reader), asynchronous=True)

        setattr(manager, private, raw_stream_async())
        return

    def raw_stream() -> Any:
        call = _start(metrics, provider, method, True, model)
        if call is None:
            return request()
        try:
            stream = request()
        except BaseException as error:
            _close(call, error)
            raise
        return _watch_stream(stream, _Watch(call, reader), asynchronous=False)

    setattr(manager, private, raw_stream)


def is_instrumented(client: Any) -> bool:
    """Whether ``instrument`` changed ``client`` and it was not undone."""
    try:
        return client in _PATCHED
    except TypeError:
        return False


__all__ = ["instrument", "is_instrumented", "uninstrument"]
