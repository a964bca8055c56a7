"""max_series: label sets past the cap fold into an overflow series; totals stay exact."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest
from gateway_metrics import GatewayMetricsMiddleware
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from support import promtool_check

LABELS = {"provider": "openai", "operation": "chat", "status": "ok"}


def values(text: str, name: str) -> dict[tuple, float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def test_label_sets_past_the_cap_fold_into_the_overflow_series(caplog, no_created):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), max_series=3)
    with caplog.at_level(logging.WARNING, logger="gateway_metrics"):
        for _ in range(2):
            for index in range(6):
                metrics.record_request(
                    **LABELS, model=f"model-{index}", latency_s=0.1, input_tokens=index + 1
                )
                metrics.record_cache_hit(f"cache-{index}")
    text = metrics.generate_latest()
    promtool_check(text)
    requests = values(text, "ractogateway_requests_total")
    assert len(requests) == 4
    assert sum(requests.values()) == 12.0
    overflow = tuple(
        sorted((name, "__overflow__") for name in ("model", "operation", "provider", "status"))
    )
    assert requests[overflow] == 6.0
    tokens = values(text, "ractogateway_tokens_total")
    assert sum(tokens.values()) == 2 * sum(range(1, 7))
    hits = values(text, "ractogateway_cache_hits_total")
    assert hits[(("cache_type", "__overflow__"),)] == 6.0 and sum(hits.values()) == 12.0
    folded = values(text, "ractogateway_overflow_requests_total")
    assert folded[(("family", "ractogateway_requests"),)] == 6.0
    assert folded[(("family", "ractogateway_cache_hits"),)] == 6.0
    warnings = [r.getMessage() for r in caplog.records if "reached max_series" in r.getMessage()]
    assert len(warnings) == len(set(warnings)) == len(folded)
    assert any("ractogateway_requests reached max_series" in message for message in warnings)


def test_known_label_sets_keep_recording_into_their_own_series(no_created):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), max_series=2)
    for model in ("a", "b", "c", "a", "b", "d", "a"):
        metrics.record_request(**LABELS, model=model, latency_s=0.1)
    requests = values(metrics.generate_latest(), "ractogateway_requests_total")
    by_model = {dict(labels)["model"]: value for labels, value in requests.items()}
    assert by_model == {"a": 3.0, "b": 2.0, "__overflow__": 2.0}


@pytest.mark.parametrize(
    ("max_series", "error"),
    [(0, ValueError), (-5, ValueError), (1.5, TypeError), (True, TypeError)],
)
def test_bad_caps_are_refused_by_name(max_series, error):
    with pytest.raises(error, match="max_series"):
        GatewayMetricsMiddleware(registry=CollectorRegistry(), max_series=max_series)


def test_a_million_model_names_under_a_cap_of_a_thousand_stay_small_and_exact(tmp_path):
    code = textwrap.dedent(
        """
        import os
        from gateway_metrics import GatewayMetricsMiddleware
        from prometheus_client import CollectorRegistry
        from prometheus_client.parser import text_string_to_metric_families
        directory = os.environ.get("TARGET") or None
        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), max_series=1000,
                                           multiprocess_dir=directory)
        page = os.sysconf("SC_PAGE_SIZE")
        def rss():
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * page
        for index in range(2000):
            metrics.record_request(provider="openai", model=f"warm-{index}", operation="chat",
                                   status="ok", latency_s=0.1, input_tokens=1)
        before = rss()
        for index in range(1_000_000):
            metrics.record_request(provider="openai", model=f"model-{index}", operation="chat",
                                   status="ok", latency_s=0.1, input_tokens=1)
        grown = rss() - before
        requests = [s for f in text_string_to_metric_families(metrics.generate_latest())
                    for s in f.samples if s.name == "ractogateway_requests_total"]
        print(grown, len(requests), sum(s.value for s in requests))
        """
    )
    for target in ("", str(tmp_path)):
        result = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "TARGET": target},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        grown, series, total = result.stdout.split()
        assert int(grown) < 20 << 20, f"RSS grew by {int(grown):,} bytes"
        assert int(series) == 1001
        assert float(total) == 1_002_000.0
