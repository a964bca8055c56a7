"""Figures measured during one benchmark run, shared by the benchmarks and the summary."""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import Any

#: Seconds per call by (group, contender), filled as the benchmarks run.
TIMINGS: dict[tuple[str, str], float] = {}
#: Other measured figures by (group, contender), e.g. bytes per label set.
FIGURES: dict[tuple[str, str], float] = {}
#: Ratio to the floor timed in alternation with it, by (group, contender).
INTERLEAVED: dict[tuple[str, str], float] = {}


def interleaved_ratio(call: Callable[[], Any], floor: Callable[[], Any], rounds: int = 15) -> float:
    """``call``'s time over ``floor``'s, timed in alternation and best of ``rounds`` each.

    On a shared machine the speed drifts between benchmarks; alternating the two
    workloads makes them meet the same conditions, so their ratio holds.
    """
    number = max(1, timeit.Timer(call).autorange()[0] // 4)
    best_call = best_floor = float("inf")
    for _ in range(rounds):
        best_call = min(best_call, timeit.timeit(call, number=number))
        best_floor = min(best_floor, timeit.timeit(floor, number=number))
    return best_call / best_floor
