"""The fenced blocks of README.md and docs/*.md, and what the suite does with each.

A block is run or checked as printed (``tests/test_docs.py``). An HTML comment
right above a block may say more, as ``<!-- docs-test: ... -->`` with clauses
separated by ``;``:

- ``needs pushgateway, prometheus, otlp, providers``: the servers the block
  talks to, started on the ports the block names (Pushgateway 9091, Prometheus
  with its remote-write receiver 9090, an OTLP/HTTP receiver 4318) or, for
  ``providers``, a local server answering as the provider SDKs' APIs do, which
  the SDKs' own environment variables point at;
- ``serves URL``: the block runs a server; it passes once ``URL`` answers 200
  itself (no redirect), and is then stopped;
- ``prometheus 2`` or ``prometheus 3``: a Prometheus configuration for that
  major version only (by default, both are checked);
- ``not run: REASON``: the block is not executed, for the reason given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The documents beside the tests: none where the tests run apart from the
#: source tree (against an installed wheel), where these tests are not run.
DOCUMENTS = [
    path for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if path.exists()
]
SERVERS = ("providers", "pushgateway", "prometheus", "otlp")

_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)
_DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*((?:(?!-->).)*?)\s*-->\s*\Z", re.S)


@dataclass
class Block:
    """One fenced block: where it is, its language and text, and its directive."""

    document: str
    line: int
    language: str
    code: str
    needs: list[str] = field(default_factory=list)
    serves: str | None = None
    prometheus: list[int] = field(default_factory=lambda: [2, 3])
    not_run: str | None = None

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"


def _apply(block: Block, directive: str) -> None:
    for clause in (part.strip() for part in directive.split(";")):
        if clause.startswith("not run:"):
            block.not_run = clause.removeprefix("not run:").strip()
            if not block.not_run:
                raise ValueError(f"{block.id}: 'not run' without a reason")
        elif clause.startswith("needs "):
            block.needs = [name.strip() for name in clause.removeprefix("needs ").split(",")]
            unknown = set(block.needs) - set(SERVERS)
            if unknown:
                raise ValueError(f"{block.id}: no such server: {', '.join(sorted(unknown))}")
        elif clause.startswith("serves "):
            block.serves = clause.removeprefix("serves ").strip()
        elif clause.startswith("prometheus "):
            block.prometheus = [int(clause.removeprefix("prometheus ").strip())]
        else:
            raise ValueError(f"{block.id}: unknown docs-test clause {clause!r}")


def blocks() -> list[Block]:
    """Every fenced block of the documents, in order."""
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        for match in _BLOCK.finditer(text):
            block = Block(
                document=str(path.relative_to(ROOT)),
                line=text.count("\n", 0, match.start()) + 1,
                language=match.group(1),
                code=match.group(2),
            )
            directive = _DIRECTIVE.search(text, 0, match.start())
            if directive is not None:
                _apply(block, directive.group(1))
            found.append(block)
    return found
