"""What restates the core's tables (the stub's signatures, the docs' tables) is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gateway_metrics import _core

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.source_tree
def test_the_generated_regions_are_current():
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_every_token_type_has_its_field_and_every_family_its_row():
    fields = {name: (kind, part_of) for name, kind, _, _, _, part_of in _core.REQUEST_FIELDS}
    for name, keyword, rate in _core.TOKEN_TYPES:
        assert keyword == f"{name}_tokens"
        assert fields[keyword][0] == "tokens"
        # A part billed with its whole is part of one; one billed apart may be too.
        assert rate != "whole" or fields[keyword][1] is not None
    names = [family[0] for family in _core.FAMILIES]
    assert len(set(names)) == len(names)
    for _name, _help, kind, _labels, bounds, observes, unit in _core.FAMILIES:
        assert (kind == "histogram") == (bounds is not None) == (observes is not None)
        assert (kind == "histogram") == (unit in ("s", "{token}"))
