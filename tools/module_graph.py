"""The module graph of the Rust core and of the Python package, and its checks.

An edge ``a -> b`` means module ``a`` names something of module ``b``: a
``crate::``/``super::`` path in Rust (unit tests, at the end of a file, left
out: they may use any layer), an import in Python (function-local ones
included). The checks, run by ``make lint``:

- no cycles: no module depends on itself through others;
- layers: the Rust core's folders depend only on the folders before them in
  ``LAYERS``;
- unsafe code: the modules whose declaration carries ``#[allow(unsafe_code)]``
  (the crate denies it elsewhere) are exactly those ARCHITECTURE.md lists.

    python tools/module_graph.py          # check; exit 1 with what is wrong
    python tools/module_graph.py --print  # the graph, one module per line
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The Rust core's folders by layer: each may use only itself and those before it.
LAYERS = ("schema", "cells", "store", "formats", "multiprocess", "python")

Graph = dict[str, set[str]]

RUST_PATH = re.compile(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)")


def rust_module(path: Path, src: Path) -> str:
    """``crate::a::b`` for ``src/a/b.rs`` or ``src/a/b/mod.rs``."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return "::".join(["crate", *parts])


def rust_graph(src: Path) -> Graph:
    """Edges between the Rust modules under ``src``."""
    files = {rust_module(path, src): path for path in sorted(src.rglob("*.rs"))}
    graph: Graph = {module: set() for module in files}
    for module, path in files.items():
        text = path.read_text()
        # Unit tests close a file; they may use any layer.
        text = text.split("#[cfg(test)]", 1)[0]
        text = re.sub(r"//[^\n]*", "", text)
        is_mod_file = path.name in ("mod.rs", "lib.rs")
        for root, rest in RUST_PATH.findall(text):
            names = rest.split("::")[1:]
            if root == "crate":
                base = ["crate"]
            else:
                base = module.split("::")
                if not is_mod_file:
                    base = base[:-1]
                while names and names[0] == "super":
                    base, names = base[:-1], names[1:]
            target = None
            for length in range(len(names), -1, -1):
                candidate = "::".join(base + names[:length])
                if candidate in files:
                    target = candidate
                    break
            if target is not None and target != module:
                graph[module].add(target)
    return graph


def python_module(path: Path, package_root: Path) -> str:
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_graph(package: Path) -> Graph:
    """Edges between the modules of the Python package at ``package``."""
    # A compiled extension is a module too: its stub stands for it.
    paths = sorted([*package.rglob("*.py"), *package.rglob("*.pyi")])
    files = {python_module(path, package): path for path in paths}
    graph: Graph = {module: set() for module in files}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    for module, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")
                    if not is_package:
                        anchor = anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
            for name in targets:
                target = resolve(name)
                if target is not None and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int | None:
    parts = module.split("::")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def layer_violations(graph: Graph) -> list[str]:
    """Edges from a layer's folder to a later layer's."""
    wrong = []
    for module, targets in sorted(graph.items()):
        source = layer_of(module)
        for target in sorted(targets):
            layer = layer_of(target)
            if source is not None and layer is not None and layer > source:
                wrong.append(f"{module} -> {target} ({LAYERS[source]} uses {LAYERS[layer]})")
    return wrong


ALLOW_UNSAFE = re.compile(r"#\[allow\(unsafe_code\)\]\s*(?:pub(?:\([a-z]+\))? )?mod ([a-z_0-9]+);")
#: A listed module in ARCHITECTURE.md's unsafe section: a bullet starting with its path.
LISTED_UNSAFE = re.compile(r"^- `(src/[a-z_0-9/]+(?:\.rs|/))`", re.M)


def unsafe_modules(src: Path) -> set[str]:
    """The files (``src/a/b.rs``) or folders (``src/a/``) allowed unsafe code."""
    allowed = set()
    for path in sorted(src.rglob("*.rs")):
        folder = path.parent if path.name in ("mod.rs", "lib.rs") else path.with_suffix("")
        for name in ALLOW_UNSAFE.findall(path.read_text()):
            target = folder / name
            shown = target.with_suffix(".rs") if target.with_suffix(".rs").exists() else target
            allowed.add(f"{shown.relative_to(ROOT)}{'/' if shown.is_dir() else ''}")
    return allowed


def unsafe_list_problems() -> list[str]:
    """Where the modules allowed unsafe code and ARCHITECTURE.md's list differ."""
    section = (ROOT / "ARCHITECTURE.md").read_text().split("## Unsafe code", 1)[-1]
    section = section.split("\n## ", 1)[0]
    listed = set(LISTED_UNSAFE.findall(section))
    allowed = unsafe_modules(ROOT / "src")
    unlisted = [
        f"unsafe code allowed, not in ARCHITECTURE.md: {m}" for m in sorted(allowed - listed)
    ]
    stale = [f"in ARCHITECTURE.md, not allowed unsafe code: {m}" for m in sorted(listed - allowed)]
    return unlisted + stale


def lines(graph: Graph) -> Iterable[str]:
    for module in sorted(graph):
        yield f"{module} -> {', '.join(sorted(graph[module])) or '(nothing)'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the graphs")
    args = parser.parse_args()
    graphs = {
        "Rust core": rust_graph(ROOT / "src"),
        "Python package": python_graph(ROOT / "python" / "gateway_metrics"),
    }
    problems = []
    for name, graph in graphs.items():
        if args.print:
            print(f"# {name}")
            print("\n".join(lines(graph)))
        problems += [f"{name}: cycle {' <-> '.join(cycle)}" for cycle in cycles(graph)]
    problems += [f"Rust core: {edge}" for edge in layer_violations(graphs["Rust core"])]
    problems += unsafe_list_problems()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
