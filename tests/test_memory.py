"""The router's memory of train prompts: neighbours, weights, its own item."""

from __future__ import annotations

import numpy as np
import pytest

from xrouter.policies.memory import UNKNOWN, NeighbourMemory, build_memory, item_hash

NAN = np.nan


def plane(degrees: list[float]) -> np.ndarray:
    angles = np.radians(degrees)
    embedding = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.pad(embedding, ((0, 0), (0, 382))).astype(np.float32)


def memory() -> NeighbourMemory:
    # Four remembered prompts in the plane, centred on the origin (their mean is
    # zero, so centring leaves them be); models 0 and 1 were recorded on all,
    # model 2 only on the last two.
    embedding = plane([0, 10, 180, 190])
    score = np.array([[1, 0, NAN], [1, 1, NAN], [0, 1, 1], [0, 0, 0]], dtype=np.float32)
    cost = np.array([[1, 2, NAN], [3, 4, NAN], [5, 6, 7], [9, 8, 9]], dtype=np.float32)
    ids = item_hash(["a", "b", "c", "d"])
    # An answer could be extracted from model 0's response on "a", "c" and "d".
    extracted = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0]], np.float32)
    return NeighbourMemory(
        embedding, ids, score, cost, near=1, wide=2, extracted=extracted
    )


def test_features_weigh_the_nearest_prompts_by_similarity() -> None:
    query = np.zeros((1, 384), dtype=np.float32)
    query[0, 0] = 1.0  # the direction of prompt "a"
    found = memory().lookup(query)
    # Models 0 and 1: nearest is "a" (similarity 1), then "b" (cos 10 degrees).
    w = np.array([1.0, np.cos(np.radians(10))])
    average = [1, 1, (w @ [1, 3]) / w.sum(), 1, w[0] / w.sum()]
    assert found[0, 0].tolist() == pytest.approx(average)
    assert found[0, 1, 4] == 0.0  # no answer extracted from model 1's responses
    assert found[0, 1, 1] == pytest.approx((w @ [0, 1]) / w.sum())
    # Model 2 was only recorded on "c" and "d", opposite the query: similarities
    # below zero weigh 1e-3 each.
    assert found[0, 2, 2] == pytest.approx((7 + 9) / 2, rel=1e-4)


def test_a_collection_can_average_its_own_count_of_neighbours() -> None:
    query = np.zeros((1, 384), dtype=np.float32)
    query[0, 0] = 1.0
    m = memory()
    narrow = NeighbourMemory(m.embedding, m.item, m.score, m.cost, 1, 2, wide_of=(1,))
    # Every model now takes one neighbour: for models 0 and 1 "a", where model 1
    # scored 0; for model 2, of "c" and "d", the nearer "d".
    assert narrow.lookup(query)[0, 1, 1] == 0.0
    assert m.lookup(query)[0, 1, 1] > 0.0
    assert narrow.lookup(query)[0, 2, 2] == 9.0
    assert m.lookup(query)[0, 2, 2] == pytest.approx(8.0, rel=1e-4)


def two_collections() -> NeighbourMemory:
    # "a" and "b" come from one benchmark, "c" and "d" from another; model 2 was
    # only recorded on the second.
    m = memory()
    labels = np.array([0, 0, 1, 1])
    return NeighbourMemory(
        m.embedding,
        m.item,
        m.score,
        m.cost,
        1,
        2,
        labels,
        ("one", "two"),
        extracted=m.extracted,
    )


def test_a_query_of_a_collection_is_answered_from_its_records_alone() -> None:
    query = np.zeros((2, 384), dtype=np.float32)
    query[:, 0] = 1.0  # both in the direction of "a"
    found = two_collections().lookup(query, collection=np.array([0, 1]))
    w = np.array([1.0, np.cos(np.radians(10))])
    average = [1, 1, (w @ [1, 3]) / w.sum(), 1, w[0] / w.sum()]
    assert found[0, 0].tolist() == pytest.approx(average)
    assert found[0, 2].tolist() == [0, 0, 0, 0, 0]  # no record of model 2 in "one"
    # In "two", "d" is the nearest; both neighbours lie opposite (weight 1e-3).
    assert found[1, 0].tolist() == pytest.approx([0, 0, 7, 0, 1], abs=1e-6)
    assert found[1, 2].tolist() == pytest.approx([0, 0.5, 8, 0, 0], abs=1e-6)


def test_a_query_of_no_collection_takes_the_most_familiar_one() -> None:
    query = np.zeros((2, 384), dtype=np.float32)
    query[0, 0] = 1.0  # like "a": collection "one"
    query[1, 0] = -1.0  # like "c": collection "two"
    m = two_collections()
    found = m.lookup(query, collection=np.array([UNKNOWN, UNKNOWN]))
    assert (
        found[0, 0].tolist()
        == m.lookup(query[:1], collection=np.array([0]))[0, 0].tolist()
    )
    w = np.array([1.0, np.cos(np.radians(10))])  # "c", then "d"
    cost = (w @ [5, 9]) / w.sum()
    assert found[1, 0].tolist() == pytest.approx([0, 0, cost, 1, 1])
    # Model 2's records are all in "two", however unlike the query they are.
    assert found[0, 2, 2] == pytest.approx(8.0, rel=1e-4)
    assert (m.lookup(query) == found).all()  # no collection given: none known
    assert m.collection_of("two") == 1 and m.collection_of("three") == UNKNOWN


def test_labels_and_flags_must_cover_the_prompts() -> None:
    m = memory()
    with pytest.raises(ValueError, match="3 collection labels for 4 prompts"):
        NeighbourMemory(m.embedding, m.item, m.score, m.cost, collection=np.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(4, 2\) for scores of shape"):
        NeighbourMemory(
            m.embedding, m.item, m.score, m.cost, extracted=m.extracted[:, :2]
        )


def test_what_every_prompt_shares_does_not_count_as_likeness() -> None:
    # Every remembered prompt carries the same large component (dimension 2), as
    # prompts of one template do; only the centred part tells them apart.
    shared = plane([0, 10, 180, 190]) * 0.1
    shared[:, 2] = 1.0
    shared /= np.linalg.norm(shared, axis=1, keepdims=True)
    score = np.array([[1], [1], [0], [0]], dtype=np.float32)
    near = NeighbourMemory(shared, item_hash(list("abcd")), score, score, 1, 2)
    query = shared[:1] + 0.0
    found = near.lookup(query, item_hash(["a"]))
    assert found[0, 0, 0] == 1.0  # "b", not "c" or "d", is the nearest
    assert found[0, 0, 3] == pytest.approx(np.cos(np.radians(10)), rel=1e-4)


def test_an_item_never_counts_as_its_own_neighbour() -> None:
    query = np.zeros((1, 384), dtype=np.float32)
    query[0, 0] = 1.0
    found = memory().lookup(query, item_hash(["a"]))
    assert found[0, 0, 0] == 1.0  # now "b" is nearest: model 0 right there too
    assert found[0, 1, 0] == 1.0  # and model 1 too, unlike on "a"
    # Model 2's records are on "c" and "d" only, no more prompts than the
    # memory averages: a query of "c" finds "c" among them, and it weighs nothing.
    query[0, 0] = -1.0
    found = memory().lookup(query, item_hash(["c"]))
    assert found[0, 2, :3].tolist() == [0.0, 0.0, 9.0]  # "d" alone


def test_a_memory_is_built_from_table_rows() -> None:
    built = build_memory(
        embedding=np.eye(2, 384, dtype=np.float32),
        item=item_hash(["x", "y"]),
        model_id=np.array([[2, 0], [1, 0]]),
        valid=np.array([[True, True], [True, False]]),
        score=np.array([[1.0, 0.0], [0.5, 0.0]]),
        cost=np.array([[0.1, 0.2], [0.3, 0.0]]),
        n_models=3,
        extracted=np.array([[True, False], [True, False]]),
    )
    assert np.isnan(built.score[1, 0]) and built.score[0, 0] == 0.0
    assert built.score[0, 2] == 1.0 and built.score[1, 1] == 0.5
    assert built.cost[0, 0] == pytest.approx(0.2)
    assert built.extracted[0, 2] == 1.0 and built.extracted[0, 0] == 0.0
    assert np.isnan(built.extracted[0, 1])
    assert built.extracted[1, 1] == 1 and np.isnan(built.extracted[1, 0])


def test_an_item_of_two_suites_over_one_source_is_remembered_once() -> None:
    # "x" is in two suites over the same source, with other pools; "y" is once.
    rows = {
        "embedding": np.eye(3, 384, dtype=np.float32),
        "item": item_hash(["x", "x", "y"]),
        "model_id": np.array([[0, 1], [2, 0], [0, 1]]),
        "valid": np.array([[True, True], [True, False], [True, True]]),
        "score": np.array([[1.0, 0.0], [0.5, 0.0], [0.0, 1.0]]),
        "cost": np.array([[0.1, 0.2], [0.3, 0.0], [0.4, 0.5]]),
        "n_models": 3,
    }
    built = build_memory(**rows)
    assert built.item.tolist() == item_hash(["x", "y"]).tolist()
    assert built.score[0].tolist() == [1.0, 0.0, 0.5]
    assert built.cost[0].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert built.score[1, :2].tolist() == [0.0, 1.0] and np.isnan(built.score[1, 2])
    # In two collections the same item is two records.
    apart = build_memory(
        **rows, collection=np.array([0, 1, 0]), collections=("one", "two")
    )
    assert len(apart.item) == 3 and apart.collection.tolist() == [0, 1, 0]
