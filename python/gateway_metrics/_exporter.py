"""PrometheusExporter: a /metrics HTTP endpoint in a background thread."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast
from wsgiref.simple_server import WSGIRequestHandler, make_server

import prometheus_client
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import CollectorRegistry

from gateway_metrics._serving import WsgiApp, exposition, make_wsgi_app


class _QuietHandler(WSGIRequestHandler):
    """Serves requests without logging each one to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        """Logs nothing."""


class _Server(ThreadingWSGIServer):
    """A thread per request; clients that fail the TLS handshake or hang up are not errors."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def _credential_digest(user: bytes, password: bytes) -> bytes:
    return hashlib.sha256(user + b":" + password).digest()


def _with_basic_auth(app: WsgiApp, credentials: Mapping[str, str]) -> WsgiApp:
    """``app`` behind HTTP basic authentication; anything else gets 401 and no metrics."""
    expected = [
        _credential_digest(user.encode("utf-8"), password.encode("utf-8"))
        for user, password in credentials.items()
    ]

    def authorized(header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, separator, password = base64.b64decode(encoded, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        # Digests of equal length, each known pair compared in constant time:
        # neither which users exist nor how much of a password matched shows
        # in the response time.
        offered = _credential_digest(user, password)
        matched = False
        for known in expected:
            matched |= hmac.compare_digest(offered, known)
        return matched and bool(separator)

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if authorized(environ.get("HTTP_AUTHORIZATION", "")):
            return app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [
                ("WWW-Authenticate", 'Basic realm="metrics", charset="UTF-8"'),
                ("Content-Type", "text/plain; charset=utf-8"),
            ],
        )
        return [b"401 Unauthorized\n"]

    return guarded


class PrometheusExporter:
    """Serves a registry on ``http(s)://<addr>:<port>/metrics`` from a daemon thread.

    Use it when the process has no web server of its own for Prometheus to
    scrape. The middleware's families are rendered natively, the registry's
    other collectors by ``prometheus_client``, with ``prometheus_client``'s
    content negotiation (text format by default, OpenMetrics when the scraper
    asks for it, gzip when accepted). ``port=0`` picks a free port; ``port``
    tells which once started.

    With ``certfile`` and ``keyfile`` it serves HTTPS only. With ``basic_auth``
    (user name to password) every request must carry one of those credentials;
    any other gets ``401 Unauthorized`` with a ``WWW-Authenticate`` header and
    no metrics.

    Example::

        exporter = PrometheusExporter(port=8000, addr="127.0.0.1",
                                      certfile="tls.crt", keyfile="tls.key",
                                      basic_auth={"prometheus": "s3cret"})
        exporter.start()
        ...
        exporter.stop()
    """

    def __init__(
        self,
        port: int = 8000,
        *,
        registry: CollectorRegistry | None = None,
        addr: str = "0.0.0.0",
        certfile: str | None = None,
        keyfile: str | None = None,
        basic_auth: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"port must be an int, not {type(port).__name__}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port}")
        if not isinstance(addr, str):
            raise TypeError(f"addr must be str, not {type(addr).__name__}")
        if (certfile is None) != (keyfile is None):
            raise ValueError("certfile and keyfile must be given together")
        self._tls: ssl.SSLContext | None = None
        if certfile is not None and keyfile is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
            self._tls.load_cert_chain(certfile, keyfile)
        if basic_auth is not None:
            if not isinstance(basic_auth, Mapping) or not basic_auth:
                raise TypeError("basic_auth must be a non-empty mapping of user name to password")
            for user, password in basic_auth.items():
                if not isinstance(user, str) or not isinstance(password, str):
                    raise TypeError("basic_auth user names and passwords must be str")
                if ":" in user:
                    raise ValueError(f"basic_auth user name {user!r} must not contain ':'")
        self._basic_auth = None if basic_auth is None else dict(basic_auth)
        self._port = port
        self._addr = addr
        self._registry = prometheus_client.REGISTRY if registry is None else registry
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Starts serving; a second call while running does nothing."""
        with self._lock:
            if self._server is not None:
                return
            app = make_wsgi_app(self._registry)
            if self._basic_auth is not None:
                app = _with_basic_auth(app, self._basic_auth)
            family = socket.getaddrinfo(
                self._addr, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0][0]
            server_class = type("_BoundServer", (_Server,), {"address_family": family})
            server = cast(
                _Server,
                make_server(self._addr, self._port, app, server_class, handler_class=_QuietHandler),
            )
            if self._tls is not None:
                # The handshake runs in each request's own thread, so a client
                # that stalls it cannot hold up the accepting loop.
                server.socket = self._tls.wrap_socket(
                    server.socket, server_side=True, do_handshake_on_connect=False
                )
            thread = threading.Thread(
                target=server.serve_forever, name="gateway-metrics-exporter", daemon=True
            )
            thread.start()
            self._server, self._thread = server, thread

    def stop(self) -> None:
        """Stops serving and frees the port; safe to call when not running."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def port(self) -> int:
        """The port being served, or the configured one when not running."""
        with self._lock:
            if self._server is not None:
                return int(self._server.server_address[1])
        return self._port

    @property
    def addr(self) -> str:
        """The address the server binds to."""
        return self._addr

    @property
    def is_running(self) -> bool:
        """Whether the server is up."""
        with self._lock:
            return self._server is not None

    def generate_latest(self) -> str:
        """The whole registry in the Prometheus text format, as a scrape gets it, without HTTP."""
        return exposition(self._registry, None, None, {})[2].decode("utf-8")

    def __enter__(self) -> PrometheusExporter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
