"""The learned router's network, what it sees, and how it plays episodes.

The network scores every candidate action of an episode (answer, call model j,
select model j's response) from these things:

- the request: its prompt embedding (all-MiniLM-L6-v2, task-agnostic), read
  through the memory below; the head reads it itself only where the config
  says so (``reads_prompt``), as a head that does can learn the train prompts'
  verdicts by heart rather than how far to trust the neighbours;
- lambda, the cost weight, as log lambda scaled to the trained range, so one
  network serves every lambda of that range;
- the episode so far: turn, spend, and per called model what came back
  (``xrouter.orchestrator.episode.observe``);
- the model card of each candidate's model: price in and out, tier, the cost the
  call would add at this lambda (from the prompt's tokens and the prices), and a
  learned embedding of the model's id;
- what the model scored and cost on the most similar train prompts, and whether
  an answer could be extracted from its responses there
  (``memory.NeighbourMemory``), the network's non-parametric half.

A candidate's logit is shaped like the reward: ``tau x sigmoid(prior + head(relu(
state(lambda, episode) + candidate(card, response, kind, model id)))) x
(K - penalty) + residual(relu(state + candidate))`` (with ``reads_prompt``, the
head's input also has ``prompt(embedding)`` added), where the prior is the
neighbours' rate of success in logits, the penalty the cost the action leads to,
and the residual stands for what the action leads to in later turns. Unavailable
actions are masked. The state half is computed once per episode, the candidate
half once per action, so a decision costs a few small matrix products.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from xrouter.core.catalog import TIERS, Catalog
from xrouter.orchestrator import episode as ep
from xrouter.orchestrator.reward import RewardConfig
from xrouter.policies.memory import N_MEMORY_FEATURES

__all__ = [
    "Decisions",
    "EpisodeInputs",
    "ModelTable",
    "NetConfig",
    "RouterNet",
    "Trajectory",
    "encode",
    "per_candidate",
    "play",
]

EMBED_DIM = 384
N_STATE = 8
N_CANDIDATE = (
    3 + 2 + len(TIERS) + 4 + N_MEMORY_FEATURES + 1 + ep.N_RESPONSE_FEATURES + 3
)
# Output length assumed when estimating a call's cost before it is made.
TYPICAL_OUTPUT_TOKENS = 256
# Episodes whose actions are scored in one pass of the network.
PLAY_SLICE = 512


@dataclass(frozen=True)
class NetConfig:
    """Sizes and ranges of the network (saved in the checkpoint manifest); the
    trainer sets them from its own settings (``xrouter.train.grpo.GRPOConfig``)."""

    hidden: int = 128  # width of the state and candidate layers
    head_hidden: int = 64  # width of the head
    lam_min: float = 0.1  # the trained lambda range, which log lambda is scaled to
    lam_max: float = 3e4
    max_turns: int = 3  # the episode's turn limit
    k: float = RewardConfig().k  # the reward's K and cost cap, for the shaped logit
    cost_max: float = 1.0
    shaped: bool = True  # reward-shaped logits over the neighbour prior
    sharpness: float = 12.0  # the shaped logit's starting scale (learned)
    reads_prompt: bool = False  # the head also reads the prompt embedding itself

    def __post_init__(self) -> None:
        sizes = (self.hidden, self.head_hidden, self.max_turns)
        if min(sizes) < 1:
            raise ValueError(
                "hidden, head_hidden and max_turns must be at least 1, got "
                f"{self.hidden}, {self.head_hidden} and {self.max_turns}"
            )
        if not 0 < self.lam_min < self.lam_max < math.inf:
            raise ValueError(
                f"the lambda range must satisfy 0 < lam_min < lam_max, got "
                f"{self.lam_min:g} to {self.lam_max:g}"
            )
        if not (self.k > 0 and self.cost_max > 0 and 0 < self.sharpness < math.inf):
            raise ValueError(
                f"k, cost_max and sharpness must be > 0, got {self.k:g}, "
                f"{self.cost_max:g} and {self.sharpness:g}"
            )

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
    memory: NDArray[np.float32]  # [n, M, 5], see ``memory.NeighbourMemory``


def _log_price(price: NDArray[np.float64]) -> NDArray[np.float64]:
    """log10 of USD per 1M tokens, about -1..1 for prices from $0.1 to $10."""
    return np.log10(np.maximum(price, 1e-3))


def _weighted(
    penalty: NDArray[np.float64], cost_max: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A cost penalty (lambda x USD) as two features, ``[..., 1]`` each: its share
    of cost_max (capped at 1), and its log10 scaled to about 0..1."""
    capped = np.minimum(penalty, cost_max) / cost_max
    log = (np.log10(np.maximum(penalty, 1e-6)) + 2) / 4
    return capped[..., None], log[..., None]


def _state_features(
    inputs: EpisodeInputs,
    state: ep.EpisodeState,
    response: NDArray[np.float32],
    spent_usd: NDArray[np.float64],
    config: NetConfig,
) -> NDArray[np.float32]:
    """``[n, 8]``: lambda, the turn, what was called and spent, the prompt (with
    ``response``, what came back, and ``spent_usd``, what was spent, so far)."""
    span = math.log(config.lam_max / config.lam_min) / 2
    log_lam = (np.log(inputs.lam) - math.log(config.lam_min)) / span - 1.0
    spent = inputs.lam * spent_usd
    agreed = (response[:, :, 2] > 0).any(axis=1)
    offered = state.offered.sum(axis=1)
    return np.stack(
        [
            log_lam,
            state.turn / config.max_turns,
            state.turn == config.max_turns - 1,
            state.called.sum(axis=1) / np.maximum(offered, 1),
            np.minimum(spent, config.cost_max) / config.cost_max,
            agreed,
            offered / 16,
            np.log1p(inputs.input_tokens.max(axis=1)) / 8,
        ],
        axis=1,
    ).astype(np.float32)


def _model_features(
    inputs: EpisodeInputs, table: ModelTable, config: NetConfig
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``[n, M, 17]`` per offered model, and the card estimate of a call's USD.

    Card features and what a call would cost in reward units (the prompt's part
    exactly, its tokens being known; the reply's at a typical length), then what
    the memory says of the model on similar prompts.
    """
    lam = inputs.lam[:, None]
    mid = inputs.model_id
    prompt_usd = inputs.input_tokens * table.price_in[mid] / 1e6
    reply_usd = TYPICAL_OUTPUT_TOKENS * table.price_out[mid] / 1e6
    features = np.concatenate(
        [
            _log_price(table.price_in[mid])[..., None],
            _log_price(table.price_out[mid])[..., None],
            np.eye(len(TIERS))[table.tier[mid]],
            *_weighted(lam * prompt_usd, config.cost_max),
            *_weighted(lam * reply_usd, config.cost_max),
            inputs.memory[..., :2],  # neighbours' mean score, near and wide
            *_weighted(lam * inputs.memory[..., 2], config.cost_max),
            inputs.memory[..., 3:],  # how familiar the prompt is; answers found
        ],
        axis=2,
    )
    return features, prompt_usd + reply_usd


def encode(
    inputs: EpisodeInputs,
    state: ep.EpisodeState,
    table: ModelTable,
    config: NetConfig,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]:
    """Features of each episode and each candidate action.

    Returns ``state_x[n, 8]``, ``cand_x[n, A, 27]`` and ``cand_model[n, A]`` (the
    model-table row of each candidate's model), with A = 1 + 2M laid out as
    answer, call model j, select model j.
    """
    n, m = state.called.shape
    rows = np.arange(n)
    self_col = np.maximum(inputs.self_model, 0)
    per_model, card_usd = _model_features(inputs, table, config)  # [n, M, 17]

    # Candidates: the answer speaks for the self model; a select also carries
    # what came back from its model.
    response = ep.observe(state, inputs.responses)  # [n, M, 4]
    spent = ep.spent(state, inputs.responses)
    blank = np.zeros((n, m, ep.N_RESPONSE_FEATURES))
    answer = np.concatenate([per_model, blank], axis=2)[rows, self_col][:, None]
    calls = np.concatenate([per_model, blank], axis=2)
    selects = np.concatenate([per_model, response], axis=2)
    kind = np.broadcast_to(np.eye(3)[ep.action_kinds(m)], (n, 1 + 2 * m, 3))
    is_self = (kind[..., :1] > 0) & (np.arange(1 + 2 * m) == 0)[None, :, None]

    # The last two columns feed the reward-shaped logit (see RouterNet.forward):
    # the neighbours' success rate as a logit, and the penalty after the action.
    wide = np.clip(inputs.memory[..., 1], 0.02, 0.98)
    prior = per_candidate(np.log(wide / (1 - wide)), inputs.self_model)
    after = _penalty_after(inputs, spent, card_usd, config)
    cand_x = np.concatenate(
        [
            kind,
            np.concatenate([answer, calls, selects], axis=1),  # [n, A, 21]
            is_self,
            prior[..., None],
            after[..., None],
        ],
        axis=2,
    ).astype(np.float32)
    cand_model = per_candidate(inputs.model_id, inputs.self_model)
    state_x = _state_features(inputs, state, response, spent, config)
    return state_x, cand_x, cand_model


def per_candidate(values: NDArray[Any], self_model: NDArray[np.int64]) -> NDArray[Any]:
    """``values[n, M]``, one per model, laid out per candidate action,
    ``[n, 1 + 2M]``: the answer takes the self model's value, call j and select j
    model j's."""
    own = values[np.arange(len(values)), np.maximum(self_model, 0)]
    return np.concatenate([own[:, None], values, values], axis=1)


def _penalty_after(
    inputs: EpisodeInputs,
    spent_usd: NDArray[np.float64],
    card_usd: NDArray[np.float64],
    config: NetConfig,
) -> NDArray[np.float64]:
    """``[n, A]``: the cost penalty an episode would carry after each action,
    having spent ``spent_usd`` so far.

    A call adds its expected cost: the neighbours' mean cost of that model where
    the memory has one, else the card estimate; a select adds nothing.
    """
    n, m = card_usd.shape
    expected = np.where(inputs.memory[..., 2] > 0, inputs.memory[..., 2], card_usd)
    self_col = np.maximum(inputs.self_model, 0)
    spent = spent_usd[:, None]
    added = np.concatenate(
        [expected[np.arange(n), self_col][:, None], expected, np.zeros((n, m))],
        axis=1,
    )
    penalty: NDArray[np.float64] = np.minimum(
        inputs.lam[:, None] * (spent + added), config.cost_max
    )
    return penalty


class RouterNet(nn.Module):
    """Scores candidate actions; see the module docstring for the architecture."""

    def __init__(self, n_models: int, config: NetConfig) -> None:
        super().__init__()
        h = config.hidden
        self.config = config
        self.prompt = (
            nn.Sequential(nn.Linear(EMBED_DIM, h), nn.ReLU(), nn.Linear(h, h))
            if config.reads_prompt
            else None
        )
        self.state = nn.Linear(N_STATE, h)
        self.candidate = nn.Linear(N_CANDIDATE, h)
        self.model_embedding = nn.Embedding(n_models, h)
        nn.init.normal_(self.model_embedding.weight, std=0.1)
        self.head = nn.Sequential(
            nn.ReLU(), nn.Linear(h, config.head_hidden), nn.ReLU()
        )
        # The head's output: a correction to the prior's logit of the chance the
        # answer is right (shaped), or the logit itself. The residual reads the
        # episode and the candidate but not the prompt, so what it learns of
        # later turns holds for every request alike rather than for the train
        # prompts. Both start small: the first policy follows the neighbours.
        self.out = nn.Linear(config.head_hidden, 1)
        hidden, last = (
            nn.Linear(h, config.head_hidden),
            nn.Linear(config.head_hidden, 1),
        )
        self.residual = nn.Sequential(nn.ReLU(), hidden, nn.ReLU(), last)
        for layer in (self.out, last):
            nn.init.zeros_(layer.bias)
            with torch.no_grad():
                layer.weight.mul_(0.1)
        # Sharpness of the reward-shaped logit, 4 x softplus(parameter), starting
        # at config.sharpness.
        start = math.log(math.expm1(config.sharpness / 4))
        self.sharpness = nn.Parameter(torch.tensor(start))

    def forward(
        self,
        embedding: torch.Tensor,  # [n, 384]
        state_x: torch.Tensor,  # [n, 8]
        cand_x: torch.Tensor,  # [n, A, 27]; last two: prior, penalty
        cand_model: torch.Tensor,  # [n, A]
        legal: torch.Tensor,  # [n, A] bool
    ) -> torch.Tensor:
        """Masked logits ``[n, A]``; illegal actions get -inf."""
        return self.heads(embedding, state_x, cand_x, cand_model, legal)[0]

    def heads(
        self,
        embedding: torch.Tensor,
        state_x: torch.Tensor,
        cand_x: torch.Tensor,
        cand_model: torch.Tensor,
        legal: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The masked logits, and per candidate the logit of the chance that its
        model's answer is right (the neighbours' rate corrected by the network)."""
        s = self.state(state_x)  # [n, h]
        c = self.candidate(cand_x) + self.model_embedding(cand_model)  # [n, A, h]
        request = s if self.prompt is None else self.prompt(embedding) + s
        out = self.out(self.head(request[:, None, :] + c))[..., 0]  # [n, A]
        right = cand_x[..., -2] + out
        if not self.config.shaped:
            return out.masked_fill(~legal, float("-inf")), right
        # The expected reward of the action: the chance the answer will be right,
        # times K less the cost penalty it leads to; plus the residual, for what
        # the action leads to later.
        payoff = torch.sigmoid(right) * (self.config.k - cand_x[..., -1])
        tau = nn.functional.softplus(self.sharpness) * 4
        residual = self.residual(s[:, None, :] + c)[..., 0]
        logits = tau * payoff + residual
        return logits.masked_fill(~legal, float("-inf")), right


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
        # In slices of episodes: the activations of a slice stay in the CPU's
        # caches, which takes about half the time of one pass over thousands.
        parts = [
            net(
                embedding[rows[cut]],
                torch.from_numpy(state_x[cut]),
                torch.from_numpy(cand_x[cut]),
                torch.from_numpy(cand_model[cut]),
                torch.from_numpy(legal[cut]),
            )
            for cut in _slices(len(rows), PLAY_SLICE)
        ]
        logits = parts[0] if len(parts) == 1 else torch.cat(parts)
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


def _slices(n: int, size: int) -> list[slice]:
    return [slice(start, start + size) for start in range(0, n, size)]


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
        memory=inputs.memory[rows],
    )


def _rows_of_state(state: ep.EpisodeState, rows: NDArray[np.int64]) -> ep.EpisodeState:
    return ep.EpisodeState(**{name: value[rows] for name, value in vars(state).items()})
