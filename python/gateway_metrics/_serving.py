"""Native serving: WSGI and ASGI apps and the response they share.

A scrape through ``prometheus_client``'s own apps formats every sample of the
middleware in Python. These apps answer with the middleware's families rendered
natively, followed by every other collector of the registry rendered by
``prometheus_client``, with ``prometheus_client``'s content negotiation: the
text format 0.0.4 by default, OpenMetrics 1.0 when the scraper asks for it (as
Prometheus does), gzip when accepted. A scraper that prefers the delimited
protobuf format (Prometheus scraping native histograms) gets it, the other
collectors encoded by ``_protobuf``. Formats the native renderer does not
write, and ``?name[]=`` filtered scrapes, are answered by ``prometheus_client``
alone, exactly as its own apps answer them.
"""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import prometheus_client
from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    choose_encoder,
    gzip_accepted,
)
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_1_0
from prometheus_client.registry import CollectorRegistry

from gateway_metrics import _core, _protobuf
from gateway_metrics._middleware import RENDERED_NATIVELY, middleware_of
from gateway_metrics._protobuf import ALLOW_UTF8, accepts_protobuf

#: What the native renderer writes, by the content type ``prometheus_client``
#: negotiated: whether OpenMetrics, and whether the names are UTF-8 (the
#: scraper asked for ``escaping=allow-utf-8``) rather than underscore-escaped.
#: The text format 1.0.0 is 0.0.4 with UTF-8 names allowed.
_PLAIN_1_0_0 = "text/plain; version=1.0.0; charset=utf-8"
_NATIVE_FORMATS = {
    CONTENT_TYPE_PLAIN_0_0_4: (False, False),
    f"{_PLAIN_1_0_0}; escaping=underscores": (False, False),
    f"{_PLAIN_1_0_0}; escaping=allow-utf-8": (False, True),
    OPENMETRICS_1_0: (True, False),
    f"{OPENMETRICS_1_0}; escaping=underscores": (True, False),
    f"{OPENMETRICS_1_0}; escaping=allow-utf-8": (True, True),
}

# GATEWAY_METRICS_GZIP chooses the compressor of gzipped scrapes (the core's
# deflate unless it says zlib); a value it cannot take is said once, here.
_GZIP_SETTING_PROBLEM = _core.gzip_compressor()[1]
if _GZIP_SETTING_PROBLEM is not None:
    warnings.warn(_GZIP_SETTING_PROBLEM, RuntimeWarning, stacklevel=2)

#: A response's status, headers and body, the body in parts: our families'
#: megabytes are never copied into one `bytes` with the others' (the copy would
#: hold the GIL).
Response = tuple[str, list[tuple[str, str]], list[bytes]]


_VERSION = re.compile(r"""\s*version\s*=\s*"?([^";]*)"?\s*$""", re.I)


def _well_formed(media_range: str) -> bool:
    """Whether ``prometheus_client``'s negotiation can read ``media_range``: a
    ``version`` parameter, when there is one, is dotted digits."""
    for parameter in media_range.split(";")[1:]:
        version = _VERSION.match(parameter)
        if version and not re.fullmatch(r"\d+(\.\d+)*", version.group(1).strip()):
            return False
    return True


def _choose_encoder(accept_header: str) -> tuple[Callable[..., bytes], str]:
    """``prometheus_client``'s choice for ``accept_header``, with the media ranges
    it cannot read left out (it raises on ``version=1.0-rc1``): a malformed range
    is skipped, and a scrape is never a 500."""
    try:
        return choose_encoder(accept_header)
    except Exception:  # any failure of its parser falls back
        kept = ",".join(part for part in accept_header.split(",") if _well_formed(part))
        try:
            return choose_encoder(kept)
        except Exception:
            return choose_encoder("")


def exposition(
    registry: CollectorRegistry,
    accept_header: str | None,
    accept_encoding_header: str | None,
    params: dict[str, list[str]],
    disable_compression: bool = False,
) -> Response:
    """The status, headers and body of a scrape of ``registry``."""
    encoder, content_type = _choose_encoder(accept_header or "")
    compress = not disable_compression and gzip_accepted(accept_encoding_header or "")
    middleware = middleware_of(registry)
    native = _NATIVE_FORMATS.get(content_type)
    escaping = accepts_protobuf(accept_header or "")
    if "name[]" not in params and middleware is not None and escaping is not None:
        # The format that carries native histograms: ours natively, the others here.
        utf8 = escaping == ALLOW_UTF8
        ours = middleware._protobuf_exposition(utf8)
        token = RENDERED_NATIVELY.set(True)
        try:
            parts = [ours, _core.encode_collected(registry.collect(), utf8)]
        finally:
            RENDERED_NATIVELY.reset(token)
        content_type = _protobuf.CONTENT_TYPE
        if escaping:
            content_type += f"; escaping={ALLOW_UTF8 if utf8 else 'underscores'}"
    elif "name[]" in params:
        parts = [encoder(registry.restricted_registry(params["name[]"]))]
    elif middleware is None or native is None:
        parts = [encoder(registry)]
    else:
        token = RENDERED_NATIVELY.set(True)
        try:
            others = encoder(registry)
        finally:
            RENDERED_NATIVELY.reset(token)
        if compress:
            # Ours compressed where it is rendered: its megabytes of text never
            # become a `bytes`.
            body = middleware._exposition_gzip(*native, others)
            return "200 OK", [("Content-Type", content_type), ("Content-Encoding", "gzip")], [body]
        parts = [middleware._exposition(*native), others]
    headers = [("Content-Type", content_type)]
    if compress:
        parts = [_core.gzip_parts(parts)]
        headers.append(("Content-Encoding", "gzip"))
    return "200 OK", headers, [part for part in parts if part]


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def make_wsgi_app(
    registry: CollectorRegistry | None = None, disable_compression: bool = False
) -> WsgiApp:
    """A WSGI app serving ``registry`` with the middleware's families rendered natively.

    A drop-in for ``prometheus_client.make_wsgi_app`` (same arguments and
    answers, the global registry when ``registry`` is None), for Flask, Django
    or any WSGI server.

    Example::

        from werkzeug.middleware.dispatcher import DispatcherMiddleware
        from gateway_metrics import make_wsgi_app

        app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": make_wsgi_app()})
    """
    served = prometheus_client.REGISTRY if registry is None else registry

    def metrics_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        body: list[bytes]
        if method == "OPTIONS":
            status, headers, body = "200 OK", [("Allow", "OPTIONS,GET")], []
        elif method != "GET":
            status = "405 Method Not Allowed"
            headers = [("Allow", "OPTIONS,GET")]
            body = [f"# HTTP {status}: {method}; use OPTIONS or GET\n".encode()]
        elif environ.get("PATH_INFO") == "/favicon.ico":
            status, headers, body = "200 OK", [], []
        else:
            status, headers, body = exposition(
                served,
                environ.get("HTTP_ACCEPT"),
                environ.get("HTTP_ACCEPT_ENCODING"),
                parse_qs(environ.get("QUERY_STRING", "")),
                disable_compression,
            )
        start_response(status, headers)
        return body

    return metrics_app


AsgiApp = Callable[[dict[str, Any], Callable[..., Any], Callable[..., Any]], Any]


def make_asgi_app(
    registry: CollectorRegistry | None = None, disable_compression: bool = False
) -> AsgiApp:
    """An ASGI app serving ``registry`` with the middleware's families rendered natively.

    A drop-in for ``prometheus_client.make_asgi_app`` (same arguments and
    answers, the global registry when ``registry`` is None), for FastAPI,
    Starlette or any ASGI server.

    Example::

        from fastapi import FastAPI
        from gateway_metrics import make_asgi_app

        app = FastAPI()
        app.add_route("/metrics", make_asgi_app())   # /metrics itself, no redirect
    """
    served = prometheus_client.REGISTRY if registry is None else registry
    return _AsgiMetricsApp(served, disable_compression)


class _AsgiMetricsApp:
    """The app ``make_asgi_app`` returns: an object, not a function, so that
    Starlette's and FastAPI's ``add_route("/metrics", app)`` serve it as an
    ASGI app (a function there is taken for a request handler)."""

    def __init__(self, served: CollectorRegistry, disable_compression: bool) -> None:
        self._served = served
        self._disable_compression = disable_compression

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        served, disable_compression = self._served, self._disable_compression
        if scope.get("type") != "http":
            raise ValueError(f"the metrics app serves HTTP only, not {scope.get('type')!r}")
        headers = scope.get("headers") or []

        def header(wanted: str) -> str:
            return ",".join(
                value.decode("latin-1")
                for name, value in headers
                if name.decode("latin-1").lower() == wanted
            )

        # Rendering and compressing take milliseconds to seconds with many
        # label sets: in a worker thread, so that the loop serves meanwhile (the
        # native rendering and compression run without the GIL).
        status, response_headers, body = await asyncio.to_thread(
            exposition,
            served,
            header("accept"),
            header("accept-encoding"),
            parse_qs(scope.get("query_string", b"").decode("utf-8")),
            disable_compression,
        )
        message = await receive()
        if message.get("type") == "http.request":
            await send(
                {
                    "type": "http.response.start",
                    "status": int(status.split(" ")[0]),
                    "headers": [
                        (k.encode("latin-1"), v.encode("latin-1")) for k, v in response_headers
                    ],
                }
            )
            for index, part in enumerate(body):
                more = index < len(body) - 1
                await send({"type": "http.response.body", "body": part, "more_body": more})
            if not body:
                await send({"type": "http.response.body", "body": b""})
