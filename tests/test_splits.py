from __future__ import annotations

import numpy as np

from xrouter.records.splits import split_mask, split_of


def test_split_depends_on_the_item_id_alone() -> None:
    ids = [f"zeroeval/gsm8k/gsm8k-main-test-#{i}" for i in range(3000)]
    first = [split_of(i) for i in ids]
    assert [split_of(i) for i in reversed(ids)] == first[::-1]
    shares = {s: first.count(s) / len(ids) for s in ("train", "dev", "test")}
    assert abs(shares["train"] - 0.6) < 0.03
    assert abs(shares["dev"] - 0.1) < 0.02
    assert abs(shares["test"] - 0.3) < 0.03


def test_split_of_a_known_item_is_fixed_forever() -> None:
    # Pinned: changing the hash or the bounds would move items between splits.
    pinned = {i: split_of(f"zeroeval/math-l5/{i}") for i in range(6)}
    assert pinned == PINNED


def test_masks_partition_the_items() -> None:
    ids = [f"routerbench/mbpp/mbpp.dev.{i}" for i in range(500)]
    masks = [split_mask(ids, s) for s in ("train", "dev", "test")]
    assert (np.sum(masks, axis=0) == 1).all()


PINNED = {0: "train", 1: "train", 2: "test", 3: "train", 4: "train", 5: "train"}
