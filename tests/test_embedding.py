"""The offline MiniLM embedder: order kept, cache reused, a broken cache rebuilt."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xrouter.policies.embedding import DIM, Embedder, routing_text
from xrouter.records.schema import Item

QUESTIONS = [
    "Janet's ducks lay 16 eggs per day. How much does she make every day?",
    "Find the sum of all integers that satisfy |x|+1>7 and |x+1|<=7.",
    "Which skin surface will produce the most heat?",
]


def items() -> list[Item]:
    return [
        Item(
            f"test/q/{i}",
            "test",
            "q",
            (("user", f"Instructions...\n{q}"),),
            meta={"question": q},
        )
        for i, q in enumerate(QUESTIONS)
    ]


def test_batches_sorted_by_length_keep_the_input_order() -> None:
    embedder = Embedder(batch_size=2)
    together = embedder.encode(QUESTIONS)
    alone = np.stack([embedder.encode([q])[0] for q in QUESTIONS])
    assert together.shape == (3, DIM)
    assert np.allclose(together, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    # the two arithmetic word problems are closer to each other than to the third
    sims = together @ together.T
    assert sims[0, 1] > sims[0, 2]


def test_routing_text_prefers_the_bare_question() -> None:
    assert routing_text(items()[0]) == QUESTIONS[0]


def test_cache_is_reused_and_a_broken_one_rebuilt(tmp_path: Path) -> None:
    embedder = Embedder(tmp_path)
    first = embedder.encode_items("test", items())
    calls: list[int] = []
    again = embedder.encode_items("test", items(), calls.append)
    assert calls == [] and np.array_equal(first, again)  # nothing re-embedded
    (tmp_path / "test.parquet").write_bytes(b"not parquet")
    rebuilt = embedder.encode_items("test", items(), calls.append)
    assert sum(calls) == 3 and np.allclose(rebuilt, first, atol=1e-6)
