"""The cost-aware reward: ``score x (K - min(lambda x cost, cost_max))``.

A wrong answer (score 0) earns nothing however cheap; a right one earns up to K, less
the cost of every call the episode made (the router's own tokens included), and the
cost penalty is capped at ``cost_max`` so one expensive episode cannot swamp a batch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from xrouter.core.errors import ConfigError
from xrouter.core.types import Trace

__all__ = ["RewardConfig", "episode_reward", "read_lambda", "reward"]

# A number as a person writes one: ASCII digits, a sign, a fraction, an exponent.
_PLAIN_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def read_lambda(text: str) -> float:
    """``text`` as a lambda: a plain decimal number (``4``, ``0.5``, ``1e3``,
    ``-1``); NaN when it is anything else, where Python's ``float`` would also
    take underscores, a leading plus, other scripts' digits and ``inf``."""
    return float(text) if _PLAIN_NUMBER.fullmatch(text) else math.nan


@dataclass(frozen=True)
class RewardConfig:
    """Knobs of the reward.

    k: the reward of a free, correct answer.
    lam: USD-to-reward exchange rate (lambda): how much one dollar of cost is worth.
    cost_max: the largest cost penalty an episode can receive.
    """

    k: float = 1.0
    lam: float = 2.0
    cost_max: float = 0.6

    def __post_init__(self) -> None:
        for name in ("k", "lam", "cost_max"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"reward {name} must be a finite number >= 0, got {value!r}"
                )
        if self.cost_max > self.k:
            raise ConfigError(
                f"reward cost_max ({self.cost_max}) exceeds K ({self.k}): a correct "
                "answer could then earn less than a wrong one; lower cost_max"
            )


def reward(score: float, cost_usd: float, config: RewardConfig | None = None) -> float:
    """Reward of one episode: verifier ``score`` in [0, 1], total ``cost_usd``."""
    config = config or RewardConfig()
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"score must lie in [0, 1], got {score!r}")
    if cost_usd < 0 or not math.isfinite(cost_usd):
        raise ValueError(f"cost must be a finite number >= 0 USD, got {cost_usd!r}")
    return score * (config.k - min(config.lam * cost_usd, config.cost_max))


def episode_reward(
    score: float, trace: Trace, config: RewardConfig | None = None
) -> float:
    """Reward of an episode, charging every call in its trace (router's included)."""
    return reward(score, trace.cost_usd, config)
