"""Every block of README.md and docs/, run or checked as printed.

Python and shell blocks run in a network and mount namespace of their own
(``tests/docs_namespace.py``), so the ports and paths they name are theirs,
with the servers they talk to started on those ports; Prometheus
configurations go through ``promtool check config`` of each Prometheus version
the docs name. A block that cannot run says why, in a ``docs-test`` comment
above it (``tests/docs_blocks.py``); these tests check that every other one runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from docs_blocks import ROOT, Block, blocks
from gateway_metrics import Usage
from gateway_metrics.ops import recording_rules
from prometheus_client.parser import text_string_to_metric_families
from support import PROMETHEUS_3

pytestmark = [pytest.mark.integration, pytest.mark.source_tree]

BLOCKS = blocks()
RUN = [block for block in BLOCKS if block.not_run is None]
#: Prometheus 2.42 (bookworm) and 3.5 (forky), as ``make deps`` unpacks them.
PROMTOOL = {2: shutil.which("promtool"), 3: str(PROMETHEUS_3.with_name("promtool"))}


def run_block(block: Block, timeout: float = 240.0) -> dict:
    """The namespace runner's report on ``block``."""
    unshare = ["unshare", "--net", "--mount"]
    if os.geteuid() != 0:
        unshare.append("--map-root-user")
    spec = {
        "language": block.language,
        "code": block.code,
        "needs": block.needs,
        "serves": block.serves,
        "repo": str(ROOT),
        "python": sys.executable,
        "timeout": timeout,
    }
    done = subprocess.run(
        [*unshare, sys.executable, str(Path(__file__).with_name("docs_namespace.py"))],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=timeout + 120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report: dict = json.loads(done.stdout.splitlines()[-1])
    assert report["returncode"] == 0, (
        f"{block.id} failed:\n{report['stdout'][-3000:]}\n{report['stderr'][-3000:]}"
    )
    return report


def test_every_block_is_run_or_says_why_not():
    languages = {block.language for block in BLOCKS}
    assert languages <= {"python", "bash", "yaml"}, languages
    for block in BLOCKS:
        if block.not_run is not None:
            assert len(block.not_run) > 10, f"{block.id}: say why it is not run"
    # The few blocks that are not run stay few.
    assert len(RUN) >= len(BLOCKS) - 10, [block.id for block in BLOCKS if block.not_run]


@pytest.mark.parametrize(
    "block", [b for b in RUN if b.language in ("python", "bash")], ids=lambda b: b.id
)
def test_block_runs_as_printed(block):
    report = run_block(block)
    if block.serves is not None:
        assert report["status"] == 200
        # What /metrics answers is an exposition prometheus_client parses.
        if block.serves.endswith("/metrics"):
            assert list(text_string_to_metric_families(report["served"]))
    if "pushgateway" in block.needs:
        pushed = [
            family.name
            for family in text_string_to_metric_families(report["pushgateway"])
            if family.name.startswith("ractogateway_")
        ]
        assert "ractogateway_requests" in pushed
    if "otlp" in block.needs:
        # Every push of a block comes from the resource it names, and only that one.
        services = {service for push in report["otlp"] for service in push["services"]}
        assert report["otlp"] and len(services) == 1, report["otlp"]
    if "prometheus" in block.needs:
        assert report["prometheus"], "nothing arrived through remote write"


@pytest.mark.parametrize("block", [b for b in RUN if b.language == "yaml"], ids=lambda b: b.id)
def test_prometheus_configuration_loads_in_each_version_it_names(block, tmp_path):
    if "scrape_configs" not in block.code and "rule_files" not in block.code:
        pytest.fail(f"{block.id}: not a Prometheus configuration; say how it is checked")
    config = tmp_path / "prometheus.yml"
    config.write_text(block.code)
    # Files a configuration refers to, relative to it, exist (as empty files).
    for name in ("gateway-ca.crt", "gateway-password"):
        (tmp_path / name).write_text("")
    for version in block.prometheus:
        promtool = PROMTOOL[version]
        assert promtool and Path(promtool).exists(), "promtool missing: `make deps`"
        checked = subprocess.run(
            [promtool, "check", "config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert checked.returncode == 0, f"Prometheus {version}: {checked.stdout}{checked.stderr}"


def test_a_block_that_shows_a_file_is_that_file():
    shown = [b for b in BLOCKS if b.not_run and b.not_run.startswith("the file ")]
    assert shown
    for block in shown:
        path = ROOT / block.not_run.removeprefix("the file ").split()[0].rstrip(",;")
        # The file is its docstring, then the block.
        assert path.read_text().endswith("\n" + block.code), f"{block.id} differs from {path}"


def test_the_counts_and_fields_the_docs_name_are_the_codes():
    def words(name: str) -> str:
        return " ".join((ROOT / "docs" / name).read_text().split())

    rules = sum(len(group["rules"]) for group in recording_rules()["groups"])
    assert f"by cache type: {rules} rules" in words("ops-kit.md")
    fields = ", ".join(field.name for field in dataclasses.fields(Usage))
    assert f"Usage({fields})" in words("recording.md")
    documented = " ".join(words(path.name) for path in (ROOT / "docs").glob("*.md"))
    assert "unregister()" in documented
