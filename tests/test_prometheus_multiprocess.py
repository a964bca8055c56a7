"""prometheus_client's multi-process mode: our families in its own files, sample for sample.

The reference middleware under ``PROMETHEUS_MULTIPROC_DIR`` is the oracle: the
same workload, through the same mix of forked, spawned and killed workers, must
show the same samples through ``MultiProcessCollector``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from support import promtool_check

TESTS = Path(__file__).parent
#: Samples whose values are float sums, added across files in directory order.
FLOAT_SUMS = ("_sum", "ractogateway_cost_usd_total")


def run(code_or_script: list[str], directory: Path) -> str:
    result = subprocess.run(
        [sys.executable, *code_or_script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=TESTS,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def collected(directory: Path) -> str:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry).decode()


def samples(text: str, prefix: str = "") -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(prefix)
    }


def assert_same_samples(ours: dict, reference: dict) -> None:
    assert ours.keys() == reference.keys()
    for key, expected in reference.items():
        if key[0].endswith(FLOAT_SUMS):
            assert math.isclose(ours[key], expected, rel_tol=1e-12), key
        else:
            assert ours[key] == expected, key


def test_multiprocess_collector_shows_ours_exactly_as_the_references(tmp_path):
    ours_dir, reference_dir = tmp_path / "ours", tmp_path / "reference"
    ours_dir.mkdir()
    reference_dir.mkdir()
    own_exposition = run(["prom_mp_workload.py", "ours"], ours_dir)
    run(["prom_mp_workload.py", "reference"], reference_dir)
    ours, reference = collected(ours_dir), collected(reference_dir)
    promtool_check(ours)
    ours_samples, reference_samples = samples(ours), samples(reference)
    assert_same_samples(ours_samples, reference_samples)
    # Three full workers and half of the killed one: nothing recorded before SIGKILL is lost.
    requests = sum(v for (name, _), v in ours_samples.items() if name.endswith("requests_total"))
    assert requests == 3 * 600 + 300
    # The middleware's own scrape shows the same sum (without _created, as the collector).
    assert "_created" not in own_exposition
    assert_same_samples(samples(own_exposition), reference_samples)
    assert all(name.startswith(("counter_gwm-", "histogram_gwm-")) for name in os.listdir(ours_dir))


def test_our_files_live_beside_the_applications_own_metrics(tmp_path):
    output = run(
        [
            "-c",
            textwrap.dedent(
                """
                import os
                from prometheus_client import CollectorRegistry, Counter, Histogram
                from gateway_metrics import GatewayMetricsMiddleware
                logins = Counter("app_logins", "Logins.", ["method"])
                sizes = Histogram("app_payload_bytes", "Payload sizes.", buckets=[10, 100])
                metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
                for _ in range(3):
                    logins.labels("sso").inc()
                    sizes.observe(42)
                    metrics.record_request(provider="openai", model="gpt-4o", operation="chat",
                                           status="ok", latency_s=0.5, input_tokens=10)
                print(metrics.prometheus_multiproc_dir, metrics.multiprocess_dir)
                print(" ".join(sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]))))
                """
            ),
        ],
        tmp_path,
    )
    directory_line, files_line = output.splitlines()
    assert directory_line == f"{tmp_path} None"
    pid_files = [name for name in files_line.split() if "gwm" not in name]
    ours = [name for name in files_line.split() if "gwm" in name]
    assert len(pid_files) == 2 and len(ours) == 2
    collected_samples = samples(collected(tmp_path))
    assert collected_samples[("app_logins_total", (("method", "sso"),))] == 3.0
    assert collected_samples[("app_payload_bytes_count", ())] == 3.0
    labels = (("model", "gpt-4o"), ("operation", "chat"), ("provider", "openai"), ("status", "ok"))
    assert collected_samples[("ractogateway_requests_total", labels)] == 3.0
    tokens = (("model", "gpt-4o"), ("provider", "openai"), ("token_type", "input"))
    assert collected_samples[("ractogateway_tokens_total", tokens)] == 30.0


def test_our_own_multiprocess_directory_wins_over_prometheus_clients(tmp_path):
    ours = tmp_path / "ours"
    output = run(
        [
            "-c",
            textwrap.dedent(
                f"""
                from prometheus_client import CollectorRegistry
                from gateway_metrics import GatewayMetricsMiddleware
                metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(),
                                                   multiprocess_dir={str(ours)!r})
                metrics.record_cache_hit("exact")
                print(metrics.prometheus_multiproc_dir, metrics.multiprocess_dir)
                """
            ),
        ],
        tmp_path / "prometheus",
    )
    assert output.split() == ["None", str(ours)]
    assert [path.suffix for path in ours.iterdir() if not path.name.startswith(".")] == [".gwm"]
