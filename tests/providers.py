"""A local server that answers as OpenAI, Anthropic and Google document their APIs.

The real ``openai``, ``anthropic``, ``google-genai`` and ``litellm`` clients
are pointed at it (``base_url`` on 127.0.0.1) by ``tests/test_sdks.py``. It
answers JSON and server-sent events in each provider's documented shapes:

- OpenAI Chat Completions, ``POST /v1/chat/completions``
  (https://platform.openai.com/docs/api-reference/chat): a final chunk with
  ``choices: []`` and the usage when ``stream_options.include_usage`` is set;
  tool calls streamed as deltas whose first one carries the name.
- OpenAI Responses, ``POST /v1/responses``
  (https://platform.openai.com/docs/api-reference/responses): the usage in
  ``response.completed``.
- Anthropic Messages, ``POST /v1/messages``
  (https://docs.anthropic.com/en/api/messages-streaming): the input side in
  ``message_start``, cumulative ``output_tokens`` in ``message_delta`` whose
  input-side fields are null.
- Google Gemini, ``POST /v1beta/models/{model}:generateContent`` and
  ``:streamGenerateContent?alt=sse``
  (https://ai.google.dev/api/generate-content; the API version in the path is
  the one the client asks for): ``usageMetadata`` on every
  chunk, the totals on the last.

What it answers is chosen by the model name: ``-tools`` adds two tool calls
(``search`` and ``calculator``), ``-plain`` leaves out the cache and reasoning
fields, ``-midstream`` ends a stream with an error event after its first
chunk, ``-slow`` waits 0.2 s between stream chunks (at most 50), ``-long``
streams 1,000 content chunks (OpenAI Chat), ``-hang``
waits 2 s before answering, and ``error-<form>`` answers with one of
``ERROR_FORMS``: the status and error body the provider documents for it
(https://platform.openai.com/docs/guides/error-codes,
https://docs.anthropic.com/en/api/errors,
https://ai.google.dev/gemini-api/docs/troubleshooting). OpenAI's embeddings
(``POST /v1/embeddings``) and Google's (``:batchEmbedContents``) answer too.
The counts each provider reports are the constants below.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: What each provider reports, in its own fields, for a full answer.
OPENAI_CHAT_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 100},
    "completion_tokens_details": {"reasoning_tokens": 120},
}
OPENAI_RESPONSES_USAGE = {
    "input_tokens": 900,
    "input_tokens_details": {"cached_tokens": 800, "cache_write_tokens": 50},
    "output_tokens": 50,
    "output_tokens_details": {"reasoning_tokens": 10},
    "total_tokens": 950,
}
ANTHROPIC_USAGE = {
    "input_tokens": 20,
    "cache_read_input_tokens": 500,
    "cache_creation_input_tokens": 80,
    "output_tokens": 70,
    "output_tokens_details": {"thinking_tokens": 30},
}
GOOGLE_USAGE = {
    "promptTokenCount": 400,
    "cachedContentTokenCount": 100,
    "candidatesTokenCount": 60,
    "thoughtsTokenCount": 40,
    "toolUsePromptTokenCount": 25,
    "totalTokenCount": 525,
}
#: The content chunks of an OpenAI Chat stream of a ``-long`` model.
LONG_STREAM_WORDS = ("word ",) * 1000
#: The prompt tokens of an OpenAI embeddings answer.
EMBEDDING_TOKENS = 8
#: The same counts in this package's semantics.
EXPECTED = {
    "openai-chat": {
        "input": 1200,
        "output": 300,
        "cache_read": 1000,
        "cache_write": 100,
        "reasoning": 120,
    },
    "openai-responses": {
        "input": 900,
        "output": 50,
        "cache_read": 800,
        "cache_write": 50,
        "reasoning": 10,
    },
    "anthropic": {
        "input": 600,
        "output": 70,
        "cache_read": 500,
        "cache_write": 80,
        "reasoning": 30,
    },
    "google": {"input": 425, "output": 100, "cache_read": 100, "cache_write": 0, "reasoning": 40},
}
#: The plain variants' counts (no cache or reasoning fields reported).
EXPECTED_PLAIN = {
    "openai-chat": {"input": 1200, "output": 300},
    "openai-responses": {"input": 900, "output": 50},
    "anthropic": {"input": 20, "output": 70},
    "google": {"input": 400, "output": 60},
}
TOOLS = ("search", "calculator")


def _openai_error(message: str, kind: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _anthropic_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _google_error(status: int, state: str, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": state}}


_TOO_LONG = {
    "openai": "This model's maximum context length is 128000 tokens. However, your messages "
    "resulted in 130000 tokens. Please reduce the length of the messages.",
    "anthropic": "prompt is too long: 210000 tokens > 200000 maximum",
    "google": "The input token count (1200000) exceeds the maximum number of tokens allowed "
    "(1048576).",
}

#: Each error form (``error-<form>`` as the model): by provider, the status and
#: body it answers with, and the error type it must be recorded as. A provider
#: that has no such error leaves it out.
ERROR_FORMS: dict[str, tuple[str, dict[str, tuple[int, dict[str, Any]]]]] = {
    "400": (
        "bad_request",
        {
            "openai": (400, _openai_error("Invalid value", "invalid_request_error", None)),
            "anthropic": (400, _anthropic_error("invalid_request_error", "Invalid value")),
            "google": (400, _google_error(400, "INVALID_ARGUMENT", "Invalid value")),
        },
    ),
    "context": (
        "context_length",
        {
            "openai": (
                400,
                _openai_error(
                    _TOO_LONG["openai"], "invalid_request_error", "context_length_exceeded"
                ),
            ),
            "anthropic": (400, _anthropic_error("invalid_request_error", _TOO_LONG["anthropic"])),
            "google": (400, _google_error(400, "INVALID_ARGUMENT", _TOO_LONG["google"])),
        },
    ),
    "filter": (
        "content_filter",
        {
            # Azure OpenAI's answer when its content filter stops a prompt.
            "openai": (
                400,
                _openai_error(
                    "The response was filtered due to the prompt triggering Azure OpenAI's "
                    "content management policy.",
                    None,
                    "content_filter",
                ),
            ),
        },
    ),
    "401": (
        "auth",
        {
            "openai": (
                401,
                _openai_error("Incorrect API key", "invalid_request_error", "invalid_api_key"),
            ),
            "anthropic": (401, _anthropic_error("authentication_error", "invalid x-api-key")),
            "google": (401, _google_error(401, "UNAUTHENTICATED", "API key not valid")),
        },
    ),
    "403": (
        "auth",
        {
            "openai": (
                403,
                _openai_error(
                    "Country not supported",
                    "invalid_request_error",
                    "unsupported_country_region_territory",
                ),
            ),
            "anthropic": (403, _anthropic_error("permission_error", "not allowed")),
            "google": (403, _google_error(403, "PERMISSION_DENIED", "not allowed")),
        },
    ),
    "404": (
        "not_found",
        {
            "openai": (
                404,
                _openai_error("No such model", "invalid_request_error", "model_not_found"),
            ),
            "anthropic": (404, _anthropic_error("not_found_error", "model: no such model")),
            "google": (404, _google_error(404, "NOT_FOUND", "models/x is not found")),
        },
    ),
    "413": (
        "bad_request",
        {
            "anthropic": (
                413,
                _anthropic_error("request_too_large", "Request exceeds the maximum size"),
            )
        },
    ),
    "429": (
        "rate_limit",
        {
            "openai": (
                429,
                _openai_error("test 429", "rate_limit_exceeded", "rate_limit_exceeded"),
            ),
            "anthropic": (429, _anthropic_error("rate_limit_error", "test 429")),
            "google": (429, _google_error(429, "RESOURCE_EXHAUSTED", "test 429")),
        },
    ),
    "500": (
        "server_error",
        {
            "openai": (500, _openai_error("test 500", "server_error", "server_error")),
            "anthropic": (500, _anthropic_error("api_error", "test 500")),
            "google": (500, _google_error(500, "INTERNAL", "test 500")),
        },
    ),
    "503": (
        "server_error",
        {
            "openai": (
                503,
                _openai_error("The engine is currently overloaded", "server_error", None),
            ),
            "google": (503, _google_error(503, "UNAVAILABLE", "The model is overloaded")),
        },
    ),
    "504": (
        "timeout",
        {"google": (504, _google_error(504, "DEADLINE_EXCEEDED", "Deadline exceeded"))},
    ),
    "529": (
        "server_error",
        {"anthropic": (529, _anthropic_error("overloaded_error", "Overloaded"))},
    ),
}


def plain(usage: dict[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
    return {key: value for key, value in usage.items() if key in keep}


class ProviderServer:
    """The server, on 127.0.0.1 and a free port, in a daemon thread; a context manager."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.provider = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ProviderServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # a stream ends when the connection closes

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.provider.requests.append((self.path, body))  # type: ignore[attr-defined]
        path = self.path.split("?")[0]
        google = re.fullmatch(
            r"/v1[a-z0-9]*/models/([^/:]+):(generateContent|streamGenerateContent)", path
        )
        model = str(body.get("model") or (google.group(1) if google else ""))
        if "-hang" in model:
            time.sleep(2.0)
        if path.endswith("/embeddings"):
            self.openai_embeddings(body)
            return
        embed = re.fullmatch(
            r"/v1[a-z0-9]*/models/([^/:]+):(batchEmbedContents|embedContent)", path
        )
        if embed:
            self.google_embed(embed.group(1), embed.group(2) == "batchEmbedContents")
            return
        if path.endswith("/chat/completions"):
            self.openai_chat(body)
        elif path.endswith("/responses"):
            self.openai_responses(body)
        elif path.endswith("/messages"):
            self.anthropic(body)
        elif google:
            self.google(google.group(1), body, google.group(2) == "streamGenerateContent")
        else:
            self.json(404, {"error": {"message": f"no route {path}"}})

    # ------------------------------------------------------------------ helpers

    def json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, events: Iterator[tuple[str | None, dict[str, Any] | str]], model: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for count, (event, data) in enumerate(events):
            if "-slow" in model and count:
                if count > 50:
                    return
                time.sleep(0.2)
            text = data if isinstance(data, str) else json.dumps(data)
            head = f"event: {event}\n" if event else ""
            try:
                self.wfile.write(f"{head}data: {text}\n\n".encode())
                self.wfile.flush()
            except OSError:
                return  # the client went away (a cancelled stream)

    def refused(self, model: str, provider: str) -> bool:
        """Answers ``model`` ``error-<form>`` with the form's error, if the provider has it."""
        match = re.fullmatch(r"error-([a-z0-9]+)", model)
        if match:
            _error_type, answers = ERROR_FORMS[match.group(1)]
            status, body = answers[provider]
            self.json(status, body)
        return bool(match)

    def openai_embeddings(self, body: dict[str, Any]) -> None:
        model = body["model"]
        if self.refused(model, "openai"):
            return
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        self.json(
            200,
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": index, "embedding": [0.25, -0.5]}
                    for index in range(len(inputs))
                ],
                "model": model,
                "usage": {"prompt_tokens": EMBEDDING_TOKENS, "total_tokens": EMBEDDING_TOKENS},
            },
        )

    def google_embed(self, model: str, batch: bool) -> None:
        if self.refused(model, "google"):
            return
        embedding = {"values": [0.25, -0.5]}
        self.json(200, {"embeddings": [embedding]} if batch else {"embedding": embedding})

    # ------------------------------------------------------------------ OpenAI

    def openai_chat(self, body: dict[str, Any]) -> None:
        model = body["model"]

        if self.refused(model, "openai"):
            return
        usage = OPENAI_CHAT_USAGE
        if "-plain" in model:
            usage = plain(usage, ("prompt_tokens", "completion_tokens", "total_tokens"))
        tools = (
            [
                {
                    "id": f"call_{index}",
                    "type": "function",
                    "function": {"name": name, "arguments": '{"q": "x"}'},
                }
                for index, name in enumerate(TOOLS)
            ]
            if "-tools" in model
            else None
        )
        base = {"id": "chatcmpl-1", "created": 1700000000, "model": model}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": None if tools else "Hi."}
            if tools:
                message["tool_calls"] = tools
            self.json(
                200,
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": "tool_calls" if tools else "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": usage,
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            payload = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
            }
            if include_usage:
                payload["usage"] = None
            return payload

        def events() -> Iterator[tuple[str | None, dict[str, Any] | str]]:
            yield None, chunk({"role": "assistant", "content": ""})
            if "-midstream" in model:
                yield None, {"error": {"message": "overloaded mid-stream", "type": "server_error"}}
                return
            if tools:
                for index, call in enumerate(tools):
                    first = {
                        "index": index,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    }
                    yield None, chunk({"tool_calls": [first]})
                    for piece in ('{"q": ', '"x"}'):
                        yield (
                            None,
                            chunk(
                                {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                            ),
                        )
            else:
                words = LONG_STREAM_WORDS if "-long" in model else ("Hel", "lo", ".")
                for word in words:
                    yield None, chunk({"content": word})
            yield None, chunk({}, "tool_calls" if tools else "stop")
            if include_usage:
                yield (
                    None,
                    {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage},
                )
            yield None, "[DONE]"

        self.stream(events(), model)

    def openai_responses(self, body: dict[str, Any]) -> None:
        model = body["model"]

        if self.refused(model, "openai"):
            return
        usage = OPENAI_RESPONSES_USAGE
        if "-plain" in model:
            usage = {
                **plain(usage, ("input_tokens", "output_tokens", "total_tokens")),
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            }
        output: list[dict[str, Any]] = [
            {"id": "rs_1", "type": "reasoning", "summary": []},
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Hi.", "annotations": []}],
            },
        ]
        if "-tools" in model:
            output += [
                {
                    "id": f"fc_{index}",
                    "type": "function_call",
                    "call_id": f"call_{index}",
                    "name": name,
                    "arguments": "{}",
                    "status": "completed",
                }
                for index, name in enumerate(TOOLS)
            ]
        response = {
            "id": "resp_1",
            "object": "response",
            "created_at": 1700000000,
            "model": model,
            "status": "completed",
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
        }
        if not body.get("stream"):
            self.json(200, response)
            return

        def events() -> Iterator[tuple[str | None, dict[str, Any] | str]]:
            started = {**response, "status": "in_progress", "output": [], "usage": None}
            yield (
                "response.created",
                {"type": "response.created", "sequence_number": 0, "response": started},
            )
            if "-midstream" in model:
                yield (
                    "error",
                    {
                        "type": "error",
                        "sequence_number": 1,
                        "code": "server_error",
                        "message": "overloaded mid-stream",
                        "param": None,
                    },
                )
                return
            for index, item in enumerate(output):
                yield (
                    "response.output_item.done",
                    {
                        "type": "response.output_item.done",
                        "sequence_number": 1 + index,
                        "output_index": index,
                        "item": item,
                    },
                )
            yield (
                "response.completed",
                {
                    "type": "response.completed",
                    "sequence_number": 1 + len(output),
                    "response": response,
                },
            )

        self.stream(events(), model)

    # --------------------------------------------------------------- Anthropic

    def anthropic(self, body: dict[str, Any]) -> None:
        model = body["model"]

        if self.refused(model, "anthropic"):
            return
        usage = ANTHROPIC_USAGE
        if "-plain" in model:
            usage = plain(usage, ("input_tokens", "output_tokens"))
        content: list[dict[str, Any]] = [
            {"type": "thinking", "thinking": "Let me see.", "signature": "sig"},
            {"type": "text", "text": "Hi."},
        ]
        if "-tools" in model:
            content += [
                {"type": "tool_use", "id": f"toolu_{index}", "name": name, "input": {"q": "x"}}
                for index, name in enumerate(TOOLS)
            ]
        message = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": "tool_use" if "-tools" in model else "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            self.json(200, message)
            return

        def events() -> Iterator[tuple[str | None, dict[str, Any] | str]]:
            start_usage = {**usage, "output_tokens": 1}
            start_usage.pop("output_tokens_details", None)
            yield (
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        **message,
                        "content": [],
                        "stop_reason": None,
                        "usage": start_usage,
                    },
                },
            )
            if "-midstream" in model:
                yield (
                    "error",
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                    },
                )
                return
            for index, block in enumerate(content):
                if block["type"] == "tool_use":
                    yield (
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {**block, "input": {}},
                        },
                    )
                    yield (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": '{"q": "x"}'},
                        },
                    )
                elif block["type"] == "thinking":
                    yield (
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                        },
                    )
                    yield (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "thinking_delta", "thinking": block["thinking"]},
                        },
                    )
                    yield (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "signature_delta", "signature": "sig"},
                        },
                    )
                else:
                    yield (
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {"type": "text", "text": ""},
                        },
                    )
                    yield (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": block["text"]},
                        },
                    )
                yield "content_block_stop", {"type": "content_block_stop", "index": index}
            # Cumulative output; the input side is null here, as documented.
            delta_usage: dict[str, Any] = {
                "input_tokens": None,
                "cache_read_input_tokens": None,
                "cache_creation_input_tokens": None,
                "output_tokens": usage["output_tokens"],
            }
            if "output_tokens_details" in usage:
                delta_usage["output_tokens_details"] = usage["output_tokens_details"]
            yield (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    "usage": delta_usage,
                },
            )
            yield "message_stop", {"type": "message_stop"}

        self.stream(events(), model)

    # ------------------------------------------------------------------ Google

    def google(self, model: str, body: dict[str, Any], streamed: bool) -> None:
        if self.refused(model, "google"):
            return
        usage = GOOGLE_USAGE
        if "-plain" in model:
            usage = plain(usage, ("promptTokenCount", "candidatesTokenCount", "totalTokenCount"))
        parts: list[dict[str, Any]] = [{"text": "Let me see.", "thought": True}, {"text": "Hi."}]
        if "-tools" in model:
            parts += [{"functionCall": {"name": name, "args": {"q": "x"}}} for name in TOOLS]

        def answer(
            these: list[dict[str, Any]], usage_metadata: dict[str, Any], done: bool
        ) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": these}, "index": 0}
            if done:
                candidate["finishReason"] = "STOP"
            return {
                "candidates": [candidate],
                "usageMetadata": usage_metadata,
                "modelVersion": model,
            }

        if not streamed:
            self.json(200, answer(parts, usage, True))
            return

        def events() -> Iterator[tuple[str | None, dict[str, Any] | str]]:
            running = {
                "promptTokenCount": usage["promptTokenCount"],
                "totalTokenCount": usage["promptTokenCount"],
            }
            yield None, answer(parts[:1], running, False)
            if "-midstream" in model:
                yield (
                    None,
                    {
                        "error": {
                            "code": 503,
                            "message": "overloaded mid-stream",
                            "status": "UNAVAILABLE",
                        }
                    },
                )
                return
            yield None, answer(parts[1:], usage, True)

        self.stream(events(), model)
