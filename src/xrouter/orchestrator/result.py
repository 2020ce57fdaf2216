"""What an episode returns: its answer, how it came about, and every call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xrouter.core.types import CallRecord, Trace

__all__ = ["EpisodeResult"]


@dataclass
class EpisodeResult:
    """The answer of an episode and how it came about.

    ``strategy``: ``direct`` (the router answered itself), ``select`` (an earlier
    response returned verbatim), ``synthesis`` (the router wrote the answer after
    calling models) or ``turn_limit`` (the turn-limit rule picked it).
    """

    answer: str
    trace: Trace
    answered_by: tuple[str, ...]
    strategy: str
    turns: int
    tool_errors: list[str]
    source: CallRecord | None = None

    @property
    def tool_calls(self) -> tuple[dict[str, Any], ...]:
        """The caller's own tool calls in the answer, when a pool model made them."""
        return self.source.tool_calls if self.source is not None else ()

    @property
    def finish_reason(self) -> str:
        return self.source.finish_reason if self.source is not None else "stop"

    @property
    def cost_usd(self) -> float:
        return self.trace.cost_usd

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data: answer, strategy, cost and every call."""
        return {
            "answer": self.answer,
            "answered_by": list(self.answered_by),
            "strategy": self.strategy,
            "turns": self.turns,
            "cost_usd": self.cost_usd,
            "usage": {
                "input_tokens": self.trace.usage.input_tokens,
                "output_tokens": self.trace.usage.output_tokens,
            },
            "calls": [
                {
                    "turn": c.turn,
                    "call_id": c.call_id or None,
                    "model": c.model,
                    "by_router": c.by_router,
                    "input_tokens": c.usage.input_tokens,
                    "output_tokens": c.usage.output_tokens,
                    "cost_usd": c.cost_usd,
                    "latency_s": round(c.latency_s, 4),
                    "attempts": c.attempts,
                    "error": c.error,
                    "fallback_for": c.fallback_for,
                }
                for c in self.trace.calls
            ],
            "tool_errors": list(self.tool_errors),
        }
