"""What a router policy is, as the offline evaluation sees it.

A policy is fitted on a pool's train split, then asked to route a batch of items at
one setting of its knob (lambda, a threshold, a mixing rate). Its answer, a
``Routing``, says which models each item called and whose answer it returned; the
replay pool then tells what that earned and cost.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from xrouter.backends.replay import ReplayPool

__all__ = ["LAMBDA_SWEEP", "Outcome", "Policy", "Routing", "outcome", "single_call"]

# Lambda in reward units per USD, as swept to trace a cost-aware policy's curve: 0
# ignores cost; 1e5 makes a tenth of a cent outweigh a whole correct answer.
LAMBDA_SWEEP: tuple[float, ...] = (0.0, *np.geomspace(0.1, 1e5, 61).round(4).tolist())


@dataclass(frozen=True)
class Routing:
    """Per item: the models called (``called[n, M]``) and whose answer was returned."""

    called: NDArray[np.bool_]
    chosen: NDArray[np.int64]

    def __post_init__(self) -> None:
        rows = np.arange(len(self.chosen))
        if not self.called[rows, self.chosen].all():
            raise ValueError("a routing returned the answer of a model it never called")


@dataclass(frozen=True)
class Outcome:
    """What a routing earned on each item: score, USD cost and number of calls."""

    score: NDArray[np.float64]
    cost: NDArray[np.float64]
    calls: NDArray[np.int64]


def outcome(pool: ReplayPool, items: NDArray[np.int64], routing: Routing) -> Outcome:
    """Replay ``routing`` on ``items``: the chosen answer's score, all calls' cost."""
    score = pool.score[items, routing.chosen]
    cost = (pool.cost[items] * routing.called).sum(axis=1)
    return Outcome(score, cost, routing.called.sum(axis=1).astype(np.int64))


def single_call(chosen: NDArray[np.int64], n_models: int) -> Routing:
    called = np.zeros((len(chosen), n_models), dtype=bool)
    called[np.arange(len(chosen)), chosen] = True
    return Routing(called, chosen)


class Policy(ABC):
    """A router policy evaluated offline over a replay pool."""

    name: str
    knob_name: str | None = None

    def fit(self, pool: ReplayPool, train: NDArray[np.int64]) -> None:
        """Learn from the train split's items (most baselines need nothing)."""
        del pool, train

    def knobs(self) -> Sequence[float]:
        """The knob values swept to trace the policy's cost-accuracy curve."""
        return [0.0]

    def default_knob(self) -> float:
        return self.knobs()[0]

    @abstractmethod
    def route(self, pool: ReplayPool, items: NDArray[np.int64], knob: float) -> Routing:
        """Route ``items`` (row indices of ``pool``) at knob setting ``knob``."""
