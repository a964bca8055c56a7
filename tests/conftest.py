"""Fixtures: a fresh registry and middleware per test, ``_created`` series switched off."""

from __future__ import annotations

from collections.abc import Iterator

import prometheus_client.metrics
import pytest
from gateway_metrics import GatewayMetricsMiddleware
from prometheus_client import CollectorRegistry


@pytest.fixture
def no_created() -> Iterator[None]:
    """Turns off ``_created`` series for the test, as PROMETHEUS_DISABLE_CREATED_SERIES does."""
    previous = prometheus_client.metrics._use_created
    prometheus_client.metrics._use_created = False
    try:
        yield
    finally:
        prometheus_client.metrics._use_created = previous


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> GatewayMetricsMiddleware:
    return GatewayMetricsMiddleware(registry=registry)
