"""``make bench-table``: a short comparison table, well under a minute."""

from __future__ import annotations

import platform

from workloads import Comparison, compare, reference_middleware_class


def _amount(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "B":
        return f"{value:,.0f} B"
    if value >= 1e-3:
        return f"{value * 1e3:,.1f} ms"
    return f"{value * 1e6:,.3f} µs"


def _ratios(row: Comparison) -> tuple[str, str]:
    if row.floor_ratio is not None:
        floor = f"{row.floor_ratio:.2f}x"
    else:
        floor = f"{row.ours / row.floor:.2f}x" if row.floor else "-"
    if row.reference is None:
        return floor, "-"
    if row.unit == "B":
        return floor, f"{row.ours / row.reference:.2f} of it"
    return floor, f"{row.reference / row.ours:,.1f}x faster"


def print_comparison() -> int:
    """Measures and prints the table; returns the process exit code."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if reference_middleware_class() is None:
        console.print("ractogateway==0.2.1 is not installed: showing ours and the floor only.")
    with console.status("measuring (about half a minute)"):
        rows = compare()
    table = Table(
        title=f"gateway-metrics vs the reference ({platform.python_version()}, "
        f"{platform.machine()})"
    )
    for column in ("", "ours", "reference", "floor", "ours / floor", "vs reference"):
        table.add_column(column, justify="left" if not column else "right")
    for row in rows:
        floor_ratio, reference_ratio = _ratios(row)
        table.add_row(
            row.group,
            _amount(row.ours, row.unit),
            _amount(row.reference, row.unit),
            _amount(row.floor, row.unit),
            floor_ratio,
            reference_ratio,
        )
    console.print(table)
    console.print(
        "floor: a do-nothing Python function with the same signature; ours / floor is "
        "timed with the two in alternation."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(print_comparison())
