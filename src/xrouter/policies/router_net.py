"""The learned router's network, what it sees, and how it plays episodes.

The network scores every candidate action of an episode (answer, call model j,
select model j's response) from four things:

- the request: its prompt embedding (all-MiniLM-L6-v2, task-agnostic);
- lambda, the cost weight, as log lambda scaled to the trained range, so one
  network serves every lambda of that range;
- the episode so far: turn, spend, and per called model what came back
  (``xrouter.orchestrator.episode.observe``);
- the model card of each candidate's model: price in and out, tier, the cost the
  call would add at this lambda (from the prompt's tokens and the prices), and a
  learned embedding of the model's id.

A candidate's logit is ``head(relu(state(request, lambda, episode) +
candidate(card, response, kind, model id)))``; unavailable actions are masked. The
state half is computed once per episode, the candidate half once per action, so a
decision costs a few small matrix products.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from xrouter.core.catalog import TIERS, Catalog
from xrouter.orchestrator import episode as ep
from xrouter.orchestrator.reward import RewardConfig

__all__ = [
    "Decisions",
    "EpisodeInputs",
    "ModelTable",
    "NetConfig",
    "RouterNet",
    "Trajectory",
    "encode",
    "play",
]

EMBED_DIM = 384
N_STATE = 7
N_CANDIDATE = 3 + 2 + len(TIERS) + 2 + ep.N_RESPONSE_FEATURES + 1
# Output length assumed when estimating a call's cost before it is made.
TYPICAL_OUTPUT_TOKENS = 256


@dataclass(frozen=True)
class NetConfig:
    """Sizes and ranges of the network (saved in the checkpoint manifest)."""

    hidden: int = 128
    head_hidden: int = 64
    lam_min: float = 0.1
    lam_max: float = 1e4
    max_turns: int = 4
    cost_max: float = RewardConfig().cost_max

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class ModelTable:
    """The models a network knows, in the order of its learned model embeddings."""

    ids: tuple[str, ...]
    price_in: NDArray[np.float64]  # USD per 1M input tokens
    price_out: NDArray[np.float64]  # USD per 1M output tokens
    tier: NDArray[np.int64]  # index into TIERS

    @classmethod
    def from_catalog(cls, ids: Sequence[str], catalog: Catalog) -> ModelTable:
        cards = [catalog.get(m) for m in ids]
        return cls(
            ids=tuple(ids),
            price_in=np.array([c.input_per_mtok for c in cards], dtype=np.float64),
            price_out=np.array([c.output_per_mtok for c in cards], dtype=np.float64),
            tier=np.array([TIERS.index(c.tier) for c in cards], dtype=np.int64),
        )

    def index(self, models: Sequence[str]) -> NDArray[np.int64]:
        position = {m: k for k, m in enumerate(self.ids)}
        return np.array([position[m] for m in models], dtype=np.int64)


@dataclass(frozen=True)
class EpisodeInputs:
    """One row per episode: the request, lambda and the pool it is offered.

    ``model_id[n, M]`` indexes ``ModelTable``; ``input_tokens[n, M]`` is the prompt's
    length as each model counts it, known before any call.
    """

    embedding: NDArray[np.float32]
    lam: NDArray[np.float64]
    model_id: NDArray[np.int64]
    input_tokens: NDArray[np.int64]
    offered: NDArray[np.bool_]
    self_model: NDArray[np.int64]
    responses: ep.Responses


def _log_price(price: NDArray[np.float64]) -> NDArray[np.float64]:
    """log10 of USD per 1M tokens, about -1..1 for prices from $0.1 to $10."""
    return np.log10(np.maximum(price, 1e-3))


def encode(
    inputs: EpisodeInputs,
    state: ep.EpisodeState,
    table: ModelTable,
    config: NetConfig,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]:
    """Features of each episode and each candidate action.

    Returns ``state_x[n, 7]``, ``cand_x[n, A, 17]`` and ``cand_model[n, A]`` (the
    model-table row of each candidate's model), with A = 1 + 2M.
    """
    n, m = state.called.shape
    rows = np.arange(n)
    lam = inputs.lam
    span = math.log(config.lam_max / config.lam_min) / 2
    log_lam = (np.log(lam) - math.log(config.lam_min)) / span - 1.0
    penalty = np.minimum(lam * ep.spent(state, inputs.responses), config.cost_max)
    response = ep.observe(state, inputs.responses)  # [n, M, 4]
    n_called = state.called.sum(axis=1)
    state_x = np.stack(
        [
            log_lam,
            state.turn / config.max_turns,
            state.turn == config.max_turns - 1,
            n_called / np.maximum(state.offered.sum(axis=1), 1),
            penalty / config.cost_max,
            (response[:, :, 2] > 0).any(axis=1),
            state.offered.sum(axis=1) / 16,
        ],
        axis=1,
    ).astype(np.float32)

    # Per model: card and cost features, then the per-candidate layout.
    mid = inputs.model_id
    usd = (
        inputs.input_tokens * table.price_in[mid]
        + TYPICAL_OUTPUT_TOKENS * table.price_out[mid]
    ) / 1e6
    weighted = lam[:, None] * usd
    per_model = np.concatenate(
        [
            _log_price(table.price_in[mid])[..., None],
            _log_price(table.price_out[mid])[..., None],
            np.eye(len(TIERS))[table.tier[mid]],
            (np.minimum(weighted, config.cost_max) / config.cost_max)[..., None],
            ((np.log10(np.maximum(weighted, 1e-6)) + 2) / 4)[..., None],
        ],
        axis=2,
    )  # [n, M, 11]
    self_col = np.maximum(inputs.self_model, 0)
    answer = np.concatenate(
        [per_model[rows, self_col], np.zeros((n, ep.N_RESPONSE_FEATURES))], axis=1
    )[:, None, :]
    blank = np.zeros((n, m, ep.N_RESPONSE_FEATURES))
    calls = np.concatenate([per_model, blank], axis=2)
    selects = np.concatenate([per_model, response], axis=2)
    body = np.concatenate([answer, calls, selects], axis=1)  # [n, A, 15]
    kind = np.eye(3)[ep.action_kinds(m)]  # [A, 3]
    is_self = np.zeros((n, 1 + 2 * m, 1))
    is_self[:, 0] = 1.0
    cand_x = np.concatenate(
        [np.broadcast_to(kind, (n, *kind.shape)), body, is_self], axis=2
    ).astype(np.float32)
    cand_model = np.concatenate([mid[rows, self_col][:, None], mid, mid], axis=1)
    return state_x, cand_x, cand_model


class RouterNet(nn.Module):
    """Scores candidate actions; see the module docstring for the architecture."""

    def __init__(self, n_models: int, config: NetConfig) -> None:
        super().__init__()
        h = config.hidden
        self.config = config
        self.prompt = nn.Sequential(nn.Linear(EMBED_DIM, h), nn.ReLU(), nn.Linear(h, h))
        self.state = nn.Linear(N_STATE, h)
        self.candidate = nn.Linear(N_CANDIDATE, h)
        self.model_embedding = nn.Embedding(n_models, h)
        nn.init.normal_(self.model_embedding.weight, std=0.1)
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Linear(h, config.head_hidden),
            nn.ReLU(),
            nn.Linear(config.head_hidden, 1),
        )

    def forward(
        self,
        embedding: torch.Tensor,  # [n, 384]
        state_x: torch.Tensor,  # [n, 7]
        cand_x: torch.Tensor,  # [n, A, 17]
        cand_model: torch.Tensor,  # [n, A]
        legal: torch.Tensor,  # [n, A] bool
    ) -> torch.Tensor:
        """Masked logits ``[n, A]``; illegal actions get -inf."""
        s = self.prompt(embedding) + self.state(state_x)  # [n, h]
        c = self.candidate(cand_x) + self.model_embedding(cand_model)  # [n, A, h]
        logits: torch.Tensor = self.head(s[:, None, :] + c).squeeze(-1)
        return logits.masked_fill(~legal, float("-inf"))


@dataclass
class Decisions:
    """The decisions of one turn: which episodes acted, on what, and how likely."""

    rows: NDArray[np.int64]
    state_x: NDArray[np.float32]
    cand_x: NDArray[np.float32]
    cand_model: NDArray[np.int64]
    legal: NDArray[np.bool_]
    action: NDArray[np.int64]
    logp: NDArray[np.float32]


@dataclass
class Trajectory:
    """A played batch: the final states and every turn's decisions."""

    state: ep.EpisodeState
    turns: list[Decisions]


@torch.no_grad()
def play(
    net: RouterNet,
    inputs: EpisodeInputs,
    table: ModelTable,
    rules: ep.EpisodeRules,
    *,
    sample: bool,
    generator: torch.Generator | None = None,
) -> Trajectory:
    """Play every episode to its end, all in lockstep.

    ``sample``: draw each action from the softmax of the logits (temperature 1.0),
    as in training; otherwise take the most likely action, as in evaluation.
    """
    state = ep.start(inputs.offered, inputs.self_model)
    embedding = torch.from_numpy(inputs.embedding)
    turns = []
    while not state.done.all():
        rows = np.flatnonzero(~state.done)
        sub = _rows_of(inputs, rows)
        part = _rows_of_state(state, rows)
        state_x, cand_x, cand_model = encode(sub, part, table, net.config)
        legal = ep.legal_actions(part)
        logits = net(
            embedding[rows],
            torch.from_numpy(state_x),
            torch.from_numpy(cand_x),
            torch.from_numpy(cand_model),
            torch.from_numpy(legal),
        )
        logp_all = torch.log_softmax(logits, dim=1)
        if sample:
            chosen = torch.multinomial(logp_all.exp(), 1, generator=generator)[:, 0]
        else:
            chosen = logits.argmax(dim=1)
        logp = logp_all.gather(1, chosen[:, None])[:, 0]
        actions = np.full(len(state.done), -1, dtype=np.int64)
        actions[rows] = chosen.numpy()
        turns.append(
            Decisions(
                rows, state_x, cand_x, cand_model, legal, actions[rows], logp.numpy()
            )
        )
        state = ep.step(state, actions, rules)
    return Trajectory(state, turns)


def _rows_of(inputs: EpisodeInputs, rows: NDArray[np.int64]) -> EpisodeInputs:
    r = inputs.responses
    return EpisodeInputs(
        embedding=inputs.embedding[rows],
        lam=inputs.lam[rows],
        model_id=inputs.model_id[rows],
        input_tokens=inputs.input_tokens[rows],
        offered=inputs.offered[rows],
        self_model=inputs.self_model[rows],
        responses=ep.Responses(
            r.cost[rows], r.output_tokens[rows], r.answer_code[rows]
        ),
    )


def _rows_of_state(state: ep.EpisodeState, rows: NDArray[np.int64]) -> ep.EpisodeState:
    return ep.EpisodeState(**{name: value[rows] for name, value in vars(state).items()})
