"""GRPO for the LLM router: multi-turn episodes through the shared orchestrator.

The method, after xRouter (Qiu et al. 2025), which trains its router with DAPO:

- each example (a train item, a lambda drawn from a range and written into the
  router's system prompt, a random subset of the pool) is played G times by the
  current model, sampling at temperature 1.0;
- every episode runs through the shared ``Orchestrator`` against the replay pool
  with the model behind the shared ``LLMRouter`` (``router_policy``), and earns the
  shared cost-aware reward ``score x (K - min(lambda x cost, cost_max))``;
- advantages are the rewards normalised within the example's group; a group whose
  rewards are all equal is dropped (it says nothing about which turn was better),
  and, as in DAPO's dynamic sampling, fresh examples are played in its place
  until the step holds its number of informative groups or a bounded number of
  extra rounds is spent (:func:`fill_groups`);
- the loss is the clipped ratio objective with DAPO's asymmetric clip (0.2 below,
  0.28 above), averaged over every trained token of the minibatch alike (token
  mean), with no KL term and no reference model;
- only the router's own tokens are trained: each router turn is one (prompt,
  completion) pair carrying its episode's advantage, and the tool responses sit
  in the later turns' prompts, never in a completion.

Why not trl's ``GRPOTrainer``: its multi-turn path (``rollout_func`` /
``environment_factory``) is experimental, hands the rollout only the prompts (the
per-example lambda, pool subset and item would have to travel by a side channel),
and keeps all-equal groups in the token mean with advantage 0 instead of dropping
them. The rollout here is the smallest layer that plays episodes through the
orchestrator; trl's ``selective_log_softmax`` computes the token log-probabilities.

How it differs from the paper: no vLLM (a group's first turns are decoded as one
batch, later turns one sequence at a time), dynamic sampling gives up after
``rounds`` extra rounds rather than sampling without end, and there is no
overlong penalty; completions cut at ``max_new_tokens`` are trained as they are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from numpy.typing import NDArray
from trl.trainer.utils import selective_log_softmax

from xrouter.evaluate.episodes import run_episode, score_episode
from xrouter.orchestrator.loop import EpisodeFailedError, Limits, Orchestrator
from xrouter.orchestrator.parsing import parse_tool_calls
from xrouter.orchestrator.reward import RewardConfig, reward
from xrouter.orchestrator.tools import ToolNames
from xrouter.policies.llm_router import LLMRouter
from xrouter.train.router_data import RouterExample, RouterTask
from xrouter.train.router_policy import (
    PolicyBackend,
    PromptCache,
    RouterTurnSample,
    common_prefix,
    prefill,
)

__all__ = [
    "Episode",
    "UpdateStats",
    "clipped_token_loss",
    "collect_groups",
    "episode_metrics",
    "fill_groups",
    "first_call_ok",
    "group_advantages",
    "group_backward",
    "grpo_update",
    "informative",
    "play_episode",
    "sum_gradients",
    "turn_logps",
]


@dataclass
class Episode:
    """One played episode: its outcome, reward and the router's turns."""

    reward: float
    score: float
    cost_usd: float
    strategy: str
    calls: int
    first_call_ok: bool
    turns: list[RouterTurnSample] = field(default_factory=list)


def first_call_ok(text: str, models: Sequence[str]) -> bool:
    """Whether a router turn's text holds a parseable call naming a pool model."""
    names = ToolNames(models)
    return any(names.model_of(c.name) for c in parse_tool_calls(text).calls)


def play_episode(
    task: RouterTask,
    example: RouterExample,
    backend: PolicyBackend,
    *,
    cost_max: float = RewardConfig().cost_max,
    limits: Limits | None = None,
) -> Episode:
    """Play ``example`` once with the model behind ``backend`` and reward it."""
    orchestrator = Orchestrator(task.pool(example.models), limits)
    backend.take_turns()
    config = RewardConfig(lam=example.lam, cost_max=cost_max)
    try:
        result = run_episode(
            orchestrator.run(
                LLMRouter(backend, max_tokens=backend.max_new_tokens),
                task.messages(example.row),
                lam=example.lam,
                item_id=task.item_id(example.row),
            )
        )
    except EpisodeFailedError as failed:
        turns = backend.take_turns()
        ok = bool(turns) and first_call_ok(turns[0].text, example.models)
        return Episode(0.0, 0.0, failed.cost_usd, "failed", 0, ok, turns)
    item = task.records.items([example.row])[0]
    score = score_episode(result, item, task.records, example.row) or 0.0
    turns = backend.take_turns()
    return Episode(
        reward=reward(score, result.cost_usd, config),
        score=score,
        cost_usd=result.cost_usd,
        strategy=result.strategy,
        calls=sum(not c.by_router for c in result.trace.calls),
        first_call_ok=bool(turns) and first_call_ok(turns[0].text, example.models),
        turns=turns,
    )


def collect_groups(
    task: RouterTask,
    examples: Sequence[RouterExample],
    backend: PolicyBackend,
    group_size: int,
    *,
    cost_max: float = RewardConfig().cost_max,
    limits: Limits | None = None,
) -> list[list[Episode]]:
    """G episodes of each example, with the model in eval mode (no dropout); the
    first turns of a group are sampled together."""
    backend.model.eval()
    groups = []
    for example in examples:
        with backend.sharing_first_turns(group_size):
            groups.append(
                [
                    play_episode(
                        task, example, backend, cost_max=cost_max, limits=limits
                    )
                    for _ in range(group_size)
                ]
            )
    return groups


def informative(rewards: NDArray[np.float64], eps: float = 1e-6) -> NDArray[np.bool_]:
    """Which groups (rows of ``rewards``, groups x G) have rewards that are not
    all equal, the only ones an update learns from."""
    spread: NDArray[np.bool_] = (rewards.max(axis=1) - rewards.min(axis=1)) > eps
    return spread


def fill_groups(
    play: Callable[[int, int], list[list[Episode]]], wanted: int, rounds: int
) -> tuple[list[list[Episode]], int]:
    """DAPO's dynamic sampling: ``play(round, n)`` plays ``n`` fresh examples' groups;
    while fewer than ``wanted`` of the groups played are informative, play as many
    more as are missing, for at most ``rounds`` extra rounds.

    Returns every group played (an update drops the flat ones) and the number of
    extra rounds it took.
    """
    groups = play(0, wanted)
    extra = 0
    while extra < rounds:
        rewards = [[e.reward for e in g] for g in groups]
        missing = wanted - int(informative(np.array(rewards)).sum())
        if missing <= 0:
            break
        extra += 1
        groups += play(extra, missing)
    return groups, extra


def group_advantages(
    rewards: NDArray[np.float64], eps: float = 1e-6
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Advantages ``(r - mean) / std`` within each group (row) of ``rewards``
    (shape: groups x G), and which groups are kept (rewards not all equal)."""
    mean = rewards.mean(axis=1, keepdims=True)
    std = rewards.std(axis=1, keepdims=True)
    keep = informative(rewards, eps)
    advantages = np.where(keep[:, None], (rewards - mean) / (std + eps), 0.0)
    return advantages, keep


def clipped_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss ``-min(r A, clip(r, 1 - low, 1 + high) A)`` with the ratio
    ``r = exp(logp - old_logp)`` (all tensors of one shape), and where it clipped."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    return -torch.minimum(unclipped, clipped), clipped < unclipped


@dataclass
class UpdateStats:
    """What an update did: groups kept and dropped, loss, clipped share, tokens."""

    kept_groups: int
    dropped_groups: int
    loss: float = 0.0
    clip_fraction: float = 0.0
    tokens: int = 0
    updates: int = 0


def turn_logps(model: Any, turn: RouterTurnSample, temperature: float) -> torch.Tensor:
    """Log-probabilities of the turn's completion under the current model."""
    return _completion_logps(model, turn, 0, None, temperature)


def group_backward(
    model: Any,
    accelerator: Accelerator,
    turns: Sequence[RouterTurnSample],
    loss_of: Callable[[RouterTurnSample, torch.Tensor], torch.Tensor],
    temperature: float,
) -> torch.Tensor:
    """Backward passes of ``loss_of(turn, logps)`` for each of a group's turns
    (``logps``: :func:`turn_logps`), the prompt tokens the turns all begin with run
    once; returns the losses' sum.

    A group's turns all open on its example's prompt, which holds the pool's tool
    list and is most of each turn's length. The prefix runs once; each turn's
    pass continues a copy of its keys and values, held as leaves of their own, and
    goes backward at once (one turn's activations alive at a time). The prefix
    then goes backward once, with the gradients every turn sent its keys and
    values."""
    prompts = [turn.prompt_ids for turn in turns]
    # Each turn keeps at least one prompt token of its own to predict from.
    shared = min(common_prefix(prompts), min(map(len, prompts)) - 1)
    known = (
        prefill(model, prompts[0][:shared])[2] if len(turns) > 1 and shared else None
    )
    total = torch.zeros((), device=accelerator.device)
    if known is None:
        for turn in turns:
            loss = loss_of(turn, turn_logps(model, turn, temperature))
            accelerator.backward(loss)
            total += loss.detach()
        return total
    leaves = PromptCache(
        known.ids,
        tuple(
            (keys.detach().requires_grad_(), values.detach().requires_grad_())
            for keys, values in known.layers
        ),
    )
    for turn in turns:
        logps = _completion_logps(model, turn, shared, leaves, temperature)
        loss = loss_of(turn, logps)
        accelerator.backward(loss)
        total += loss.detach()
    sent = [
        (tensor, leaf.grad)
        for pair, leaf_pair in zip(known.layers, leaves.layers, strict=True)
        for tensor, leaf in zip(pair, leaf_pair, strict=True)
        if leaf.grad is not None
    ]
    if sent:
        torch.autograd.backward([t for t, _ in sent], [g for _, g in sent])
    return total


def _completion_logps(
    model: Any,
    turn: RouterTurnSample,
    start: int,
    known: PromptCache | None,
    temperature: float,
) -> torch.Tensor:
    """The completion's log-probabilities from a pass over the turn's tokens from
    ``start`` on, continuing ``known`` (which holds the ones before)."""
    device = next(model.parameters()).device
    ids = torch.tensor([turn.prompt_ids[start:] + turn.completion_ids], device=device)
    n = len(turn.completion_ids)
    cache = known.fork(model, start) if known is not None else None
    # Only the logits that predict the completion: positions -n-1 .. -2.
    logits = model(input_ids=ids, cache=cache, logits_to_keep=n + 1).logits[:, :-1]
    logits = logits.float() / (temperature if temperature > 0 else 1.0)
    completion = torch.tensor([turn.completion_ids], device=device)
    logps: torch.Tensor = selective_log_softmax(logits, completion)[0]  # (n,)
    return logps


def grpo_update(
    model: Any,
    optimizer: torch.optim.Optimizer,
    accelerator: Accelerator,
    groups: Sequence[Sequence[Episode]],
    *,
    clip_low: float,
    clip_high: float,
    temperature: float = 1.0,
    minibatches: int = 1,
    max_grad_norm: float = 1.0,
    rng: np.random.Generator | None = None,
) -> UpdateStats:
    """Advantages per group, then one optimizer step per minibatch of router
    turns; each minibatch's loss is the mean over its completion tokens.

    Under several processes each holds every group (``groups`` is the same list
    everywhere) and runs the passes of every ``processes``-th group of a
    minibatch; the gradients are summed over the processes before the step, so
    every process takes the step one process would over the whole minibatch."""
    rewards = np.array([[e.reward for e in g] for g in groups], dtype=np.float64)
    advantages, keep = group_advantages(rewards)
    stats = UpdateStats(int(keep.sum()), int((~keep).sum()))
    turns, group_of = [], []
    for g, group in enumerate(groups):
        for e, episode in enumerate(group):
            for turn in episode.turns if keep[g] else []:
                if turn.completion_ids:
                    turn.advantage = float(advantages[g, e])
                    turns.append(turn)
                    group_of.append(g)
    if not turns:
        return stats

    # Minibatches of turns; the later ones see a policy that has already moved,
    # which is where the clip bites.
    order = (rng or np.random.default_rng(0)).permutation(len(turns))
    chunks = [c for c in np.array_split(order, min(minibatches, len(turns))) if len(c)]
    model.train()
    clip = _Clip(clip_low, clip_high, torch.zeros((), device=accelerator.device))
    # ``accelerator.backward`` divides each loss by the accumulation steps set
    # for the warm start's micro-batches; a GRPO minibatch accumulates nothing.
    accumulated = accelerator.gradient_accumulation_steps
    accelerator.gradient_accumulation_steps = 1
    try:
        losses = []
        for chunk in chunks:
            by_group: dict[int, list[RouterTurnSample]] = {}
            for k in chunk:
                by_group.setdefault(group_of[int(k)], []).append(turns[int(k)])
            n_tokens = sum(len(turns[int(k)].completion_ids) for k in chunk)
            loss = _minibatch_step(
                model, optimizer, accelerator, by_group, n_tokens, clip, temperature
            )
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss)
            stats.tokens += n_tokens
    finally:
        accelerator.gradient_accumulation_steps = accumulated
    stats.loss = float(np.mean(losses))
    clipped = accelerator.reduce(clip.count, reduction="sum")
    stats.clip_fraction = float(clipped) / max(stats.tokens, 1)
    stats.updates = len(chunks)
    return stats


@dataclass
class _Clip:
    """The ratio's clip range, and how many tokens it has clipped so far."""

    low: float
    high: float
    count: torch.Tensor

    def loss(
        self, turn: RouterTurnSample, logps: torch.Tensor, n_tokens: int
    ) -> torch.Tensor:
        """The turn's share of its minibatch's token-mean loss."""
        old = torch.tensor(turn.logprobs, device=logps.device)
        advantage = torch.full_like(logps, turn.advantage)
        per_token, clipped = clipped_token_loss(
            logps, old, advantage, clip_low=self.low, clip_high=self.high
        )
        self.count = self.count + clipped.sum()
        return per_token.sum() / n_tokens


def _minibatch_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    accelerator: Accelerator,
    by_group: dict[int, list[RouterTurnSample]],
    n_tokens: int,
    clip: _Clip,
    temperature: float,
) -> float:
    """The gradient of a minibatch's loss, summed over the processes, each of
    which runs every ``processes``-th group's turns; returns the loss."""
    rank, processes = accelerator.process_index, accelerator.num_processes
    optimizer.zero_grad()
    total = torch.zeros((), device=accelerator.device)
    with accelerator.no_sync(model):  # summed below, once per minibatch
        for g, group_turns in by_group.items():
            if g % processes == rank:
                total += group_backward(
                    model,
                    accelerator,
                    group_turns,
                    partial(clip.loss, n_tokens=n_tokens),
                    temperature,
                )
    sum_gradients(model, accelerator)
    return float(accelerator.reduce(total, reduction="sum"))


def sum_gradients(model: Any, accelerator: Accelerator) -> None:
    """Sum each trained parameter's gradient over the processes (nothing to do on
    one); a process that ran no pass contributes zeros."""
    if accelerator.num_processes == 1:
        return
    for param in model.parameters():
        if param.requires_grad:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            torch.distributed.all_reduce(param.grad)


def episode_metrics(groups: Sequence[Sequence[Episode]]) -> dict[str, Any]:
    """Mean reward, accuracy, cost, calls and first-turn parse failures of the
    episodes, and their action mix (share of each strategy)."""
    episodes = [e for g in groups for e in g]
    n = max(len(episodes), 1)
    mix = Counter(e.strategy for e in episodes)
    return {
        "reward": float(np.mean([e.reward for e in episodes])),
        "accuracy": float(np.mean([e.score for e in episodes])),
        "cost_usd": float(np.mean([e.cost_usd for e in episodes])),
        "calls_per_episode": float(np.mean([e.calls for e in episodes])),
        "parse_failures": sum(not e.first_call_ok for e in episodes) / n,
        "action_mix": {k: v / n for k, v in sorted(mix.items())},
    }
