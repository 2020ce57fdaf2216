"""Baseline policies: one model alone, a random mix, a cascade and the oracle.

The nearest-neighbour router lives in ``knn.py``. Every baseline that must choose
models (the mix's two ends, the cascade's ladder) chooses them on the train split.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from xrouter.backends.replay import ReplayPool
from xrouter.policies.base import LAMBDA_SWEEP, Policy, Routing, single_call

__all__ = ["Cascade", "Oracle", "RandomMix", "SingleModel"]


class SingleModel(Policy):
    """Every request goes to one model."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.name = model

    def route(self, pool: ReplayPool, items: NDArray[np.int64], knob: float) -> Routing:
        chosen = np.full(len(items), pool.model_index(self.model), dtype=np.int64)
        return single_call(chosen, len(pool.models))


class Oracle(Policy):
    """Knows every verdict: picks the model with the best ``score - lambda x cost``.

    At lambda 0 (its default) that is the cheapest model that answered best, the
    cheapest of all when none did; larger lambdas trace its cost-accuracy curve. It
    peeks at the verdicts, so it is an upper bound for evaluation, never a router.
    """

    name = "oracle"
    knob_name = "lambda"

    def knobs(self) -> Sequence[float]:
        return LAMBDA_SWEEP

    def route(self, pool: ReplayPool, items: NDArray[np.int64], knob: float) -> Routing:
        cost = pool.cost[items]
        # Ties on value go to the cheaper model; the nudge is far below any gap
        # between two scores (scores move in steps of 0.05 at the finest).
        nudge = 1e-3 / max(float(cost.max()), 1e-12)
        value = pool.score[items] - (knob + nudge) * cost
        chosen = np.argmax(value, axis=1).astype(np.int64)
        return single_call(chosen, len(pool.models))


def _unit_hash(item_ids: Sequence[str], seed: int) -> NDArray[np.float64]:
    """A uniform number per item, fixed by the item id and the seed."""
    values = []
    for item_id in item_ids:
        digest = hashlib.blake2b(f"{seed}:{item_id}".encode(), digest_size=8).digest()
        values.append(int.from_bytes(digest, "big") / 2**64)
    return np.asarray(values)


class RandomMix(Policy):
    """Sends a random share of requests to the strongest model, the rest to the
    cheapest.

    Knob: the share sent to the strong model. The ends are picked on the train split:
    the most accurate model and the cheapest one.
    """

    name = "random-mix"
    knob_name = "strong share"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.cheap = self.strong = 0

    def fit(self, pool: ReplayPool, train: NDArray[np.int64]) -> None:
        self.cheap = int(np.argmin(pool.cost[train].mean(axis=0)))
        self.strong = int(np.argmax(pool.score[train].mean(axis=0)))

    def knobs(self) -> Sequence[float]:
        return [round(x, 2) for x in np.linspace(0.0, 1.0, 11)]

    def default_knob(self) -> float:
        return 0.5

    def route(self, pool: ReplayPool, items: NDArray[np.int64], knob: float) -> Routing:
        draws = _unit_hash([pool.item_ids[i] for i in items], self.seed)
        chosen = np.where(draws < knob, self.strong, self.cheap).astype(np.int64)
        return single_call(chosen, len(pool.models))


@dataclass(frozen=True)
class _Rung:
    """Ask two cheap models; if their answers agree keep the first, else escalate."""

    first: int
    second: int
    escalate: int


class Cascade(Policy):
    """Starts cheap and escalates when two cheap models disagree on the answer.

    Agreement is judged on the answers the verifiers extracted; a response with no
    extractable answer counts as disagreement. The knob indexes cascades picked on
    the train split (the cost-accuracy Pareto set over cheap pairs from the cheapest
    models and every dearer escalation target), ordered by train cost.
    """

    name = "cascade"
    knob_name = "cascade index"

    def __init__(self, cheap_candidates: int = 5) -> None:
        self.cheap_candidates = cheap_candidates
        self.rungs: list[_Rung] = []
        self.default = 0

    def fit(self, pool: ReplayPool, train: NDArray[np.int64]) -> None:
        mean_cost = pool.cost[train].mean(axis=0)
        order = [int(j) for j in np.argsort(mean_cost)]
        cheap = order[: self.cheap_candidates]
        scored: list[tuple[float, float, _Rung]] = []
        for a, b in itertools.combinations(cheap, 2):
            first, second = (a, b) if mean_cost[a] <= mean_cost[b] else (b, a)
            for target in order:
                if target in (first, second) or mean_cost[target] <= mean_cost[second]:
                    continue
                rung = _Rung(first, second, target)
                result = self._run(pool, train, rung)
                scored.append((float(result[1].mean()), float(result[0].mean()), rung))
        scored.sort(key=lambda r: (r[0], -r[1]))
        frontier, best = [], -1.0
        for cost, acc, rung in scored:
            if acc > best:
                frontier.append((cost, acc, rung))
                best = acc
        self.rungs = [rung for _, _, rung in frontier]
        self.default = len(self.rungs) - 1

    def knobs(self) -> Sequence[float]:
        return [float(k) for k in range(len(self.rungs))]

    def default_knob(self) -> float:
        return float(self.default)

    @staticmethod
    def _agree(
        pool: ReplayPool, items: NDArray[np.int64], rung: _Rung
    ) -> NDArray[np.bool_]:
        a = pool.extracted[items, rung.first]
        b = pool.extracted[items, rung.second]
        return np.array([x is not None and x == y for x, y in zip(a, b, strict=True)])

    def _run(
        self, pool: ReplayPool, items: NDArray[np.int64], rung: _Rung
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        routing = self._routing(pool, items, rung)
        score = pool.score[items, routing.chosen]
        return score, (pool.cost[items] * routing.called).sum(axis=1)

    def _routing(
        self, pool: ReplayPool, items: NDArray[np.int64], rung: _Rung
    ) -> Routing:
        agree = self._agree(pool, items, rung)
        called = np.zeros((len(items), len(pool.models)), dtype=bool)
        called[:, [rung.first, rung.second]] = True
        called[~agree, rung.escalate] = True
        chosen = np.where(agree, rung.first, rung.escalate).astype(np.int64)
        return Routing(called, chosen)

    def route(self, pool: ReplayPool, items: NDArray[np.int64], knob: float) -> Routing:
        if not self.rungs:
            raise RuntimeError("Cascade.route called before fit")
        return self._routing(pool, items, self.rungs[int(knob)])

    def describe(self, pool: ReplayPool, knob: float) -> str:
        rung = self.rungs[int(knob)]
        names = [pool.models[j] for j in (rung.first, rung.second, rung.escalate)]
        return f"{names[0]} + {names[1]} -> {names[2]}"
