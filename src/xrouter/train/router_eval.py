"""Checks of the router between training phases, greedy decoding throughout.

- :func:`parse_rate`: on held-out items, how often the router's first turn holds
  a parseable tool call naming a pool model (the evaluation reports the same
  rate on its test sample, from the episodes it plays).
- :func:`first_call_logps` then :func:`choice_figures`: the router's first call
  on held-out items read from its probabilities instead of sampled: the chance
  that its first turn opens a call to each pool model, hence the reward that
  call earns in expectation (sampling at temperature 1, as in training) and the
  reward of its likeliest call (what greedy decoding picks). No sampling noise,
  and about a quarter of a played episode's time an item.
- :func:`play_router` then :func:`summarize`: the shared ``evaluate_episodes`` on
  a fixed sample of test items (:func:`eval_rows`: ``sample_items``, seed 0),
  played in shares by several processes or whole by one, with the mean reward at
  the evaluation's lambda beside the best single model's, the oracle's, the
  nearest-neighbour router's and (given a checkpoint) the RL policy network's on
  the same items.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from transformers import PreTrainedTokenizerBase

from xrouter.backends.replay import ReplayPool
from xrouter.core.catalog import ModelCard
from xrouter.evaluate.episodes import (
    EpisodeEvaluation,
    EpisodeScore,
    evaluate_episodes,
    pool_figures,
    sample_items,
)
from xrouter.orchestrator.loop import Limits
from xrouter.orchestrator.reward import RewardConfig, reward
from xrouter.policies.base import Policy, outcome
from xrouter.policies.checkpoint import Checkpoint
from xrouter.policies.embedding import Embedder
from xrouter.policies.knn import NearestNeighbour
from xrouter.policies.learned import LearnedPolicy
from xrouter.policies.llm_router import LLMRouter
from xrouter.records.splits import split_mask
from xrouter.train.router_data import (
    RouterExample,
    RouterTask,
    call_opening,
    chat_text,
    encode,
    first_prompt,
)
from xrouter.train.router_policy import (
    PolicyBackend,
    PromptCache,
    common_prefix,
    prefill,
)
from xrouter.train.router_rl import first_call_ok, play_episode

__all__ = [
    "Rivals",
    "choice_figures",
    "eval_rows",
    "first_call_logps",
    "item_rewards",
    "parse_rate",
    "play_router",
    "pool_rewards",
    "summarize",
]


def parse_rate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    card: ModelCard,
    task: RouterTask,
    rows: NDArray[np.int64],
    lam: float,
    *,
    max_new_tokens: int = 96,
) -> float:
    """Share of ``rows`` whose greedy first turn calls a pool model parseably."""
    if len(rows) == 0:
        return 0.0
    model.eval()
    backend = PolicyBackend(
        model, tokenizer, card, temperature=0.0, max_new_tokens=max_new_tokens
    )
    models = tuple(task.records.models)
    hits = 0
    for row in rows:
        example = RouterExample(int(row), lam, models)
        episode = play_episode(task, example, backend, limits=Limits(max_turns=1))
        hits += episode.first_call_ok
    return hits / len(rows)


@torch.no_grad()
def first_call_logps(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    card: ModelCard,
    task: RouterTask,
    rows: NDArray[np.int64],
    *,
    lam: float,
) -> NDArray[np.float64]:
    """Per row of ``rows`` (every pool model offered, at ``lam``) and pool model,
    the log chance that the router's first turn opens with a call to that model
    (:func:`call_opening`). The prompts share their system part, which is run
    once; the openings' shared start is run once per row, and their ends packed
    into one pass."""
    model.eval()
    openings = [call_opening(tokenizer, m) for m in task.records.models]
    # The tokens every opening starts with, and what follows in each.
    shortest = min(len(ids) for ids in openings)
    shared = openings[0][: min(common_prefix(openings), shortest - 1)]
    rests = [ids[len(shared) :] for ids in openings]
    models = tuple(task.records.models)
    logps = np.empty((len(rows), len(models)))
    known: PromptCache | None = None
    for i, row in enumerate(rows):
        messages = first_prompt(task, RouterExample(int(row), lam, models), card)
        text = chat_text(tokenizer, messages, generation_prompt=True)
        prompt = encode(tokenizer, text)
        logits, _, known = prefill(model, prompt, known)
        last, head, joint = logits[0, -1], 0.0, known
        if shared:  # run once for all the openings
            out, _, joint = prefill(
                model, prompt + shared, known, logits_to_keep=len(shared)
            )
            head, last = _said(last, out[0], shared), out[0, -1]
        logps[i] = head + np.array(
            _openings(model, prompt + shared, last, joint, rests)
        )
    return logps


def _said(first: torch.Tensor, later: torch.Tensor, ids: Sequence[int]) -> float:
    """The log chance of ``ids`` from the logits before the first (``first``)
    and those after each id but the last (``later``, one row each, in order)."""
    steps = torch.arange(len(ids) - 1)
    rest = torch.log_softmax(later[: len(ids) - 1].float(), dim=-1)
    start = torch.log_softmax(first.float(), dim=-1)[ids[0]]
    return float(start + rest[steps, list(ids[1:])].sum())


def _openings(
    model: Any,
    prompt: list[int],
    last: torch.Tensor,
    known: PromptCache | None,
    openings: Sequence[list[int]],
) -> list[float]:
    """The log chance of each opening after ``prompt``, whose last position gave
    the logits ``last``.

    The openings continue the prompt's cache packed into one sequence, each at
    the positions it would hold alone and seeing only the prompt and its own
    earlier tokens (one pass reads the weights once and copies the cache once).
    Where the model's cache cannot be continued, each runs with the prompt in a
    pass of its own.
    """
    fed = [ids[:-1] for ids in openings]  # an opening's last id predicts nothing
    if not any(fed):  # one id each: the prompt's logits say it all
        return [_said(last, last[None], ids) for ids in openings]
    if known is None:
        passes = [
            model(input_ids=torch.tensor([prompt + ids])).logits[0, len(prompt) :]
            for ids in fed
        ]
    else:
        width = sum(len(ids) for ids in fed)
        own = torch.repeat_interleave(
            torch.arange(len(fed)), torch.tensor(list(map(len, fed)))
        )
        steps = torch.cat([torch.arange(len(ids)) for ids in fed])
        sees = (own[:, None] == own[None, :]) & (steps[:, None] >= steps[None, :])
        mask = torch.zeros(width, len(prompt) + width)
        mask[:, len(prompt) :].masked_fill_(~sees, float("-inf"))
        out = model(
            input_ids=torch.tensor([[t for ids in fed for t in ids]]),
            position_ids=(len(prompt) + steps)[None],
            attention_mask=mask[None, None].to(last.dtype),
            cache=known.fork(model, len(prompt)),
            use_cache=True,
        )
        passes = list(torch.split(out.logits[0], list(map(len, fed))))
    return [
        _said(last, later, ids) for later, ids in zip(passes, openings, strict=True)
    ]


def choice_figures(
    task: RouterTask,
    read: Sequence[tuple[int, NDArray[np.float64]]],
    *,
    lam: float,
    cost_max: float = RewardConfig().cost_max,
) -> dict[str, Any]:
    """The router's first call at ``lam`` on the rows of ``read``, each with its
    :func:`first_call_logps`, beside the best single model and the oracle.

    ``call_mass`` is the chance of opening with a call to some pool model. Among
    calls the chances are normalised: the expected reward mixes the recorded
    single-call rewards by them (sampling at temperature 1, as in training); the
    likeliest call's reward is what greedy decoding earns if it opens the same
    way. Only the first call counts (no select, no second call), so these compare
    checkpoints rather than whole episodes.
    """
    records = task.records
    rows = np.array([row for row, _ in read], dtype=np.int64)
    logps = np.array([chances for _, chances in read])
    config = RewardConfig(lam=lam, cost_max=cost_max)
    rewards = item_rewards(records, rows, config)
    chances = np.exp(logps - logps.max(axis=1, keepdims=True))
    chances /= chances.sum(axis=1, keepdims=True)
    picked = np.arange(len(rows)), chances.argmax(axis=1)
    singles, oracle = pool_rewards(rewards, records.models)
    best = max(singles.items(), key=lambda kv: kv[1])
    return {
        "items": len(rows),
        "lambda": lam,
        "call_mass": float(np.exp(logps).sum(axis=1).mean()),
        "expected_reward": float((chances * rewards).sum(axis=1).mean()),
        "likeliest_reward": float(rewards[picked].mean()),
        "likeliest_accuracy": float(records.score[rows][picked].mean()),
        "likeliest_cost_per_1k": float(records.cost[rows][picked].mean() * 1000),
        "chances": {
            m: float(chances[:, j].mean()) for j, m in enumerate(records.models)
        },
        "best_single_by_reward": {"model": best[0], "reward": best[1]},
        "oracle_reward": oracle,
    }


def item_rewards(
    records: ReplayPool, rows: NDArray[np.int64], config: RewardConfig
) -> NDArray[np.float64]:
    """The reward each single model's recorded answer earns on each of ``rows``,
    ``(rows, models)``."""
    earned = np.vectorize(lambda s, c: reward(float(s), float(c), config))
    return np.asarray(earned(records.score[rows], records.cost[rows]), np.float64)


def pool_rewards(
    rewards: NDArray[np.float64], models: Sequence[str]
) -> tuple[dict[str, float], float]:
    """From :func:`item_rewards`, the mean reward of each single model, and the
    oracle's (per item the best reward any model earns)."""
    singles = {m: float(rewards[:, j].mean()) for j, m in enumerate(models)}
    return singles, float(rewards.max(axis=1).mean())


class Rivals:
    """The nearest-neighbour router and, given a checkpoint, the RL policy
    network, fitted once on the task's whole train split."""

    def __init__(self, task: RouterTask, policy: Checkpoint | None = None) -> None:
        self.task = task
        records = task.records
        embedder = Embedder(records.store.path / "embeddings")
        train = np.flatnonzero(split_mask(records.item_ids, "train"))
        vectors = embedder.encode_items(records.sources[0], records.items())
        self.routers: dict[str, Policy] = {"knn": NearestNeighbour(vectors)}
        if policy is not None:
            self_model = task.suite.self_model
            self.routers["policy"] = LearnedPolicy(
                policy, task.catalog, embedder, self_model
            )
        for router in self.routers.values():
            router.fit(records, train)

    def on(
        self, rows: NDArray[np.int64], config: RewardConfig
    ) -> dict[str, dict[str, float]]:
        """Accuracy, USD per 1,000 queries and mean reward of each on ``rows`` at
        ``config.lam``."""
        records = self.task.records
        out = {}
        for name, router in self.routers.items():
            done = outcome(records, rows, router.route(records, rows, config.lam))
            rewards = [
                reward(float(s), float(c), config)
                for s, c in zip(done.score, done.cost, strict=True)
            ]
            out[name] = {
                "accuracy": float(done.score.mean()),
                "cost_per_1k": float(done.cost.mean() * 1000),
                "reward": float(np.mean(rewards)),
            }
        return out


def eval_rows(task: RouterTask, items: int) -> NDArray[np.int64]:
    """The fixed sample of ``items`` test items every evaluation plays."""
    return sample_items(task.records, task.test, items, seed=0)


def play_router(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    card: ModelCard,
    task: RouterTask,
    rows: NDArray[np.int64],
    *,
    lam: float,
    max_new_tokens: int = 96,
) -> list[tuple[EpisodeScore, bool]]:
    """The greedy router's episode on each of ``rows``, and whether its first turn
    called a pool model parseably (the items can be split between processes and
    the plays joined for :func:`summarize`)."""
    model.eval()
    backend = PolicyBackend(
        model, tokenizer, card, temperature=0.0, max_new_tokens=max_new_tokens
    )
    models = tuple(task.records.models)
    played: list[tuple[EpisodeScore, bool]] = []

    def first_turn(episode: EpisodeScore) -> None:
        turns = backend.take_turns()
        played.append((episode, bool(turns) and first_call_ok(turns[0].text, models)))

    evaluate_episodes(
        LLMRouter(backend, max_tokens=max_new_tokens),
        task.records,
        rows,
        task.catalog,
        lam=lam,
        on_episode=first_turn,
    )
    return played


def summarize(
    task: RouterTask,
    rows: NDArray[np.int64],
    played: Sequence[tuple[EpisodeScore, bool]],
    *,
    lam: float,
    cost_max: float = RewardConfig().cost_max,
    rivals: Rivals | None = None,
) -> dict[str, Any]:
    """Accuracy, cost and reward of the greedy router from the episodes played
    on ``rows``, and the baselines on the same items (``rivals``: by default the
    nearest-neighbour router alone)."""
    episodes = [episode for episode, _ in played]
    evaluation = EpisodeEvaluation("router", lam, episodes)
    config = RewardConfig(lam=lam, cost_max=cost_max)
    rewards = [reward(e.score, e.cost_usd, config) for e in episodes]
    earned = item_rewards(task.records, rows, config)
    singles, oracle_reward = pool_rewards(earned, task.records.models)
    figures, oracle = pool_figures(task.records, rows)
    best_acc = max(figures.items(), key=lambda kv: (kv[1][0], -kv[1][1]))
    best_reward = max(singles.items(), key=lambda kv: kv[1])
    strategies = Counter(e.strategy for e in episodes)
    answered_by = Counter(m for e in episodes for m in e.answered_by)
    return {
        "items": len(rows),
        "first_turn_parse_rate": float(np.mean([ok for _, ok in played])),
        "lambda": lam,
        "accuracy": evaluation.accuracy,
        "cost_per_1k": evaluation.cost_per_1k,
        "reward": float(np.mean(rewards)),
        "strategies": dict(strategies),
        "answered_by": dict(sorted(answered_by.items())),
        "best_single": {
            "model": best_acc[0],
            "accuracy": best_acc[1][0],
            "cost_per_1k": best_acc[1][1],
            "reward": singles[best_acc[0]],
        },
        "best_single_by_reward": {"model": best_reward[0], "reward": best_reward[1]},
        "oracle": {
            "accuracy": oracle[0],
            "cost_per_1k": oracle[1],
            "reward": oracle_reward,
        },
        **(rivals or Rivals(task)).on(rows, config),
    }
