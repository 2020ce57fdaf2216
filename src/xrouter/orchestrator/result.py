"""What an episode returns: its answer, how it came about, and every call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xrouter.core.errors import BackendError
from xrouter.core.types import CallRecord, Trace
from xrouter.records.tokens import count_tokens, first_tokens

__all__ = [
    "EMPTY_REPLY",
    "EpisodeFailedError",
    "EpisodeResult",
    "call_answer",
    "own_answer",
    "trace_dict",
    "turn_limit_answer",
]

# What the router is told when it wrote neither an answer nor a tool call.
EMPTY_REPLY = "empty reply: answer the user, or call a tool in a <tool_call> tag"


class EpisodeFailedError(BackendError):
    """No model produced an answer: every call failed and the router said nothing.

    ``trace`` holds what was tried (and what it cost: the router's turns).
    """

    default_retryable = False

    def __init__(self, message: str, trace: Trace) -> None:
        super().__init__(message)
        self.trace = trace

    @property
    def cost_usd(self) -> float:
        return self.trace.cost_usd


@dataclass
class EpisodeResult:
    """The answer of an episode and how it came about.

    ``strategy``: ``self`` (the router answered itself), ``select`` (an earlier
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
    own_finish: str = "stop"  # why the router's own answer ended

    @property
    def tool_calls(self) -> tuple[dict[str, Any], ...]:
        """The caller's own tool calls in the answer, when a pool model made them."""
        return self.source.tool_calls if self.source is not None else ()

    @property
    def finish_reason(self) -> str:
        return self.source.finish_reason if self.source is not None else self.own_finish

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
            **trace_dict(self.trace),
            "tool_errors": list(self.tool_errors),
        }


def trace_dict(trace: Trace) -> dict[str, Any]:
    """What an episode's calls cost and used, and every call, as JSON-ready data."""
    return {
        "cost_usd": trace.cost_usd,
        "usage": {
            "input_tokens": trace.usage.input_tokens,
            "output_tokens": trace.usage.output_tokens,
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
            for c in trace.calls
        ],
    }


def call_answer(
    call: CallRecord, trace: Trace, strategy: str, turns: int, errors: list[str]
) -> EpisodeResult:
    """A pool call's response, returned verbatim, as the episode's answer."""
    trace.answer_from = call.model
    return EpisodeResult(
        call.response or "", trace, (call.model,), strategy, turns, errors, source=call
    )


def own_answer(
    text: str,
    finish: str,
    cap: int | None,
    trace: Trace,
    who: str,
    strategy: str,
    turns: int,
    errors: list[str],
) -> EpisodeResult:
    """The router ``who``'s own reply as the episode's answer, cut to the
    caller's ``max_tokens`` (``cap``) as a model's answer would be."""
    if cap is not None and count_tokens(text) > cap:
        text, finish = first_tokens(text, cap), "length"
    trace.answer_from = who
    return EpisodeResult(
        text, trace, (who,), strategy, turns, errors, own_finish=finish
    )


def turn_limit_answer(
    trace: Trace,
    said: tuple[str, str],
    cap: int | None,
    who: str,
    turns: int,
    errors: list[str],
) -> EpisodeResult:
    """The answer when the turns ran out: the latest successful call's response,
    else what the router last said (its text and finish reason, ``said``)."""
    done = [c for c in trace.calls if not c.by_router and c.error is None]
    if done:
        last_turn = max(c.turn for c in done)
        pick = next(c for c in done if c.turn == last_turn)
        return call_answer(pick, trace, "turn_limit", turns, errors)
    text, finish = said
    if text.strip():
        return own_answer(text, finish, cap, trace, who, "turn_limit", turns, errors)
    # Each reason once: a router may try the same refused call turn after turn.
    # What the router was told about its empty replies is not for the client.
    told = ["the router's reply was empty" if e == EMPTY_REPLY else e for e in errors]
    failures = list(dict.fromkeys([c.error for c in trace.calls if c.error] + told))
    shown = [str(f) for f in failures[:4]]
    if len(failures) > len(shown):
        shown.append(f"and {len(failures) - len(shown)} more, in the trace")
    raise EpisodeFailedError(
        "no model produced an answer" + (f": {'; '.join(shown)}" if shown else ""),
        trace,
    )
