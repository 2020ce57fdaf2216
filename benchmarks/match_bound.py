"""Hand-built routers against the match-best-single target, for reference.

    python benchmarks/match_bound.py [--suite zeroeval] [--store DIR]

How cheaply do simple routers that cannot see the verdicts reach the best single
model's accuracy? These are told each request's task (which a real router must
guess from the prompt) and may call two or three of the cheaper half of the
pool, keep an answer two of them agree on, and otherwise pay for an escalation
model. Per task, every such strategy (each single model too) is scored on the
train split; for each trade-off mu, every task takes the strategy with the best
train ``accuracy - mu x cost``, and the mix is measured on the test split.
Printed: the best single model, the oracle (which sees the verdicts), and the
test curve of these routers with the cheapest point, if any, that reaches the
best single model's test accuracy, as a share of its cost.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from xrouter.backends.replay import ReplayPool
from xrouter.core.catalog import load_catalog
from xrouter.evaluate.suites import DEFAULT_SUITES
from xrouter.orchestrator.episode import answer_codes
from xrouter.records.splits import split_mask
from xrouter.records.store import Store, default_store_path

Outcome = tuple[NDArray[np.float64], NDArray[np.float64]]  # score, cost per item


def _cascade(
    score: NDArray[np.float64],
    cost: NDArray[np.float64],
    codes: NDArray[np.int64],
    cheap: tuple[int, ...],
    escalate: int,
) -> Outcome:
    """Call ``cheap``; an answer two of them agree on is kept, else escalate."""
    paid = cost[:, list(cheap)].sum(axis=1)
    got = np.full(len(score), np.nan)
    for a, b in itertools.combinations(cheap, 2):
        agree = (codes[:, a] >= 0) & (codes[:, a] == codes[:, b]) & np.isnan(got)
        got[agree] = score[agree, a]
    missing = np.isnan(got)
    got[missing] = score[missing, escalate]
    paid[missing] += cost[missing, escalate]
    return got, paid


def _strategies(pool: ReplayPool, rows: NDArray[np.int64]) -> list[Outcome]:
    score, cost = pool.score[rows], pool.cost[rows]
    codes = answer_codes(pool.extracted[rows])
    m = len(pool.models)
    out: list[Outcome] = [(score[:, j], cost[:, j]) for j in range(m)]
    mean_cost = cost.mean(axis=0)
    cheap = [j for j in np.argsort(mean_cost)[: m // 2]]
    for size in (2, 3):
        for group in itertools.combinations(cheap, size):
            for top in range(m):
                if top not in group:
                    out.append(_cascade(score, cost, codes, group, top))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="zeroeval")
    parser.add_argument("--store", type=Path, default=default_store_path())
    args = parser.parse_args()
    suite = next(s for s in DEFAULT_SUITES if s.name == args.suite)
    suite = suite.resolved(load_catalog())
    pool = suite.replay_pool(Store(args.store))
    train = np.flatnonzero(split_mask(pool.item_ids, "train"))
    test = np.flatnonzero(split_mask(pool.item_ids, "test"))
    single_acc = pool.score[test].mean(axis=0)
    best = int(np.argmax(single_acc))
    target, reference = single_acc[best], pool.cost[test, best].mean()
    oracle = pool.score[test].max(axis=1).mean()
    print(
        f"{suite.name}: {len(test)} test items; best single {pool.models[best]} "
        f"{100 * target:.1f}% at ${1000 * reference:.3f} per 1k; oracle "
        f"{100 * oracle:.1f}%"
    )

    tasks = np.unique(pool.tasks)
    fitted = {t: _strategies(pool, train[pool.tasks[train] == t]) for t in tasks}
    tested = {t: _strategies(pool, test[pool.tasks[test] == t]) for t in tasks}
    cheapest = None
    peak = (0.0, 0.0)
    for mu in (0.0, *np.geomspace(1, 1e5, 400)):
        acc = cost = 0.0
        for t in tasks:
            value = [s.mean() - mu * c.mean() for s, c in fitted[t]]
            s, c = tested[t][int(np.argmax(value))]
            acc += s.sum()
            cost += c.sum()
        acc, cost = acc / len(test), cost / len(test)
        peak = max(peak, (acc, cost))
        if acc >= target and (cheapest is None or cost < cheapest[1]):
            cheapest = (acc, cost)
    print(
        f"task-aware agreement cascades at their most accurate: {100 * peak[0]:.1f}% "
        f"at ${1000 * peak[1]:.3f} per 1k"
    )
    if cheapest is None:
        print("they never reach the best single model's test accuracy")
        return
    acc, cost = cheapest
    print(
        f"task-aware agreement cascades: {100 * acc:.1f}% at ${1000 * cost:.3f} per "
        f"1k = {100 * cost / reference:.1f}% of the best single model's cost"
    )


if __name__ == "__main__":
    main()
