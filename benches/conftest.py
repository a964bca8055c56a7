"""Benchmark helpers: per-call timings kept across the run, ratios, and a summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from timings import FIGURES, INTERLEAVED, TIMINGS
from workloads import interleaved_ratio


def record_ratios(group: str, contender: str, extra_info: dict[str, Any]) -> None:
    """Adds ratios against the floor and the reference measured earlier in this run."""
    mine = TIMINGS.get((group, contender))
    if mine is None:
        return
    floor = TIMINGS.get((group, "floor"))
    reference = TIMINGS.get((group, "reference"))
    if floor and contender != "floor":
        extra_info["ratio_to_floor"] = mine / floor
    if reference and contender != "reference":
        extra_info["speedup_over_reference"] = reference / mine


@pytest.fixture
def measure(benchmark) -> Callable[..., Any]:
    """Times ``call`` for ``contender`` in ``group``; ``calls_per_round`` normalises per call.

    With ``floor`` (``floor_calls_per_round`` calls each, as many as ``call`` makes
    unless given), the ratio to it is also timed in alternation, per call.
    """

    def run(
        group: str,
        contender: str,
        call: Callable[[], Any],
        calls_per_round: int = 1,
        floor: Callable[[], Any] | None = None,
        floor_calls_per_round: int | None = None,
    ):
        benchmark.group = group
        benchmark.extra_info["contender"] = contender
        result = benchmark(call)
        stats = getattr(benchmark, "stats", None)
        if stats is not None:
            per_call = stats.stats.median / calls_per_round
            TIMINGS[(group, contender)] = per_call
            benchmark.extra_info["seconds_per_call"] = per_call
            record_ratios(group, contender, benchmark.extra_info)
            if floor is not None:
                ratio = interleaved_ratio(
                    call,
                    floor,
                    units_per_call=calls_per_round,
                    units_per_floor=floor_calls_per_round or calls_per_round,
                )
                INTERLEAVED[(group, contender)] = ratio
                benchmark.extra_info["ratio_to_floor_interleaved"] = ratio
        return result

    return run


def pytest_terminal_summary(terminalreporter) -> None:
    if not TIMINGS and not FIGURES:
        return
    write = terminalreporter.write_line
    terminalreporter.section("gateway-metrics: ratios measured in this run (medians)")
    groups = list(dict.fromkeys(group for group, _ in TIMINGS))
    if groups:
        write(
            f"{'group':<62}{'ours':>12}{'reference':>12}{'floor':>10}{'x floor':>9}{'x faster':>10}"
        )
    for group in groups:
        for contender in [c for g, c in TIMINGS if g == group and c not in ("reference", "floor")]:
            ours = TIMINGS[(group, contender)]
            reference = TIMINGS.get((group, "reference"))
            floor = TIMINGS.get((group, "floor"))
            label = group if contender == "ours" else f"{group} [{contender}]"
            write(
                f"{label:<62}{ours * 1e6:>10.3f}us"
                + (f"{reference * 1e6:>10.1f}us" if reference else f"{'-':>12}")
                + (f"{floor * 1e6:>8.3f}us" if floor else f"{'-':>10}")
                + (f"{ours / floor:>9.2f}" if floor else f"{'-':>9}")
                + (f"{reference / ours:>10.1f}" if reference else f"{'-':>10}")
            )
    for (group, contender), ratio in INTERLEAVED.items():
        write(f"{group} [{contender}] / floor, timed in alternation (best of 15): {ratio:.2f}")
    for (group, contender), value in FIGURES.items():
        write(
            f"{group} [{contender}]: {value:,.2f}"
            if value < 100
            else f"{group} [{contender}]: {value:,.0f}"
        )
