"""The load benchmark's harness, run small: ``make bench-load`` runs it in full
(``benches/load.py``: 500 requests per second, 2,500 and 25,000 label sets)."""

from __future__ import annotations

import pytest
from load import run_case


@pytest.mark.parametrize("contender", ["ours", "reference"])
def test_a_worker_serves_its_handlers_while_scraped(contender):
    outcome = run_case(contender, label_sets=200, scrape_every_s=0.1, rate=200.0, seconds=1.0)
    # About 200 requests were due; every one was answered, and the scrapes came back.
    assert 150 <= outcome.requests <= 250
    assert outcome.scrape_ms is not None and outcome.scrape_bytes
