"""Token usage and tool-call names from what LLM SDKs return, in this package's semantics.

This package counts tokens one way whatever the provider: ``input`` is every
prompt token, ``cache_read`` and ``cache_write`` are the parts of it read from
and written to the prompt cache, ``output`` is every generated token and
``reasoning`` the part of it spent on reasoning. Each provider reports them
its own way; ``docs/providers.md`` gives the fields read and the provider
documentation each reading follows. A field an SDK leaves ``None`` is "not
reported", never zero: it does not overwrite what an earlier stream event
reported (``Usage.merged``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

from gateway_metrics import _core

__all__ = ["Usage", "tool_call_names", "usage_from"]


@dataclass(frozen=True)
class Usage:
    """Token counts of one request; ``None`` where the source did not report one.

    ``input`` counts every prompt token (cached ones too), ``cache_read``,
    ``cache_write`` and ``audio_input`` are parts of ``input``, ``reasoning`` and
    ``audio_output`` parts of ``output``.

    Example::

        usage = usage_from(response)          # any SDK's response, usage or event
        usage = usage.merged(usage_from(event))  # a stream's later report wins
    """

    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    reasoning: int | None = None
    audio_input: int | None = None
    audio_output: int | None = None

    def merged(self, later: Usage) -> Usage:
        """This usage updated by a later report: each count ``later`` reports replaces ours.

        Stream events report running totals (Anthropic's ``message_delta``,
        Google's chunks) or the totals once (OpenAI's final chunk), so the
        latest reported value of each count is the request's.
        """
        return Usage(
            *[
                mine if theirs is None else theirs
                for mine, theirs in zip(self._values(), later._values())
            ]
        )

    def _values(self) -> tuple[int | None, ...]:
        """The counts in field order (``TOKEN_TYPES``)."""
        values: tuple[int | None, ...] = _FIELD_VALUES(self)
        return values

    @property
    def reported(self) -> bool:
        """Whether any count was reported."""
        return any(value is not None for value in self._values())

    def counts(self) -> dict[str, int]:
        """The counts by token type, 0 for those not reported."""
        return {name: value or 0 for name, value in zip(TOKEN_TYPES, self._values())}


#: The token types, in ``Usage``'s order (``record_request``'s ``<type>_tokens``).
TOKEN_TYPES = tuple(field.name for field in fields(Usage))
_FIELD_VALUES = attrgetter(*TOKEN_TYPES)


def _token_parts() -> dict[tuple[str, int], tuple[str, list[str]]]:
    """Each group of token types that together fit in a whole, from the core's
    request table: ``(whole keyword, group)`` to the whole's type and the parts'."""
    type_of = {keyword: name for name, keyword, _rate in _core.TOKEN_TYPES}
    groups: dict[tuple[str, int], tuple[str, list[str]]] = {}
    for keyword, kind, _default, _annotation, _doc, part_of in _core.REQUEST_FIELDS:
        if kind == "tokens" and part_of is not None:
            groups.setdefault(part_of, (type_of[part_of[0]], []))[1].append(type_of[keyword])
    return groups


_TOKEN_PARTS = _token_parts()


def check_tokens(counts: Mapping[str, object]) -> dict[str, int]:
    """``counts`` (token type to count) as ``record_request`` will take them, or a
    ``TypeError``/``ValueError`` naming the argument: counts are ints from 0 to
    2**64-1, and each group of parts fits its whole (the cache parts in
    ``input``, ``reasoning`` in ``output``), as the core's request table says."""
    checked = {}
    for name in TOKEN_TYPES:
        value = counts.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if not 0 <= value < 2**64:
            raise ValueError(f"{name} must be between 0 and 2**64-1, got {value}")
        checked[name] = value
    for whole, parts in _TOKEN_PARTS.values():
        if sum(checked[part] for part in parts) > checked[whole]:
            raise ValueError(
                f"{' + '.join(parts)} must not exceed {whole}, got "
                f"{' + '.join(str(checked[part]) for part in parts)} > {checked[whole]}"
            )
    return checked


def recordable_counts(usage: Usage) -> tuple[dict[str, int], str | None]:
    """The counts of ``usage`` to record, and why some were left out.

    All of them when they agree with each other; otherwise (cached tokens
    beyond the prompt, reasoning beyond the output) only input and output,
    which every provider reports as totals, with the contradiction. A count
    out of range (negative, past 2**64-1) is left out, and said so.
    """
    counts = usage.counts()
    problems = []
    unusable = {
        name: value
        for name, value in counts.items()
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64
    }
    if unusable:
        # A count no request can carry (negative, past 2**64-1) is left out;
        # the request is still recorded with the rest.
        counts = {name: 0 if name in unusable else value for name, value in counts.items()}
        problems.append(
            "counts out of range left out: "
            + ", ".join(f"{name}={value!r}" for name, value in unusable.items())
        )
    try:
        return check_tokens(counts), "; ".join(problems) or None
    except ValueError as contradiction:
        problems.append(str(contradiction))
        totals = {"input": counts["input"], "output": counts["output"]}
        return check_tokens(totals), "; ".join(problems)


#: What ``_lookup`` returns for a field a source does not have.
_ABSENT: Any = object()
#: For each pydantic class met, the names found to be neither its fields nor
#: its properties; None for a class that is not a pydantic model.
_CLASS_LACKS: dict[type, set[str] | None] = {}
#: At most this many classes are remembered (the SDKs have a few hundred).
_CLASS_LACKS_MAX = 4096


def _lacks_of(kind: type) -> set[str] | None:
    """The names ``kind`` lacks, if it is a pydantic model class (remembered)."""
    lacks = _CLASS_LACKS.get(kind, _ABSENT)
    if lacks is _ABSENT:
        lacks = set() if getattr(kind, "__pydantic_fields__", None) is not None else None
        if len(_CLASS_LACKS) < _CLASS_LACKS_MAX:
            _CLASS_LACKS[kind] = lacks
    return lacks  # type: ignore[no-any-return]


def _lookup(source: Any, name: str) -> Any:
    """``source.name`` or ``source[name]``; ``_ABSENT`` when it has neither.

    The SDKs' objects are pydantic models, whose fields live in the instance's
    ``__dict__`` and extra fields in ``__pydantic_extra__``: they are read there
    first, as asking a model for a name it lacks costs an exception inside
    pydantic's ``__getattr__`` (microseconds, a dozen times per response).
    """
    kind = type(source)
    if kind is dict:
        return source.get(name, _ABSENT)
    lacks = _CLASS_LACKS.get(kind, _ABSENT)
    if lacks is _ABSENT:
        lacks = _lacks_of(kind)
    if lacks is not None:
        value = source.__dict__.get(name, _ABSENT)
        if value is not _ABSENT:
            return value
        extra = source.__pydantic_extra__
        if extra and name in extra:
            return extra[name]
        if name in lacks:
            return _ABSENT
        if not any(name in vars(klass) for klass in kind.__mro__):
            # Neither a field nor a property of the class: remembered.
            if len(lacks) < _CLASS_LACKS_MAX:
                lacks.add(name)
            return _ABSENT
    elif isinstance(source, Mapping):
        return source.get(name, _ABSENT)
    return getattr(source, name, _ABSENT)


def field_of(source: Any, name: str) -> Any:
    """``source.name`` or ``source[name]``; None when it has neither."""
    value = _lookup(source, name)
    return None if value is _ABSENT else value


def _has(source: Any, name: str) -> bool:
    return _lookup(source, name) is not _ABSENT


def _int(source: Any, *path: str) -> int | None:
    """The count at ``path`` inside ``source`` (attributes or keys); None when absent or None."""
    for name in path:
        if source is None:
            return None
        source = field_of(source, name)
    if source is None:
        return None
    if isinstance(source, float) and source.is_integer():
        source = int(source)  # JSON numbers from a dict may arrive as floats
    if isinstance(source, bool) or not isinstance(source, int):
        raise TypeError(f"usage field {'.'.join(path)} must be an int, not {type(source).__name__}")
    return source


def _first(*counts: int | None) -> int | None:
    return next((count for count in counts if count is not None), None)


def _plus(*counts: int | None) -> int | None:
    """The sum of the reported counts; None when none is reported."""
    reported = [count for count in counts if count is not None]
    return sum(reported) if reported else None


def _modality(usage: Any, name: str, modality: str) -> int | None:
    """Google's count of one modality in a list of ``ModalityTokenCount``s
    (``{"modality": "AUDIO", "token_count": 12}``); None when not reported."""
    details = field_of(usage, name)
    if not isinstance(details, (list, tuple)):
        return None
    counts = [
        _int(detail, "token_count")
        for detail in details
        if str(getattr(field_of(detail, "modality"), "value", field_of(detail, "modality")))
        == modality
    ]
    return _plus(*counts) if counts else None


def usage_object(usage: Any) -> Usage:
    """A usage object (or dict) of any provider, told apart by its field names."""
    if any(
        _has(usage, name)
        for name in ("prompt_token_count", "candidates_token_count", "total_token_count")
    ):
        # Google (google-genai's GenerateContentResponseUsageMetadata): the prompt
        # count includes cached content; tool-use prompts and thoughts are counted
        # apart from the prompt and the candidates.
        thoughts = _int(usage, "thoughts_token_count")
        return Usage(
            input=_plus(
                _int(usage, "prompt_token_count"), _int(usage, "tool_use_prompt_token_count")
            ),
            output=_plus(_int(usage, "candidates_token_count"), thoughts),
            cache_read=_int(usage, "cached_content_token_count"),
            reasoning=thoughts,
            audio_input=_modality(usage, "prompt_tokens_details", "AUDIO"),
            audio_output=_modality(usage, "candidates_tokens_details", "AUDIO"),
        )
    if _has(usage, "prompt_tokens") or _has(usage, "completion_tokens"):
        # OpenAI Chat Completions, and the servers and libraries that answer in
        # its shape (LiteLLM, vLLM): the prompt count includes cached tokens.
        details = field_of(usage, "prompt_tokens_details")
        return Usage(
            input=_int(usage, "prompt_tokens"),
            output=_int(usage, "completion_tokens"),
            cache_read=_int(details, "cached_tokens"),
            cache_write=_first(
                _int(details, "cache_write_tokens"),
                _int(details, "cache_creation_tokens"),  # LiteLLM
                _int(usage, "cache_creation_input_tokens"),  # LiteLLM
            ),
            reasoning=_int(usage, "completion_tokens_details", "reasoning_tokens"),
            audio_input=_int(details, "audio_tokens"),
            audio_output=_int(usage, "completion_tokens_details", "audio_tokens"),
        )
    if (
        _has(usage, "input_tokens_details")
        or _int(field_of(usage, "output_tokens_details"), "reasoning_tokens") is not None
    ):
        # OpenAI Responses: input_tokens includes cached tokens.
        return Usage(
            input=_int(usage, "input_tokens"),
            output=_int(usage, "output_tokens"),
            cache_read=_int(usage, "input_tokens_details", "cached_tokens"),
            cache_write=_int(usage, "input_tokens_details", "cache_write_tokens"),
            reasoning=_int(usage, "output_tokens_details", "reasoning_tokens"),
        )
    if _has(usage, "input_tokens") or _has(usage, "output_tokens"):
        # Anthropic Messages: input_tokens leaves out what was read from or
        # written to the cache, so they are added back.
        raw_input = _int(usage, "input_tokens")
        read = _int(usage, "cache_read_input_tokens")
        written = _int(usage, "cache_creation_input_tokens")
        return Usage(
            input=None if raw_input is None else raw_input + (read or 0) + (written or 0),
            output=_int(usage, "output_tokens"),
            cache_read=read,
            cache_write=written,
            reasoning=_int(usage, "output_tokens_details", "thinking_tokens"),
        )
    raise TypeError(
        f"usage_from() does not know the shape of {type(usage).__name__}: pass an OpenAI, "
        "Anthropic, Google or LiteLLM response, usage object or stream event, or a dict "
        "of the same shape"
    )


def usage_from(source: Any) -> Usage:
    """The token counts in ``source``, in this package's semantics.

    ``source`` is a response, a usage object, a stream event or chunk, or a
    dict of any of these shapes, of OpenAI Chat Completions or Responses,
    Anthropic Messages, Google genai, LiteLLM or an OpenAI-compatible server
    (vLLM). A chunk or event that carries no usage gives an empty ``Usage``
    (``reported`` is False). A shape it does not know is a ``TypeError``, and
    so is a source that cannot be read: one whose attributes raise, a mock
    that makes up every attribute, a structure that contains itself (the
    error it met is the ``TypeError``'s ``__cause__``).

    Example::

        usage = gateway_metrics.usage_from(response)
        metrics.record_request(..., input_tokens=usage.input or 0, ...)
    """
    if source is None or isinstance(source, (str, bytes, int, float)):
        raise TypeError(f"usage_from() takes an SDK object or dict, not {type(source).__name__}")
    try:
        return _usage_in(source)
    except TypeError:
        raise
    except Exception as error:  # RecursionError, a property's own error, ...
        raise TypeError(
            f"usage_from() could not read a {type(source).__name__}: "
            f"{type(error).__name__}: {error}"
        ) from error


def _usage_in(source: Any) -> Usage:
    """``usage_from``'s reading of an object or dict."""
    # Events that wrap what carries the usage: Anthropic's message_start
    # (.message), OpenAI Responses' response.* events (.response).
    for wrapper in ("message", "response"):
        inner = field_of(source, wrapper)
        if inner is not None and not isinstance(inner, (str, bytes)) and _has(inner, "usage"):
            return _usage_in(inner)
    for container in ("usage", "usage_metadata"):
        if _has(source, container):
            inner = field_of(source, container)
            if inner is None:
                return Usage()  # a chunk or event without usage: nothing reported
            if not isinstance(inner, (int, float)):
                return usage_object(inner)
    if isinstance(field_of(source, "type"), str) or field_of(source, "choices") is not None:
        # A typed stream event without usage (Anthropic's content_block_delta,
        # Responses' response.output_text.delta, ...), or a chunk of choices
        # without a usage field (LiteLLM's): nothing reported.
        return Usage()
    return usage_object(source)


#: Item types of tool calls that carry the tool's name in ``name``: Anthropic's
#: content blocks, OpenAI Responses' output items.
_NAMED_TOOL_TYPES = frozenset({"tool_use", "server_tool_use", "mcp_tool_use", "function_call"})


def _text_name(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _call_key(item: Any) -> object:
    """What identifies a tool call across stream events: its id, else its stream index."""
    for name in ("id", "call_id"):
        value = field_of(item, name)
        if isinstance(value, str) and value:
            return value
    index = field_of(item, "index")
    return ("index", index) if isinstance(index, int) else None


def _item_call(item: Any) -> tuple[object, str | None] | None:
    """One item as ``(key, name)``: None when it is not a tool call, a None name
    when it continues a streamed call whose name came earlier."""
    if isinstance(item, str):
        return None, item or "unknown"  # a tool's name, as record_request reads it
    if isinstance(item, bytes) or item is None:
        return None, "unknown"  # no tool call this reads: record_request says "unknown" too
    kind = field_of(item, "type")
    if _has(item, "function_call") and not isinstance(kind, str):
        # A Google Part: text and thought parts have no function call.
        call = field_of(item, "function_call")
        if call is None:
            return None
        return _call_key(call), _text_name(field_of(call, "name")) or "unknown"
    name = _text_name(field_of(item, "name"))
    if name is None:
        for nested in ("function", "custom"):  # OpenAI Chat tool calls, LiteLLM's
            name = _text_name(field_of(field_of(item, nested), "name"))
            if name is not None:
                break
    if isinstance(kind, str) and kind not in ("function", "custom"):
        if kind in _NAMED_TOOL_TYPES or kind.endswith("_call"):
            # Responses' built-in tools (web_search_call, ...) are named by their type.
            return _call_key(item), name or kind.removesuffix("_call")
        return None  # text, thinking, reasoning, message, ... items
    if name is None and _has(item, "index"):
        return _call_key(item), None  # a streamed delta after the one with the name
    return _call_key(item), name or "unknown"


def _items(source: Any) -> Iterator[Any]:
    """The items of ``source`` that may be tool calls: those of a response, chunk
    or event, or ``source``'s own items."""
    if source is None:
        return
    if isinstance(source, (str, bytes)):
        raise TypeError(
            "tool calls must be SDK objects, dicts or an iterable of them, "
            f"not {type(source).__name__}"
        )
    choices = field_of(source, "choices")
    if isinstance(choices, Iterable) and not isinstance(choices, (str, bytes, Mapping)):
        # OpenAI Chat Completions (LiteLLM's too): each choice's message or delta.
        for choice in choices:
            part = field_of(choice, "message")
            if part is None:
                part = field_of(choice, "delta")
            yield from field_of(part, "tool_calls") or ()
        return
    candidates = field_of(source, "candidates")
    if isinstance(candidates, Iterable) and not isinstance(candidates, (str, bytes, Mapping)):
        # Google: the parts of each candidate's content.
        for candidate in candidates:
            yield from field_of(field_of(candidate, "content"), "parts") or ()
        return
    for wrapper in ("message", "response"):  # Anthropic's message_start, Responses' events
        inner = field_of(source, wrapper)
        if (
            inner is not None
            and not isinstance(inner, (str, bytes))
            and (_has(inner, "content") or _has(inner, "output"))
        ):
            yield from _items(inner)
            return
    # Anthropic's content_block_start, Responses' response.output_item.* events.
    for single in ("content_block", "item"):
        inner = field_of(source, single)
        if inner is not None and not isinstance(inner, (str, bytes)):
            yield inner
            return
    # A Chat message, a Responses Response, an Anthropic Message.
    for listed in ("tool_calls", "output", "content"):
        inner = field_of(source, listed)
        if isinstance(inner, (list, tuple)):
            yield from inner
            return
    if _is_one_object(source):
        yield source  # one tool call
        return
    yield from source


def _is_one_object(source: Any) -> bool:
    """Whether ``source`` is one object rather than a collection of them.

    SDK objects are pydantic models, which iterate over their fields: they
    are single objects however they iterate.
    """
    return (
        isinstance(source, Mapping)
        or not isinstance(source, Iterable)
        or hasattr(type(source), "model_fields")
        or hasattr(type(source), "__fields__")
    )


def tool_calls_in(source: Any) -> list[tuple[object, str | None]]:
    """Every tool call in ``source`` as ``(key, name)`` (see ``_item_call``)."""
    return [call for call in map(_item_call, _items(source)) if call is not None]


def tool_call_names(source: Any) -> list[str]:
    """The names of the tool calls in ``source``, in order.

    ``source`` is a response, message, chunk or stream event, or an iterable
    of tool calls or items: objects with ``.name`` or ``.function.name``,
    dicts of either, OpenAI Chat tool calls and streamed deltas (the name
    arrives once, in a call's first delta), OpenAI Responses output items
    (``function_call`` and the built-in tools' ``*_call`` items, named by
    type), Anthropic ``tool_use`` blocks, Google ``function_call`` parts.
    A ``str`` is a tool's name. Text, thinking, reasoning and message items
    are not tool calls and are skipped; a call without a name (``None``, an
    object with no name) is ``"unknown"``, as ``record_request`` records it.

    Example::

        names = gateway_metrics.tool_call_names(response)   # ["search", "calculator"]
    """
    return [name for _, name in tool_calls_in(source) if name is not None]
