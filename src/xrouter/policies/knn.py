"""Nearest-neighbour router over prompt embeddings.

For a new prompt it finds the ``k`` most similar train prompts (cosine similarity of
prompt embeddings centred on the train prompts' mean), predicts each model's score
and cost as the similarity-weighted mean over those neighbours, and picks the
model with the best
``predicted score - lambda x predicted cost``. Lambda is the knob.

Unless ``k`` is given, it is tuned when the router is fitted: each candidate k
routes a sample of the train items from their other train neighbours (an item
never counts as its own), and the k whose curve has the largest AIQ is kept. A
baseline tuned on its train data is the fair one to compare a learned router with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from xrouter.backends.replay import ReplayPool
from xrouter.evaluate.metrics import aiq
from xrouter.policies.base import (
    LAMBDA_SWEEP,
    Policy,
    Routing,
    outcome,
    single_call,
)
from xrouter.policies.memory import centred

__all__ = ["K_CHOICES", "NearestNeighbour"]

# Neighbour counts tried when k is tuned, and how many train items tune it.
K_CHOICES = (8, 16, 32, 64, 128, 256, 512)
_TUNING_ITEMS = 2000


class NearestNeighbour(Policy):
    """Predicts per-model score and cost from similar train prompts."""

    name = "knn"
    knob_name = "lambda"

    def __init__(
        self,
        embeddings: NDArray[np.float32],
        k: int | None = None,
        default_lambda: float = 2.0,
    ) -> None:
        """``embeddings[i]`` is the unit-norm embedding of pool item ``i``; ``k``
        None: tuned on the train items by :meth:`fit`."""
        self.embeddings = embeddings
        self.fixed_k = k
        self.k = k or K_CHOICES[0]
        self.default_lambda = default_lambda
        self._train: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._centred = embeddings
        self._cache: tuple[bytes, NDArray[np.float64], NDArray[np.float64]] | None = (
            None
        )

    def fit(self, pool: ReplayPool, train: NDArray[np.int64]) -> None:
        if len(train) == 0:
            raise ValueError("the nearest-neighbour router needs train items; got none")
        self._train = train
        self._centred = centred(self.embeddings, self.embeddings[train].mean(axis=0))
        self._cache = None
        self.k = self.fixed_k or self._tune_k(pool)

    def _tune_k(self, pool: ReplayPool) -> int:
        """The k of :data:`K_CHOICES` with the largest AIQ on a sample of train
        items, each routed from its other train neighbours."""
        rng = np.random.default_rng(0)
        size = min(_TUNING_ITEMS, len(self._train))
        items = np.sort(rng.choice(self._train, size=size, replace=False))
        mean_cost = pool.cost[items].mean(axis=0) * 1000.0
        cost_range = (float(mean_cost.min()), float(mean_cost.max()))
        if cost_range[1] <= cost_range[0]:
            return K_CHOICES[0]
        # One search for the most neighbours tried; each k takes the nearest k.
        near, sims = self._nearest(items, max(K_CHOICES))
        best: tuple[float, int] = (-np.inf, K_CHOICES[0])
        for k in K_CHOICES:
            score, cost = self._means(pool, near[:, :k], sims[:, :k])
            points = [
                outcome(pool, items, self._choose(score, cost, lam, pool))
                for lam in self.knobs()
            ]
            area = aiq(
                [p.cost.mean() * 1000.0 for p in points],
                [p.score.mean() for p in points],
                cost_range,
            )
            if area > best[0] + 1e-9:
                best = (area, k)
        return best[1]

    def knobs(self) -> Sequence[float]:
        return sorted({*LAMBDA_SWEEP, self.default_lambda})

    def default_knob(self) -> float:
        return self.default_lambda

    def predict(
        self, pool: ReplayPool, items: NDArray[np.int64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Predicted score and cost, each ``[len(items), n_models]``."""
        key = items.tobytes()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        score, cost = self._means(pool, *self._nearest(items, self.k))
        self._cache = (key, score, cost)
        return score, cost

    def _nearest(
        self, items: NDArray[np.int64], k: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The positions in the train split of each item's ``k`` nearest train
        items, most similar first, and their similarities (``[n, k]`` each)."""
        sims = self._centred[items] @ self._centred[self._train].T  # [n, T]
        # An item never counts as its own neighbour (relevant when routing train).
        sims[items[:, None] == self._train[None, :]] = -np.inf
        k = min(k, len(self._train))
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sims, near, axis=1)
        order = np.argsort(-top, axis=1)
        near = np.take_along_axis(near, order, axis=1)
        return near, np.take_along_axis(top, order, axis=1)

    def _means(
        self, pool: ReplayPool, near: NDArray[np.int64], sims: NDArray[np.float32]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Similarity-weighted mean score and cost of the neighbours ``near``."""
        weights = sims.clip(min=1e-3)
        weights = weights / weights.sum(axis=1, keepdims=True)
        neighbours = self._train[near]  # [n, k]
        score = np.einsum("nk,nkm->nm", weights, pool.score[neighbours])
        cost = np.einsum("nk,nkm->nm", weights, pool.cost[neighbours])
        return score, cost

    @staticmethod
    def _choose(
        score: NDArray[np.float64],
        cost: NDArray[np.float64],
        knob: float,
        pool: ReplayPool,
    ) -> Routing:
        chosen = np.argmax(score - knob * cost, axis=1).astype(np.int64)
        return single_call(chosen, len(pool.models))

    def route(self, pool: ReplayPool, items: NDArray[np.int64], knob: float) -> Routing:
        score, cost = self.predict(pool, items)
        return self._choose(score, cost, knob, pool)
