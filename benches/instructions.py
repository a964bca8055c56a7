"""Instructions per recording call, counted by callgrind: the hot path's repeatable witness.

Wall-clock timings move with the machine's load; the instructions a call
executes do not. This runs a child interpreter under ``valgrind
--tool=callgrind`` twice, making ``calls`` and then ``2 * calls`` calls, and
prints the difference divided by ``calls``: the instructions of one call,
the Python loop around it included, without start-up and import.

    python benches/instructions.py              # the seed-only call and variants
    python benches/instructions.py --calls 20000 --python /path/to/other/python

Run it with two builds' interpreters to compare them.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import textwrap

#: What one call records: the reference's arguments, then the paths beside them.
CASES = {
    "seed-only (one tool call with .name)": "tool_calls=NAMED",
    "seed-only, no tool calls": "",
    "tool call with .function.name": "tool_calls=FUNCTION",
}

CHILD = """
    import sys
    from types import SimpleNamespace
    from prometheus_client import CollectorRegistry
    from gateway_metrics import GatewayMetricsMiddleware, ToolCall

    # Made once: the loop measures the call, not building its arguments.
    NAMED = [ToolCall("search")]
    FUNCTION = [SimpleNamespace(function=SimpleNamespace(name="search"))]
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record = metrics.record_request
    for _ in range(int(sys.argv[1])):
        record(provider="openai", model="gpt-4o", operation="chat", status="ok",
               latency_s=0.42, input_tokens=1000, output_tokens=200, {extra})
"""


def instructions(python: str, extra: str, calls: int) -> int:
    """Instructions callgrind counts for a child making ``calls`` calls."""
    code = textwrap.dedent(CHILD).replace("{extra}", extra)
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            python,
            "-c",
            code,
            str(calls),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        # String hashes are randomised per process, and dict probing with them.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise RuntimeError(f"callgrind printed no total:\n{done.stderr[-2000:]}")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    for name, extra in CASES.items():
        once = instructions(args.python, extra, args.calls)
        twice = instructions(args.python, extra, 2 * args.calls)
        print(f"{name}: {(twice - once) / args.calls:,.0f} instructions per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
