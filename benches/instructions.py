"""Instructions per recording call, counted by callgrind: the hot path's repeatable witness.

Wall-clock timings move with the machine's load; the instructions a call
executes do not. Each case runs a child interpreter under ``valgrind
--tool=callgrind`` twice, making ``calls`` and then ``2 * calls`` calls, and
takes the difference divided by ``calls``: the instructions of one call, the
Python loop around it included, without start-up and import.

    python benches/instructions.py              # every budgeted case
    python benches/instructions.py --check      # exit 1 when a case exceeds its budget
    python benches/instructions.py --witness    # also the opt-in features' costs
    python benches/instructions.py --calls 20000 --python /path/to/other/python

Run it with two builds' interpreters to compare them. ``--check`` is part of
``make test``: a change that makes the hot path slower fails it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """One measured loop: what it sets up, what each iteration runs, its budget."""

    setup: str
    #: One iteration, run ``calls`` times with ``i`` counting; empty for the
    #: batch, whose ``calls`` rows are one call after the setup.
    loop: str
    #: Most instructions per iteration allowed, set from the measurement on
    #: CPython 3.11 before the request table replaced the hand-written
    #: recording code (2,456, 1,934, 2,903, 1,072 and 675), plus about 3 %;
    #: the batch row's from 206, once a row's values stayed in registers. None for
    #: a witness of what an opt-in feature costs (``--witness``).
    budget: int | None
    #: For a batch: the call that records its ``calls`` rows (``n``).
    tail: str = ""


SEED_CALL = (
    'record(provider="openai", model={model}, operation="chat", status="ok", '
    "latency_s=0.42, input_tokens=1000, output_tokens=200{extra})"
)

#: What one call records: the reference's arguments, then the paths beside them.
CASES = {
    "seed-only, fixed labels, one tool call": Case(
        "",
        SEED_CALL.format(model='"gpt-4o"', extra=", tool_calls=NAMED"),
        2_530,
    ),
    "seed-only, fixed labels, no tool calls": Case(
        "", SEED_CALL.format(model='"gpt-4o"', extra=""), 1_990
    ),
    "seed-only, four models in turn, one tool call": Case(
        "",
        SEED_CALL.format(model="MODELS[i & 3]", extra=", tool_calls=NAMED"),
        2_990,
    ),
    "record_cache_hit": Case("", 'metrics.record_cache_hit("exact")', 1_100),
    "record_batch, per row (numpy columns, scalar labels)": Case(
        # One batch of ``calls`` rows, its columns built by numpy at a few
        # instructions per element.
        "import numpy",
        "",
        215,
    ),
    "record_batch, per row (pyarrow table, dictionary-encoded model column of 4)": Case(
        # The table's columns built by numpy and pyarrow (a few instructions per
        # element), then recorded in place; 287 when measured, plus about 3 %.
        "import numpy, pyarrow",
        "",
        295,
        tail="""
n = int(sys.argv[1])
table = pyarrow.table({
    "model": pyarrow.DictionaryArray.from_arrays(
        pyarrow.array(numpy.arange(n, dtype=numpy.int32) % 4), pyarrow.array(MODELS)),
    "latency_s": numpy.linspace(0.01, 20.0, n), "input_tokens": numpy.full(n, 1000),
    "output_tokens": numpy.full(n, 200)})
metrics.record_batch(table, provider="openai", operation="chat", status="ok")
""",
    ),
    "native histograms on, fixed labels, no tool calls": Case(
        "metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), native_histograms=True)"
        "\nrecord = metrics.record_request",
        SEED_CALL.format(model='"gpt-4o"', extra=""),
        None,
    ),
    "an exemplar, fixed labels, no tool calls": Case(
        "TRACE = {'trace_id': '4bf92f3577b34da6a3ce929d0e0e4736', 'span_id': '00f067aa0ba902b7'}",
        SEED_CALL.format(model='"gpt-4o"', extra=", exemplar=TRACE"),
        None,
    ),
    "an exemplar in multi-process mode, fixed labels, no tool calls": Case(
        "import tempfile\nTRACE = {'trace_id': '4bf92f3577b34da6a3ce929d0e0e4736'}\n"
        "metrics = GatewayMetricsMiddleware(\n"
        "    registry=CollectorRegistry(), multiprocess_dir=tempfile.mkdtemp())\n"
        "record = metrics.record_request",
        SEED_CALL.format(model='"gpt-4o"', extra=", exemplar=TRACE"),
        None,
    ),
}

CHILD = """
import sys
from prometheus_client import CollectorRegistry
from gateway_metrics import GatewayMetricsMiddleware, ToolCall

# Made once: the loop measures the call, not building its arguments.
NAMED = [ToolCall("search")]
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "gpt-4.1"]
metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
record = metrics.record_request
{setup}
"""

#: The batch case records its rows in one call after the loop.
BATCH_TAIL = """
n = int(sys.argv[1])
metrics.record_batch(
    provider="openai", model="gpt-4o", operation="chat", status="ok",
    latency_s=numpy.linspace(0.01, 20.0, n), input_tokens=numpy.full(n, 1000),
    output_tokens=numpy.full(n, 200))
"""


def child_code(case: Case) -> str:
    """The child's program for ``case``."""
    code = CHILD.replace("{setup}", case.setup)
    if case.loop:
        return code + f"for i in range(int(sys.argv[1])):\n    {case.loop}\n"
    return code + (case.tail or BATCH_TAIL)


def instructions(python: str, case: Case, calls: int) -> int:
    """Instructions callgrind counts for a child making ``calls`` calls."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            python,
            "-c",
            child_code(case),
            str(calls),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        # String hashes are randomised per process, and dict probing with them;
        # numpy's BLAS threads would add their own start-up.
        env={**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"},
    )
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise RuntimeError(f"callgrind printed no total:\n{done.stderr[-2000:]}")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--check", action="store_true", help="fail when over a budget")
    parser.add_argument("--witness", action="store_true", help="also the unbudgeted cases")
    args = parser.parse_args()
    over = []
    for name, case in CASES.items():
        if case.budget is None and not args.witness:
            continue
        once = instructions(args.python, case, args.calls)
        twice = instructions(args.python, case, 2 * args.calls)
        per_call = (twice - once) / args.calls
        if case.budget is None:
            print(f"{name}: {per_call:,.0f} instructions per call")
            continue
        verdict = "ok" if per_call <= case.budget else "OVER BUDGET"
        print(f"{name}: {per_call:,.0f} instructions per call (budget {case.budget:,}) {verdict}")
        if per_call > case.budget:
            over.append(name)
    if args.check and over:
        print(f"over budget: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
