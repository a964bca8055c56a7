"""Writes what restates the core's tables: the stub's request signatures and the docs' tables.

The request fields, token types and families are described once, in the Rust
core (``src/schema/``), and exported by the built module as
``_core.REQUEST_FIELDS``, ``_core.TOKEN_TYPES`` and ``_core.FAMILIES``. This
rewrites each region between ``BEGIN GENERATED: <name>`` and ``END GENERATED:
<name>`` markers from them:

    python tools/generate.py          # rewrite the regions
    python tools/generate.py --check  # exit 1 if a region is not current

``tests/test_generated.py`` runs the check, so a table change that is not
regenerated fails the suite.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from gateway_metrics import _core, _errors

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / "python" / "gateway_metrics" / "_core.pyi"

#: ``record_batch`` takes a column where ``record_request`` takes a value.
BATCH_ANNOTATIONS = {
    "label": "str | Sequence[str]",
    "tokens": "int | Sequence[int] | Any | None",
    "tool_calls": "Sequence[Iterable[Any] | None] | None",
    "extra_labels": "Mapping[str, str] | Sequence[Mapping[str, str] | None] | None",
    "exemplar": "Mapping[str, str] | Sequence[Mapping[str, str] | None] | None",
    "error_type": "str | Sequence[str | None] | None",
}


def batch_annotation(kind: str, annotation: str) -> str:
    if kind == "seconds":
        optional = annotation.endswith("| None")
        return (
            "float | Sequence[float | None] | Any | None"
            if optional
            else "float | Sequence[float] | Any"
        )
    return BATCH_ANNOTATIONS[kind]


def signature(batch: bool) -> list[str]:
    """The keyword-only parameters of ``record_request`` (or ``record_batch``)."""
    lines = []
    for name, kind, default, annotation, _doc, _part_of in _core.REQUEST_FIELDS:
        shown = batch_annotation(kind, annotation) if batch else annotation
        suffix = "" if default is None else f" = {default}"
        lines.append(f"        {name}: {shown}{suffix},")
    return lines


def field_table() -> list[str]:
    """The docs' table of ``record_request``'s arguments."""
    lines = [
        "| argument | default | part of | what it is |",
        "|---|---|---|---|",
    ]
    for name, _kind, default, _annotation, doc, part_of in _core.REQUEST_FIELDS:
        whole = f"`{part_of[0]}`" if part_of else ""
        shown = "required" if default is None else f"`{default}`"
        lines.append(f"| `{name}` | {shown} | {whole} | {doc} |")
    lines.append("")
    lines.append(
        "Parts of one whole add up to at most the whole (the cache reads and writes "
        "together fit in `input_tokens`); a call that breaks this is a `ValueError` "
        "naming the arguments, and records nothing. Token types: "
        + ", ".join(f"`{name}`" for name, *_ in _core.TOKEN_TYPES)
        + "."
    )
    return lines


#: How the docs write a family's unit (UCUM, as ``_core.FAMILIES`` gives it).
UNIT_WORDS = {"s": "s", "{token}": "tokens"}


def bounds_text(bounds: list[float]) -> str:
    return ", ".join(f"{bound:.15g}" for bound in bounds) + ", +Inf"


def family_table() -> list[str]:
    """The docs' table of every family."""
    lines = [
        "| family | type | labels | observes | help |",
        "|---|---|---|---|---|",
    ]
    for name, help_text, kind, labels, bounds, observes, unit in _core.FAMILIES:
        shown = f"{name}_total" if kind == "counter" else name
        what = observes or ""
        if bounds is not None:
            what += f"; buckets {bounds_text(bounds)} {UNIT_WORDS[unit]}"
        lines.append(f"| `{shown}` | {kind} | {', '.join(labels)} | {what} | {help_text} |")
    return lines


def semconv_table() -> list[str]:
    """The docs' table of the names ``semconv="gen_ai"`` gives."""
    metrics, attributes = _core.GEN_AI_SEMCONV_NAMES
    lines = ["| ours | OpenTelemetry GenAI |", "|---|---|"]
    lines += [f"| family `{ours}` | metric `{theirs}` |" for ours, theirs in metrics]
    lines += [f"| label `{ours}` | attribute `{theirs}` |" for ours, theirs in attributes]
    return lines


def error_tables() -> list[str]:
    """The docs' tables of how ``error_type_of`` tells errors apart."""
    lines = ["| exception class (by name, in its hierarchy) | error_type |", "|---|---|"]
    lines += [f"| `{name}` | `{kind}` |" for name, kind in _errors._CLASS_NAMES]
    lines += ["", "| error body `code`, `type` or `status` | error_type |", "|---|---|"]
    lines += [f"| `{name}` | `{kind}` |" for name, kind in _errors._BODY_NAMES.items()]
    lines += ["", "| HTTP status | error_type |", "|---|---|"]
    lines += [f"| {status} | `{kind}` |" for status, kind in sorted(_errors._STATUS_TYPES.items())]
    lines += ["| any other 5xx | `server_error` |", "| anything else | `other` |"]
    lines += [
        "",
        "A message that says a prompt did not fit ("
        + ", ".join(f'"{words}"' for words in _errors._CONTEXT_LENGTH_WORDS)
        + ") is `context_length`.",
    ]
    return lines


#: Each generated region: the file it is in and what it holds.
REGIONS: dict[str, tuple[Path, Callable[[], list[str]]]] = {
    "record_request": (STUB, lambda: signature(batch=False)),
    "record_batch": (STUB, lambda: signature(batch=True)),
    "request fields": (ROOT / "docs" / "recording.md", field_table),
    "families": (ROOT / "docs" / "metrics.md", family_table),
    "gen_ai names": (ROOT / "docs" / "otlp.md", semconv_table),
    "error types": (ROOT / "docs" / "errors.md", error_tables),
}


def regenerated(text: str, name: str, lines: list[str]) -> str:
    """``text`` with the region ``name`` holding ``lines``."""
    pattern = re.compile(
        rf"(^[^\n]*BEGIN GENERATED: {re.escape(name)}\b[^\n]*\n)(.*?)(^[^\n]*END GENERATED: "
        rf"{re.escape(name)}\b)",
        re.DOTALL | re.MULTILINE,
    )
    if not pattern.search(text):
        raise SystemExit(f"no region {name!r} (BEGIN/END GENERATED markers)")
    body = "".join(f"{line}\n" for line in lines)
    return pattern.sub(lambda match: match.group(1) + body + match.group(3), text, count=1)


def stale_files() -> dict[Path, str]:
    """Each file whose regions are not current, with its current text."""
    texts: dict[Path, str] = {}
    for name, (path, lines) in REGIONS.items():
        text = texts.get(path, path.read_text())
        texts[path] = regenerated(text, name, lines())
    return {path: text for path, text in texts.items() if path.read_text() != text}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a region is stale")
    args = parser.parse_args()
    stale = stale_files()
    for path, text in stale.items():
        if args.check:
            print(
                f"{path.relative_to(ROOT)} is stale: run python tools/generate.py", file=sys.stderr
            )
        else:
            path.write_text(text)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
