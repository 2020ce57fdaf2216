"""The router's memory of train prompts: neighbours, weights, its own item."""

from __future__ import annotations

import numpy as np
import pytest

from xrouter.policies.memory import NeighbourMemory, build_memory, item_hash

NAN = np.nan


def memory() -> NeighbourMemory:
    # Four remembered prompts in the plane; models 0 and 1 were recorded on all,
    # model 2 only on the last two.
    angles = np.radians([0, 10, 80, 90])
    embedding = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    embedding = np.pad(embedding, ((0, 0), (0, 382))).astype(np.float32)
    score = np.array([[1, 0, NAN], [1, 1, NAN], [0, 1, 1], [0, 0, 0]], dtype=np.float32)
    cost = np.array([[1, 2, NAN], [3, 4, NAN], [5, 6, 7], [9, 8, 9]], dtype=np.float32)
    ids = item_hash(["a", "b", "c", "d"])
    return NeighbourMemory(embedding, ids, score, cost, near=1, wide=2)


def test_features_weigh_the_nearest_prompts_by_similarity() -> None:
    query = np.zeros((1, 384), dtype=np.float32)
    query[0, 0] = 1.0  # the direction of prompt "a"
    found = memory().lookup(query)
    # Models 0 and 1: nearest is "a" (similarity 1), then "b" (cos 10 degrees).
    w = np.array([1.0, np.cos(np.radians(10))])
    assert found[0, 0].tolist() == pytest.approx([1, 1, (w @ [1, 3]) / w.sum(), 1])
    assert found[0, 1, 1] == pytest.approx((w @ [0, 1]) / w.sum())
    # Model 2 was only recorded on "c" and "d", so those are its neighbours.
    w2 = np.array([np.cos(np.radians(80)), 1e-3])  # similarity 0 weighs 1e-3
    assert found[0, 2, 2] == pytest.approx((w2 @ [7, 9]) / w2.sum(), rel=1e-4)


def test_an_item_never_counts_as_its_own_neighbour() -> None:
    query = np.zeros((1, 384), dtype=np.float32)
    query[0, 0] = 1.0
    found = memory().lookup(query, item_hash(["a"]))
    assert found[0, 0, 0] == 1.0  # now "b" is nearest: model 0 right there too
    assert found[0, 1, 0] == 1.0  # and model 1 too, unlike on "a"


def test_a_memory_is_built_from_table_rows() -> None:
    built = build_memory(
        embedding=np.eye(2, 384, dtype=np.float32),
        item=item_hash(["x", "y"]),
        model_id=np.array([[2, 0], [1, 0]]),
        valid=np.array([[True, True], [True, False]]),
        score=np.array([[1.0, 0.0], [0.5, 0.0]]),
        cost=np.array([[0.1, 0.2], [0.3, 0.0]]),
        n_models=3,
    )
    assert np.isnan(built.score[1, 0]) and built.score[0, 0] == 0.0
    assert built.score[0, 2] == 1.0 and built.score[1, 1] == 0.5
    assert built.cost[0, 0] == pytest.approx(0.2)
