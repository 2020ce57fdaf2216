"""Model selection on the dev split: the AIQ of the network's lambda curve.

The network's curve is swept over lambda on each suite's dev items and scored by
AIQ (the evaluation's headline metric, over the range of the suite's single
models' costs). The baselines the evaluation compares with (nearest neighbour,
cascade, random mix) are fitted on the train split and scored the same way once.
Training keeps the weights whose smallest margin over the best baseline, across
suites, is largest. Test items are never read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xrouter.evaluate.metrics import aiq, aiq_of
from xrouter.evaluate.runner import evaluate_policy
from xrouter.orchestrator import episode as ep
from xrouter.policies.base import Policy
from xrouter.policies.baselines import Cascade, RandomMix
from xrouter.policies.knn import NearestNeighbour
from xrouter.policies.learned import route_rows
from xrouter.policies.router_net import RouterNet
from xrouter.train.env import TrainingData

__all__ = ["baseline_dev_aiq", "dev_aiq", "selection_score"]


def dev_aiq(
    net: RouterNet, data: TrainingData, lams: Sequence[float]
) -> dict[str, float]:
    """``dev/aiq/<suite>`` for each suite with dev items (its curve over ``lams``),
    and their mean."""
    suites = _selectable(data)
    if not suites:
        return {}
    rows = np.concatenate([data.dev[k] for k in suites])
    table = data.table
    score = np.zeros((len(lams), len(rows)))
    cost = np.zeros((len(lams), len(rows)))
    for n, lam in enumerate(lams):
        played = route_rows(net, table, data.models, rows, lam)
        score[n] = table.score[rows, played.state.chosen]
        cost[n] = ep.spent(
            played.state, table.inputs(rows, np.full(len(rows), lam)).responses
        )
    out = {}
    for k in suites:
        mine = np.isin(rows, data.dev[k])
        out[f"dev/aiq/{data.suites[k].name}"] = aiq(
            cost[:, mine].mean(axis=1) * 1000,
            score[:, mine].mean(axis=1),
            _cost_range(data, k),
        )
    out["dev/aiq_mean"] = float(np.mean(list(out.values())))
    return out


def _selectable(data: TrainingData) -> list[int]:
    """The suites a dev AIQ can be measured on: with train and dev items, and
    single models of more than one cost (AIQ integrates over their range)."""
    return [
        k
        for k in range(len(data.parts))
        if len(data.dev[k]) and len(data.train[k]) and np.ptp(_cost_range(data, k)) > 0
    ]


def _cost_range(data: TrainingData, k: int) -> tuple[float, float]:
    """The dev cost range (USD per 1,000 queries) of suite k's single models."""
    rows = data.dev[k]
    width = int(data.table.valid[rows[0]].sum())
    singles = data.table.cost[rows, :width].mean(axis=0) * 1000
    return float(singles.min()), float(singles.max())


def baseline_dev_aiq(data: TrainingData) -> dict[str, float]:
    """``dev/baseline/<suite>``: the best dev AIQ among the baselines."""
    out = {}
    for k in _selectable(data):
        part = data.parts[k]
        train, dev = data.table.item[data.train[k]], data.table.item[data.dev[k]]
        knn = NearestNeighbour(part.embedding, k=data.neighbours[k])
        policies: list[Policy] = [knn, RandomMix()]
        if len(part.pool.models) >= 3:
            policies.append(Cascade())
        best = 0.0
        for policy in policies:
            policy.fit(part.pool, train)
            result = evaluate_policy(policy, part.pool, dev)
            best = max(best, aiq_of(result, _cost_range(data, k)))
        out[f"dev/baseline/{data.suites[k].name}"] = best
    return out


def selection_score(scores: dict[str, float], baselines: dict[str, float]) -> float:
    """The smallest margin of the network's dev AIQ over the best baseline's."""
    margins = [
        scores[key.replace("/baseline/", "/aiq/")] - value
        for key, value in baselines.items()
    ]
    return min(margins) if margins else scores.get("dev/aiq_mean", 0.0)
