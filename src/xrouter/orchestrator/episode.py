"""The rules of a routing episode, as pure functions over a batch of episode states.

An episode serves one request over the pool models it is offered. In each turn the
router policy takes one action:

- ``answer``: reply itself; the suite's ``self_model`` stands for the router, and its
  recorded response and cost are the router's. The episode ends.
- ``call j``: send the request to offered pool model ``j`` (one not called yet). Its
  response comes back and its cost joins the episode's.
- ``select j``: return the response of an earlier call to model ``j``. The episode
  ends.

Turn limit: an episode takes at most ``max_turns`` actions. When its last allowed
action is a call, that call's response is returned, so every episode ends with a
response. Cost: the sum of every call's cost, the router's own answer included; the
routing decision itself (a small network, not a language model) is free.

After each turn the router sees what came back, never more: for each model it has
called, whether an answer could be extracted from the response, how many other
responses agree with it on the extracted answer, and the response's length.

States are batches of numpy arrays, so thousands of episodes step in lockstep. The
functions here never modify a state: ``step`` returns a new one. Training, offline
evaluation and (later) the gateway share them, so a rule cannot differ between them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from xrouter.core.errors import ConfigError
from xrouter.orchestrator.reward import RewardConfig

__all__ = [
    "ANSWER",
    "N_RESPONSE_FEATURES",
    "EpisodeRules",
    "EpisodeState",
    "Responses",
    "action_kinds",
    "answer_codes",
    "batch_reward",
    "charged",
    "legal_actions",
    "n_actions",
    "observe",
    "spent",
    "start",
    "step",
]

# Action ids for a pool of M models: 0 answers, 1..M call model j (1 + j),
# M+1..2M select the response of model j (1 + M + j).
ANSWER = 0
KIND_ANSWER, KIND_CALL, KIND_SELECT = 0, 1, 2
N_RESPONSE_FEATURES = 4
# Output tokens are shown as log1p(tokens) / this, about 1 for a 3,000-token reply.
_LOG_TOKENS_SCALE = 8.0


@dataclass(frozen=True)
class EpisodeRules:
    """max_turns: the most actions an episode may take (at least 1)."""

    max_turns: int = 4

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ConfigError(
                f"an episode needs max_turns >= 1, got {self.max_turns}; "
                "use 1 for a single call, 3 for a cascade of three models"
            )


@dataclass(frozen=True)
class Responses:
    """What each call would return, row per episode, column per pool model.

    ``answer_code`` numbers the extracted answers within an item (-1: none could be
    extracted), so equal codes in a row mean two responses agree.
    """

    cost: NDArray[np.float64]
    output_tokens: NDArray[np.int64]
    answer_code: NDArray[np.int64]


@dataclass(frozen=True)
class EpisodeState:
    """A batch of episodes. Rows are episodes, columns pool models.

    offered: the models each episode may call. self_model: the column that stands
    for the router answering itself (-1: it cannot answer). called: models called so
    far. answered: the router answered itself. last_call: the column of the latest
    call (-1: none). chosen: the column whose response was returned (-1: not done).
    by_limit: the episode ended by the turn limit.
    """

    offered: NDArray[np.bool_]
    self_model: NDArray[np.int64]
    called: NDArray[np.bool_]
    answered: NDArray[np.bool_]
    turn: NDArray[np.int64]
    last_call: NDArray[np.int64]
    chosen: NDArray[np.int64]
    done: NDArray[np.bool_]
    by_limit: NDArray[np.bool_]

    @property
    def n_models(self) -> int:
        return int(self.offered.shape[1])


def n_actions(n_models: int) -> int:
    return 1 + 2 * n_models


def action_kinds(n_models: int) -> NDArray[np.int64]:
    """The kind (answer 0, call 1, select 2) of each action id."""
    return np.array(
        [KIND_ANSWER] + [KIND_CALL] * n_models + [KIND_SELECT] * n_models,
        dtype=np.int64,
    )


def start(offered: NDArray[np.bool_], self_model: NDArray[np.int64]) -> EpisodeState:
    """Fresh episodes: nothing called, turn 0."""
    n, m = offered.shape
    if (offered.sum(axis=1) < 1).any():
        raise ConfigError("every episode must be offered at least one pool model")
    minus = np.full(n, -1, dtype=np.int64)
    return EpisodeState(
        offered=offered.astype(bool),
        self_model=self_model.astype(np.int64),
        called=np.zeros((n, m), dtype=bool),
        answered=np.zeros(n, dtype=bool),
        turn=np.zeros(n, dtype=np.int64),
        last_call=minus,
        chosen=minus.copy(),
        done=np.zeros(n, dtype=bool),
        by_limit=np.zeros(n, dtype=bool),
    )


def legal_actions(state: EpisodeState) -> NDArray[np.bool_]:
    """``[n, 1 + 2M]``: the actions each episode may take now (none once done)."""
    n = len(state.called)
    rows = np.arange(n)
    can_answer = state.self_model >= 0
    self_col = np.maximum(state.self_model, 0)
    # The router answers once; once it has called its own model as a pool model it
    # selects that response instead of paying for it again.
    can_answer &= ~state.called[rows, self_col]
    legal = np.concatenate(
        [can_answer[:, None], state.offered & ~state.called, state.called], axis=1
    )
    legal[state.done] = False
    return legal


def step(
    state: EpisodeState, actions: NDArray[np.int64], rules: EpisodeRules
) -> EpisodeState:
    """Apply one action per active episode; finished episodes ignore theirs."""
    n, m = state.called.shape
    active = ~state.done
    legal = legal_actions(state)
    rows = np.arange(n)
    ok = legal[rows, np.clip(actions, 0, 2 * m)] & (actions >= 0) & (actions <= 2 * m)
    if (active & ~ok).any():
        bad = int(np.flatnonzero(active & ~ok)[0])
        raise ValueError(
            f"episode {bad} took action {int(actions[bad])}, which is not legal now "
            "(a model not offered or already called, or a select of a call that "
            "never ran)"
        )
    kind = action_kinds(m)[np.where(active, actions, 0)]
    model = np.where(kind == KIND_CALL, actions - 1, actions - 1 - m)

    is_answer = active & (kind == KIND_ANSWER)
    is_call = active & (kind == KIND_CALL)
    is_select = active & (kind == KIND_SELECT)
    called = state.called.copy()
    called[rows[is_call], model[is_call]] = True
    turn = state.turn + active
    # The turn-limit rule: a call on the last allowed turn is returned as the answer.
    by_limit = is_call & (turn >= rules.max_turns)
    chosen = state.chosen.copy()
    chosen[is_select] = model[is_select]
    chosen[by_limit] = model[by_limit]
    chosen[is_answer] = state.self_model[is_answer]
    return replace(
        state,
        called=called,
        answered=state.answered | is_answer,
        turn=turn,
        last_call=np.where(is_call, model, state.last_call),
        chosen=chosen,
        done=state.done | is_answer | is_select | by_limit,
        by_limit=state.by_limit | by_limit,
    )


def charged(state: EpisodeState) -> NDArray[np.bool_]:
    """``[n, M]``: the models each episode paid for, the router's own answer too."""
    paid = state.called.copy()
    answered = np.flatnonzero(state.answered)
    paid[answered, state.self_model[answered]] = True
    return paid


def spent(state: EpisodeState, responses: Responses) -> NDArray[np.float64]:
    """USD each episode has spent so far: every call, the router's answer included."""
    total: NDArray[np.float64] = (responses.cost * charged(state)).sum(axis=1)
    return total


def batch_reward(
    score: NDArray[np.float64],
    cost: NDArray[np.float64],
    lam: NDArray[np.float64],
    config: RewardConfig,
) -> NDArray[np.float64]:
    """``reward`` of ``xrouter.orchestrator.reward`` for arrays, lambda per episode."""
    penalty = np.minimum(lam * cost, config.cost_max)
    return np.asarray(score * (config.k - penalty), dtype=np.float64)


def observe(state: EpisodeState, responses: Responses) -> NDArray[np.float32]:
    """``[n, M, 4]`` what came back from each model so far (zeros if not called).

    Features: called; an answer could be extracted; the share of the other
    responses that agree with it on the extracted answer; log1p(output tokens) / 8.
    """
    called = state.called
    code = np.where(called, responses.answer_code, -1)  # unseen answers stay hidden
    has_answer = code >= 0
    same = (code[:, :, None] == code[:, None, :]) & has_answer[:, :, None]
    m = called.shape[1]
    same &= ~np.eye(m, dtype=bool)[None]
    others = np.maximum(called.sum(axis=1, keepdims=True) - 1, 1)
    agree = same.sum(axis=2) / others
    tokens = np.where(called, np.log1p(responses.output_tokens), 0.0)
    features = np.stack([called, has_answer, agree, tokens / _LOG_TOKENS_SCALE], axis=2)
    return features.astype(np.float32)


def answer_codes(extracted: NDArray[np.object_]) -> NDArray[np.int64]:
    """Number the extracted answers of each row: equal answers get equal codes.

    ``extracted[i, j]`` is model j's extracted answer to item i, or None; None gets
    -1, so a response without an answer agrees with nothing.
    """
    codes = np.full(extracted.shape, -1, dtype=np.int64)
    for i, row in enumerate(extracted):
        seen: dict[object, int] = {}
        for j, value in enumerate(row):
            if value is not None:
                codes[i, j] = seen.setdefault(value, len(seen))
    return codes
