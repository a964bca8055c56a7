"""What a hostile snapshot can cost ``merge()``: memory in proportion to what it adds.

Snapshots are built here byte by byte (the layout is in ``src/snapshot.rs``),
each sealed with a valid CRC-32, so that only the structural checks stand
between them and the store. Memory is measured in a child process, as the
growth of its peak resident set over the merge.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from gateway_metrics import GatewayMetricsMiddleware, ModelPricing, ToolCall
from prometheus_client import CollectorRegistry
from support import sample_value

TESTS = Path(__file__).parent
REQUEST = {"provider": "openai", "model": "gpt-4o", "operation": "chat", "status": "ok"}


def families(snapshot: bytes) -> tuple[bytes, list[str]]:
    """The bytes of a snapshot up to its series count, and its family names in order."""
    at, names = 16, []
    (count,) = struct.unpack_from("<I", snapshot, 12)
    for _ in range(count):
        for field in range(5):
            (length,) = struct.unpack_from("<I", snapshot, at)
            if field == 0:
                names.append(snapshot[at + 4 : at + 4 + length].decode())
            at += 4 + length
    return snapshot[:at], names


def crafted(
    metrics: GatewayMetricsMiddleware, series: list[tuple[str, list[str], list[int]]]
) -> bytes:
    """A snapshot of ``metrics``' families holding ``series`` (family, labels, cells)."""
    head, names = families(metrics.snapshot())
    parts = [head, struct.pack("<Q", len(series))]
    for family, labels, cells in series:
        parts.append(struct.pack("<BH", names.index(family), len(labels)))
        for label in labels:
            encoded = label.encode()
            parts.append(struct.pack("<I", len(encoded)) + encoded)
        parts.append(struct.pack(f"<H{len(cells)}Q", len(cells), *cells))
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def test_the_overflow_family_takes_only_family_names_so_max_series_bounds_it(no_created):
    driver = GatewayMetricsMiddleware(registry=CollectorRegistry(), max_series=1000)
    hostile = crafted(
        driver,
        [("ractogateway_overflow_requests", [f"made-up-{i}"], [1]) for i in range(20_000)],
    )
    with pytest.raises(ValueError, match="names no family"):
        driver.merge(hostile)
    assert "ractogateway_overflow_requests_total{" not in driver.generate_latest()
    honest = crafted(driver, [("ractogateway_overflow_requests", ["ractogateway_requests"], [4])])
    assert driver.merge(honest) == 1
    assert (
        sample_value(
            driver.generate_latest(),
            "ractogateway_overflow_requests_total",
            family="ractogateway_requests",
        )
        == 4.0
    )


def merge_growth_mib(snapshot_code: str, **options: object) -> dict:
    """Runs ``snapshot_code`` (which binds ``snapshot``) in a child, merges it into a
    middleware made with ``options``, and reports how its peak memory grew."""
    code = f"""
        import gc, json, resource, struct, zlib
        from prometheus_client import CollectorRegistry
        from gateway_metrics import GatewayMetricsMiddleware, ModelPricing, ToolCall
        from test_merge_limits import crafted, families
        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), **{options!r})
        {snapshot_code}
        gc.collect()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            added, error = metrics.merge(snapshot), None
        except ValueError as refused:
            added, error = None, str(refused)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"size_mib": len(snapshot) / 2**20, "added": added,
                           "error": error, "growth_mib": (after - before) / 1024}}))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=TESTS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_snapshot_of_other_families_is_refused_before_its_series_cost_memory():
    # 32 MiB of the smallest series a snapshot can hold, declared with other buckets.
    result = merge_growth_mib(
        """
        other = GatewayMetricsMiddleware(registry=CollectorRegistry(), latency_buckets=[1, 2])
        head, _ = families(other.snapshot())
        count = (32 << 20) // 5
        body = head + struct.pack("<Q", count) + b"\\x06\\x00\\x00\\x00\\x00" * count
        snapshot = body + struct.pack("<I", zlib.crc32(body))
        """
    )
    assert result["error"] is not None and "buckets" in result["error"]
    assert result["growth_mib"] < 4, result


def test_a_damaged_snapshot_of_matching_families_costs_no_more_than_its_series_add():
    # 32 MiB of series of one tool and a stray byte after them: read in place, refused whole.
    result = merge_growth_mib(
        """
        head, names = families(metrics.snapshot())
        family = names.index("ractogateway_tool_calls")
        record = struct.pack("<BHI", family, 1, 1) + b"t" + struct.pack("<HQ", 1, 1)
        count = (32 << 20) // len(record)
        body = head + struct.pack("<Q", count) + record * count
        body += b"\\xff"
        snapshot = body + struct.pack("<I", zlib.crc32(body))
        """
    )
    assert result["added"] is None and "1 bytes follow its last series" in result["error"]
    assert result["growth_mib"] < 4, result


def test_a_merge_of_many_label_sets_grows_memory_only_up_to_the_cap():
    result = merge_growth_mib(
        """
        head, names = families(metrics.snapshot())
        family = names.index("ractogateway_tool_calls")
        records = [struct.pack("<BHI", family, 1, 12) + b"tool-%07d" % i + struct.pack("<HQ", 1, 1)
                   for i in range(1_000_000)]
        body = head + struct.pack("<Q", len(records)) + b"".join(records)
        snapshot = body + struct.pack("<I", zlib.crc32(body))
        del records
        """,
        max_series=1000,
    )
    assert result["added"] == 1_000_000, result
    assert result["growth_mib"] < 8, result


@pytest.mark.parametrize("reset", [False, True])
def test_a_sum_past_the_largest_float_saturates_and_the_snapshot_still_merges(reset, no_created):
    worker = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), price_table={"other": ModelPricing(0.0, 0.0)}
    )
    worker.record_request(**REQUEST, latency_s=1e308)
    worker.record_request(**REQUEST, latency_s=1e308)
    worker.record_request(
        **{**REQUEST, "model": "other"},
        latency_s=0.5,
        input_tokens=7,
        tool_calls=[ToolCall("search")],
    )
    driver = GatewayMetricsMiddleware(registry=CollectorRegistry())
    assert driver.merge(worker.snapshot(reset=reset)) > 0
    text = driver.generate_latest()
    labels = {"model": "gpt-4o", "operation": "chat", "provider": "openai"}
    assert sample_value(text, "ractogateway_request_duration_seconds_sum", **labels) == math.inf
    assert sample_value(text, "ractogateway_requests_total", **REQUEST) == 2.0
    assert sample_value(text, "ractogateway_tool_calls_total", tool_name="search") == 1.0
    assert (
        sample_value(
            text, "ractogateway_tokens_total", model="other", provider="openai", token_type="input"
        )
        == 7.0
    )
