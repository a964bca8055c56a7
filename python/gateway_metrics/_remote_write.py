"""Prometheus remote write 1.0: one request now, or a thread sending periodically."""

from __future__ import annotations

import atexit
import base64
import logging
import math
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway_metrics._middleware import GatewayMetricsMiddleware

_LOGGER = logging.getLogger("gateway_metrics")
DEFAULT_JOB = "gateway_metrics"


class RemoteWriteError(OSError):
    """A remote-write request that did not succeed.

    ``status`` is the HTTP status (None when no response came: refused
    connection, timeout); ``retryable`` says whether sending again may succeed
    (5xx and connection errors, as the remote-write specification says), or
    not (4xx: the receiver refuses these samples).
    """

    def __init__(self, message: str, status: int | None, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class Target:
    """A validated receiver: where to send, with which headers and labels."""

    def __init__(
        self,
        url: object,
        job: object,
        instance: object,
        headers: object,
        basic_auth: object,
        timeout: object,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
        if not isinstance(job, str) or not job:
            raise TypeError("job must be a non-empty str")
        if instance is None:
            instance = socket.gethostname()
        if not isinstance(instance, str) or not instance:
            raise TypeError("instance must be a non-empty str or None")
        self.headers = {
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "User-Agent": "gateway-metrics",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        }
        if headers is not None:
            if not isinstance(headers, Mapping):
                raise TypeError(f"headers must be a mapping, not {type(headers).__name__}")
            for name, value in headers.items():
                if not isinstance(name, str) or not isinstance(value, str):
                    raise TypeError("headers must map str to str")
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
        self.timeout = _positive_seconds(timeout, "timeout")
        self.url = url
        self.job = job
        self.instance = instance

    def body(self, metrics: GatewayMetricsMiddleware) -> bytes:
        """Every sample a scrape would show now, encoded for this receiver."""
        return metrics._remote_write_body(self.job, self.instance, int(time.time() * 1000))

    def post(self, body: bytes) -> None:
        """Sends one request body; raises ``RemoteWriteError`` unless it is accepted."""
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as refused:
            detail = refused.read(512).decode("utf-8", "replace").strip()
            status = refused.code
            raise RemoteWriteError(
                f"remote write to {self.url} answered {status}: {detail}",
                status,
                retryable=status >= 500 or status == 429,
            ) from refused
        except (urllib.error.URLError, OSError) as failed:
            raise RemoteWriteError(
                f"remote write to {self.url} failed: {failed}", None, retryable=True
            ) from failed


def _positive_seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and above zero, got {value!r}")
    return float(value)


class RemoteWriter:
    """Sends a middleware's metrics to a remote-write receiver every ``interval_s``.

    For jobs Prometheus cannot scrape (batch drivers, short-lived or
    firewalled processes): a daemon thread sends every sample a scrape would
    show, each request with one timestamp. A 5xx answer, a 429 or a connection
    error is retried up to ``max_retries`` times with exponential backoff
    (``backoff_s``, doubling, at most ``max_backoff_s``); a 4xx is logged and
    not retried, since the receiver refuses those samples. Since every request
    carries the current totals, a request given up on loses nothing the next
    one does not carry. ``close()`` (also run at interpreter exit) stops the
    thread and sends once more, so the final totals arrive.

    ``sent``, ``failed`` and ``last_error`` tell how it went.

    Example::

        writer = RemoteWriter(metrics, "http://127.0.0.1:9090/api/v1/write",
                              interval_s=15.0, job="nightly-eval")
        ...  # the job records
        writer.close()  # one last send with the final totals
    """

    def __init__(
        self,
        metrics: GatewayMetricsMiddleware,
        url: str,
        *,
        interval_s: float = 15.0,
        job: str = DEFAULT_JOB,
        instance: str | None = None,
        headers: Mapping[str, str] | None = None,
        basic_auth: tuple[str, str] | None = None,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._target = Target(url, job, instance, headers, basic_auth, timeout)
        self._interval_s = _positive_seconds(interval_s, "interval_s")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int):
            raise TypeError(f"max_retries must be an int, not {type(max_retries).__name__}")
        if max_retries < 0:
            raise ValueError(f"max_retries must not be negative, got {max_retries}")
        self._max_retries = max_retries
        self._backoff_s = _positive_seconds(backoff_s, "backoff_s")
        self._max_backoff_s = _positive_seconds(max_backoff_s, "max_backoff_s")
        self._metrics = metrics
        self._stop = threading.Event()
        self._sending = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.last_error: RemoteWriteError | None = None
        self._thread = threading.Thread(
            target=self._run, name="gateway-metrics-remote-write", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._send(interruptible=True)

    def flush(self) -> bool:
        """Sends the current totals now, retrying as configured; True if they arrived."""
        return self._send(interruptible=False)

    def _send(self, *, interruptible: bool) -> bool:
        """One send with its retries; the thread's pauses end early when ``close()``
        is called, which then sends the newest totals itself."""
        with self._sending:
            body = self._target.body(self._metrics)
            for attempt in range(self._max_retries + 1):
                try:
                    self._target.post(body)
                except RemoteWriteError as error:
                    self.failed += 1
                    self.last_error = error
                    if not error.retryable:
                        _LOGGER.error("%s (not retried)", error)
                        return False
                    if attempt == self._max_retries:
                        _LOGGER.warning("%s; gave up after %d attempts", error, attempt + 1)
                        return False
                    delay = min(self._backoff_s * 2**attempt, self._max_backoff_s)
                    _LOGGER.warning("%s; retrying in %.2f s", error, delay)
                    if interruptible:
                        if self._stop.wait(delay):
                            return False
                    else:
                        time.sleep(delay)
                else:
                    self.sent += 1
                    return True
        return False

    def close(self) -> None:
        """Stops the thread and sends the final totals once. Safe to call twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        atexit.unregister(self.close)
        self._thread.join()
        self.flush()

    def __enter__(self) -> RemoteWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
