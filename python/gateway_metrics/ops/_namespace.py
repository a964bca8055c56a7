"""The kit under a middleware's own namespace: every metric name it queries,
and every recording rule named after one, renamed from the default prefix."""

from __future__ import annotations

from typing import Any, TypeVar

from gateway_metrics._core import DEFAULT_NAMESPACE, check_namespace

_Value = TypeVar("_Value")


def in_namespace(value: _Value, namespace: str) -> _Value:
    """``value`` (the kit's dashboard or rules: dicts, lists and strings) with
    every ``ractogateway_`` name under ``namespace`` instead; ``ValueError``
    for a namespace no middleware accepts."""
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
    check_namespace(namespace)
    if namespace == DEFAULT_NAMESPACE:
        return value
    renamed: Any = _renamed(value, f"{DEFAULT_NAMESPACE}_", f"{namespace}_")
    return renamed  # type: ignore[no-any-return]


def _renamed(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {key: _renamed(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_renamed(item, old, new) for item in value]
    return value
