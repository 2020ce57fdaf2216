"""The learned router's memory of train prompts: what worked on similar requests.

The memory holds the prompt embeddings of the train items with every pool model's
recorded score and cost on each, and the collection each item comes from (the
data sources of its suite: a model's records on one benchmark say nothing of its
verdicts on another). For a new request and a model it offers, it finds the
nearest remembered prompts of one collection that have a record of that model
(cosine similarity, after centring every embedding on the mean of the remembered
ones, so that what all prompts share does not count as likeness) and reports, as
features for the network:

- the similarity-weighted mean score over the ``near`` nearest and over the
  ``wide`` nearest (a sharp and a smooth estimate; the trainer sets the wide
  count per collection, to the count the nearest-neighbour router tunes on its
  suite, as noisier verdicts call for more neighbours);
- the similarity-weighted mean cost over the ``wide`` nearest, in USD;
- the mean similarity of the ``near`` nearest (how familiar the request is);
- the similarity-weighted share of the ``wide`` nearest on which an answer could
  be extracted from the model's response (whether responses can be compared).

The collection searched is the request's own where it has one (a replayed item);
a live request, which has none, takes per model the collection whose nearest
prompts are the most like it. Models whose records cover the same prompts of a
collection share one neighbour search, so a request costs one matrix-vector
product over the memory and one partial sort per such group; a live request
(``lookup_one``) averages the neighbours only of the groups that win. An item never
counts as its own neighbour: a query carrying the hash of a remembered item's id
skips that item.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "N_MEMORY_FEATURES",
    "UNKNOWN",
    "NeighbourMemory",
    "build_memory",
    "centred",
    "item_hash",
]

N_MEMORY_FEATURES = 5
UNKNOWN = -1  # a query's collection when it has none (a live request)
_CHUNK = 512


def centred(
    vectors: NDArray[np.float32], centre: NDArray[np.float32] | float
) -> NDArray[np.float32]:
    """``vectors`` less ``centre``, back to unit length (zero stays zero)."""
    shifted = vectors - centre
    norms = np.linalg.norm(shifted, axis=-1, keepdims=True)
    result: NDArray[np.float32] = (shifted / np.maximum(norms, 1e-12)).astype(
        np.float32
    )
    return result


def item_hash(item_ids: Sequence[str]) -> NDArray[np.int64]:
    """A 63-bit hash of each item id (how the memory recognises its own items)."""
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest()) >> 1
            for i in item_ids
        ],
        dtype=np.int64,
    )


@dataclass(frozen=True)
class _Group:
    """Models recorded on the same remembered rows of one collection, with their
    score, cost and extraction flag on each of those rows."""

    collection: int
    models: NDArray[np.int64]
    wide: int
    embedding: NDArray[np.float32]
    item: NDArray[np.int64]
    values: NDArray[np.float32]  # [Rg, g, 3]: score, cost, extracted


@dataclass(frozen=True)
class NeighbourMemory:
    """Train prompts (unit embeddings ``[R, 384]``), their item-id hashes, and the
    score and USD cost of each known model on each (``[R, V]``, NaN: no record),
    and whether an answer could be extracted from its response (``extracted``, 1
    or 0; where not given, none could).

    ``collection[r]`` indexes ``collections``, the names of the collections
    remembered (when ``collection`` is empty, every row is in one, unnamed).
    ``wide_of[c]``, where given, is collection c's wide count (0: ``wide``).
    """

    embedding: NDArray[np.float32]
    item: NDArray[np.int64]
    score: NDArray[np.float32]
    cost: NDArray[np.float32]
    near: int = 8
    wide: int = 64
    collection: NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )
    collections: tuple[str, ...] = ("",)
    wide_of: tuple[int, ...] = ()
    extracted: NDArray[np.float32] = field(
        default_factory=lambda: np.zeros(0, dtype=np.float32)
    )
    _groups: list[_Group] = field(
        default_factory=list, init=False, repr=False, compare=False
    )
    _picked: dict[bytes, list[_Group]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _center: NDArray[np.float32] = field(
        default_factory=lambda: np.zeros(0, dtype=np.float32),
        init=False,
        repr=False,
        compare=False,
    )

    def centre(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        """``vectors`` less the remembered prompts' mean, back to unit length."""
        return centred(vectors, self._center)

    def __post_init__(self) -> None:
        # Empty labels and flags stand for one collection and no answer found.
        if not self.collection.size:
            whole = np.zeros(len(self.embedding), dtype=np.int64)
            object.__setattr__(self, "collection", whole)
        if not self.extracted.size:
            none = np.zeros(self.score.shape, dtype=np.float32)
            object.__setattr__(self, "extracted", none)
        self._check()
        labels, extracted = self.collection, self.extracted
        center = self.embedding.mean(axis=0) if len(self.embedding) else 0.0
        object.__setattr__(self, "_center", np.asarray(center, dtype=np.float32))
        centred = self.centre(self.embedding)
        # Per collection, group the models by the rows that have their records.
        for c in range(len(self.collections)):
            mine = np.flatnonzero(labels == c)
            known = ~np.isnan(self.score[mine])
            groups: dict[bytes, list[int]] = {}
            for v in range(known.shape[1]):
                if known[:, v].any():
                    pattern = np.packbits(known[:, v]).tobytes()
                    groups.setdefault(pattern, []).append(v)
            wide = self.wide_of[c] if c < len(self.wide_of) else 0
            for members in groups.values():
                models = np.array(members, dtype=np.int64)
                rows = mine[known[:, members[0]]]  # rows with their records
                self._groups.append(
                    _Group(
                        collection=c,
                        models=models,
                        wide=wide or self.wide,
                        embedding=np.ascontiguousarray(centred[rows]),
                        item=self.item[rows],
                        values=np.stack(
                            [
                                self.score[np.ix_(rows, models)],
                                self.cost[np.ix_(rows, models)],
                                extracted[np.ix_(rows, models)],
                            ],
                            axis=2,
                        ),
                    )
                )

    def _check(self) -> None:
        """Refuse parts that do not fit together (``ValueError``)."""
        n, labels = len(self.embedding), self.collection
        if self.embedding.ndim != 2 or self.score.ndim != 2:
            raise ValueError("embeddings and scores must be tables")
        if len(labels) != n:
            raise ValueError(f"{len(labels)} collection labels for {n} prompts")
        if len(self.item) != n or len(self.score) != n:
            raise ValueError(f"item ids and scores must cover the {n} prompts")
        for name in ("cost", "extracted"):
            if getattr(self, name).shape != self.score.shape:
                raise ValueError(
                    f"{name} of shape {getattr(self, name).shape} for scores of "
                    f"shape {self.score.shape}"
                )
        if n and not 0 <= labels.min() <= labels.max() < len(self.collections):
            raise ValueError("a collection label is out of range")
        if len(set(self.collections)) < len(self.collections):
            raise ValueError("a collection is named twice")
        if self.near < 1 or self.wide < 1 or min(self.wide_of, default=0) < 0:
            raise ValueError("neighbour counts must be at least 1 (0: the default)")

    def collection_of(self, name: str) -> int:
        """The index of the collection ``name``, or ``UNKNOWN``."""
        return self.collections.index(name) if name in self.collections else UNKNOWN

    def lookup(
        self,
        query: NDArray[np.float32],
        item: NDArray[np.int64] | None = None,
        models: NDArray[np.int64] | None = None,
        collection: NDArray[np.int64] | None = None,
    ) -> NDArray[np.float32]:
        """``[n, V, 5]`` features of the known models for each query (see the
        module docstring); zeros for models the memory has no record of, and for
        models outside ``models`` when it is given (only those are searched).

        ``collection[i]``, where given, is query i's collection (``UNKNOWN``
        where it has none): a query of a collection is answered from its records
        alone; one without takes per model the collection whose ``near`` nearest
        prompts are the most similar to it.
        """
        n, v = len(query), self.score.shape[1]
        if collection is None:
            collection = np.full(n, UNKNOWN, dtype=np.int64)
        out = np.zeros((n, v, N_MEMORY_FEATURES), dtype=np.float32)
        likeness = np.full((n, v), -np.inf, dtype=np.float32)
        groups = self._searched(models)
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            chunk = self.centre(query[start:stop])
            own = collection[start:stop]
            for group in groups:
                rows = np.flatnonzero((own == group.collection) | (own == UNKNOWN))
                if not len(rows):
                    continue
                sims = chunk[rows] @ group.embedding.T  # [r, Rg]
                if item is not None:
                    sims[item[start + rows, None] == group.item[None, :]] = -np.inf
                top, top_sims = self._nearest(group, sims)
                familiarity = self._familiarity(top_sims)
                found = self._features(group, top, top_sims, familiarity)  # [r, g, 5]
                at = start + rows
                # A query of this collection takes its features; one without,
                # where this collection is more familiar than those seen so far.
                better = (own[rows, None] == group.collection) | (
                    found[..., 3] > likeness[at[:, None], group.models]
                )
                place = np.ix_(at, group.models)
                out[place] = np.where(better[..., None], found, out[place])
                likeness[place] = np.where(better, found[..., 3], likeness[place])
        return out

    def _searched(self, models: NDArray[np.int64] | None) -> list[_Group]:
        """The groups holding any of ``models`` (all groups when None); a live
        router asks with the same pool on every request, so the answer is kept."""
        if models is None:
            return self._groups
        key = models.tobytes()
        if key not in self._picked:
            wanted = set(models.tolist())
            self._picked[key] = [
                g for g in self._groups if wanted.intersection(g.models.tolist())
            ]
        return self._picked[key]

    def lookup_one(
        self, query: NDArray[np.float32], models: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        """``[V, 5]``: what ``lookup`` finds for one live request (a 384-d
        embedding of no collection, searched for ``models``), with fewer steps: a
        group whose prompts are less like the request than a group already
        searched for all its models is not averaged."""
        q = self.centre(query[None])[0]
        out = np.zeros((self.score.shape[1], N_MEMORY_FEATURES), dtype=np.float32)
        likeness = np.full(self.score.shape[1], -np.inf, dtype=np.float32)
        for group in self._searched(models):
            top, top_sims = self._nearest(group, group.embedding @ q)
            familiarity = self._familiarity(top_sims)
            better = familiarity > likeness[group.models]
            if better.any():
                features = self._features(group, top, top_sims, familiarity)
                out[group.models[better]] = features[better]
                likeness[group.models[better]] = familiarity
        return out

    def _nearest(
        self, group: _Group, sims: NDArray[np.float32]
    ) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
        """The group's rows most similar to each query (``sims[..., Rg]``), as
        many as it averages, most similar first, and their similarities."""
        wide = min(group.wide, sims.shape[-1])
        top = np.argpartition(-sims, wide - 1, axis=-1)[..., :wide]
        order = np.argsort(-np.take_along_axis(sims, top, axis=-1), axis=-1)
        top = np.take_along_axis(top, order, axis=-1)
        return top, np.take_along_axis(sims, top, axis=-1)

    def _familiarity(self, top_sims: NDArray[np.float32]) -> NDArray[np.float32]:
        """The mean similarity of the ``near`` nearest (negatives as 0)."""
        result: NDArray[np.float32] = np.maximum(top_sims[..., : self.near], 0).mean(
            axis=-1
        )
        return result

    def _features(
        self,
        group: _Group,
        top: NDArray[np.intp],
        top_sims: NDArray[np.float32],
        familiarity: NDArray[np.float32],
    ) -> NDArray[np.float32]:
        """Features ``[..., len(group.models), 5]`` of one group of models from
        each query's nearest rows (``top[..., wide]``, most similar first)."""
        near = min(self.near, top.shape[-1])
        # Unlike prompts weigh little; the query's own item (similarity -inf,
        # found when the group holds no more rows than it averages) nothing.
        weight = np.where(np.isfinite(top_sims), np.maximum(top_sims, 1e-3), 0.0)
        values = group.values[top]  # [..., wide, g, 3]

        def mean(k: int) -> NDArray[np.float32]:
            """The weighted mean of each value over the ``k`` nearest."""
            w = weight[..., :k, None, None]
            total = np.maximum(w.sum(axis=-3), 1e-12)
            result: NDArray[np.float32] = (w * values[..., :k, :, :]).sum(
                axis=-3
            ) / total
            return result

        score_near = mean(near)[..., 0]
        score, cost, extracted = np.moveaxis(mean(top.shape[-1]), -1, 0)  # [..., g]
        return np.stack(
            [
                score_near,
                score,
                cost,
                np.broadcast_to(familiarity[..., None], score.shape),
                extracted,
            ],
            axis=-1,
        ).astype(np.float32)


def build_memory(
    embedding: NDArray[np.float32],
    item: NDArray[np.int64],
    model_id: NDArray[np.int64],
    valid: NDArray[np.bool_],
    score: NDArray[np.float64],
    cost: NDArray[np.float64],
    n_models: int,
    collection: NDArray[np.int64] | None = None,
    collections: tuple[str, ...] = ("",),
    wide_of: tuple[int, ...] = (),
    extracted: NDArray[np.bool_] | None = None,
) -> NeighbourMemory:
    """A memory of rows laid out like a ``ReplayTable`` (column j of row r is model
    ``model_id[r, j]``, present where ``valid``, its answer extracted where
    ``extracted``), over ``n_models`` known models, with each row's collection and
    each collection's wide count (see :class:`NeighbourMemory`).

    Rows of one item in one collection (suites over the same source with other
    pools) are remembered once, with the records of all their models: an item
    counted twice would weigh twice among the neighbours.
    """
    if collection is None:
        collection = np.zeros(len(embedding), dtype=np.int64)
    pairs = np.stack([collection, item], axis=1)
    _, first, inverse = np.unique(pairs, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # remembered in the order first seen
    slot = np.argsort(order)[inverse.ravel()]  # each row's remembered row
    kept = first[order]
    rows, cols = np.nonzero(valid)

    def dense(values: NDArray[np.generic]) -> NDArray[np.float32]:
        out = np.full((len(kept), n_models), np.nan, dtype=np.float32)
        out[slot[rows], model_id[rows, cols]] = values[rows, cols]
        return out

    return NeighbourMemory(
        embedding[kept],
        item[kept],
        dense(score),
        dense(cost),
        collection=collection[kept],
        collections=collections,
        wide_of=wide_of,
        extracted=dense(np.zeros_like(valid) if extracted is None else extracted),
    )
