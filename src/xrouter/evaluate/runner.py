"""The main job: every policy on each suite's test split, over replayed records."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xrouter.backends.replay import ReplayPool
from xrouter.core.catalog import Catalog
from xrouter.core.errors import DataError
from xrouter.core.progress import Reporter, Silent
from xrouter.evaluate import metrics
from xrouter.evaluate.results import CurvePoint, PolicyResult
from xrouter.evaluate.suites import Suite
from xrouter.policies.base import Policy, outcome
from xrouter.policies.baselines import Cascade, Oracle, RandomMix, SingleModel
from xrouter.policies.embedding import Embedder
from xrouter.policies.knn import K_CHOICES, NearestNeighbour
from xrouter.records.splits import split_mask
from xrouter.records.store import Store

__all__ = [
    "PolicyFactory",
    "ResultFactory",
    "SuiteReport",
    "evaluate_policy",
    "evaluate_suite",
]

logger = logging.getLogger(__name__)

# A cascade needs answers it can compare; below this share of extractable answers
# among the cheap models it would always escalate, so it is left out with a note.
_CASCADE_MIN_EXTRACTED = 0.5

PolicyFactory = Callable[[ReplayPool, Embedder], Policy]
# Evaluates a router that cannot be expressed as a Policy (one that runs whole
# episodes) on the test rows of the suite's records.
ResultFactory = Callable[[ReplayPool, NDArray[np.int64]], PolicyResult]


@dataclass
class SuiteReport:
    """Everything the report says about one suite."""

    suite: Suite
    pool: list[str]
    items: dict[str, int]
    results: list[PolicyResult]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        curves = {r.name: r for r in self.results}
        policies = []
        for row in self.rows:
            result = curves[row["name"]]
            curve = [
                {
                    "knob": p.knob,
                    "accuracy": p.accuracy,
                    "cost_per_1k": p.cost_per_1k,
                    "calls_per_query": p.calls_per_query,
                }
                for p in result.points
            ]
            policies.append({**row, "knob": result.knob_name, "curve": curve})
        return {
            "name": self.suite.name,
            "source": self.suite.source,
            "pool": self.pool,
            "strong": self.suite.strong,
            "weak": self.suite.weak,
            "self_model": self.suite.self_model,
            "items": self.items,
            "policies": policies,
            "notes": self.notes,
            "seconds": round(self.seconds, 2),
        }


def evaluate_policy(
    policy: Policy,
    pool: ReplayPool,
    items: NDArray[np.int64],
    kind: str = "router",
) -> PolicyResult:
    """Sweep the policy's knob over ``items`` and record each operating point."""
    points = []
    for knob in policy.knobs():
        result = outcome(pool, items, policy.route(pool, items, knob))
        points.append(
            CurvePoint(
                knob=float(knob),
                accuracy=float(result.score.mean()),
                cost_per_1k=float(result.cost.mean() * 1000.0),
                calls_per_query=float(result.calls.mean()),
            )
        )
    knobs = [float(k) for k in policy.knobs()]
    default = knobs.index(float(policy.default_knob()))
    return PolicyResult(
        name=policy.name,
        kind=kind,  # type: ignore[arg-type]
        points=points,
        default=default,
        knob_name=policy.knob_name,
    )


def _extracted_share(pool: ReplayPool, train: NDArray[np.int64]) -> float:
    cheapest = np.argsort(pool.cost[train].mean(axis=0))[:2]
    present = pool.extracted[np.ix_(train, cheapest)] != None  # noqa: E711
    return float(present.mean())


def _embeddings(
    pool: ReplayPool, embedder: Embedder, reporter: Reporter
) -> NDArray[np.float32]:
    items = pool.items()
    reporter.start("embedding prompts", len(items))
    vectors = embedder.encode_items(pool.sources[0], items, reporter.advance)
    return vectors


def evaluate_suite(
    store: Store,
    suite: Suite,
    embedder: Embedder,
    catalog: Catalog,
    *,
    extra: Sequence[PolicyFactory] = (),
    episodes: Sequence[ResultFactory] = (),
    reporter: Reporter | None = None,
) -> SuiteReport:
    """Fit each policy on the suite's train split and evaluate it on its test split."""
    started = time.perf_counter()
    reporter = reporter or Silent()
    suite = suite.resolved(catalog)
    pool = suite.replay_pool(store)
    if not pool.item_ids:
        raise DataError(
            f"suite {suite.name!r} has no items: none of the "
            f"{pool.dropped_items:,} items of {suite.source} has a record of every "
            "pool model; choose pool models that answered the same items "
            "(`xrouter data models` lists each model's records)"
        )
    train = np.flatnonzero(split_mask(pool.item_ids, "train"))
    test = np.flatnonzero(split_mask(pool.item_ids, "test"))
    for split, rows in (("train", train), ("test", test)):
        if len(rows) == 0:
            raise DataError(
                f"suite {suite.name!r} has no {split} items: all "
                f"{len(pool.item_ids)} of its items fall in other splits (the "
                "split is fixed by a hash of the item id, 60/10/30); ingest more "
                "of its data, or leave it out of --suites"
            )
    notes = []
    if pool.dropped_items:
        notes.append(
            f"{pool.dropped_items} items left out: not every pool model has a record"
        )
    policies: list[tuple[Policy, str]] = [
        (SingleModel(m), "single") for m in pool.models
    ]
    policies.append((RandomMix(), "router"))
    share = _extracted_share(pool, train)
    if len(pool.models) < 3:
        notes.append(
            "cascade left out: it needs two cheap models and a third to escalate to"
        )
    elif share >= _CASCADE_MIN_EXTRACTED:
        policies.append((Cascade(), "router"))
    else:
        notes.append(
            f"cascade left out: only {share:.0%} of the cheap models' responses have "
            "an answer that can be compared"
        )
    vectors = _embeddings(pool, embedder, reporter)
    policies.append((NearestNeighbour(vectors), "router"))
    policies += [(factory(pool, embedder), "router") for factory in extra]
    policies.append((Oracle(), "oracle"))

    reporter.start(f"evaluating {suite.name}", len(policies))
    results = []
    for policy, kind in policies:
        policy.fit(pool, train)
        if isinstance(policy, NearestNeighbour) and policy.fixed_k is None:
            notes.append(
                f"knn: {policy.k} neighbours, the best of {len(K_CHOICES)} counts on "
                "train items"
            )
        results.append(evaluate_policy(policy, pool, test, kind))
        reporter.advance()
    for factory in episodes:
        result = factory(pool, test)
        results.insert(len(results) - 1, result)  # before the oracle
        notes += result.notes
    notes += _pair_notes(suite, results) + _cost_notes(results)
    report = SuiteReport(
        suite=suite,
        pool=list(pool.models),
        items={"train": len(train), "test": len(test), "all": len(pool.item_ids)},
        results=results,
        rows=_rows(suite, results),
        notes=notes,
    )
    report.seconds = time.perf_counter() - started
    return report


def _singles_cost_range(results: list[PolicyResult]) -> tuple[float, float] | None:
    """The single models' cost range, which AIQ integrates over; None when they
    all cost the same."""
    costs = [r.at_default.cost_per_1k for r in results if r.kind == "single"]
    return (min(costs), max(costs)) if max(costs) > min(costs) else None


def _cost_notes(results: list[PolicyResult]) -> list[str]:
    if _singles_cost_range(results) is not None:
        return []
    cost = next(r.at_default.cost_per_1k for r in results if r.kind == "single")
    return [
        "AIQ not reported: every pool model costs the same on the test split "
        f"(${cost:.4f} per 1k items), so there is no cost range to integrate over"
    ]


def _pair_notes(suite: Suite, results: list[PolicyResult]) -> list[str]:
    singles = {r.name: r.at_default for r in results if r.kind == "single"}
    strong, weak = singles[suite.strong], singles[suite.weak]
    if strong.accuracy > weak.accuracy and strong.cost_per_1k > weak.cost_per_1k:
        return []
    return [
        f"APGR not reported: on the test split the strong model {suite.strong} is not "
        f"both dearer and more accurate than the weak {suite.weak}"
    ]


def _rows(suite: Suite, results: list[PolicyResult]) -> list[dict[str, Any]]:
    singles = {r.name: r.at_default for r in results if r.kind == "single"}
    best = max(singles.values(), key=lambda p: (p.accuracy, -p.cost_per_1k))
    oracle = next(r.at_default for r in results if r.kind == "oracle")
    cost_range = _singles_cost_range(results)
    rows = []
    for result in results:
        row = metrics.summarise(
            result,
            cost_range=cost_range,
            best_single=best,
            oracle=oracle,
            weak=singles.get(suite.weak),
            strong=singles.get(suite.strong),
        )
        rows.append(dict(row))
    return rows
