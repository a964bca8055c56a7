"""Fixtures: a fresh registry and middleware per test, ``_created`` series switched off.

Test modules that need a newer Python than the package's 3.9 (for a
dependency that does) are not collected on older ones, and the header of the
run names them with the reason.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import prometheus_client.metrics
import pytest
from gateway_metrics import GatewayMetricsMiddleware
from prometheus_client import CollectorRegistry

#: Test module to (the Python it needs, what needs it).
NEEDS_NEWER_PYTHON = {
    "test_differential.py": ((3, 10), "ractogateway 0.2.1, the reference"),
    "test_kits.py": ((3, 10), "ractogateway 0.2.1, the reference"),
    "test_prometheus_multiprocess.py": ((3, 10), "ractogateway 0.2.1, the reference"),
    "test_pricing.py": ((3, 11), "genai-prices 0.2.3"),
    "test_genai_prices.py": ((3, 11), "genai-prices 0.2.3"),
}
collect_ignore = [
    module for module, (needed, _) in NEEDS_NEWER_PYTHON.items() if sys.version_info < needed
]


def pytest_report_header() -> list[str]:
    return [
        f"not collected on this Python: {module} ({why} needs {needed[0]}.{needed[1]}+)"
        for module, (needed, why) in NEEDS_NEWER_PYTHON.items()
        if module in collect_ignore
    ]


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
