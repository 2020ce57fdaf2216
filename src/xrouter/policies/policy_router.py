"""The RL-trained routing policy, speaking the orchestrator's tools.

The policy network plays every turn of the episode, as in training: from the
request's embedding, its length, the pool and lambda, and after each call from
what came back (which models answered, their lengths, and whether their final
answers agree), it calls a pool model, selects an earlier response, or answers
itself. Its ``self_model`` stands for the router answering: that model is called,
and its response is then returned. A call that failed for good is not tried
again and cannot be selected. Final answers are read from the responses the way
the math verifier reads them (a boxed answer or a stated one), else as the last
number. A decision costs nothing (a small network on the CPU), so the router's
own card is None.

Routing reads the whole conversation: the last user message first, then the turns
before it, newest first; the embedding model reads the first 128 word pieces of that,
and the length feature counts every message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xrouter.core.catalog import Catalog, ModelCard
from xrouter.core.recent import Recent
from xrouter.core.types import Message
from xrouter.orchestrator.loop import EpisodeView, RouterTurn
from xrouter.orchestrator.parsing import ToolCall
from xrouter.orchestrator.tools import SELECT_TOOL, tool_name
from xrouter.policies.checkpoint import Checkpoint
from xrouter.policies.embedding import Embedder
from xrouter.policies.learned import (
    REMEMBERED_PROMPTS,
    LiveRouter,
    Seen,
    check_lambda,
)
from xrouter.records.tokens import count_message_tokens
from xrouter.records.verifiers import extract_answer

__all__ = ["PolicyRouter", "conversation_text", "final_answer"]

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
        self.self_model = self_model
        self._prompts: Recent[
            tuple[tuple[str, str], ...], tuple[NDArray[np.float32], int]
        ] = Recent(REMEMBERED_PROMPTS)
        self.embedder = (embedder or Embedder()).like(checkpoint.embedding)
        self.name = name

    def check(self, lam: float) -> None:
        """Refuse a lambda outside the trained range before any work starts."""
        check_lambda(self.checkpoint, lam)

    def quote(self, view: EpisodeView) -> float:
        return 0.0

    def first_choice(
        self,
        messages: Sequence[Message],
        lam: float,
        offered: Sequence[str] | None = None,
    ) -> str:
        """The pool model the policy sends ``messages`` to first, among the
        ``offered`` ones (default: the whole pool)."""
        vector, tokens = self._prompt(messages)
        decision = self.live.first_decision(vector, lam, tokens, offered)
        return decision.model

    async def decide(self, view: EpisodeView) -> RouterTurn:
        started = time.monotonic()
        seen, last_ok = self._seen(view)
        if self.self_model in last_ok:
            # The router's own answer is its response, as in training.
            call_id = last_ok[self.self_model]
            return _turn(SELECT_TOOL, {"call_id": call_id}, started)
        vector, tokens = self._prompt(view.messages)
        decision = self.live.decide(vector, view.lam, tokens, seen)
        if decision is None:
            return RouterTurn(latency_s=time.monotonic() - started)
        if decision.kind == "select":
            return _turn(SELECT_TOOL, {"call_id": last_ok[decision.model]}, started)
        return _turn(tool_name(decision.model), {"system_prompt": ""}, started)

    def _prompt(self, messages: Sequence[Message]) -> tuple[NDArray[np.float32], int]:
        """The conversation's embedding and length in tokens, kept for the
        episode's later turns."""
        turns = tuple((m.role, m.content) for m in messages)
        return self._prompts.get(
            turns,
            lambda: (
                self.embedder.encode([conversation_text(messages)])[0],
                count_message_tokens(list(turns)),
            ),
        )

    def _seen(self, view: EpisodeView) -> tuple[Seen, dict[str, str]]:
        """What came back so far, per pool model, and the call id of each model's
        latest answer."""
        pool = self.live.pool
        seen = Seen.nothing(len(pool))
        seen.turns = max(view.turn - 1, 0)
        offered = {card.id for card in view.pool}
        seen.offered = [m in offered for m in pool]
        last_ok: dict[str, str] = {}
        for call in view.calls:
            # A fallback's answer is its own model's, so that the policy does not
            # pay for that model again; the model asked for failed (its own record
            # says so). A fallback outside the pool speaks for the model asked for.
            model = call.model if call.model in pool else call.fallback_for or ""
            if model not in pool or call.by_router:
                continue
            j = pool.index(model)
            seen.called[j] = True
            seen.cost[j] += call.cost_usd
            if call.error is None and call.response is not None:
                seen.answered[j] = True
                seen.output_tokens[j] = call.usage.output_tokens
                seen.answers[j] = final_answer(call.response)
                last_ok[model] = call.call_id
        return seen, last_ok


def final_answer(text: str) -> str | None:
    """A response's final answer for agreement: boxed or stated, else the last
    number; None when it has neither."""
    return extract_answer("math", text) or extract_answer("gsm8k", text)


def _turn(name: str, arguments: dict[str, Any], started: float) -> RouterTurn:
    call = ToolCall(name=name, arguments=arguments, raw=f"{name}({arguments})")
    return RouterTurn(calls=(call,), latency_s=time.monotonic() - started)
