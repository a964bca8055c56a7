"""Why an LLM call failed: an exception or HTTP status in the closed vocabulary
of ``ERROR_TYPES``, the same for every provider.

The SDKs are not imported: their exceptions are recognised by class name (in
the exception's class hierarchy), HTTP status (``status_code``, or Google's
``code``) and the error body's ``type``/``code``/``status`` fields, in the
order of ``_RULES``. docs/errors.md prints the table the rules follow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from gateway_metrics._core import ERROR_TYPES as _CORE_ERROR_TYPES

#: The ``error_type`` label values, as the core accepts them.
ERROR_TYPES: tuple[str, ...] = tuple(_CORE_ERROR_TYPES)

#: Exception classes by name (anywhere in the class hierarchy), checked first:
#: the SDKs' own classes, then httpx's, aiohttp's and the built-in ones.
_CLASS_NAMES: tuple[tuple[str, str], ...] = (
    ("CancelledError", "cancelled"),  # asyncio, and concurrent.futures
    ("GeneratorExit", "cancelled"),  # a stream closed before its end
    ("ContextWindowExceededError", "context_length"),  # litellm
    ("ContentPolicyViolationError", "content_filter"),  # litellm
    ("APITimeoutError", "timeout"),  # openai, anthropic
    ("Timeout", "timeout"),  # litellm, requests
    ("TimeoutException", "timeout"),  # httpx
    ("ServerTimeoutError", "timeout"),  # aiohttp
    ("TimeoutError", "timeout"),  # built-in, asyncio
    ("APIConnectionError", "connection"),  # openai, anthropic, litellm
    ("TransportError", "connection"),  # httpx (its timeouts matched above)
    ("ClientConnectionError", "connection"),  # aiohttp
    ("ConnectionError", "connection"),  # built-in
)

#: Error-body types and codes (OpenAI's ``type``/``code``, Anthropic's
#: ``error.type``, Google's ``status``), for errors a stream reports after its
#: HTTP status (200) was sent, and to tell a 400's kind.
_BODY_NAMES: Mapping[str, str] = {
    "context_length_exceeded": "context_length",
    "string_above_max_length": "context_length",
    "content_filter": "content_filter",
    "content_policy_violation": "content_filter",
    "rate_limit_exceeded": "rate_limit",
    "rate_limit_error": "rate_limit",
    "insufficient_quota": "rate_limit",
    "RESOURCE_EXHAUSTED": "rate_limit",
    "server_error": "server_error",
    "api_error": "server_error",
    "overloaded_error": "server_error",
    "INTERNAL": "server_error",
    "UNAVAILABLE": "server_error",
    "DEADLINE_EXCEEDED": "timeout",
    "timeout_error": "timeout",
    "invalid_request_error": "bad_request",
    "request_too_large": "bad_request",
    "INVALID_ARGUMENT": "bad_request",
    "FAILED_PRECONDITION": "bad_request",
    "authentication_error": "auth",
    "permission_error": "auth",
    "invalid_api_key": "auth",
    "UNAUTHENTICATED": "auth",
    "PERMISSION_DENIED": "auth",
    "not_found_error": "not_found",
    "model_not_found": "not_found",
    "NOT_FOUND": "not_found",
    "CANCELLED": "cancelled",
}

#: What a message says when a prompt did not fit the model's context: each
#: provider's wording (OpenAI, Anthropic, Google's Gemini API).
_CONTEXT_LENGTH_WORDS = (
    "maximum context length",
    "prompt is too long",
    "exceeds the maximum number of tokens",
    "context window",
)


#: The error type of each HTTP status that has its own; any other 5xx status
#: is a ``server_error`` (Anthropic's 529 overloaded among them), the rest ``other``.
_STATUS_TYPES: Mapping[int, str] = {
    400: "bad_request",
    401: "auth",
    403: "auth",
    404: "not_found",
    408: "timeout",
    413: "bad_request",
    422: "bad_request",
    429: "rate_limit",
    499: "cancelled",
    504: "timeout",
}


def _status_type(status: int) -> str:
    """The error type of an HTTP status."""
    if status in _STATUS_TYPES:
        return _STATUS_TYPES[status]
    return "server_error" if 500 <= status <= 599 else "other"


def _http_status(error: BaseException) -> int | None:
    """The HTTP status an SDK's exception carries, if any: ``status_code``
    (openai, anthropic, litellm), or ``code`` when it is an int (google-genai)."""
    for name in ("status_code", "code"):
        value = getattr(error, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


def _body_names(error: BaseException) -> list[str]:
    """The type, code and status fields of an error's body and of the
    exception itself, in the order they are told apart."""
    found: list[str] = []
    for source in (getattr(error, "body", None), getattr(error, "details", None)):
        if isinstance(source, Mapping):
            inner = source.get("error")
            for part in (inner, source) if isinstance(inner, Mapping) else (source,):
                for key in ("code", "type", "status"):
                    value = part.get(key)
                    if isinstance(value, str):
                        found.append(value)
    for name in ("code", "type", "status"):
        value = getattr(error, name, None)
        if isinstance(value, str):
            found.append(value)
    return found


def _says_context_length(error: BaseException) -> bool:
    try:
        text = str(error).lower()
    except Exception:  # an exception whose __str__ fails is not ours to break on
        return False
    return any(words in text for words in _CONTEXT_LENGTH_WORDS)


def error_type_of(error: BaseException) -> str:
    """The ``error_type`` of an exception an LLM call raised.

    One of ``ERROR_TYPES``: ``"cancelled"`` for ``asyncio.CancelledError`` and
    a closed stream; then the SDKs' classes by name (timeouts before
    connection errors, as the SDKs' timeouts are connection errors too);
    then the error body's ``code``/``type``/``status`` when it names a kind
    (a 400 whose code is ``context_length_exceeded``, an error event in a
    stream); then the HTTP status; ``"other"`` for anything else. Never
    raises. docs/errors.md has the tables it follows.

    Example::

        try:
            client.chat.completions.create(model="gpt-4o", messages=messages)
        except openai.RateLimitError as error:
            assert error_type_of(error) == "rate_limit"
    """
    try:
        return _classified(error)
    except Exception:  # an exception object with hostile attributes
        return "other"


def _classified(error: BaseException) -> str:
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return "cancelled"
    names = {kind.__name__ for kind in type(error).__mro__}
    status = _http_status(error)
    for name, error_type in _CLASS_NAMES:
        # An SDK's status error is never a timeout or connection error of its
        # own: those classes are matched only for errors without a status.
        if name in names and (status is None or error_type in ("context_length", "content_filter")):
            return error_type
    body = [_BODY_NAMES[name] for name in _body_names(error) if name in _BODY_NAMES]
    for precise in ("context_length", "content_filter"):
        if precise in body:
            return precise
    if status in (None, 200, 400, 413) and _says_context_length(error):
        return "context_length"
    if status is not None and status != 200:
        return _status_type(status)
    if body:
        return body[0]
    return "other"


def error_type_of_event(event: Any) -> str:
    """The ``error_type`` of an error a stream reported as an event rather
    than raised (OpenAI Responses' ``error`` event): by its ``code``."""
    code = getattr(event, "code", None)
    if isinstance(code, str) and code in _BODY_NAMES:
        return _BODY_NAMES[code]
    return "other"
