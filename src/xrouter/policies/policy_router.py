"""The RL-trained routing policy, speaking the orchestrator's tools.

The policy network decides the first action of an episode from the request's
embedding, its length, the pool and lambda: answer itself (its ``self_model`` stands
for the router, as in training), or call one pool model. The orchestrator runs the
call like any other; the next turn selects its response, or, when it failed for
good, calls the strongest model not tried yet. The decision costs nothing (a small
network on the CPU), so the router's own card is None.

Routing reads the whole conversation: the last user message first, then the turns
before it, newest first; the embedding model reads the first 128 word pieces of that,
and the length feature counts every message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from xrouter.core.catalog import Catalog, ModelCard
from xrouter.core.types import Message
from xrouter.orchestrator.loop import EpisodeView, RouterTurn
from xrouter.orchestrator.parsing import ToolCall
from xrouter.orchestrator.tools import SELECT_TOOL, tool_name
from xrouter.policies.checkpoint import Checkpoint
from xrouter.policies.embedding import Embedder
from xrouter.policies.learned import LiveRouter, check_lambda
from xrouter.records.tokens import count_message_tokens

__all__ = ["PolicyRouter", "conversation_text"]

# What routing reads of a conversation, at most (the embedder cuts it further).
_MAX_CHARS = 1000


def conversation_text(messages: Sequence[Message]) -> str:
    """The text routing embeds: the last user message, then earlier turns."""
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    last = users[-1] if users else len(messages) - 1
    ordered = [messages[last], *reversed(messages[:last]), *messages[last + 1 :]]
    text = "\n".join(m.content for m in ordered if m.content)
    return text[:_MAX_CHARS]


class PolicyRouter:
    """A trained policy checkpoint as the orchestrator's router."""

    card: ModelCard | None = None

    def __init__(
        self,
        checkpoint: Checkpoint,
        catalog: Catalog,
        pool: Sequence[str],
        self_model: str | None,
        embedder: Embedder | None = None,
        name: str = "xrouter-policy",
    ) -> None:
        self.live = LiveRouter(checkpoint, catalog, pool, self_model)
        self.checkpoint = checkpoint
        self.pool = list(pool)
        self.strength = sorted(
            self.pool, key=lambda m: catalog.get(m).output_per_mtok, reverse=True
        )
        self.embedder = (embedder or Embedder()).like(checkpoint.embedding)
        self.name = name

    def check(self, lam: float) -> None:
        """Refuse a lambda outside the trained range before any work starts."""
        check_lambda(self.checkpoint, lam)

    def quote(self, view: EpisodeView) -> float:
        return 0.0

    def first_choice(self, messages: Sequence[Message], lam: float) -> str:
        """The pool model the policy sends ``messages`` to first."""
        vector = self.embedder.encode([conversation_text(messages)])[0]
        tokens = count_message_tokens([(m.role, m.content) for m in messages])
        decision = self.live.first_decision(vector, lam, tokens)
        return decision.model

    async def decide(self, view: EpisodeView) -> RouterTurn:
        started = time.monotonic()
        done = [c for c in view.calls if c.error is None and c.response is not None]
        if done:
            return _turn(SELECT_TOOL, {"call_id": done[-1].call_id}, started)
        if not view.calls:
            model = self.first_choice(view.messages, view.lam)
        else:
            tried = {c.model for c in view.calls}
            left = [m for m in self.strength if m not in tried]
            if not left:
                return RouterTurn(latency_s=time.monotonic() - started)
            model = left[0]
        return _turn(tool_name(model), {"system_prompt": ""}, started)


def _turn(name: str, arguments: dict[str, Any], started: float) -> RouterTurn:
    call = ToolCall(name=name, arguments=arguments, raw=f"{name}({arguments})")
    return RouterTurn(calls=(call,), latency_s=time.monotonic() - started)
