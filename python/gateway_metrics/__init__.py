"""gateway-metrics: fast, exact Prometheus metrics for LLM gateways.

``GatewayMetricsMiddleware`` is a drop-in replacement for the ``ractogateway``
Prometheus middleware: the same metrics, byte for byte, recorded by a lock-free
native core so that one request costs a fraction of a microsecond.

Example::

    from gateway_metrics import GatewayMetricsMiddleware, PrometheusExporter

    metrics = GatewayMetricsMiddleware()
    PrometheusExporter(port=8000).start()
    metrics.record_request(provider="openai", model="gpt-4o", operation="chat",
                           status="ok", latency_s=0.42, input_tokens=1000,
                           output_tokens=200)
"""

import sys

from gateway_metrics import _core

# The native core keeps its caches consistent by the GIL (it declares
# ``gil_used``, so a free-threaded CPython turns the GIL on when importing it).
# Where the GIL was forced off (PYTHON_GIL=0, -X gil=0), that does not hold.
if not getattr(sys, "_is_gil_enabled", lambda: True)():
    raise ImportError(
        f"{_core.__name__} needs the GIL, which this interpreter runs without "
        "(PYTHON_GIL=0 or -X gil=0): run it with the GIL on"
    )

from gateway_metrics._core import GEN_AI_SEMCONV_VERSION
from gateway_metrics._cost import compute_cost
from gateway_metrics._errors import ERROR_TYPES, error_type_of
from gateway_metrics._exporter import PrometheusExporter
from gateway_metrics._middleware import GatewayMetricsMiddleware
from gateway_metrics._otlp import OtlpError, OtlpExporter
from gateway_metrics._pricing import DEFAULT_COST_TABLE, ModelPricing
from gateway_metrics._remote_write import RemoteWriteError, RemoteWriter
from gateway_metrics._serving import make_asgi_app, make_wsgi_app
from gateway_metrics._track import ToolCall, TrackedCall
from gateway_metrics._usage import Usage, tool_call_names, usage_from

__all__ = [
    "DEFAULT_COST_TABLE",
    "ERROR_TYPES",
    "GEN_AI_SEMCONV_VERSION",
    "GatewayMetricsMiddleware",
    "ModelPricing",
    "OtlpError",
    "OtlpExporter",
    "PrometheusExporter",
    "RemoteWriteError",
    "RemoteWriter",
    "ToolCall",
    "TrackedCall",
    "Usage",
    "compute_cost",
    "error_type_of",
    "make_asgi_app",
    "make_wsgi_app",
    "tool_call_names",
    "usage_from",
]
#: The release, as Cargo.toml names it (the one place it is written).
__version__: str = _core.VERSION
