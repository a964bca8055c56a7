"""A YAML writer for the rule files: mappings, lists, strings and numbers only.

Strings are written as JSON strings, which YAML reads as double-quoted
scalars, so no value needs YAML's quoting rules; the block layout keeps the
files readable and diffable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence


def dump(value: object) -> str:
    """``value`` as a YAML document."""
    return "\n".join(_lines(value, 0)) + "\n"


def _scalar(value: object) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (int, float, str)):
        return json.dumps(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _lines(value: object, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, Mapping):
        lines = []
        for key, item in value.items():
            if _is_block(item):
                lines.append(f"{pad}{key}:")
                lines.extend(_lines(item, indent + 2))
            else:
                lines.append(f"{pad}{key}: {_inline(item)}")
        return lines
    if isinstance(value, Sequence) and not isinstance(value, str):
        lines = []
        for item in value:
            nested = _lines(item, indent + 2) if _is_block(item) else [f"{pad}  {_inline(item)}"]
            lines.append(f"{pad}- {nested[0].lstrip()}")
            lines.extend(nested[1:])
        return lines
    return [pad + _scalar(value)]


def _is_block(value: object) -> bool:
    is_collection = isinstance(value, (Mapping, Sequence)) and not isinstance(value, str)
    return is_collection and len(value) > 0  # type: ignore[arg-type]


def _inline(value: object) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[]"
    return _scalar(value)
