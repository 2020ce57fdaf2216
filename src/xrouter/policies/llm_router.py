"""The tool-calling LLM router: a language model that answers or calls pool models.

Each turn the router model reads its system prompt (the rules and the pool's tools
with their prices), the user's conversation and what its earlier calls returned,
and writes either an answer or tool calls. Its text is parsed for tool calls in
every common form (tags, bare or fenced JSON, several per message), since small
models rarely keep to one; calls returned natively by an OpenAI-compatible backend
are taken as they are. Any backend can host the router: the local SmolLM2 by
default, or a served model (vLLM, llama.cpp, a hosted API).
"""

from __future__ import annotations

import json
import time
from typing import Any

from xrouter.backends.base import Backend
from xrouter.core.catalog import ModelCard
from xrouter.core.types import ChatRequest, Message
from xrouter.orchestrator.limits import with_margin
from xrouter.orchestrator.loop import EpisodeView, RouterTurn
from xrouter.orchestrator.parsing import ToolCall, parse_tool_calls
from xrouter.orchestrator.tools import router_system_prompt
from xrouter.records.tokens import count_message_tokens

__all__ = ["LLMRouter"]


class LLMRouter:
    """A router played by the model behind ``backend``."""

    def __init__(
        self,
        backend: Backend,
        *,
        max_tokens: int = 256,
        temperature: float | None = None,
        name: str | None = None,
    ) -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._name = name or f"llm:{backend.card.id}"
        self._prompts: dict[tuple[tuple[str, ...], float], str] = {}

    @property
    def name(self) -> str:
        """How reports name it: ``llm:CARD``, by default."""
        return self._name

    @property
    def card(self) -> ModelCard:
        return self.backend.card

    def messages(self, view: EpisodeView) -> tuple[Message, ...]:
        """The router's prompt for this turn."""
        key = (tuple(card.id for card in view.pool), view.lam)
        system = self._prompts.get(key)
        if system is None:
            system = router_system_prompt(view.pool, lam=view.lam)
            self._prompts[key] = system
        conversation = tuple(
            Message(m.role, m.content) if m.role in ("system", "user") else m
            for m in view.messages
        )
        return (Message("system", system), *conversation, *view.transcript)

    def quote(self, view: EpisodeView) -> float:
        prompt = count_message_tokens(
            [(m.role, m.content) for m in self.messages(view)]
        )
        return self.card.cost(with_margin(prompt), self.max_tokens)

    async def decide(self, view: EpisodeView) -> RouterTurn:
        started = time.monotonic()
        done = await self.backend.complete(
            ChatRequest(
                messages=self.messages(view),
                max_tokens=self.max_tokens,
                temperature=self.temperature,
            )
        )
        parsed = parse_tool_calls(done.text)
        native = tuple(_native_call(call) for call in done.tool_calls)
        calls = parsed.calls + tuple(c for c in native if c is not None)
        return RouterTurn(
            text=parsed.text if calls or parsed.errors else done.text.strip(),
            calls=calls,
            errors=parsed.errors,
            usage=done.usage,
            latency_s=time.monotonic() - started,
            finish_reason=done.finish_reason,
        )


def _native_call(call: dict[str, Any]) -> ToolCall | None:
    """A tool call an OpenAI-compatible server returned in ``tool_calls``."""
    function = call.get("function") or {}
    name = function.get("name")
    if not isinstance(name, str):
        return None
    raw = function.get("arguments") or "{}"
    try:
        arguments = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (ValueError, TypeError):
        arguments = {}
    if not isinstance(arguments, dict):
        arguments = {}
    return ToolCall(name=name, arguments=arguments, raw=json.dumps(call))
