"""Pushing a middleware's metrics to a receiver over HTTP: one request, or a
thread sending periodically. Remote write and OTLP export share it."""

from __future__ import annotations

import abc
import atexit
import base64
import http.client
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

from gateway_metrics._net import cut, positive_seconds

if TYPE_CHECKING:
    from gateway_metrics._core import MetricsStore

_LOGGER = logging.getLogger("gateway_metrics")
_Sender = TypeVar("_Sender", bound="PeriodicSender")


class PushError(OSError):
    """A push request that did not succeed.

    ``status`` is the HTTP status (None when no response came: refused
    connection, timeout); ``retryable`` says whether sending again may succeed
    (as the protocol says: 5xx, 429 and connection errors for remote write,
    429, 502, 503, 504 and connection errors for OTLP), or not (the receiver
    refuses this data).
    """

    def __init__(self, message: str, status: int | None, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


def _without_password(url: str) -> str:
    """``url`` with the password of its user part, if any, replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    return urllib.parse.urlunsplit(
        parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}")
    )


class Receiver(abc.ABC):
    """A validated receiver: where to send, with which headers; what a body is
    and which answers are worth retrying are the protocol's."""

    #: The protocol's name, for messages.
    protocol = "push"
    #: The error a failed request raises.
    error: type[PushError] = PushError

    def __init__(
        self,
        url: object,
        protocol_headers: Mapping[str, str],
        headers: object,
        basic_auth: object,
        timeout: object,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"url must be an http:// or https:// URL, got {_without_password(url)!r}"
            )
        try:
            parts.port  # noqa: B018 (urlsplit checks the port when asked for it)
        except ValueError:
            raise ValueError(
                f"url's port must be a number from 0 to 65535, got {_without_password(url)!r}"
            ) from None
        if parts.username is not None or parts.password is not None:
            # Credentials in the URL are basic auth, as curl takes them; the URL
            # kept (and shown in messages and logs) is the one without them.
            if basic_auth is not None:
                raise ValueError("url carries credentials and basic_auth is given: pass one")
            basic_auth = (
                urllib.parse.unquote(parts.username or ""),
                urllib.parse.unquote(parts.password or ""),
            )
            host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
            netloc = host if parts.port is None else f"{host}:{parts.port}"
            url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        self.headers = {"User-Agent": "gateway-metrics", **protocol_headers}
        if headers is not None:
            if not isinstance(headers, Mapping):
                raise TypeError(f"headers must be a mapping, not {type(headers).__name__}")
            for name, value in headers.items():
                if not isinstance(name, str) or not isinstance(value, str):
                    raise TypeError("headers must map str to str")
                check_header(name, value)
                self.headers[name] = value
        if basic_auth is not None:
            if (
                not isinstance(basic_auth, tuple)
                or len(basic_auth) != 2
                or not all(isinstance(part, str) for part in basic_auth)
            ):
                raise TypeError("basic_auth must be a (user, password) tuple of str")
            token = base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self.timeout = positive_seconds(timeout, "timeout")
        self.url = url

    @abc.abstractmethod
    def body(self, metrics: MetricsStore) -> bytes:
        """What to send now: every series, encoded for this receiver."""

    def retryable(self, status: int) -> bool:
        """Whether an answer of ``status`` is worth sending again."""
        return status >= 500 or status == 429

    def post(self, body: bytes, deadline_s: float | None = None) -> None:
        """Sends one request body; raises ``self.error`` unless it is accepted.

        The whole exchange (connect, TLS, request, answer) ends within
        ``timeout`` seconds, or ``deadline_s`` if that is sooner: a watchdog
        cuts the connection at that moment, so a receiver that trickles its
        answer cannot hold the sender. Redirects are refused, not followed:
        a redirected POST would lose its body and carry the credentials
        elsewhere. A 2xx answer's body is not read, an error's up to
        ``_DETAIL_LIMIT`` bytes.
        """
        seconds = self.timeout if deadline_s is None else min(self.timeout, deadline_s)
        if seconds <= 0:
            raise self.error(
                f"{self.protocol} to {self.url} not sent: no time left", None, retryable=True
            )
        parts = urllib.parse.urlsplit(self.url)
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                parts.netloc, timeout=seconds, context=ssl.create_default_context()
            )
        else:
            connection = http.client.HTTPConnection(parts.netloc, timeout=seconds)
        fired = threading.Event()
        watchdog = threading.Timer(seconds, _cut, (connection, fired))
        watchdog.daemon = True
        watchdog.start()
        try:
            try:
                path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
                connection.request("POST", path, body=body, headers=self.headers)
                response = connection.getresponse()
                if fired.is_set():
                    # Headers cut short read as if they had ended.
                    raise TimeoutError("cut off")
            except Exception as failed:
                reason = f"no answer within {seconds:g} s" if fired.is_set() else _describe(failed)
                raise self.error(
                    f"{self.protocol} to {self.url} failed: {reason}", None, retryable=True
                ) from failed
            status = response.status
            if 200 <= status < 300:
                # Accepted: what the body says does not matter, and a
                # receiver that trickles it must not cost the sender time.
                return
            location = response.getheader("Location", "")
            try:
                answer = response.read(_DETAIL_LIMIT)
            except Exception:
                answer = b""  # the status is what counts; the detail is a courtesy
        finally:
            watchdog.cancel()
            connection.close()
        if 300 <= status < 400:
            raise self.error(
                f"{self.protocol} to {self.url} answered {status} (a redirect to {location!r}); "
                "redirects are not followed: configure the receiver's own URL",
                status,
                retryable=False,
            )
        detail = answer.decode("utf-8", "replace").strip()
        raise self.error(
            f"{self.protocol} to {self.url} answered {status}: {detail}",
            status,
            retryable=self.retryable(status),
        )


#: Bytes of an error answer kept for the error's message.
_DETAIL_LIMIT = 512
#: Characters a header field name may have (RFC 9110's token).
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _cut(connection: http.client.HTTPConnection, fired: threading.Event) -> None:
    """Ends ``connection`` where it is: the sender's blocked read or write fails at once."""
    fired.set()
    if connection.sock is not None:
        cut(connection.sock)


def _describe(error: BaseException) -> str:
    """What went wrong, as a line of a log: the exception's kind and message."""
    text = str(error)
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def check_header(name: str, value: str) -> None:
    """Refuses a header a request could not carry as given, naming it."""
    if not name or not set(name) <= _TOKEN:
        raise ValueError(f"headers: {name!r} is not an HTTP header name")
    if any(char in value for char in "\r\n\0"):
        raise ValueError(
            f"headers: the value of {name} contains a line break or NUL "
            "(a token read from a file keeps its newline: strip it)"
        )
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"headers: the value of {name} is not Latin-1 text") from None
    if value != value.strip(" \t"):
        raise ValueError(f"headers: the value of {name} starts or ends with white space")


class PeriodicSender:
    """Sends a receiver's body every ``interval_s`` from a daemon thread, with
    retries; ``close()`` (also run at interpreter exit) sends once more. See
    ``RemoteWriter`` and ``OtlpExporter``, which are such senders."""

    def __init__(
        self,
        metrics: MetricsStore,
        target: Receiver,
        *,
        interval_s: float,
        max_retries: int,
        backoff_s: float,
        max_backoff_s: float,
        thread_name: str,
    ) -> None:
        self._target = target
        self._interval_s = positive_seconds(interval_s, "interval_s")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int):
            raise TypeError(f"max_retries must be an int, not {type(max_retries).__name__}")
        if max_retries < 0:
            raise ValueError(f"max_retries must not be negative, got {max_retries}")
        self._max_retries = max_retries
        self._backoff_s = positive_seconds(backoff_s, "backoff_s")
        self._max_backoff_s = positive_seconds(max_backoff_s, "max_backoff_s")
        self._metrics = metrics
        self._stop = threading.Event()
        self._sending = threading.Lock()
        self._closing = threading.Lock()
        self._reported: set[int | str] = set()
        self.sent = 0
        self.failed = 0
        self.last_error: PushError | None = None
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._send(interruptible=True, deadline=None)

    def flush(self) -> bool:
        """Sends the current totals now, retrying as configured; True if they arrived."""
        return self._send(interruptible=False, deadline=None)

    def _send(self, *, interruptible: bool, deadline: float | None) -> bool:
        """One send with its retries; never raises, so the thread never dies.

        Every failure is counted in ``failed`` and kept as ``last_error``; the
        first of each kind (an HTTP status, or an exception's type) since the
        last success is logged as a warning, the rest at debug level. The
        thread's pauses end early when ``close()`` is called, which then
        sends the newest totals itself. With a ``deadline`` (a
        ``time.monotonic()`` instant) nothing waits past it.
        """

        def left() -> float | None:
            return None if deadline is None else deadline - time.monotonic()

        wait = left()
        if not self._sending.acquire(timeout=-1 if wait is None else max(0.0, wait)):
            self._fail(PushError("an earlier send is still running", None, True))
            return False
        try:
            try:
                body = self._target.body(self._metrics)
            except Exception as failed:
                reason = f"the samples could not be read: {_describe(failed)}"
                self._fail(PushError(reason, None, retryable=False))
                return False
            for attempt in range(self._max_retries + 1):
                try:
                    self._target.post(body, left())
                except PushError as error:
                    self._fail(error)
                    if not error.retryable or attempt == self._max_retries:
                        return False
                    delay = min(self._backoff_s * 2**attempt, self._max_backoff_s)
                    remaining = left()
                    if remaining is not None and remaining <= delay:
                        return False
                    if interruptible:
                        if self._stop.wait(delay):
                            return False
                    else:
                        time.sleep(delay)
                else:
                    self.sent += 1
                    self._reported.clear()
                    return True
            return False
        finally:
            self._sending.release()

    def _fail(self, error: PushError) -> None:
        """Counts a failed attempt, keeps it, and logs the first of its kind."""
        self.failed += 1
        self.last_error = error
        cause = error.__cause__
        kind = error.status if error.status is not None else type(cause or error).__name__
        if kind in self._reported:
            _LOGGER.debug("%s", error)
            return
        self._reported.add(kind)
        if error.retryable:
            _LOGGER.warning("%s (retried; more like it are logged at debug level)", error)
        else:
            _LOGGER.error("%s (not retried)", error)

    def close(self) -> None:
        """Stops the thread and sends the final totals once. Safe to call twice.

        Returns within ``timeout`` seconds whatever the receiver does (it is
        also run at interpreter exit): what is not sent by then is given up.
        """
        with self._closing:
            if self._stop.is_set():
                return
            self._stop.set()
        atexit.unregister(self.close)
        deadline = time.monotonic() + self._target.timeout
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._send(interruptible=False, deadline=deadline)

    def __enter__(self: _Sender) -> _Sender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
