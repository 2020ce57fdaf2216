"""Group-relative policy optimisation (GRPO) of the router network.

The method, after xRouter (Qiu et al. 2025), which trains its router with DAPO
(Yu et al. 2025):

- for each prompt of a batch, G episodes are played by the current policy,
  sampling each action at temperature 1.0;
- an episode's reward is the foundation's cost-aware reward,
  ``score x (K - min(lambda x cost, cost_max))``, with the cost of every call;
- advantages are the rewards normalised within the prompt's group; a group whose
  rewards are all equal says nothing about which actions were better and is
  dropped;
- the loss is the clipped ratio objective with DAPO's asymmetric clip (0.2 below,
  0.28 above), averaged over every action of the batch alike (DAPO's token-level
  mean, an action playing the part of a token), with no KL term and no reference
  model.

How this differs from the paper:

- The router is a small network scoring a fixed set of actions (answer, call a
  model, select a response), not a language model writing tool calls. Its logit
  is shaped like the reward (a learned chance of being right times K less the
  cost penalty the action leads to, plus a learned residual), and it reads a
  memory of the train prompts (see ``xrouter.policies.router_net``).
- Episodes replay recorded responses; the router answering itself replays the
  suite's ``self_model``.
- Lambda is an input, drawn log-uniformly per example, so one network serves a
  range of lambdas (the paper trains one router per setting of its reward); each
  example is offered a random subset of its pool.
- The group's standard deviation is floored (``std_floor``, 0.25 of a reward of
  at most 1). In a group whose episodes are all right the rewards differ by cost
  alone, and dividing by that small spread weighs a cent saved as much as a right
  answer against a wrong one: the policy drifts to cheap models.
- A second loss fits the network's chance that a candidate's model is right
  (the part of its logit that the reward's score multiplies) to the recorded
  score of that model's answer (``right_coef``), beside the policy's loss; the
  replay knows each response's score, as the nearest-neighbour baselines do. It
  is fitted on every decision played, the dropped groups' included: a group is
  dropped when all its episodes failed, and a chance that never sees the items
  on which every model fails is too high on hard items, where routing decides
  most.
- The head reads the memory's estimates, the cards and the episode, not the
  prompt embedding itself (``reads_prompt``): one that reads it too can learn
  the train prompts' verdicts by heart, and did no better over three seeds. The
  residual, which stands for what an action leads to later, reads the episode
  and the candidate alone.
- A small entropy bonus (``entropy_coef``) keeps the policy exploring long enough
  to find multi-call strategies (two cheap answers that agree, else escalate);
  DAPO relies on the higher clip alone.
- DAPO's dynamic sampling refills a batch after dropping uniform groups; here they
  are only dropped (refilling did no better). There is no overlong penalty, as
  there is no text.
- Each batch is used for a few passes of minibatch updates (as in PPO), so the
  ratio moves away from 1 and the clip matters.
- The weights kept are a moving average of the trained ones (``ema_decay``;
  single updates move the curve as much as the margins it is selected on): those
  whose dev AIQ beats the best baseline's by the largest margin on the suite
  where the margin is smallest (``select.py``).

What these choices measured, on the test splits, is in ``docs/architecture.md``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from xrouter.core.errors import ConfigError
from xrouter.core.progress import Reporter, Silent
from xrouter.orchestrator import episode as ep
from xrouter.orchestrator.reward import RewardConfig
from xrouter.policies.learned import lambda_knobs
from xrouter.policies.router_net import (
    EpisodeInputs,
    NetConfig,
    RouterNet,
    Trajectory,
    per_candidate,
    play,
)
from xrouter.train.env import TrainingData
from xrouter.train.select import baseline_dev_aiq, dev_aiq, selection_score

__all__ = ["GRPOConfig", "TrainResult", "group_advantages", "train_policy"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GRPOConfig:
    """Hyper-parameters of a training run (saved in the checkpoint manifest).

    The lambda range: costs per query run from about 1e-5 to 1e-2 USD, so below
    lambda 1 cost hardly counts (the most accurate routing) and from a few
    thousand up a call's penalty nears ``cost_max`` (the cheapest routing).
    0.1 to 3e4 spans both ends on every default suite. ``cost_max`` is raised to
    K for training: with the default 0.6 every model's penalty saturates before
    the cheapest model's does, the dearer ones then cost no more than it, and the
    curve never reaches the cheap end.
    """

    steps: int = 1000  # update steps (about 4 minutes on two cores)
    prompts_per_step: int = 64  # prompts (groups) per step
    group_size: int = 8  # G: episodes per prompt
    learning_rate: float = 3e-4  # Adam
    clip_low: float = 0.2  # the ratio's clip below 1 (DAPO)
    clip_high: float = 0.28  # the ratio's clip above 1 (DAPO's clip-higher)
    passes: int = 2  # passes over each batch
    minibatches: int = 2  # minibatches per pass
    max_grad_norm: float = 1.0  # gradient clipping
    std_floor: float = 0.25  # smallest group std the advantages divide by
    entropy_coef: float = 0.05  # entropy bonus (0: none, as in DAPO)
    right_coef: float = 1.0  # weight of the chance-of-right loss (0: none)
    ema_decay: float = 0.99  # weights evaluated and kept: their moving average
    lam_min: float = 0.1  # smallest lambda trained and served
    lam_max: float = 3e4  # largest lambda trained and served
    default_lambda: float = RewardConfig().lam  # the lambda reported by default
    cost_max: float = 1.0  # the reward's cap on the cost penalty (K is 1)
    full_pool: float = 0.5  # share of examples offered the whole pool
    max_turns: int = 3  # turn limit of an episode
    hidden: int = 128  # width of the network's state and candidate layers
    head_hidden: int = 64  # width of its head
    shaped: bool = True  # reward-shaped logits over the neighbour prior
    sharpness: float = 12.0  # their starting scale: logits per unit of reward
    reads_prompt: bool = False  # the head reads the prompt, not only the memory
    eval_every: int = 100  # steps between dev evaluations
    seed: int = 0  # seeds torch and numpy
    threads: int = 2  # torch threads; results repeat for a given count

    def __post_init__(self) -> None:
        if self.steps < 1 or self.prompts_per_step < 1:
            raise ConfigError(
                f"training needs steps >= 1 and prompts_per_step >= 1, got "
                f"{self.steps} and {self.prompts_per_step}"
            )
        if self.group_size < 2:
            raise ConfigError(
                f"group_size must be >= 2 to compare episodes, got {self.group_size}"
            )
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(
                f"ema_decay must be in [0, 1) (0: keep the raw weights), got "
                f"{self.ema_decay:g}"
            )
        if not 0 < self.lam_min < self.lam_max < math.inf:
            raise ConfigError(
                f"the lambda range must satisfy 0 < min < max, both finite, got "
                f"{self.lam_min:g} to {self.lam_max:g}"
            )
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"the seed must be from 0 to 2**63 - 1, got {self.seed}")
        if not 0 < self.sharpness < 1e3 or not 0 <= self.right_coef < math.inf:
            raise ConfigError(
                "sharpness must be in (0, 1000) and right_coef finite and >= 0, got "
                f"{self.sharpness:g} and {self.right_coef:g}"
            )
        if not self.lam_min <= self.default_lambda <= self.lam_max:
            raise ConfigError(
                f"the default lambda {self.default_lambda:g} is outside the trained "
                f"range {self.lam_min:g} to {self.lam_max:g}; widen the range or "
                "choose a --default-lambda inside it"
            )

    def reward(self) -> RewardConfig:
        """The reward trained on: K 1, lambda per example, this cost_max."""
        return RewardConfig(k=1.0, lam=self.default_lambda, cost_max=self.cost_max)

    def dev_lambdas(self) -> list[float]:
        """Every other lambda of the evaluation sweep: the dev curve's points."""
        knobs = lambda_knobs((self.lam_min, self.lam_max), self.default_lambda)
        return knobs[::2]

    def net_config(self, reward: RewardConfig) -> NetConfig:
        return NetConfig(
            hidden=self.hidden,
            head_hidden=self.head_hidden,
            lam_min=self.lam_min,
            lam_max=self.lam_max,
            max_turns=self.max_turns,
            k=reward.k,
            cost_max=reward.cost_max,
            shaped=self.shaped,
            sharpness=self.sharpness,
            reads_prompt=self.reads_prompt,
        )


@dataclass
class TrainResult:
    """The trained network (the dev-selected weights) and what the run measured."""

    net: RouterNet
    steps: int
    best_step: int
    seconds: float
    final: dict[str, float] = field(default_factory=dict)
    dev: dict[str, float] = field(default_factory=dict)


def group_advantages(
    rewards: NDArray[np.float64], group_size: int, std_floor: float = 0.0
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Rewards normalised within consecutive groups, and which groups to keep.

    ``(reward - group mean) / max(group std, std_floor)``. A group whose rewards
    are all equal gets advantage 0 and ``keep`` false.
    """
    grouped = rewards.reshape(-1, group_size)
    mean = grouped.mean(axis=1, keepdims=True)
    std = grouped.std(axis=1, keepdims=True)
    keep = np.broadcast_to(std > 1e-9, grouped.shape)
    scale = np.maximum(std, max(std_floor, 1e-9))
    advantage = np.where(keep, (grouped - mean) / scale, 0.0)
    return advantage.ravel(), keep.ravel().copy()


@dataclass(frozen=True)
class _Batch:
    """Every decision of a batch's episodes, flattened: ``[D, ...]`` tensors."""

    embedding: torch.Tensor
    state_x: torch.Tensor
    cand_x: torch.Tensor
    cand_model: torch.Tensor
    legal: torch.Tensor
    action: torch.Tensor
    logp_old: torch.Tensor
    advantage: torch.Tensor
    kept: torch.Tensor  # [D]: whether the decision's group is kept for the policy
    right: torch.Tensor  # [D, A]: the score of each candidate's model's answer


def _flatten(
    played: Trajectory,
    inputs: EpisodeInputs,
    score: NDArray[np.float64],
    advantage: NDArray[np.float64],
    keep: NDArray[np.bool_],
) -> _Batch:
    """Every decision played: the policy learns from those of the kept groups
    (``keep``), the chance of being right from all of them (a chance fitted on
    the kept groups alone never sees the items on which every model fails).
    ``score[n, M]`` holds each episode's item's scores, whence each candidate's
    target for the chance-of-right loss."""
    turns = played.turns
    rows = np.concatenate([t.rows for t in turns])
    right = per_candidate(score[rows], inputs.self_model[rows])

    def cat(name: str) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([getattr(t, name) for t in turns]))

    return _Batch(
        embedding=torch.from_numpy(inputs.embedding[rows]),
        state_x=cat("state_x"),
        cand_x=cat("cand_x"),
        cand_model=cat("cand_model"),
        legal=cat("legal"),
        action=cat("action"),
        logp_old=cat("logp"),
        advantage=torch.from_numpy(advantage[rows].astype(np.float32)),
        kept=torch.from_numpy(keep[rows]),
        right=torch.from_numpy(right.astype(np.float32)),
    )


def _update(
    net: RouterNet,
    optimiser: torch.optim.Optimizer,
    batch: _Batch,
    config: GRPOConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """A few passes of clipped-ratio updates over the batch's decisions."""
    sums = {
        "loss/policy": 0.0,
        "loss/clip_frac": 0.0,
        "loss/entropy": 0.0,
        "loss/right": 0.0,
    }
    n_updates = 0
    for _ in range(config.passes):
        order = torch.randperm(len(batch.action), generator=generator)
        for chunk in order.chunk(config.minibatches):
            # Log-probability of each taken action under the current weights.
            legal = batch.legal[chunk]
            logits, right = net.heads(
                batch.embedding[chunk],
                batch.state_x[chunk],
                batch.cand_x[chunk],
                batch.cand_model[chunk],
                legal,
            )
            logp_all = torch.log_softmax(logits, dim=1)
            logp = logp_all.gather(1, batch.action[chunk, None])[:, 0]

            # Ratio to the policy that played the episodes, clipped asymmetrically
            # (clip-higher): the objective stops rewarding a move past 1 - 0.2 or
            # 1 + 0.28 in the direction the advantage favours.
            ratio = torch.exp(logp - batch.logp_old[chunk])
            advantage = batch.advantage[chunk]
            clipped = ratio.clamp(1 - config.clip_low, 1 + config.clip_high)
            surrogate = torch.minimum(ratio * advantage, clipped * advantage)

            # Action-mean loss over the kept groups' actions: each weighs the
            # same; no KL term. An entropy bonus is off unless entropy_coef is
            # set. (Illegal actions have probability 0; their -inf log is zeroed
            # first so that no NaN reaches the gradient.)
            kept = batch.kept[chunk]
            share = kept.float() / max(int(kept.sum()), 1)
            finite = logp_all.masked_fill(~legal, 0.0)
            entropy = -((logp_all.exp() * finite).sum(dim=1) * share).sum()

            surrogate = torch.where(kept, surrogate, 0.0)
            policy_loss = -(surrogate * share).sum() - config.entropy_coef * entropy

            # The chance-of-right loss: each legal candidate's estimate that its
            # model's answer is right, against the recorded score, on every
            # decision played.
            right_loss = torch.zeros(())
            if config.shaped and config.right_coef > 0:
                right_loss = nn.functional.binary_cross_entropy_with_logits(
                    right[legal], batch.right[chunk][legal]
                )
            loss = policy_loss + config.right_coef * right_loss
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.max_grad_norm)
            optimiser.step()

            # Diagnostics only.
            with torch.no_grad():
                sums["loss/entropy"] += float(entropy)
                sums["loss/clip_frac"] += float((ratio != clipped).float().mean())
                sums["loss/policy"] += float(policy_loss)
                sums["loss/right"] += float(right_loss)
            n_updates += 1
    return {k: v / max(n_updates, 1) for k, v in sums.items()}


def _episode_metrics(
    played: Trajectory,
    score: NDArray[np.float64],
    reward: NDArray[np.float64],
    cost: NDArray[np.float64],
) -> dict[str, float]:
    actions = np.concatenate([t.action for t in played.turns])
    m = played.state.n_models
    kind = ep.action_kinds(m)[actions]
    state = played.state
    return {
        "train/reward": float(reward.mean()),
        "train/accuracy": float(score.mean()),
        "train/cost_per_1k": float(cost.mean() * 1000),
        "train/calls": float(ep.charged(state).sum(axis=1).mean()),
        "train/turns": float(state.turn.mean()),
        "train/by_limit": float(state.by_limit.mean()),
        "actions/answer": float((kind == ep.KIND_ANSWER).mean()),
        "actions/call": float((kind == ep.KIND_CALL).mean()),
        "actions/select": float((kind == ep.KIND_SELECT).mean()),
    }


def _train_step(
    net: RouterNet,
    optimiser: torch.optim.Optimizer,
    data: TrainingData,
    config: GRPOConfig,
    reward: RewardConfig,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> dict[str, float]:
    """Play one batch of groups and update the network on it."""
    # Prompts, each with its lambda and offered models, G episodes apiece.
    lam_range = (config.lam_min, config.lam_max)
    examples = data.sample(rng, config.prompts_per_step, lam_range, config.full_pool)
    examples = examples.repeated(config.group_size)
    inputs = data.table.inputs(examples.rows, examples.lam, examples.offered)

    # Play them with the current policy, sampling at temperature 1.0.
    rules = ep.EpisodeRules(config.max_turns)
    played = play(net, inputs, data.models, rules, sample=True, generator=generator)

    # Reward: the returned response's score, less the cost of every call.
    score = data.table.score[examples.rows, played.state.chosen]
    cost = ep.spent(played.state, inputs.responses)
    rewards = ep.batch_reward(score, cost, examples.lam, reward)

    # Advantages normalised within each group; groups of equal rewards dropped.
    advantage, keep = group_advantages(rewards, config.group_size, config.std_floor)
    metrics = _episode_metrics(played, score, rewards, cost)
    metrics["groups/kept"] = float(keep.mean())
    if keep.any():
        scores = data.table.score[examples.rows]
        batch = _flatten(played, inputs, scores, advantage, keep)
        metrics.update(_update(net, optimiser, batch, config, generator))
    return metrics


class _MetricsLog:
    """Appends one JSON line of metrics per step (nothing when no file is given)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("", encoding="utf-8")

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if self.path is None:
            return
        line = {"step": step, **{k: round(v, 6) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


def train_policy(
    data: TrainingData,
    config: GRPOConfig | None = None,
    *,
    reporter: Reporter | None = None,
    metrics_path: Path | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a router network on ``data``'s train items; select it on dev items."""
    config = config or GRPOConfig()
    reward = config.reward()
    reporter = reporter or Silent()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    net = RouterNet(len(data.models.ids), config.net_config(reward))
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    average = copy.deepcopy(net)
    log = _MetricsLog(metrics_path)

    baselines = baseline_dev_aiq(data)
    best: tuple[float, int, dict[str, Any]] = (-np.inf, 0, {})
    last: dict[str, float] = {}
    dev: dict[str, float] = {}
    started = time.perf_counter()
    reporter.start("training the router (GRPO)", config.steps)
    for step in range(1, config.steps + 1):
        metrics = _train_step(net, optimiser, data, config, reward, rng, generator)
        _follow(average, net, min(config.ema_decay, (1 + step) / (10 + step)))
        if step % config.eval_every == 0 or step == config.steps:
            scores = dev_aiq(average, data, config.dev_lambdas())
            metrics.update(scores | baselines)
            margin = selection_score(scores, baselines)
            metrics["dev/margin_min"] = margin
            if margin > best[0]:
                best = (margin, step, copy.deepcopy(average.state_dict()))
                dev = {**scores, **baselines, "dev/margin_min": margin}
        metrics["time/elapsed_s"] = time.perf_counter() - started
        log.write(step, metrics)
        if on_step is not None:
            on_step(step, metrics)
        last = metrics
        reporter.advance()
    net.load_state_dict(best[2])
    net.eval()
    seconds = time.perf_counter() - started
    logger.info("trained for %d steps in %.1f s; kept step %d", step, seconds, best[1])
    return TrainResult(net, step, best[1], seconds, final=last, dev=dev)


@torch.no_grad()
def _follow(average: RouterNet, net: RouterNet, decay: float) -> None:
    """Move ``average``'s weights towards ``net``'s: an exponential moving average
    (Polyak averaging), which smooths the step-to-step noise of the updates. The
    caller ramps ``decay`` up over the first steps, so that the average soon
    forgets the random initial weights."""
    for mean, current in zip(average.parameters(), net.parameters(), strict=True):
        mean.mul_(decay).add_(current, alpha=1.0 - decay)


def config_dict(config: GRPOConfig) -> dict[str, Any]:
    return asdict(config)
