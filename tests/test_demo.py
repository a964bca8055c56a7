"""The demo command runs end to end: traffic, an exporter it scrapes, a summary."""

from __future__ import annotations

import subprocess
import sys

from gateway_metrics._demo import histogram_quantile


def demo_output(duration: str, columns: str) -> str:
    """What the demo prints in ``duration`` seconds to a log ``columns`` wide."""
    return subprocess.run(
        [sys.executable, "-m", "gateway_metrics", "demo", "--duration", duration],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"COLUMNS": columns, "PATH": "/usr/bin:/bin"},
    ).stdout


def test_demo_prints_a_summary_scraped_over_http():
    out = demo_output("1.5", "160")
    assert "Exporter on http://127.0.0.1:" in out
    assert "scraped over HTTP" in out
    for model in ("gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro"):
        assert model in out
    assert "cache hits:" in out
    for column in ("TTFT p50", "cached", "reasoning"):
        assert column in out


def test_the_summary_fits_80_columns_uncut_in_a_log():
    out = demo_output("1", "80")
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in out
    for model in ("gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash"):
        assert any(line.split()[:1] == [model] for line in lines)
    for column in ("TTFT p50", "cached", "reasoning", "USD"):
        assert column in out


def test_histogram_quantile_interpolates_within_a_bucket():
    buckets = [(0.5, 0.0), (1.0, 10.0), (2.0, 20.0), (float("inf"), 20.0)]
    assert histogram_quantile(0.5, buckets) == 1.0
    assert histogram_quantile(0.75, buckets) == 1.5
    assert histogram_quantile(0.25, buckets) == 0.75
