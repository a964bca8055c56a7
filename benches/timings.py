"""Figures measured during one benchmark run, shared by the benchmarks and the summary."""

from __future__ import annotations

#: Seconds per call by (group, contender), filled as the benchmarks run.
TIMINGS: dict[tuple[str, str], float] = {}
#: Other measured figures by (group, contender), e.g. bytes per label set.
FIGURES: dict[tuple[str, str], float] = {}
#: Ratio to the floor timed in alternation with it, by (group, contender).
INTERLEAVED: dict[tuple[str, str], float] = {}
