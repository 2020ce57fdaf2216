"""Message, usage, call and trace types shared by every layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CallRecord", "Message", "Role", "Trace", "Usage"]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class Message:
    """One chat message, as in the OpenAI chat format."""

    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Usage:
    """Token counts of one call."""

    input_tokens: int
    output_tokens: int

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
        )


@dataclass(frozen=True)
class CallRecord:
    """What one call to a pool model (or the router itself) produced and cost."""

    model: str
    response: str | None
    usage: Usage
    cost_usd: float
    latency_s: float = 0.0
    finish_reason: str = "stop"
    by_router: bool = False


@dataclass
class Trace:
    """Every call of an episode, in the order they were made."""

    calls: list[CallRecord] = field(default_factory=list)
    answer_from: str | None = None

    @property
    def cost_usd(self) -> float:
        return sum(call.cost_usd for call in self.calls)

    @property
    def usage(self) -> Usage:
        total = Usage(0, 0)
        for call in self.calls:
            total = total + call.usage
        return total

    @property
    def models(self) -> list[str]:
        return [call.model for call in self.calls]
