"""PrometheusExporter: a /metrics HTTP endpoint in a background thread."""

from __future__ import annotations

import atexit
import base64
import binascii
import errno
import hashlib
import hmac
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import prometheus_client
from prometheus_client.registry import CollectorRegistry

from gateway_metrics._net import cut, positive_seconds
from gateway_metrics._serving import WsgiApp, exposition, make_wsgi_app

#: Seconds a connection may take from accept to the last byte of its answer:
#: Prometheus's default scrape timeout, after which the scraper has given up.
DEFAULT_TIMEOUT_S = 10.0
#: Seconds between the accept loop's checks of connection deadlines.
_POLL_INTERVAL_S = 0.05
#: Connections served at once; past it the one waiting longest for its
#: request is closed to make room (see ``_Server.process_request``).
DEFAULT_MAX_CONNECTIONS = 64


class _QuietHandler(WSGIRequestHandler):
    """Serves one request without logging it to stderr; marks when its request is read."""

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        if parsed:
            cast("_Server", self.server).request_read(self.connection)
        return parsed

    def log_message(self, format: str, *args: Any) -> None:
        """Logs nothing."""


class _Connection:
    """An accepted connection: its socket, its deadline, whether its request is in."""

    __slots__ = ("accepted", "deadline", "request_read", "socket", "thread")

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        self.socket = sock
        self.accepted = time.monotonic()
        self.deadline = self.accepted + timeout_s
        self.request_read = False
        self.thread: threading.Thread | None = None

    def cut(self) -> None:
        """Ends the connection now: the handler's next read or write fails."""
        cut(self.socket)


class _Server(WSGIServer):
    """A WSGI server with a thread per connection, each bounded in time and in number.

    Every connection must be answered within ``timeout_s`` of its accept (TLS
    handshake, request and answer together): a client that does not talk, or
    trickles, is cut off at that deadline, so it holds no thread or
    descriptor beyond it. At most ``max_connections`` are served at once;
    when another arrives, the one that has waited longest without sending
    its request is cut to make room (a scraper sends its request at once,
    an idle client never does), or the newcomer is closed when every slot
    is answering. ``close_connections`` cuts every connection, so nothing is
    answered after ``PrometheusExporter.stop()`` returns.
    """

    # The kernel caps this at net.core.somaxconn: bursts of scrapes queue
    # instead of waiting for a SYN retransmit.
    request_queue_size = socket.SOMAXCONN

    def __init__(
        self,
        address: tuple[str, int],
        family: int,
        timeout_s: float,
        max_connections: int,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.address_family = family
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._connections: dict[socket.socket, _Connection] = {}
        self._guard = threading.Lock()
        super().__init__(address, _QuietHandler)
        if tls is not None:
            # The handshake runs in each connection's own thread, under its
            # deadline, so a client that stalls it holds up nothing else.
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors: the pending connection stays readable,
                # so without a pause the accept loop would spin on it.
                time.sleep(0.05)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        sock = cast(socket.socket, request)
        sock.settimeout(self.timeout_s)
        connection = _Connection(sock, self.timeout_s)
        with self._guard:
            if len(self._connections) >= self.max_connections:
                waiting = [c for c in self._connections.values() if not c.request_read]
                if not waiting:
                    self.shutdown_request(sock)
                    return
                victim = min(waiting, key=lambda c: c.accepted)
                # Out of the count at once: its thread ends as soon as it
                # sees the connection cut.
                del self._connections[victim.socket]
                victim.cut()
            self._connections[sock] = connection
            thread = threading.Thread(
                target=self._serve,
                args=(connection, client_address),
                name="gateway-metrics-exporter-connection",
                daemon=True,
            )
            connection.thread = thread
        thread.start()

    def _serve(self, connection: _Connection, client_address: Any) -> None:
        try:
            self.finish_request(connection.socket, client_address)
        except Exception:
            self.handle_error(connection.socket, client_address)
        finally:
            with self._guard:
                self._connections.pop(connection.socket, None)
            self.shutdown_request(connection.socket)

    def request_read(self, sock: socket.socket) -> None:
        """Notes that ``sock``'s request has arrived: it is no longer a candidate to cut."""
        with self._guard:
            connection = self._connections.get(sock)
            if connection is not None:
                connection.request_read = True

    def service_actions(self) -> None:
        """Run by the accept loop between polls: cuts connections past their deadline."""
        now = time.monotonic()
        with self._guard:
            late = [c for c in self._connections.values() if c.deadline <= now]
        for connection in late:
            connection.cut()

    def close_connections(self, wait_s: float) -> None:
        """Cuts every connection and waits up to ``wait_s`` for their threads to end."""
        with self._guard:
            connections = list(self._connections.values())
        for connection in connections:
            connection.cut()
        deadline = time.monotonic() + wait_s
        for connection in connections:
            if connection.thread is not None:
                connection.thread.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that fail the TLS handshake, hang up or are cut off are not errors."""
        if not isinstance(sys.exc_info()[1], OSError):
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

    Clients are bounded: each connection must be answered within
    ``timeout_s`` of being accepted (TLS handshake, request and answer; 10 s,
    Prometheus's default scrape timeout) or it is cut off, and at most
    ``max_connections`` are served at once. A client that connects and says
    nothing holds a thread and a descriptor for ``timeout_s`` at most, and is
    the first to be cut when a scraper needs its place.

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
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
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
            for name, path in (("certfile", certfile), ("keyfile", keyfile)):
                try:
                    with open(path, "rb"):
                        pass
                except OSError as error:  # ssl's own error names neither file
                    raise type(error)(error.errno, f"{name}: {error.strerror}", path) from None
            try:
                self._tls.load_cert_chain(certfile, keyfile)
            except ssl.SSLError as error:
                raise ValueError(
                    f"certfile {certfile!r} and keyfile {keyfile!r} are not a PEM "
                    f"certificate chain and its private key: {error.reason or error}"
                ) from None
        if basic_auth is not None:
            if not isinstance(basic_auth, Mapping) or not basic_auth:
                raise TypeError("basic_auth must be a non-empty mapping of user name to password")
            for user, password in basic_auth.items():
                if not isinstance(user, str) or not isinstance(password, str):
                    raise TypeError("basic_auth user names and passwords must be str")
                if ":" in user:
                    raise ValueError(f"basic_auth user name {user!r} must not contain ':'")
        self._basic_auth = None if basic_auth is None else dict(basic_auth)
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError(f"max_connections must be an int, not {type(max_connections).__name__}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self._timeout_s = positive_seconds(timeout_s, "timeout_s")
        self._max_connections = max_connections
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
            try:
                server = _Server(
                    (self._addr, self._port),
                    family,
                    self._timeout_s,
                    self._max_connections,
                    self._tls,
                )
            except OSError as error:  # the address in use, say: name it
                host = f"[{self._addr}]" if ":" in self._addr else self._addr
                raise type(error)(
                    error.errno, f"cannot listen on {host}:{self._port}: {error.strerror}"
                ) from None
            server.set_app(app)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_S},
                name="gateway-metrics-exporter",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
            # Stopped before the interpreter finalizes, so that no scrape is
            # being answered while it does.
            atexit.register(self.stop)

    def stop(self) -> None:
        """Stops serving and frees the port; safe to call when not running.

        When it returns the port is free and no connection is answered any
        more: connections still open are cut, their threads given up to
        ``timeout_s`` to end. A running exporter is stopped at interpreter exit.
        """
        # Held throughout, so that a start() racing this stop() binds only
        # once the port is free.
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return
            atexit.unregister(self.stop)
            server.shutdown()
            server.server_close()
            server.close_connections(self._timeout_s)
            if thread is not None:
                thread.join(self._timeout_s)

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
        return b"".join(exposition(self._registry, None, None, {})[2]).decode("utf-8")

    def __enter__(self) -> PrometheusExporter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
