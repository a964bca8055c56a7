"""Prometheus remote write 1.0: one request now, or a thread sending periodically."""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway_metrics._push import PeriodicSender, PushError, Receiver

if TYPE_CHECKING:
    from gateway_metrics._core import MetricsStore

DEFAULT_JOB = "gateway_metrics"


class RemoteWriteError(PushError):
    """A remote-write request that did not succeed.

    ``status`` is the HTTP status (None when no response came: refused
    connection, timeout); ``retryable`` says whether sending again may succeed
    (5xx, 429 and connection errors, as the remote-write specification says),
    or not (other 4xx: the receiver refuses these samples).
    """


class Target(Receiver):
    """A validated remote-write receiver: where to send, with which headers and labels."""

    protocol = "remote write"
    error = RemoteWriteError

    def __init__(
        self,
        url: object,
        job: object,
        instance: object,
        headers: object,
        basic_auth: object,
        timeout: object,
    ) -> None:
        protocol_headers = {
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        }
        super().__init__(url, protocol_headers, headers, basic_auth, timeout)
        if not isinstance(job, str) or not job:
            raise TypeError("job must be a non-empty str")
        if instance is None:
            instance = socket.gethostname()
        if not isinstance(instance, str) or not instance:
            raise TypeError("instance must be a non-empty str or None")
        self.job = job
        self.instance = instance

    def body(self, metrics: MetricsStore) -> bytes:
        """Every sample a scrape would show now, encoded for this receiver."""
        return metrics._remote_write_body(self.job, self.instance, int(time.time() * 1000))


class RemoteWriter(PeriodicSender):
    """Sends a middleware's metrics to a remote-write receiver every ``interval_s``.

    For jobs Prometheus cannot scrape (batch drivers, short-lived or
    firewalled processes): a daemon thread sends every sample a scrape would
    show, each request with one timestamp. A 5xx answer, a 429 or a connection
    error is retried up to ``max_retries`` times with exponential backoff
    (``backoff_s``, doubling, at most ``max_backoff_s``); a 4xx is logged and
    not retried, since the receiver refuses those samples. Since every request
    carries the current totals, a request given up on loses nothing the next
    one does not carry. ``close()`` (also run at interpreter exit) stops the
    thread and sends once more, so the final totals arrive; it returns within
    ``timeout`` seconds whatever the receiver does.

    Each request ends within ``timeout`` seconds (connect, request and
    answer together), a redirect is a refusal, and an answer's body is read
    up to 512 bytes at most. The thread survives every failure: ``sent``,
    ``failed`` (failed attempts) and ``last_error`` tell how it went, and the
    first failure of each kind since the last success is logged.

    Example::

        writer = RemoteWriter(metrics, "http://127.0.0.1:9090/api/v1/write",
                              interval_s=15.0, job="nightly-eval")
        ...  # the job records
        writer.close()  # one last send with the final totals
    """

    def __init__(
        self,
        metrics: MetricsStore,
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
        super().__init__(
            metrics,
            Target(url, job, instance, headers, basic_auth, timeout),
            interval_s=interval_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            thread_name="gateway-metrics-remote-write",
        )
