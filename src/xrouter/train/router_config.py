"""Settings of a router training run (``xrouter train router``), checked when
they are made: from the command line, from a ``--config`` YAML file, or from a
checkpoint being resumed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter, ValidationError

from xrouter.core.errors import ConfigError
from xrouter.orchestrator.reward import RewardConfig
from xrouter.train.router_data import RouterTask

__all__ = ["DTYPES", "RouterTrainConfig", "check_resumable"]

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


# The least value of each count among the settings.
_LEAST = {
    **dict.fromkeys(("sft_steps", "rl_steps", "eval_items", "parse_items"), 0),
    "choice_items": 0,
    "refill_rounds": 0,
    **dict.fromkeys(("prompts_per_step", "minibatches", "sft_batch"), 1),
    **dict.fromkeys(("micro_batch", "checkpoint_every", "max_new_tokens"), 1),
}

# The settings that `xrouter train router` also takes as options of its own name.
_FLAGGED = frozenset(
    {"sft_steps", "rl_steps", "eval_items", "refill_rounds", "prompts_per_step"}
    | {"checkpoint_every", "choice_items"}
)


@dataclass(frozen=True)
class RouterTrainConfig:
    """Settings of a router training run (saved in every checkpoint's manifest)."""

    base: str = "smollm2-135m"  # model card id or transformers model directory
    router_card: str = "smollm2-135m"  # card whose prices bill the router's tokens
    items: int | None = None  # cap on train items (seeded subset); None: all
    sft_steps: int = 40  # warm-start optimizer steps
    sft_batch: int = 4  # traces per warm-start step
    micro_batch: int = 1  # traces per forward pass (accumulated to sft_batch)
    sft_lr: float = 5e-5  # warm-start learning rate (AdamW)
    teacher: str = "oracle"  # warm-start choices: oracle, or a policy checkpoint
    sft_contrast: bool = True  # pair traces with a policy teacher's other lambda
    # Warm-start weight of the tokens naming the chosen model (1: as any token).
    # On SmolLM2-135M, 40 steps of a policy teacher's contrasting traces, 20
    # held-out zeroeval items: at 1, with lambda stated at the top of the prompt,
    # the router called gpt-4o-mini on every item at lambda 1 and 100 (reward
    # 0.800, 0.788); at 10, with lambda stated last, it called o1-mini on 3 items
    # at lambda 1 and on 1 at lambda 100 (0.899, 0.824).
    choice_weight: float = 10.0
    rl_steps: int = 10  # GRPO steps
    prompts_per_step: int = 2  # examples (groups) per GRPO step
    group_size: int = 4  # G: episodes per example
    minibatches: int = 2  # optimizer steps per GRPO batch
    refill_rounds: int = 2  # extra rounds that replace groups of equal rewards
    lr: float = 1e-6  # GRPO learning rate (AdamW)
    clip_low: float = 0.2  # ratio clip below 1 (DAPO)
    clip_high: float = 0.28  # ratio clip above 1 (DAPO's clip-higher)
    temperature: float = 1.0  # sampling temperature of GRPO episodes
    lambda_min: float = 0.1  # lambda range drawn per example (log-uniform)
    lambda_max: float = 1000.0
    full_pool: float = 0.5  # share of examples offered the whole pool
    cost_max: float = 0.6  # the reward's cap on the cost penalty
    max_new_tokens: int = 96  # longest router turn
    max_grad_norm: float = 1.0
    checkpoint_every: int = 20  # steps between periodic checkpoints
    eval_items: int = 0  # test items evaluated before and after each phase
    eval_lambdas: tuple[float, ...] = (1.0, 100.0)  # each evaluated at these
    parse_items: int = 0  # dev items of a separate first-turn parse check
    # Test items whose first call's chances are read at each evaluation (no
    # episodes played: a quarter of an episode's time an item, and no noise).
    choice_items: int = 0
    threads: int | None = 1  # torch CPU threads (None: torch's default)
    dtype: str = "float32"  # weights' dtype: float32, bfloat16 (GPUs) or float16
    vllm: bool = False  # generate with vLLM (not implemented)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ConfigError(
                f"--group-size must be at least 2 (GRPO compares the episodes of a "
                f"group), got {self.group_size}"
            )
        if not 0 <= self.lambda_min <= self.lambda_max < math.inf:
            raise ConfigError(
                f"the lambda range is inverted, negative or unbounded: --lambda-min "
                f"{self.lambda_min:g}, --lambda-max {self.lambda_max:g}; give "
                "0 <= lambda-min <= lambda-max, both finite"
            )
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must be from 0 to 2**63 - 1, got {self.seed}")
        if self.items is not None and self.items < 1:
            raise ConfigError(
                f"--items {self.items} leaves an empty training set; give at least 1"
            )
        if not 0 < self.choice_weight < math.inf:
            raise ConfigError(
                f"--choice-weight must be a finite number > 0, got {self.choice_weight}"
            )
        for name in ("lr", "sft_lr"):
            if not 0 < getattr(self, name) < math.inf:
                flag = name.replace("_", "-")
                raise ConfigError(
                    f"--{flag} must be a finite learning rate > 0, got "
                    f"{getattr(self, name)}"
                )
        for name, least in _LEAST.items():
            if getattr(self, name) < least:
                flag = f" (--{name.replace('_', '-')})" if name in _FLAGGED else ""
                raise ConfigError(
                    f"{name}{flag} must be >= {least}, got {getattr(self, name)}"
                )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(
                f"threads must be >= 1 (or null: torch's default), got {self.threads}"
            )
        if not 0 <= self.full_pool <= 1:
            raise ConfigError(
                f"full_pool must be a share from 0 to 1, got {self.full_pool}"
            )
        if not (0 < self.clip_low < 1 and 0 < self.clip_high < math.inf):
            raise ConfigError(
                "clip bounds need 0 < --clip-low < 1 and a finite --clip-high > 0, "
                f"got {self.clip_low:g} and {self.clip_high:g}"
            )
        if not 0 < self.temperature < math.inf:
            raise ConfigError(
                f"--temperature must be a finite number > 0, got {self.temperature:g}"
            )
        if self.sft_batch % self.micro_batch:
            raise ConfigError(
                f"sft_batch ({self.sft_batch}) must be a multiple of micro_batch "
                f"({self.micro_batch})"
            )
        lams = tuple(self.eval_lambdas)
        if not lams or not all(math.isfinite(lam) and lam >= 0 for lam in lams):
            raise ConfigError(
                "eval_lambdas must list one or more lambdas >= 0, got "
                f"{list(self.eval_lambdas)}"
            )
        checks = self.eval_items or self.parse_items or self.choice_items
        if not (self.sft_steps or self.rl_steps or checks):
            raise ConfigError(
                "nothing to do: --sft-steps, --rl-steps, --eval-items and "
                "--choice-items are all 0; give one of them above 0"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        RewardConfig(cost_max=self.cost_max)  # refuses a cost_max it cannot use
        if self.vllm:
            raise ConfigError(
                "the setting vllm: true is not supported yet: episodes are sampled "
                "with the trained model itself; drop it"
            )

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> RouterTrainConfig:
        """A config from a mapping (a YAML file), refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            nested = [name for name in unknown if isinstance(values[name], dict)]
            where = (
                f" ({nested[0]} holds a mapping: settings go under settings: or at "
                "the top level of the file)"
                if nested
                else ""
            )
            raise ConfigError(
                f"unknown router training setting(s) {', '.join(unknown)}{where}; "
                f"the settings are {', '.join(sorted(known))}"
            )
        try:
            typed = TypeAdapter(cls).validate_python(values)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise ConfigError(
                f"router training setting {where}: {error['msg']} (got "
                f"{error['input']!r})"
            ) from None
        return typed


# Settings that may change when a run is resumed: how long it runs, how it is
# evaluated and saved, and how it uses the machine.
_RESUMABLE_CHANGES = frozenset(
    {"sft_steps", "rl_steps", "eval_items", "eval_lambdas", "parse_items"}
    | {"choice_items", "checkpoint_every", "threads"}
)


def _setting(name: str, value: Any) -> Any:
    """A setting as compared on resuming: JSON's view of it, and a teacher
    checkpoint by the folder it names however the path was written."""
    if name == "teacher" and isinstance(value, str) and value != "oracle":
        return str(Path(value).expanduser().resolve())
    return json.loads(json.dumps(value))


def check_resumable(
    manifest: dict[str, Any],
    config: RouterTrainConfig,
    task: RouterTask,
    out: Path,
    teacher_digest: str | None = None,
) -> None:
    """Refuse to resume a run with another suite, pool, teacher, data or
    training settings (``teacher_digest``: the policy teacher's, if any)."""
    then = manifest.get("settings", {})
    now = asdict(config)
    changed = [
        f"{name} {then.get(name)!r} -> {value!r}"
        for name, value in now.items()
        if name not in _RESUMABLE_CHANGES
        and _setting(name, then.get(name)) != _setting(name, value)
    ]
    pool = list(task.records.models)
    if manifest.get("suite") == task.suite.name and manifest.get("pool") != pool:
        changed.append(f"pool {manifest.get('pool')!r} -> {pool!r}")
    if manifest.get("teacher_digest", teacher_digest) != teacher_digest:
        changed.append("the teacher checkpoint (trained again since)")
    records, _, items = str(manifest.get("data_fingerprint")).rpartition(":")
    if manifest.get("suite") != task.suite.name:
        changed.insert(0, f"suite {manifest.get('suite')!r} -> {task.suite.name!r}")
    elif records != task.fingerprint.rpartition(":")[0]:
        changed.insert(0, "the suite's records (their fingerprint)")
    elif items != task.fingerprint.rpartition(":")[2] and not any(
        c.startswith(("items ", "seed ")) for c in changed
    ):
        changed.insert(0, "the train items drawn")
    if changed:
        raise ConfigError(
            f"the run in {out} was trained otherwise: {'; '.join(changed)}. Resume "
            "it with its own settings (only the step counts, evaluation, "
            "checkpointing and threads may change), or choose another --out"
        )
