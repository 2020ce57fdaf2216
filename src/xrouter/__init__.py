"""xrouter: cost-aware routing of LLM requests across a pool of models."""

from xrouter.core.errors import XRouterError
from xrouter.orchestrator.reward import RewardConfig, episode_reward, reward

__all__ = ["RewardConfig", "XRouterError", "episode_reward", "reward"]
__version__ = "0.1.0"
