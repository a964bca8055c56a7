"""The Ray Data example: actors record, the driver merges their deltas, totals are exact."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gateway_metrics import GatewayMetricsMiddleware
from prometheus_client import CollectorRegistry
from support import assert_same_totals, promtool_check, sample_value

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parent.parent / "examples" / "ray_batch_inference.py"
ROWS = 200_000


def example_module():
    spec = importlib.util.spec_from_file_location("ray_batch_inference", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_ray_data_job_with_an_actor_pool_merges_to_the_single_process_totals(
    tmp_path, no_created
):
    saved = tmp_path / "totals.snapshot"
    job = subprocess.run(
        [sys.executable, str(EXAMPLE), "--rows", str(ROWS), "--save-snapshot", str(saved)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "20 snapshots merged" in job.stdout
    assert f"{ROWS:,} requests" in job.stdout

    driver = GatewayMetricsMiddleware(registry=CollectorRegistry())
    driver.merge(saved.read_bytes())
    single = GatewayMetricsMiddleware(registry=CollectorRegistry())
    requests_of = example_module().requests_of
    for start in range(0, ROWS, 25_000):
        single.record_batch(**requests_of(np.arange(start, start + 25_000)))
    merged, expected = driver.generate_latest(), single.generate_latest()
    # Counts, buckets, latency and time-to-first-token sums exactly; cost and
    # time per output token (quotients) to float rounding.
    assert_same_totals(merged, expected, float_tolerance=1e-12)
    for name in (
        "ractogateway_request_duration_seconds_sum",
        "ractogateway_time_to_first_token_seconds_sum",
    ):
        labels = {"model": "gpt-4o-mini", "operation": "chat", "provider": "openai"}
        assert sample_value(merged, name, **labels) == sample_value(expected, name, **labels)
    total = sum(
        sample_value(merged, "ractogateway_requests_total", **labels) or 0
        for labels in (
            {"model": model, "operation": "chat", "provider": provider, "status": status}
            for provider, model in example_module().MODELS
            for status in ("ok", "error")
        )
    )
    assert total == ROWS
    promtool_check(merged)
