"""The orchestrator: runs one routing episode, turn by turn, for any router.

In each turn the router (a language model emitting tool calls, or the RL policy
network speaking the same tools) looks at the conversation and what came back so
far and either writes an answer or calls tools:

- ``call_<model>`` runs a pool model on the user's conversation, under a system
  prompt the router wrote (the user's own system prompt kept after it). The calls
  of one turn run in parallel.
- ``select_response`` returns an earlier call's response verbatim; the episode ends.
- a reply with no tool call is the answer: the router's own when it called nothing,
  a synthesis when it did.

Every call goes through the same guard: its worst case (prompt tokens plus all its
``max_tokens``, priced by the card; a replayed call's known cost) is held on the
budget first, and refused if it does not fit; it gets a timeout, retries with
jittered exponential backoff on retryable failures, then the pool's fallback model.
A refused, failed or malformed call comes back to the router as a tool error, never
as an exception. The router's own tokens are billed at its card's price.

Turn limit (one rule for training, evaluation and serving): when the last allowed
turn ends without an answer, the episode returns the response of the latest call
that succeeded (of several in that turn, the first the router listed); when no call
ever succeeded, the router's last text; when that is empty too, the episode fails
with ``EpisodeFailedError``. The episode time limit ends an episode by the same rule.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from xrouter.backends.pool import Pool
from xrouter.core.catalog import ModelCard
from xrouter.core.errors import (
    BudgetExceededError,
)
from xrouter.core.types import (
    CallerOptions,
    CallRecord,
    ChatRequest,
    Message,
    Trace,
    Usage,
)
from xrouter.orchestrator.budget import Budget
from xrouter.orchestrator.calls import CallRunner
from xrouter.orchestrator.limits import Limits, with_margin
from xrouter.orchestrator.parsing import ToolCall
from xrouter.orchestrator.result import (
    EMPTY_REPLY,
    EpisodeFailedError,
    EpisodeResult,
    call_answer,
    own_answer,
    turn_limit_answer,
)
from xrouter.orchestrator.tools import (
    SELECT_TOOL,
    CallArguments,
    ToolNames,
    tool_results,
    validate_arguments,
)
from xrouter.records.tokens import count_request_tokens

__all__ = [
    "EpisodeFailedError",
    "EpisodeResult",
    "EpisodeView",
    "Limits",
    "Orchestrator",
    "Router",
    "RouterTurn",
    "called_messages",
]


@dataclass(frozen=True)
class RouterTurn:
    """What the router said in one turn: text, tool calls, unreadable calls."""

    text: str = ""
    calls: tuple[ToolCall, ...] = ()
    errors: tuple[str, ...] = ()
    usage: Usage = field(default_factory=lambda: Usage(0, 0))
    latency_s: float = 0.0
    finish_reason: str = "stop"  # "length": the router's reply was cut short


@dataclass
class EpisodeView:
    """What the router may look at when it decides."""

    messages: tuple[Message, ...]
    pool: list[ModelCard]
    lam: float
    turn: int
    max_turns: int
    budget_left_usd: float
    transcript: list[Message] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    item_id: str | None = None
    caller: CallerOptions = field(default_factory=CallerOptions)
    next_call: int = 1
    asked: set[str] = field(default_factory=set)  # models called, fallbacks too


class Router(Protocol):
    """Who decides: takes a view, returns a turn."""

    @property
    def name(self) -> str: ...

    @property
    def card(self) -> ModelCard | None:
        """The router's own card, whose prices bill its tokens (None: free)."""
        ...

    def quote(self, view: EpisodeView) -> float:
        """The most the router's next turn can cost."""
        ...

    async def decide(self, view: EpisodeView) -> RouterTurn: ...


def called_messages(
    conversation: Sequence[Message], system_prompt: str
) -> tuple[Message, ...]:
    """What a called model receives: the router's system prompt, then the user's
    own system prompt (kept, joined after it) and the rest of the conversation."""
    own = [m.content for m in conversation if m.role == "system" and m.content]
    system = "\n\n".join(p for p in (system_prompt.strip(), *own) if p)
    rest = tuple(m for m in conversation if m.role != "system")
    return ((Message("system", system),) if system else ()) + rest


class Orchestrator:
    """Runs episodes over one pool; share one instance across requests."""

    def __init__(
        self, pool: Pool, limits: Limits | None = None, *, seed: int | None = None
    ) -> None:
        self.pool = pool
        self.limits = limits or Limits()
        self.names = ToolNames(pool.ids)
        self.calls = CallRunner(pool, self.limits, seed=seed)

    async def run(
        self,
        router: Router,
        messages: Sequence[Message],
        *,
        lam: float = 1.0,
        budget: Budget | None = None,
        item_id: str | None = None,
        caller: CallerOptions | None = None,
    ) -> EpisodeResult:
        """One episode; raises only ``EpisodeFailedError`` (nothing to answer with).

        ``caller`` holds what the request asked of the answering model (its tools,
        stop strings, sampling): every pool call gets it; the router's own
        ``max_tokens`` and ``temperature`` for a call take precedence.
        """
        budget = budget or Budget()
        limits = self.limits
        deadline = time.monotonic() + limits.episode_timeout_s
        view = EpisodeView(
            messages=tuple(messages),
            pool=self.pool.cards,
            lam=lam,
            turn=0,
            max_turns=limits.max_turns,
            budget_left_usd=budget.available_usd,
            item_id=item_id,
            caller=caller or CallerOptions(),
        )
        trace, errors = Trace(), list[str]()
        last: RouterTurn | None = None
        # Each model's worst case is priced once; each turn offers those that fit
        # what is left then.
        # Nor is a model offered whose context window cannot hold the prompt
        # (its call would not be sent), unless none can. The prompt is counted
        # once for both.
        request = self._request(view.messages, view.caller, item_id)
        tokens = count_request_tokens(request)
        worst = None
        if not math.isinf(budget.available_usd):
            worst = self._priced(request, with_margin(tokens))
        roomy = {
            entry.card.id
            for entry in self.pool
            if self.calls.unfit(entry, request, tokens) is None
        }
        for turn in range(1, limits.max_turns + 1):
            view.turn, view.budget_left_usd = turn, budget.available_usd
            if worst is not None:
                view.pool = _fitting(worst, budget.available_usd)
            view.pool = [c for c in view.pool if c.id in roomy] or view.pool
            decided = await self._router_turn(router, view, budget, trace, deadline)
            if decided is None:
                break
            last = decided
            view.transcript.append(Message("assistant", _assistant_text(decided)))
            feedback = list(decided.errors)
            if not decided.calls and not decided.errors and decided.text.strip():
                strategy = "synthesis" if _succeeded(trace) else "self"
                who = _router_id(router)
                text, finish = decided.text, decided.finish_reason
                cap = view.caller.max_tokens
                return own_answer(text, finish, cap, trace, who, strategy, turn, errors)
            if not decided.calls and not feedback:
                feedback.append(EMPTY_REPLY)
            selected = self._select(decided.calls, trace, feedback)
            if selected is not None:
                return call_answer(selected, trace, "select", turn, errors + feedback)
            pool_calls = [c for c in decided.calls if c.name != SELECT_TOOL]
            records = await self._run_calls(
                pool_calls, view, budget, turn, deadline, feedback
            )
            trace.calls.extend(records)
            view.calls = [c for c in trace.calls if not c.by_router]
            errors.extend(feedback)
            view.transcript.append(Message("user", tool_results(records, feedback)))
            if time.monotonic() >= deadline:
                break
        said = (last.text, last.finish_reason) if last is not None else ("", "stop")
        who, cap = _router_id(router), view.caller.max_tokens
        return turn_limit_answer(trace, said, cap, who, view.turn, errors)

    def affordable(
        self,
        messages: Sequence[Message],
        caller: CallerOptions,
        budget: Budget,
        item_id: str | None = None,
    ) -> list[ModelCard]:
        """The pool models whose call, as the caller asked for it, fits what
        ``budget`` has left, so that a router is offered no model it cannot pay
        for; the whole pool when none fits (its calls are then refused, and the
        refusal says why)."""
        if math.isinf(budget.available_usd):
            return self.pool.cards
        worst = self.worst_cases(messages, caller, item_id)
        return _fitting(worst, budget.available_usd)

    def worst_cases(
        self,
        messages: Sequence[Message],
        caller: CallerOptions,
        item_id: str | None = None,
    ) -> list[tuple[ModelCard, float]]:
        """Each pool model with the most a call of ``messages`` may cost on it."""
        request = self._request(messages, caller, item_id)
        return self._priced(request, self.calls.prompt_allowance(request))

    def _priced(
        self, request: ChatRequest, prompt: int
    ) -> list[tuple[ModelCard, float]]:
        """Each pool model with its worst case for ``request``, whose prompt
        allowance (counted once for all) is ``prompt``."""
        return [
            (entry.card, self.calls.worst_case(entry, request, prompt))
            for entry in self.pool
        ]

    def _request(
        self, messages: Sequence[Message], caller: CallerOptions, item_id: str | None
    ) -> ChatRequest:
        """A call of ``messages`` as the caller asked for it, before the router
        writes its system prompt."""
        return ChatRequest(
            messages=tuple(messages),
            max_tokens=caller.max_tokens or self.limits.default_max_tokens,
            tools=caller.tools,
            tool_choice=caller.tool_choice,
            item_id=item_id,
        )

    # -- the router's turn ------------------------------------------------------

    async def _router_turn(
        self,
        router: Router,
        view: EpisodeView,
        budget: Budget,
        trace: Trace,
        deadline: float,
    ) -> RouterTurn | None:
        """Ask the router; None when its turn cannot be paid for or timed out."""
        try:
            hold = budget.hold(router.quote(view), f"router {router.name}'s turn")
        except BudgetExceededError:
            return None
        started = time.monotonic()
        try:
            decided = await asyncio.wait_for(
                router.decide(view), timeout=max(0.0, deadline - started)
            )
        except TimeoutError:
            hold.release()
            return None
        except BaseException:
            hold.release()
            raise
        card = router.card
        cost = (
            card.cost(decided.usage.input_tokens, decided.usage.output_tokens)
            if card
            else 0.0
        )
        hold.settle(cost)
        trace.calls.append(
            CallRecord(
                model=_router_id(router),
                response=decided.text,
                usage=decided.usage,
                cost_usd=cost,
                latency_s=decided.latency_s or time.monotonic() - started,
                by_router=True,
                turn=view.turn,
            )
        )
        return decided

    # -- select ---------------------------------------------------------------

    def _select(
        self, calls: Sequence[ToolCall], trace: Trace, feedback: list[str]
    ) -> CallRecord | None:
        """The earlier call a ``select_response`` names, if it ran and succeeded."""
        for call in calls:
            if call.name != SELECT_TOOL:
                continue
            wanted = str(call.arguments.get("call_id", "")).strip()
            done = {c.call_id: c for c in trace.calls if c.call_id and not c.by_router}
            hit = done.get(wanted)
            if hit is None:
                # Small routers often name the model instead of the call id.
                model = self.names.model_of(wanted) or (
                    wanted if wanted in self.pool else None
                )
                hit = next(
                    (
                        c
                        for c in reversed(trace.calls)
                        if model and c.model == model and c.error is None
                    ),
                    None,
                )
            if hit is not None and hit.error is None and hit.response is not None:
                return hit
            known = ", ".join(c.call_id for c in done.values() if c.error is None)
            feedback.append(
                f"select_response: no successful call {wanted!r} to select"
                + (f" (successful calls: {known})" if known else " (none so far)")
            )
        return None

    # -- pool calls -------------------------------------------------------------

    async def _run_calls(
        self,
        calls: Sequence[ToolCall],
        view: EpisodeView,
        budget: Budget,
        turn: int,
        deadline: float,
        feedback: list[str],
    ) -> list[CallRecord]:
        jobs = []
        for call in calls:
            model = self.names.model_of(call.name)
            if model is None:
                feedback.append(
                    f"{call.name}: no such tool; the tools are "
                    f"{', '.join([*self.names.names, SELECT_TOOL])}"
                )
                continue
            args = validate_arguments(call.name, call.arguments)
            if isinstance(args, str):
                feedback.append(args)
                continue
            call_id = f"c{view.next_call}"  # numbered within the episode
            view.next_call += 1
            jobs.append(self._call(model, args, view, budget, turn, deadline, call_id))
        results = await asyncio.gather(*jobs)
        records = []
        for outcome in results:
            if isinstance(outcome, str):
                feedback.append(outcome)
            else:
                records.extend(outcome)
        return records

    async def _call(
        self,
        model: str,
        args: CallArguments,
        view: EpisodeView,
        budget: Budget,
        turn: int,
        deadline: float,
        call_id: str,
    ) -> list[CallRecord] | str:
        """The call's records, or the refusal the router is shown."""
        caller = view.caller
        request = ChatRequest(
            messages=called_messages(view.messages, args.system_prompt),
            max_tokens=args.max_tokens
            or caller.max_tokens
            or self.limits.default_max_tokens,
            temperature=caller.temperature
            if args.temperature is None
            else args.temperature,
            stop=caller.stop,
            tools=caller.tools,
            tool_choice=caller.tool_choice,
            item_id=view.item_id,
            user=caller.user,
            extra=caller.extra,
        )
        try:
            return await self.calls.run(
                model,
                request,
                budget,
                call_id=call_id,
                turn=turn,
                deadline=deadline,
                asked=view.asked,
            )
        except BudgetExceededError as exc:
            return f"{self.names.name_of(model)}: refused, {exc}"


# -- helpers ------------------------------------------------------------------


def _router_id(router: Router) -> str:
    return router.card.id if router.card is not None else router.name


def _succeeded(trace: Trace) -> bool:
    return any(c.error is None and not c.by_router for c in trace.calls)


def _assistant_text(turn: RouterTurn) -> str:
    return (
        turn.text
        if not turn.calls
        else "\n".join([turn.text, *(c.raw for c in turn.calls)]).strip()
    )


def _fitting(
    worst: Sequence[tuple[ModelCard, float]], available_usd: float
) -> list[ModelCard]:
    """The models whose worst case fits ``available_usd``; all when none does."""
    fits = [card for card, usd in worst if usd <= available_usd]
    return fits or [card for card, _ in worst]
