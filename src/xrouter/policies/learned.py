"""The RL-trained router as a policy of the offline evaluation.

``LearnedPolicy`` wraps a checkpoint (see ``checkpoint.py``); its knob is lambda,
swept over ``LAMBDA_SWEEP`` within the range the network was trained on. For each
item it plays an episode by the shared rules (``xrouter.orchestrator.episode``),
taking the network's most likely action each turn, and reports every model the
episode paid for and whose response it returned.

``ReplayTable`` lays the items of one or more replay pools out as one padded table,
the form in which both training and evaluation feed episodes to the network.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from xrouter.backends.replay import ReplayPool
from xrouter.core.catalog import Catalog
from xrouter.core.errors import ConfigError
from xrouter.core.recent import Recent
from xrouter.orchestrator import episode as ep
from xrouter.policies.base import LAMBDA_SWEEP, Policy, Routing
from xrouter.policies.checkpoint import Checkpoint, check_pool
from xrouter.policies.embedding import Embedder
from xrouter.policies.frozen_net import FrozenNet
from xrouter.policies.memory import (
    N_MEMORY_FEATURES,
    UNKNOWN,
    NeighbourMemory,
    build_memory,
    item_hash,
)
from xrouter.policies.router_net import (
    EpisodeInputs,
    ModelTable,
    RouterNet,
    Trajectory,
    encode,
    play,
)

__all__ = [
    "Decision",
    "LearnedPolicy",
    "LiveRouter",
    "ReplayTable",
    "Seen",
    "TablePart",
    "check_lambda",
    "lambda_knobs",
    "route_rows",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TablePart:
    """One pool's items for a ``ReplayTable``: the pool, its prompt embeddings
    (``[items, 384]``) and the model that stands for the router answering itself."""

    pool: ReplayPool
    embedding: NDArray[np.float32]
    self_model: str | None = None

    @property
    def collection(self) -> str:
        """The memory's name for the pool's records: its data sources."""
        return "+".join(self.pool.sources)


@dataclass(frozen=True)
class ReplayTable:
    """Items of several pools in one table, padded to the largest pool.

    Row r is item ``item[r]`` of part ``part[r]``; column j is model j of that
    part's pool (``model_id`` indexes the network's ``ModelTable``); columns past
    the pool's size are padding (``valid`` false) and never offered. Parts over
    the same data sources share a collection of the memory (``collections``,
    indexed by ``collection[r]``).
    """

    part: NDArray[np.int64]
    item: NDArray[np.int64]
    embedding: NDArray[np.float32]
    model_id: NDArray[np.int64]
    valid: NDArray[np.bool_]
    self_model: NDArray[np.int64]
    score: NDArray[np.float64]
    cost: NDArray[np.float64]
    input_tokens: NDArray[np.int64]
    output_tokens: NDArray[np.int64]
    answer_code: NDArray[np.int64]
    item_hash: NDArray[np.int64]
    memory: NDArray[np.float32]  # [N, M, 5]; zeros until ``with_memory``
    collection: NDArray[np.int64]
    collections: tuple[str, ...]

    @classmethod
    def build(cls, parts: Sequence[TablePart], models: ModelTable) -> ReplayTable:
        width = max(len(p.pool.models) for p in parts)
        collections = tuple(dict.fromkeys(p.collection for p in parts))
        blocks: dict[str, list[NDArray[Any]]] = {}
        for k, part in enumerate(parts):
            pool, n = part.pool, len(part.pool.item_ids)
            self_col = pool.models.index(part.self_model) if part.self_model else -1
            row: dict[str, NDArray[Any]] = {
                "part": np.full(n, k, dtype=np.int64),
                "item": np.arange(n, dtype=np.int64),
                "embedding": part.embedding.astype(np.float32),
                "model_id": _pad(np.tile(models.index(pool.models), (n, 1)), width, 0),
                "valid": _pad(np.ones(pool.score.shape, dtype=bool), width, False),
                "self_model": np.full(n, self_col, dtype=np.int64),
                "score": _pad(pool.score, width, 0.0),
                "cost": _pad(pool.cost, width, 0.0),
                "input_tokens": _pad(pool.input_tokens, width, 0),
                "output_tokens": _pad(pool.output_tokens, width, 0),
                "answer_code": _pad(ep.answer_codes(pool.extracted), width, -1),
                "item_hash": item_hash(pool.item_ids),
                "memory": np.zeros((n, width, N_MEMORY_FEATURES), dtype=np.float32),
                "collection": np.full(
                    n, collections.index(part.collection), dtype=np.int64
                ),
            }
            for name, value in row.items():
                blocks.setdefault(name, []).append(value)
        arrays = {name: np.concatenate(v) for name, v in blocks.items()}
        return cls(**arrays, collections=collections)

    def __len__(self) -> int:
        return len(self.item)

    def with_memory(
        self, memory: NeighbourMemory, rows: NDArray[np.int64] | None = None
    ) -> ReplayTable:
        """The table with the memory features of ``rows`` (default: all) filled in,
        each row's from its own collection where the memory holds it; a row's own
        item never counts as its neighbour."""
        rows = np.arange(len(self)) if rows is None else rows
        known = np.array([memory.collection_of(c) for c in self.collections])
        found = memory.lookup(  # [r, V, 5]
            self.embedding[rows],
            self.item_hash[rows],
            np.unique(self.model_id[rows]),
            known[self.collection[rows]],
        )
        features = self.memory.copy()
        picked = found[np.arange(len(rows))[:, None], self.model_id[rows]]
        features[rows] = picked * self.valid[rows][..., None]
        return replace(self, memory=features)

    def memory_of(
        self, rows: NDArray[np.int64], wide_of: tuple[int, ...] = ()
    ) -> NeighbourMemory:
        """A memory of ``rows`` (the train items) over the table's models and
        collections, with each collection's wide count (see ``NeighbourMemory``)."""
        return build_memory(
            self.embedding[rows],
            self.item_hash[rows],
            self.model_id[rows],
            self.valid[rows],
            self.score[rows],
            self.cost[rows],
            int(self.model_id.max()) + 1,
            self.collection[rows],
            self.collections,
            wide_of,
            self.answer_code[rows] >= 0,
        )

    def inputs(
        self,
        rows: NDArray[np.int64],
        lam: NDArray[np.float64],
        offered: NDArray[np.bool_] | None = None,
    ) -> EpisodeInputs:
        """Episodes for ``rows`` at lambda ``lam``, offered their whole pool unless
        ``offered`` says otherwise."""
        return EpisodeInputs(
            embedding=self.embedding[rows],
            lam=lam,
            model_id=self.model_id[rows],
            input_tokens=self.input_tokens[rows],
            offered=self.valid[rows] if offered is None else offered,
            self_model=self.self_model[rows],
            responses=ep.Responses(
                self.cost[rows], self.output_tokens[rows], self.answer_code[rows]
            ),
            memory=self.memory[rows],
        )


def _pad(a: NDArray[Any], width: int, fill: float) -> NDArray[Any]:
    """``a`` (``[n, m]``) widened to ``[n, width]`` with ``fill``."""
    out = np.full((a.shape[0], width), fill, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


def route_rows(
    net: RouterNet,
    table: ReplayTable,
    models: ModelTable,
    rows: NDArray[np.int64],
    lam: float,
) -> Trajectory:
    """Greedy episodes (the most likely action each turn) for ``rows`` at ``lam``."""
    rules = ep.EpisodeRules(net.config.max_turns)
    inputs = table.inputs(rows, np.full(len(rows), lam))
    return play(net, inputs, models, rules, sample=False)


def check_lambda(checkpoint: Checkpoint, lam: float) -> None:
    """Refuse a lambda outside the range the network was trained on (no clamp)."""
    lo, hi = checkpoint.lambda_range
    if not lo <= lam <= hi:
        raise ConfigError(
            f"lambda {lam:g} is outside the range the policy at {checkpoint.path} "
            f"was trained on ({lo:g} to {hi:g}); choose a lambda in that range or "
            "train a policy over a wider one"
        )


def lambda_knobs(lam_range: tuple[float, float], default: float) -> list[float]:
    """The lambdas swept for a curve: ``LAMBDA_SWEEP`` inside the range, and the
    default."""
    lo, hi = lam_range
    inside = {lam for lam in LAMBDA_SWEEP if lo <= lam <= hi}
    return sorted({*inside, default, lo, hi})


class LearnedPolicy(Policy):
    """Routes with a trained network; the knob is lambda (USD-to-reward rate)."""

    knob_name = "lambda"

    def __init__(
        self,
        checkpoint: Checkpoint,
        catalog: Catalog,
        embedder: Embedder,
        self_model: str | None = None,
        name: str = "rl-router",
    ) -> None:
        self.checkpoint = checkpoint
        self.catalog = catalog
        self.embedder = embedder.like(checkpoint.embedding)
        self.self_model = self_model
        self.name = name
        self._table: ReplayTable | None = None
        self._models: ModelTable | None = None
        self._filled = np.zeros(0, dtype=bool)

    def fit(self, pool: ReplayPool, train: NDArray[np.int64]) -> None:
        """Nothing is learned here: check the pool and embed its prompts."""
        del train
        check_pool(self.checkpoint, pool.models, self.catalog)
        vectors = self.embedder.encode_items(pool.sources[0], pool.items())
        self._models = self.checkpoint.model_table(self.catalog)
        part = TablePart(pool, vectors, self.self_model)
        memory = self.checkpoint.memory
        if memory.collection_of(part.collection) == UNKNOWN:
            logger.warning(
                "the policy at %s remembers no records of %s (it knows %s); each "
                "model's estimates come from the records whose prompts are most "
                "like the request, as for a live request",
                self.checkpoint.path,
                part.collection,
                ", ".join(memory.collections),
            )
        self._table = ReplayTable.build([part], self._models)
        self._filled = np.zeros(len(self._table), dtype=bool)

    def knobs(self) -> Sequence[float]:
        return lambda_knobs(self.checkpoint.lambda_range, self.default_knob())

    def default_knob(self) -> float:
        return self.checkpoint.default_lambda

    def route(self, pool: ReplayPool, items: NDArray[np.int64], knob: float) -> Routing:
        check_lambda(self.checkpoint, knob)
        if self._table is None or self._models is None:
            raise RuntimeError("LearnedPolicy.route called before fit")
        # Memory features are looked up once per item, for the items routed.
        missing = np.unique(items[~self._filled[items]])
        if len(missing):
            self._table = self._table.with_memory(self.checkpoint.memory, missing)
            self._filled[missing] = True
        played = route_rows(self.checkpoint.net, self._table, self._models, items, knob)
        return Routing(ep.charged(played.state), played.state.chosen)


# Live prompts whose neighbours (and embeddings) are kept for their later turns.
REMEMBERED_PROMPTS = 256


@dataclass(frozen=True)
class Decision:
    """One action of the router: answer itself, call a model, or select the
    response of a model called earlier."""

    kind: Literal["answer", "call", "select"]
    model: str


@dataclass
class Seen:
    """What an episode has seen so far, per pool model (in the router's order):
    which models it called (``called``: failed calls too), which of those
    answered (``answered``), what each call cost, its output tokens and its
    extracted answer (equal strings agree; None: none could be extracted).
    ``turns`` counts the actions taken so far; ``offered``, where given, the
    models the episode may still call (those the budget can pay for), as
    training offers an episode a subset of its pool."""

    called: list[bool]
    answered: list[bool]
    cost: list[float]
    output_tokens: list[int]
    answers: list[str | None]
    turns: int = 0
    offered: list[bool] | None = None

    @classmethod
    def nothing(cls, m: int) -> Seen:
        return cls([False] * m, [False] * m, [0.0] * m, [0] * m, [None] * m)


class LiveRouter:
    """Decisions for one live request at a time, turn by turn.

    It encodes the same features and plays by the same rules as training and the
    offline evaluation: before any call, and after calls, from what came back
    (``Seen``). A call that failed counts as made (it is not tried again) but its
    response cannot be selected.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        catalog: Catalog,
        pool: Sequence[str],
        self_model: str | None = None,
    ) -> None:
        check_pool(checkpoint, pool, catalog)
        if self_model is not None and self_model not in pool:
            raise ConfigError(
                f"self_model {self_model!r} is not in the pool ({', '.join(pool)}); "
                "the model that answers for the router must be a pool model"
            )
        m = len(pool)
        self.checkpoint = checkpoint
        self.pool = list(pool)
        self.models = checkpoint.model_table(catalog)
        self._model_id = self.models.index(pool)[None, :]
        self._self = np.array([self.pool.index(self_model) if self_model else -1])
        self._start = ep.start(np.ones((1, m), dtype=bool), self._self)
        self._net = FrozenNet(checkpoint.net)
        # A prompt's neighbours, for the later turns of its episode.
        self._found: Recent[bytes, NDArray[np.float32]] = Recent(REMEMBERED_PROMPTS)

    def _neighbours(self, query: NDArray[np.float32]) -> NDArray[np.float32]:
        return self._found.get(
            query.tobytes(),
            lambda: self.checkpoint.memory.lookup_one(query[0], self._model_id[0])[
                None
            ],
        )

    def first_decision(
        self,
        embedding: NDArray[np.float32],
        lam: float,
        input_tokens: int,
        offered: Sequence[str] | None = None,
    ) -> Decision:
        """The most likely first action for a prompt (its 384-d embedding and its
        length in tokens) at lambda ``lam``, among the ``offered`` models (default:
        the whole pool)."""
        seen = Seen.nothing(len(self.pool))
        if offered is not None:
            seen.offered = [m in offered for m in self.pool]
        decision = self.decide(embedding, lam, input_tokens, seen)
        assert decision is not None  # nothing is tried yet: every call is open
        return decision

    def decide(
        self,
        embedding: NDArray[np.float32],
        lam: float,
        input_tokens: int,
        seen: Seen,
    ) -> Decision | None:
        """The most likely next action given what the episode has seen; None when
        none is left (every model tried, none answered)."""
        check_lambda(self.checkpoint, lam)
        m = len(self.pool)
        called = np.array([seen.called], dtype=bool)
        offered = self._start.offered
        if seen.offered is not None and any(seen.offered):
            offered = np.array([seen.offered], dtype=bool)
        state = replace(
            self._start,
            offered=offered,
            called=called,
            turn=np.array([seen.turns], dtype=np.int64),
        )
        codes: dict[str, int] = {}
        answer_code = [
            codes.setdefault(a, len(codes)) if a is not None and ok else -1
            for a, ok in zip(seen.answers, seen.answered, strict=True)
        ]
        query = embedding.reshape(1, -1).astype(np.float32, copy=False)
        found = self._neighbours(query)
        inputs = EpisodeInputs(
            embedding=query,
            lam=np.array([lam]),
            model_id=self._model_id,
            input_tokens=np.full((1, m), input_tokens, dtype=np.int64),
            offered=offered,
            self_model=self._self,
            responses=ep.Responses(
                np.array([seen.cost], dtype=np.float64),
                np.array([seen.output_tokens], dtype=np.int64),
                np.array([answer_code], dtype=np.int64),
            ),
            memory=found[:, self._model_id[0]],
        )
        state_x, cand_x, cand_model = encode(
            inputs, state, self.models, self.checkpoint.net.config
        )
        legal = ep.legal_actions(state)
        legal[0, 1 + m :] &= np.array(seen.answered, dtype=bool)  # only answers
        if self._self[0] >= 0:  # the router answers only if it may pay for that
            legal[0, 0] &= offered[0, self._self[0]]
        if not legal.any():
            return None
        logits = self._net(inputs.embedding, state_x, cand_x, cand_model, legal)
        action = int(logits.argmax())
        if action == ep.ANSWER:
            return Decision("answer", self.pool[int(self._self[0])])
        if action <= m:
            return Decision("call", self.pool[action - 1])
        return Decision("select", self.pool[action - 1 - m])
