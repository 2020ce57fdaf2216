"""Replay of real records, and the baseline policies over them."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from xrouter.backends.replay import ReplayPool
from xrouter.core.catalog import load_catalog
from xrouter.core.errors import BadRequestError, ReplayMissError, StoreError
from xrouter.core.types import ChatRequest, Message
from xrouter.evaluate.episodes import replay_entries
from xrouter.evaluate.metrics import aiq_of
from xrouter.evaluate.runner import evaluate_policy
from xrouter.policies.base import Routing, outcome
from xrouter.policies.baselines import Cascade, Oracle, RandomMix, SingleModel
from xrouter.policies.knn import K_CHOICES, NearestNeighbour
from xrouter.records.ingest import ingest
from xrouter.records.splits import split_mask
from xrouter.records.store import Store

MODELS = ["gpt-4o-mini-2024-07-18", "claude-3-haiku-20240307", "gemma-2-2b-it"]
DUCKS = "zeroeval/gsm8k/gsm8k-main-test-#0"
MINI = "gpt-4o-mini-2024-07-18"


@pytest.fixture(scope="module")
def pool(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> ReplayPool:
    store = Store(tmp_path_factory.mktemp("store"))
    ingest(small_data, store, load_catalog(), ["zeroeval"])
    return ReplayPool.load(store, ["zeroeval"], MODELS)


def test_replay_answers_with_the_recorded_response_usage_and_cost(
    pool: ReplayPool,
) -> None:
    call = pool.call("gpt-4o-mini-2024-07-18", DUCKS)
    assert call.response is not None and '"answer": "18"' in call.response
    assert call.usage.output_tokens > 50
    card = load_catalog().get("gpt-4o-mini-2024-07-18")
    assert call.cost_usd == pytest.approx(
        card.cost(call.usage.input_tokens, call.usage.output_tokens), rel=1e-12
    )


def test_replay_refuses_an_output_format_its_records_were_not_written_to(
    pool: ReplayPool,
) -> None:
    (entry,) = [e for e in replay_entries(pool, load_catalog()) if e.card.id == MINI]
    json_mode = {"response_format": {"type": "json_object"}}
    asked = ChatRequest((Message("user", "Janet's ducks"),), item_id=DUCKS)
    with pytest.raises(BadRequestError) as refused:
        asyncio.run(entry.backend.complete(replace(asked, extra=json_mode)))
    assert str(refused.value) == (
        f"{MINI} is replayed from recorded answers, which were not written to the "
        "response_format asked for (json_object); give the model a live backend in "
        "a pool file"
    )
    # Text, and settings that shape no format, are answered from the record.
    done = asyncio.run(entry.backend.complete(replace(asked, extra={"seed": 3})))
    assert done.text == pool.call(MINI, DUCKS).response


def test_replay_refuses_unknown_items_and_models(pool: ReplayPool) -> None:
    with pytest.raises(
        ReplayMissError, match="item 'zeroeval/gsm8k/nope' has no record"
    ):
        pool.call("gpt-4o-mini-2024-07-18", "zeroeval/gsm8k/nope")
    with pytest.raises(
        ReplayMissError, match="model 'gpt-5' is not in this replay pool"
    ):
        pool.call("gpt-5", DUCKS)


def test_loading_a_model_without_records_names_it(pool: ReplayPool) -> None:
    with pytest.raises(StoreError, match="no records of o1-mini-2024-09-12 in source"):
        ReplayPool.load(pool.store, ["zeroeval"], [*MODELS, "o1-mini-2024-09-12"])


def test_pool_matrices_match_the_verdicts(pool: ReplayPool) -> None:
    assert pool.score.shape == (2840, 3)
    i = pool.item_index(DUCKS)
    assert pool.score[i].tolist() == [1.0, 1.0, 1.0]
    # gpt-4o-mini's GSM8K accuracy as the verifier judged it, within 1 point of
    # ZeroEval's published 94.24.
    gsm = pool.tasks == "gsm8k"
    assert abs(100 * pool.score[gsm, 0].mean() - 94.24) <= 1.0


def _items(pool: ReplayPool, split: str) -> np.ndarray:
    return np.flatnonzero(split_mask(pool.item_ids, split))  # type: ignore[arg-type]


def test_single_model_and_oracle(pool: ReplayPool) -> None:
    test = _items(pool, "test")
    single = outcome(pool, test, SingleModel(MODELS[0]).route(pool, test, 0.0))
    assert single.score.mean() == pool.score[test, 0].mean()
    assert single.cost.sum() == pytest.approx(pool.cost[test, 0].sum())
    oracle = Oracle()
    best = outcome(pool, test, oracle.route(pool, test, 0.0))
    assert best.score.mean() == pool.score[test].max(axis=1).mean()
    # the oracle never pays more than the cheapest right answer
    right = pool.score[test] >= 1.0
    cheapest = np.where(right, pool.cost[test], np.inf).min(axis=1)
    has = right.any(axis=1)
    assert np.allclose(best.cost[has], cheapest[has])


def test_random_mix_picks_its_ends_on_train(pool: ReplayPool) -> None:
    mix = RandomMix(seed=3)
    mix.fit(pool, _items(pool, "train"))
    assert pool.models[mix.strong] == "gpt-4o-mini-2024-07-18"
    assert pool.models[mix.cheap] == "gemma-2-2b-it"
    test = _items(pool, "test")
    half = mix.route(pool, test, 0.5).chosen
    assert 0.4 < (half == mix.strong).mean() < 0.6
    assert (mix.route(pool, test, 0.5).chosen == half).all()  # fixed by seed and id


def test_cascade_escalates_only_on_disagreement(pool: ReplayPool) -> None:
    cascade = Cascade()
    cascade.fit(pool, _items(pool, "train"))
    assert cascade.rungs
    test = _items(pool, "test")
    routing = cascade.route(pool, test, cascade.default_knob())
    rung = cascade.rungs[int(cascade.default_knob())]
    a, b = pool.extracted[test, rung.first], pool.extracted[test, rung.second]
    agree = np.array([x is not None and x == y for x, y in zip(a, b, strict=True)])
    assert (routing.called[:, rung.escalate] == ~agree).all()
    assert (routing.called.sum(axis=1) == np.where(agree, 2, 3)).all()


def test_knn_trades_accuracy_for_cost_as_lambda_grows(pool: ReplayPool) -> None:
    rng = np.random.default_rng(0)
    # Embeddings stand-in that clusters by task, enough to check the mechanics.
    tasks = {t: rng.normal(size=16) for t in set(pool.tasks)}
    vectors = np.stack([tasks[t] + 0.1 * rng.normal(size=16) for t in pool.tasks])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    knn = NearestNeighbour(vectors.astype(np.float32), k=10)
    knn.fit(pool, _items(pool, "train"))
    test = _items(pool, "test")
    free = outcome(pool, test, knn.route(pool, test, 0.0))
    stingy = outcome(pool, test, knn.route(pool, test, 1e5))
    assert free.score.mean() > stingy.score.mean()
    assert free.cost.mean() > stingy.cost.mean()


def test_knn_tunes_its_neighbour_count_on_train_items(pool: ReplayPool) -> None:
    # Stand-in embeddings: one direction per task, each item a noisy copy of it.
    # Neighbours of the same task tell alike, so a wide average reads the task's
    # rates best and the tuning moves off the smallest count.
    rng = np.random.default_rng(1)
    tasks = {t: rng.normal(size=16) for t in set(pool.tasks)}
    vectors = np.stack([tasks[t] + 0.3 * rng.normal(size=16) for t in pool.tasks])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    train = _items(pool, "train")
    tuned = NearestNeighbour(vectors.astype(np.float32))
    tuned.fit(pool, train)
    assert tuned.k in K_CHOICES and tuned.k > K_CHOICES[0]
    # The tuned count's curve on the train items is the best of the fixed ones'.
    cost = pool.cost[train].mean(axis=0) * 1000
    span = (float(cost.min()), float(cost.max()))
    areas = {}
    for k in (K_CHOICES[0], tuned.k):
        fixed = NearestNeighbour(vectors.astype(np.float32), k=k)
        fixed.fit(pool, train)
        areas[k] = aiq_of(evaluate_policy(fixed, pool, train), span)
    assert areas[tuned.k] > areas[K_CHOICES[0]]


def test_routing_must_answer_from_a_model_it_called() -> None:
    with pytest.raises(
        ValueError, match="returned the answer of a model it never called"
    ):
        Routing(np.array([[True, False]]), np.array([1]))


def test_unknown_task_lists_the_source_tasks(pool: ReplayPool) -> None:
    with pytest.raises(
        StoreError,
        match="have no items of task\\(s\\) gsm; their tasks"
        " are cruxeval, gsm8k, math-l5",
    ):
        ReplayPool.load(pool.store, ["zeroeval"], MODELS, tasks=["gsm"])


def test_an_exclude_meta_key_that_flags_no_item_is_warned_of(
    pool: ReplayPool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="xrouter.backends.replay"):
        kept = ReplayPool.load(
            pool.store, ["zeroeval"], MODELS, exclude_meta=["contaminted"]
        )
    assert kept.item_ids == pool.item_ids
    assert caplog.messages == [
        "exclude_meta key 'contaminted' flags no item of zeroeval, so it leaves none "
        "out; the keys their items' meta has: question"
    ]
