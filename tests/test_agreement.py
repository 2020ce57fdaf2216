"""`xrouter data verify`'s rows on real records: ZeroEval's published figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from xrouter.core.catalog import load_catalog
from xrouter.records.agreement import agreement_rows
from xrouter.records.ingest import ingest
from xrouter.records.store import Store


def test_zeroeval_accuracy_reproduces_the_published_figures(
    small_data: Path, tmp_path: Path
) -> None:
    store = Store(tmp_path)
    ingest(small_data, store, load_catalog(), ["zeroeval"])
    rows = {
        (r.task, r.model): r for r in agreement_rows(store, small_data, load_catalog())
    }
    assert len(rows) == 9
    published = {
        ("gsm8k", "gpt-4o-mini-2024-07-18"): 94.24,
        ("math-l5", "gpt-4o-mini-2024-07-18"): 52.15,
        ("gsm8k", "gemma-2-2b-it"): 51.63,
        ("math-l5", "claude-3-haiku-20240307"): 15.12,
    }
    for key, official in published.items():
        row = rows[key]
        assert row.official == official
        assert row.ours == pytest.approx(official, abs=0.01)
        assert row.n == {"gsm8k": 1319, "math-l5": 721}[key[0]]
    # xrouter's own reading credits gemma-2-2b-it's worked answers ("4 * 15 * 12 =
    # 720") that ZeroEval's first-number rule marks wrong.
    gemma = rows[("gsm8k", "gemma-2-2b-it")]
    assert gemma.independent is not None and gemma.independent > gemma.ours + 1.0
