"""The training environment: episodes over the replay pools of several suites.

Every suite's pool is loaded, its items laid out in one padded ``ReplayTable``
beside the other suites', and split by the fixed item-id hash: training draws
only from train items, model selection looks only at dev items, and test items
are never read here.

A training example is one train item, a lambda drawn log-uniformly from the trained
range, and the models it is offered: the whole pool, or (with probability
``1 - full_pool``) a random subset of at least two of its models, so the network
learns to route whatever part of a pool is up.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from xrouter.core.catalog import Catalog
from xrouter.core.errors import DataError
from xrouter.core.progress import Reporter, Silent
from xrouter.evaluate.suites import Suite
from xrouter.policies.embedding import Embedder
from xrouter.policies.knn import NearestNeighbour
from xrouter.policies.learned import ReplayTable, TablePart
from xrouter.policies.memory import NeighbourMemory
from xrouter.policies.router_net import ModelTable
from xrouter.records.splits import split_mask
from xrouter.records.store import Store

__all__ = [
    "MIN_TRAIN_ITEMS",
    "Examples",
    "TrainingData",
    "assemble",
    "load_training_data",
]

logger = logging.getLogger(__name__)

# Fewer train items than this cannot make groups worth comparing, let alone a
# router; training refuses rather than fit noise.
MIN_TRAIN_ITEMS = 32


@dataclass(frozen=True)
class Examples:
    """Training examples: table rows, their lambdas and offered models."""

    rows: NDArray[np.int64]
    lam: NDArray[np.float64]
    offered: NDArray[np.bool_]

    def repeated(self, times: int) -> Examples:
        """Each example ``times`` times in a row (a GRPO group)."""
        return Examples(
            np.repeat(self.rows, times),
            np.repeat(self.lam, times),
            np.repeat(self.offered, times, axis=0),
        )


@dataclass(frozen=True)
class TrainingData:
    """The suites' pools in one table, with each suite's train and dev rows."""

    suites: tuple[Suite, ...]
    parts: tuple[TablePart, ...]
    table: ReplayTable
    memory: NeighbourMemory
    models: ModelTable
    train: tuple[NDArray[np.int64], ...]
    dev: tuple[NDArray[np.int64], ...]
    fingerprints: dict[str, str]
    neighbours: tuple[int, ...]  # per suite, the nearest-neighbour router's tuned k

    @property
    def n_train(self) -> int:
        return sum(len(rows) for rows in self.train)

    def sample(
        self,
        rng: np.random.Generator,
        n: int,
        lam_range: tuple[float, float],
        full_pool: float,
    ) -> Examples:
        """``n`` examples: a suite uniformly, then one of its train items."""
        usable = [k for k, rows in enumerate(self.train) if len(rows)]
        suite = rng.choice(usable, size=n)
        rows = np.array(
            [self.train[s][rng.integers(len(self.train[s]))] for s in suite],
            dtype=np.int64,
        )
        lo, hi = math.log(lam_range[0]), math.log(lam_range[1])
        lam = np.exp(rng.uniform(lo, hi, size=n))
        return Examples(rows, lam, self._offer(rng, rows, full_pool))

    def _offer(
        self, rng: np.random.Generator, rows: NDArray[np.int64], full_pool: float
    ) -> NDArray[np.bool_]:
        valid = self.table.valid[rows]
        size = valid.sum(axis=1)
        # Subset size uniform on 2..pool size; the whole pool with extra weight.
        k = np.where(
            rng.random(len(rows)) < full_pool,
            size,
            rng.integers(2, size + 1),
        )
        keys = np.where(valid, rng.random(valid.shape), np.inf)
        rank = keys.argsort(axis=1).argsort(axis=1)
        offered: NDArray[np.bool_] = valid & (rank < k[:, None])
        return offered


def load_training_data(
    store: Store,
    suites: Sequence[Suite],
    catalog: Catalog,
    embedder: Embedder,
    reporter: Reporter | None = None,
) -> TrainingData:
    """Load the suites' pools from the store, embed their prompts and split them."""
    reporter = reporter or Silent()
    present = set(store.sources())
    resolved = [s.resolved(catalog) for s in suites if s.source in present]
    if not resolved:
        raise DataError(
            f"none of the suites' sources ({', '.join(s.source for s in suites)}) "
            f"is in the store at {store.path}; run `xrouter data ingest --from DIR`"
        )
    parts = []
    for suite in resolved:
        pool = suite.replay_pool(store)
        items = pool.items()
        reporter.start(f"embedding {suite.name} prompts", len(items))
        vectors = embedder.encode_items(suite.source, items, reporter.advance)
        parts.append(TablePart(pool, vectors, suite.self_model))
    manifest = store.manifest()
    fingerprints = {s.source: manifest[s.source].fingerprint for s in resolved}
    return assemble(resolved, parts, catalog, fingerprints)


def assemble(
    suites: Sequence[Suite],
    parts: Sequence[TablePart],
    catalog: Catalog,
    fingerprints: dict[str, str],
) -> TrainingData:
    """Training data from resolved suites and their loaded parts (one per suite)."""
    ids = list(dict.fromkeys(m for part in parts for m in part.pool.models))
    models = ModelTable.from_catalog(ids, catalog)
    table = ReplayTable.build(parts, models)
    train, dev = [], []
    for k, part in enumerate(parts):
        rows = np.flatnonzero(table.part == k)
        train.append(rows[split_mask(part.pool.item_ids, "train")])
        dev.append(rows[split_mask(part.pool.item_ids, "dev")])
    n_train = sum(len(r) for r in train)
    if n_train < MIN_TRAIN_ITEMS:
        raise DataError(
            f"only {n_train} train items across suite(s) "
            f"{', '.join(s.name for s in suites)}; training needs at least "
            f"{MIN_TRAIN_ITEMS}. Ingest more recorded outputs or add suites"
        )
    # The memory holds the train items only; a train item never sees itself.
    # Each suite's items are searched apart from the others' (a model's verdicts
    # on one benchmark say nothing of another), and a smooth estimate averages
    # as many neighbours as the nearest-neighbour router tunes on the suite.
    # Features are looked up for train and dev rows, the only ones used here.
    neighbours = tuple(
        _tuned_neighbours(part, table.item[rows])
        for part, rows in zip(parts, train, strict=True)
    )
    wide_of = [0] * len(table.collections)
    for part, k in zip(parts, neighbours, strict=True):
        c = table.collections.index(part.collection)
        wide_of[c] = max(wide_of[c], k)
    memory = table.memory_of(np.concatenate(train), tuple(wide_of))
    used = np.concatenate([*train, *dev])
    return TrainingData(
        suites=tuple(suites),
        parts=tuple(parts),
        table=table.with_memory(memory, used),
        memory=memory,
        models=models,
        train=tuple(train),
        dev=tuple(dev),
        fingerprints=dict(fingerprints),
        neighbours=neighbours,
    )


def _tuned_neighbours(part: TablePart, train_items: NDArray[np.int64]) -> int:
    """The neighbour count the nearest-neighbour router tunes on the suite's
    train items (0, the memory's default, when the suite has none)."""
    if not len(train_items):
        return 0
    knn = NearestNeighbour(part.embedding)
    knn.fit(part.pool, train_items)
    return knn.k
