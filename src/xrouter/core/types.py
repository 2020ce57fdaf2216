"""Message, request, completion, usage, call and trace types shared by every layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CallRecord",
    "CallerOptions",
    "ChatRequest",
    "Completion",
    "Message",
    "Role",
    "StreamDelta",
    "Trace",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Message:
    """One chat message, as in the OpenAI chat format.

    ``tool_calls`` (assistant) and ``tool_call_id`` (tool) carry a caller's own
    function calling through to the model that answers; content given as parts is
    joined into one string before it gets here.
    """

    role: Role
    content: str
    name: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    tool_call_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls:
            out["tool_calls"] = [dict(call) for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass(frozen=True)
class Usage:
    """Token counts of one call; ``counted`` when xrouter counted them with a
    tokenizer because the server reported none."""

    input_tokens: int
    output_tokens: int
    counted: bool = False

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.counted or other.counted,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class ChatRequest:
    """One call to one model, whichever backend serves it.

    ``tools`` and ``tool_choice`` are the caller's own function definitions, passed
    through unchanged. ``item_id`` tells the replay backend which recorded item is
    being asked when the caller knows it (evaluation, training); live backends
    ignore it. ``extra`` holds the caller's other OpenAI parameters (``top_p``,
    ``seed``, penalties, ``logit_bias``, ``response_format``), sent as given by
    the backends that call an API; a backend that cannot follow a
    ``response_format`` refuses the request.
    """

    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    item_id: str | None = None
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def output_format(self) -> str:
        """The ``response_format`` type asked for: ``text`` unless one is given."""
        format_ = self.extra.get("response_format") or {}
        return str(format_.get("type", "text"))


@dataclass(frozen=True)
class CallerOptions:
    """What the caller asked of the model that answers: its sampling settings, stop
    strings and its own tools, passed through to every pool call of an episode."""

    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    """What a backend returned for one call.

    ``cost_usd`` is set only when the backend knows what was really charged (a
    replayed record whose source logged it); otherwise the orchestrator prices
    ``usage`` with the model card.
    """

    text: str
    usage: Usage
    finish_reason: str = "stop"
    latency_s: float = 0.0
    tool_calls: tuple[dict[str, Any], ...] = ()
    cost_usd: float | None = None


@dataclass(frozen=True)
class StreamDelta:
    """One piece of a streamed completion.

    Text arrives in ``text``; the last delta carries ``finish_reason`` and, where
    the backend reports it, ``usage``.
    """

    text: str = ""
    tool_calls: tuple[dict[str, Any], ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True)
class CallRecord:
    """What one call to a pool model (or the router itself) produced and cost.

    ``error`` names the failure kind of a call that failed (its response is None);
    ``call_id`` is the id the router's tool call gave it.
    """

    model: str
    response: str | None
    usage: Usage
    cost_usd: float
    latency_s: float = 0.0
    finish_reason: str = "stop"
    by_router: bool = False
    call_id: str = ""
    turn: int = 0
    error: str | None = None
    attempts: int = 1
    fallback_for: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()


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
