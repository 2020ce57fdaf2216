"""Nearest-neighbour router over prompt embeddings.

For a new prompt it finds the ``k`` most similar train prompts (cosine similarity of
prompt embeddings centred on the train prompts' mean), predicts each model's score
and cost as the similarity-weighted mean over those neighbours, and picks the
model with the best
``predicted score - lambda x predicted cost``. Lambda is the knob.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from xrouter.backends.replay import ReplayPool
from xrouter.policies.base import LAMBDA_SWEEP, Policy, Routing, single_call
from xrouter.policies.memory import centred

__all__ = ["NearestNeighbour"]


class NearestNeighbour(Policy):
    """Predicts per-model score and cost from similar train prompts."""

    name = "knn"
    knob_name = "lambda"

    def __init__(
        self, embeddings: NDArray[np.float32], k: int = 20, default_lambda: float = 2.0
    ) -> None:
        """``embeddings[i]`` is the unit-norm embedding of pool item ``i``."""
        self.embeddings = embeddings
        self.k = k
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
        sims = self._centred[items] @ self._centred[self._train].T  # [n, T]
        # An item never counts as its own neighbour (relevant when routing train).
        sims[items[:, None] == self._train[None, :]] = -np.inf
        k = min(self.k, len(self._train))
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # [n, k]
        weights = np.take_along_axis(sims, near, axis=1).clip(min=1e-3)
        weights = weights / weights.sum(axis=1, keepdims=True)
        neighbours = self._train[near]  # [n, k]
        score = np.einsum("nk,nkm->nm", weights, pool.score[neighbours])
        cost = np.einsum("nk,nkm->nm", weights, pool.cost[neighbours])
        self._cache = (key, score, cost)
        return score, cost

    def route(self, pool: ReplayPool, items: NDArray[np.int64], knob: float) -> Routing:
        score, cost = self.predict(pool, items)
        chosen = np.argmax(score - knob * cost, axis=1).astype(np.int64)
        return single_call(chosen, len(pool.models))
