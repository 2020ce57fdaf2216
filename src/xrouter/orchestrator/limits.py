"""What an episode may try, and the tokens a call's worst case allows for."""

from __future__ import annotations

from dataclasses import dataclass

from xrouter.core.errors import ConfigError

__all__ = ["Limits", "reply_cap", "with_margin"]

# Tokens are counted with one tokenizer for every model; vendors' counts differ
# by a few percent, so the worst case adds this share and a constant (larger
# for a prompt, whose chat template adds tokens of its own).
_TOKEN_MARGIN = 1.15
_PROMPT_SLACK = 32
_REPLY_SLACK = 8


def with_margin(prompt_tokens: int) -> int:
    """The prompt tokens a worst case allows for ``prompt_tokens`` counted."""
    return int(prompt_tokens * _TOKEN_MARGIN) + _PROMPT_SLACK


def reply_cap(max_tokens: int) -> int:
    """The reply tokens, counted, that a worst case allows for ``max_tokens``
    asked for; a stream is read no further."""
    return int(max_tokens * _TOKEN_MARGIN) + _REPLY_SLACK


@dataclass(frozen=True)
class Limits:
    """How long, how often and how much an episode may try."""

    max_turns: int = 3
    call_timeout_s: float = 60.0
    episode_timeout_s: float = 300.0
    retries: int = 2
    backoff_s: float = 0.25
    max_backoff_s: float = 8.0
    default_max_tokens: int = 1024
    # A timed-out generation may still be billed by its provider: False asks once.
    # A call with a fallback left goes to it after a timeout, whatever this says.
    retry_timeouts: bool = True

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ConfigError(f"max_turns must be at least 1, got {self.max_turns}")
        if self.retries < 0:
            raise ConfigError(f"retries must be 0 or more, got {self.retries}")
        for name in ("call_timeout_s", "episode_timeout_s", "default_max_tokens"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
