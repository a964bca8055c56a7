"""The Prometheus recording and alerting rules, with the alerts' thresholds."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from gateway_metrics._core import FAMILIES
from gateway_metrics.ops.panels import GEN_AI_ONLY, SHOWN_BY_HAND, hit_ratio


@dataclass(frozen=True)
class Thresholds:
    """When the alerts fire. Every threshold is documented in docs/ops-kit.md.

    ``job_regex`` limits ``GatewayTargetDown`` to the scrape jobs of gateways
    (a regular expression, matched whole, as PromQL's ``=~`` does). Each
    threshold is a finite number, not negative (``error_ratio``, a share of
    requests, at most 1); a bad one raises ``ValueError`` naming it.
    """

    error_ratio: float = 0.05
    latency_p95_s: float = 10.0
    time_to_first_token_p95_s: float = 5.0
    cost_usd_per_hour: float = 50.0
    job_regex: str = ".+"

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "job_regex":
                _check_regex(value)
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{field.name} must be a number, not {type(value).__name__}")
            elif not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{field.name} must be finite and not negative, got {value!r}")
            elif field.name == "error_ratio" and value > 1:
                # A share of requests: above 1 the alert could never fire.
                raise ValueError(f"error_ratio is a share of requests, at most 1, got {value!r}")


def _check_regex(pattern: object) -> None:
    """Refuses a ``job_regex`` Prometheus would not compile, naming it.

    Prometheus compiles Go's RE2 syntax: Python's ``re`` checks the syntax
    they share, and the constructs RE2 lacks (look-around, back-references)
    are refused by name.
    """
    if not isinstance(pattern, str) or not pattern:
        raise TypeError("job_regex must be a non-empty str")
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"job_regex {pattern!r} is not a regular expression: {error}") from None
    if re.search(r"\(\?<?[=!]|\\[1-9]|\(\?P=", pattern):
        raise ValueError(
            f"job_regex {pattern!r} uses look-around or a back-reference, which "
            "Prometheus's regular expressions (RE2) do not have"
        )


def _promql_string(text: str) -> str:
    """``text`` as a double-quoted PromQL string literal (Go's escapes)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\t", "\\t") + '"'


def _by(extra_labels: Sequence[str]) -> str:
    return ", ".join(["job", "provider", "model", *extra_labels])


def recording_rules(extra_labels: Iterable[str] = ()) -> dict[str, Any]:
    """The recording rules, by job, provider, model and the extra labels."""
    by = _by(list(extra_labels))
    level = by.replace(", ", "_")
    requests = f"sum by ({by}) (rate(ractogateway_requests_total[5m]))"
    rules = [
        {"record": f"{level}:ractogateway_requests:rate5m", "expr": requests},
        {
            "record": f"{level}:ractogateway_requests_errors:ratio_rate5m",
            # Zero, not absent, while a model has no errors.
            "expr": f'(sum by ({by}) (rate(ractogateway_requests_total{{status="error"}}[5m]))'
            f" or {requests} * 0) / {requests}",
        },
    ]
    histograms = [
        ("ractogateway_request_duration_seconds", "request_duration_seconds", (0.5, 0.95, 0.99)),
        ("ractogateway_time_to_first_token_seconds", "time_to_first_token_seconds", (0.5, 0.95)),
        ("ractogateway_time_per_output_token_seconds", "time_per_output_token_seconds", (0.95,)),
    ]
    # The other histograms of the core's family table, at p95.
    histograms += [
        (name, name.removeprefix("ractogateway_"), (0.95,))
        for name, _help, kind, *_ in FAMILIES
        if kind == "histogram" and name not in SHOWN_BY_HAND | GEN_AI_ONLY
    ]
    rules.extend(
        {
            "record": f"{level}:ractogateway_{short}:p{round(quantile * 100)}_rate5m",
            "expr": f"histogram_quantile({quantile}, sum by (le, {by}) "
            f"(rate({family}_bucket[5m])))",
        }
        for family, short, quantiles in histograms
        for quantile in quantiles
    )
    rules += [
        {
            "record": f"{level}:ractogateway_cost_usd_per_hour:rate5m",
            "expr": f"sum by ({by}) (rate(ractogateway_cost_usd_total[5m])) * 3600",
        },
        {
            "record": f"{level}_token_type:ractogateway_tokens:rate5m",
            "expr": f"sum by ({by}, token_type) (rate(ractogateway_tokens_total[5m]))",
        },
        {
            "record": "job_tool_name:ractogateway_tool_calls:rate5m",
            "expr": "sum by (job, tool_name) (rate(ractogateway_tool_calls_total[5m]))",
        },
        {
            "record": "job_cache_type:ractogateway_cache_hit:ratio_rate5m",
            "expr": hit_ratio("[5m]", "", by="job, cache_type"),
        },
    ]
    return {"groups": [{"name": "gateway-metrics.recording", "rules": rules}]}


def alerting_rules(
    thresholds: Thresholds | None = None, extra_labels: Iterable[str] = ()
) -> dict[str, Any]:
    """The alerting rules, reading the recording rules' series."""
    limits = thresholds or Thresholds()
    level = _by(list(extra_labels)).replace(", ", "_")

    def alert(name: str, expr: str, duration: str, severity: str, summary: str) -> dict[str, Any]:
        return {
            "alert": name,
            "expr": expr,
            "for": duration,
            "labels": {"severity": severity},
            "annotations": {"summary": summary},
        }

    rules = [
        alert(
            "GatewayErrorRatioHigh",
            f"{level}:ractogateway_requests_errors:ratio_rate5m > {limits.error_ratio}",
            "10m",
            "warning",
            "{{ $labels.model }} of {{ $labels.provider }} fails "
            "{{ $value | humanizePercentage }} of requests",
        ),
        alert(
            "GatewayLatencyP95High",
            f"{level}:ractogateway_request_duration_seconds:p95_rate5m > {limits.latency_p95_s}",
            "10m",
            "warning",
            "p95 latency of {{ $labels.model }} is {{ $value | humanizeDuration }}",
        ),
        alert(
            "GatewayTimeToFirstTokenHigh",
            f"{level}:ractogateway_time_to_first_token_seconds:p95_rate5m"
            f" > {limits.time_to_first_token_p95_s}",
            "10m",
            "warning",
            "p95 time to first token of {{ $labels.model }} is {{ $value | humanizeDuration }}",
        ),
        alert(
            "GatewayCostBurnHigh",
            f"sum by (job) ({level}:ractogateway_cost_usd_per_hour:rate5m)"
            f" > {limits.cost_usd_per_hour}",
            "15m",
            "warning",
            '{{ $labels.job }} spends {{ $value | printf "%.2f" }} USD per hour',
        ),
        alert(
            "GatewayUnpricedRequests",
            "sum by (job, provider, model) "
            "(increase(ractogateway_unpriced_requests_total[15m])) > 0",
            "0m",
            "info",
            "{{ $labels.model }} of {{ $labels.provider }} has no price: its cost is not counted",
        ),
        alert(
            "GatewayOverflowSeries",
            "sum by (job, family) (increase(ractogateway_overflow_requests_total[15m])) > 0",
            "0m",
            "warning",
            "{{ $labels.family }} reached max_series: new label sets go to __overflow__",
        ),
        alert(
            "GatewayTargetDown",
            f"up{{job=~{_promql_string(limits.job_regex)}}} == 0",
            "5m",
            "critical",
            "{{ $labels.instance }} of {{ $labels.job }} cannot be scraped",
        ),
    ]
    return {"groups": [{"name": "gateway-metrics.alerts", "rules": rules}]}
