"""PrometheusExporter: a /metrics HTTP endpoint in a background thread."""

from __future__ import annotations

import threading
from typing import Any

import prometheus_client
from prometheus_client.registry import CollectorRegistry


class PrometheusExporter:
    """Serves a registry on ``http://<addr>:<port>/metrics`` from a daemon thread.

    Use it when the process has no web server of its own for Prometheus to
    scrape. It answers with ``prometheus_client``'s content negotiation: the
    text format by default, OpenMetrics when the scraper asks for it, gzip when
    accepted. ``port=0`` picks a free port; ``port`` tells which once started.

    Example::

        exporter = PrometheusExporter(port=8000, addr="127.0.0.1")
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
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"port must be an int, not {type(port).__name__}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port}")
        if not isinstance(addr, str):
            raise TypeError(f"addr must be str, not {type(addr).__name__}")
        self._port = port
        self._addr = addr
        self._registry = prometheus_client.REGISTRY if registry is None else registry
        self._server: Any | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Starts serving; a second call while running does nothing."""
        with self._lock:
            if self._server is not None:
                return
            self._server, self._thread = prometheus_client.start_http_server(
                self._port, addr=self._addr, registry=self._registry
            )

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
        """The whole registry in the Prometheus text format, without HTTP."""
        return prometheus_client.generate_latest(self._registry).decode("utf-8")

    def __enter__(self) -> PrometheusExporter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
