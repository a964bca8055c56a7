"""The request methods' signatures, their stub and their argument table agree."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from gateway_metrics import GatewayMetricsMiddleware, _core

STUB = Path(_core.__file__).with_name("_core.pyi")


def stub_keywords(method: str) -> list[tuple[str, str | None]]:
    """``(name, default source or None)`` of the keyword-only arguments in the stub."""
    tree = ast.parse(STUB.read_text())
    store = next(
        node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "MetricsStore"
    )
    # The last definition: record_batch's table form is an overload before its keyword form.
    function = [
        node for node in store.body if isinstance(node, ast.FunctionDef) and node.name == method
    ][-1]
    arguments = function.args
    return [
        (argument.arg, None if default is None else ast.unparse(default))
        for argument, default in zip(arguments.kwonlyargs, arguments.kw_defaults)
    ]


@pytest.mark.parametrize("method", ["record_request", "record_batch"])
def test_the_stub_and_the_runtime_signature_follow_the_field_table(method):
    table = [(name, default) for name, _, default, *_ in _core.REQUEST_FIELDS]
    assert stub_keywords(method) == table
    signature = inspect.signature(getattr(GatewayMetricsMiddleware, method))
    runtime = [
        (name, None if parameter.default is inspect.Parameter.empty else repr(parameter.default))
        for name, parameter in signature.parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "columns"
    ]
    assert runtime == table


def test_both_methods_reject_what_the_table_does_not_name(metrics):
    for method in (metrics.record_request, metrics.record_batch):
        with pytest.raises(TypeError, match="unexpected keyword argument 'latency'"):
            method(provider="p", model="m", operation="o", status="s", latency=1.0)
        with pytest.raises(TypeError, match=r"missing required keyword argument\(s\): 'latency_s'"):
            method(provider="p", model="m", operation="o", status="s")
    with pytest.raises(TypeError, match="takes 0 positional arguments"):
        metrics.record_request("p")
    # record_batch's one positional argument is a table.
    with pytest.raises(TypeError, match=r"takes a table .* not str"):
        metrics.record_batch("p")
    assert (
        metrics.record_batch(
            provider="p", model="m", operation="o", status="s", latency_s=[1.0, 2.0]
        )
        == 2
    )
