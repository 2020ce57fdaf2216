"""One model call under the orchestrator's guard: budget, timeout, retries, fallback.

Before a call starts, its worst case is held on the budget: a replayed call's known
cost, otherwise its prompt tokens (everything sent: messages, the caller's tool
calls and tool definitions, counted with one tokenizer for every model, plus a
margin for vendors' own counts) and its ``max_tokens`` with a margin too (a
stream is read no further), priced by the card.
A call that does not fit is refused. A call gets ``call_timeout_s`` (and never more
than the episode has left; a stream gets it for each piece, and its whole answer
never more than ``episode_timeout_s``); a retryable failure (timeout, rate limit,
upstream error) is retried up to ``retries`` times after an exponential, jittered
backoff, or after the rate limit's own ``retry_after_s``. A call that still fails
goes to its pool entry's fallback model, once, under a hold of its own, unless the
request has called that model already (its answer or failure is in hand); a
timeout goes to the fallback at once (a slow model asked again would spend the
time the fallback needs). Failed
attempts cost nothing, except a reply that came back unusable with its usage
reported (``BackendError.billed``): that usage is priced by the card and booked.
A successful attempt costs what the backend reports (a replayed record's cost) or
its usage priced by the card.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace

from xrouter.backends.pool import Pool, PoolEntry
from xrouter.core.errors import (
    BackendError,
    BackendTimeoutError,
    BadRequestError,
    BudgetExceededError,
    UpstreamError,
)
from xrouter.core.types import CallRecord, ChatRequest, StreamDelta, Usage
from xrouter.orchestrator.budget import Budget, Hold, usd_text
from xrouter.orchestrator.limits import Limits, reply_cap, with_margin
from xrouter.orchestrator.streamed import Streamed
from xrouter.records.tokens import count_request_tokens, count_tokens, first_tokens

__all__ = ["CallRunner"]


class CallRunner:
    """Runs pool calls; one per orchestrator (or gateway), shared by its episodes."""

    def __init__(self, pool: Pool, limits: Limits, *, seed: int | None = None) -> None:
        self.pool = pool
        self.limits = limits
        self._rng = random.Random(seed)

    @staticmethod
    def prompt_allowance(request: ChatRequest) -> int:
        """The prompt tokens a worst case allows for: counted, plus a margin.
        Everything sent is counted: the caller's tools and tool calls too."""
        return with_margin(count_request_tokens(request))

    def worst_case(
        self, entry: PoolEntry, request: ChatRequest, prompt: int | None = None
    ) -> float:
        """The most ``request`` may cost on ``entry``; ``prompt``, where given, is
        the request's ``prompt_allowance`` (the same for every model)."""
        quote = getattr(entry.backend, "quote", None)
        known = quote(request) if callable(quote) else None
        if isinstance(known, float):
            return known
        if prompt is None:
            prompt = self.prompt_allowance(request)
        return entry.card.cost(
            prompt, reply_cap(request.max_tokens or self.limits.default_max_tokens)
        )

    async def run(
        self,
        model: str,
        request: ChatRequest,
        budget: Budget,
        *,
        call_id: str = "",
        turn: int = 0,
        deadline: float | None = None,
        asked: set[str] | None = None,
    ) -> list[CallRecord]:
        """Call ``model``, retried, then its fallback: a record of each model
        tried. Raises ``BudgetExceededError`` when the first call does not fit.

        ``asked`` holds the models the request has called so far (this call's
        are added): a fallback among them is not called again, as its answer or
        its failure is already in hand."""
        if deadline is None:
            deadline = time.monotonic() + self.limits.episode_timeout_s
        entry = self.pool.entry(model)
        records: list[CallRecord] = []
        tried = [model]
        asked = set() if asked is None else asked
        asked.add(model)
        tokens = count_request_tokens(request)  # once, for the fallbacks too
        while True:
            unfit = self.unfit(entry, request, tokens)
            if unfit is not None:
                record = _not_sent(entry, unfit)
            else:
                try:
                    worst = self.worst_case(entry, request, with_margin(tokens))
                    hold = budget.hold(worst, f"a call to {entry.card.id}")
                except BudgetExceededError as refused:
                    if records:
                        records[-1] = _fallback_skipped(
                            records[-1], entry.card.id, refused
                        )
                        return records
                    raise
                try:
                    record = await self._attempts(
                        entry,
                        request,
                        hold,
                        deadline,
                        self._timeouts_retried(entry, asked),
                    )
                finally:
                    if hold.open:  # an error no attempt expected: free what it held
                        hold.release()
            record = replace(
                record,
                call_id=call_id,
                turn=turn,
                fallback_for=tried[0] if len(tried) > 1 else None,
            )
            records.append(record)
            fallback = entry.fallback
            if record.error is None or fallback is None or fallback in tried:
                return records
            why = _not_again(fallback, asked, deadline)
            if why:
                records[-1] = _fallback_skipped(records[-1], fallback, why)
                return records
            tried.append(fallback)
            asked.add(fallback)
            entry = self.pool.entry(fallback)

    @staticmethod
    def unfit(
        entry: PoolEntry, request: ChatRequest, tokens: int
    ) -> BadRequestError | None:
        """Why ``request`` is not sent to ``entry``: its prompt (``tokens``,
        counted) is more than the model's context window holds (a replayed call,
        whose record shows that it fitted, is always sent). None when it is
        sent."""
        quote = getattr(entry.backend, "quote", None)
        if callable(quote) and isinstance(quote(request), float):
            return None
        card = entry.card
        if tokens <= card.context_window:
            return None
        return BadRequestError(
            f"the prompt's {tokens:,} tokens do not fit {card.id}'s context window "
            f"of {card.context_window:,}; it was not sent",
            model=card.id,
        )

    def _timeouts_retried(self, entry: PoolEntry, asked: set[str]) -> bool:
        """Whether a timed-out attempt at ``entry`` is asked again: not when a
        fallback is left to ask instead (the retry of a slow model would spend
        the time its fallback needs, and a timed-out generation may be billed)."""
        left = entry.fallback is not None and entry.fallback not in asked
        return self.limits.retry_timeouts and not left

    async def _attempts(
        self,
        entry: PoolEntry,
        request: ChatRequest,
        hold: Hold,
        deadline: float,
        retry_timeouts: bool,
    ) -> CallRecord:
        """One model called until it answers or its retries run out (a timeout
        ends them unless ``retry_timeouts``)."""
        card, limits = entry.card, self.limits
        started = time.monotonic()
        failure: BackendError | None = None
        billed, billed_usd = Usage(0, 0), 0.0  # unusable replies paid for
        attempt = 0
        for attempt in range(1, limits.retries + 2):
            left = deadline - time.monotonic()
            if left <= 0:
                failure = BackendTimeoutError(
                    "the episode ran out of time", model=card.id
                )
                break
            try:
                done = await asyncio.wait_for(
                    entry.backend.complete(request),
                    timeout=min(limits.call_timeout_s, left),
                )
            except TimeoutError:
                within = (
                    f"{limits.call_timeout_s:g} s"
                    if limits.call_timeout_s <= left
                    else f"the {left:.1f} s the episode had left"
                )
                failure = BackendTimeoutError(
                    f"{card.id} gave no answer within {within}", model=card.id
                )
            except BackendError as exc:
                failure = exc
                if exc.billed is not None:
                    billed = billed + exc.billed
                    billed_usd += card.cost(
                        exc.billed.input_tokens, exc.billed.output_tokens
                    )
            except BaseException:
                hold.settle(billed_usd)
                raise
            else:
                cost = done.cost_usd
                if (
                    cost is None
                    and min(done.usage.input_tokens, done.usage.output_tokens) >= 0
                ):
                    cost = card.cost(done.usage.input_tokens, done.usage.output_tokens)
                if cost is None or not 0 <= cost < math.inf:
                    failure = UpstreamError(
                        f"{card.id} reported a usage that cannot be billed "
                        f"({done.usage}, cost {done.cost_usd})",
                        model=card.id,
                        retryable=False,
                    )
                    break
                hold.settle(cost + billed_usd)
                # An upstream that ignored max_tokens is billed as it reports, and
                # its reply cut where a stream would have been.
                text, finish = done.text, done.finish_reason
                cap = reply_cap(request.max_tokens or limits.default_max_tokens)
                if count_tokens(text) > cap:
                    text, finish = first_tokens(text, cap), "length"
                return CallRecord(
                    model=card.id,
                    response=text,
                    usage=done.usage,
                    cost_usd=cost + billed_usd,
                    latency_s=time.monotonic() - started,
                    finish_reason=finish,
                    attempts=attempt,
                    tool_calls=done.tool_calls,
                )
            if not failure.retryable or attempt > limits.retries:
                break
            if isinstance(failure, BackendTimeoutError) and not retry_timeouts:
                break
            if hold.closed:  # no new spending for this call's request
                break
            pause = self._backoff(attempt, failure)
            if time.monotonic() + pause >= deadline:  # no time for another attempt
                break
            await asyncio.sleep(pause)
        hold.settle(billed_usd)
        assert failure is not None
        return CallRecord(
            model=card.id,
            response=None,
            usage=billed,
            cost_usd=billed_usd,
            latency_s=time.monotonic() - started,
            finish_reason="error",
            error=f"{failure.kind}: {failure}",
            attempts=attempt,
        )

    def _backoff(self, attempt: int, failure: BackendError) -> float:
        """Seconds before retry ``attempt + 1``: exponential, jittered, capped;
        a rate limit's own ``retry_after_s`` when it gives one."""
        after = getattr(failure, "retry_after_s", None)
        if isinstance(after, (int, float)) and after >= 0:
            return float(min(after, self.limits.max_backoff_s))
        base = self.limits.backoff_s * 2.0 ** (attempt - 1)
        return min(self.limits.max_backoff_s, base * self._rng.uniform(0.5, 1.5))

    # -- streaming -------------------------------------------------------------

    async def stream(
        self,
        model: str,
        request: ChatRequest,
        budget: Budget,
        records: list[CallRecord],
        *,
        call_id: str = "",
    ) -> AsyncIterator[StreamDelta]:
        """``model``'s answer as it arrives, under the same guard as :meth:`run`.

        Until the first piece arrives, failures are retried and then sent to the
        fallback, unseen by the reader; after it, a failure raises its typed error
        from the iterator (the text so far is billed by count). Each model tried is
        appended to ``records`` as its call ends. Raises ``BudgetExceededError``
        when the first call does not fit the budget.
        """
        entry, tried = self.pool.entry(model), [model]
        asked = {model, *(r.model for r in records)}  # see run
        tokens = count_request_tokens(request)
        deadline = time.monotonic() + self.limits.episode_timeout_s
        while True:
            fallback_for = tried[0] if len(tried) > 1 else None
            failure: BackendError | None = self.unfit(entry, request, tokens)
            started = False
            if failure is not None:
                record = _not_sent(entry, failure)
                records.append(
                    replace(record, call_id=call_id, fallback_for=fallback_for)
                )
            else:
                streamed = self._streamed(
                    entry, request, budget, records, call_id, deadline, asked, tokens
                )
                finished = False
                try:
                    async with aclosing(streamed.run(self._backoff)) as pieces:
                        async for delta in pieces:
                            yield delta
                    finished = True
                finally:
                    if not finished:  # the reader left: book what was streamed
                        streamed.failure = streamed.failure or UpstreamError(
                            "the reader left the stream", model=entry.card.id
                        )
                        streamed.settle()
                        records.append(streamed.record())
                record = replace(streamed.record(), fallback_for=fallback_for)
                records.append(record)
                if record.error is None:
                    return
                started, failure = streamed.started, streamed.failure
            fallback = entry.fallback
            if started or fallback is None or fallback in tried:
                raise failure or UpstreamError(str(record.error), model=model)
            why = _not_again(fallback, asked, deadline)
            if why:
                records[-1] = _fallback_skipped(records[-1], fallback, why)
                raise failure or UpstreamError(str(record.error), model=model)
            tried.append(fallback)
            asked.add(fallback)
            entry = self.pool.entry(fallback)

    def _streamed(
        self,
        entry: PoolEntry,
        request: ChatRequest,
        budget: Budget,
        records: list[CallRecord],
        call_id: str,
        deadline: float,
        asked: set[str],
        tokens: int,
    ) -> Streamed:
        """A streamed call to ``entry`` holding its worst case on ``budget``;
        raises ``BudgetExceededError`` when that does not fit (for a fallback,
        as the failure of the call it stands in for, noted in ``records``)."""
        try:
            worst = self.worst_case(entry, request, with_margin(tokens))
            hold = budget.hold(worst, f"a call to {entry.card.id}")
        except BudgetExceededError as refused:
            if records:  # the fallback does not fit: the first failure stands
                records[-1] = _fallback_skipped(records[-1], entry.card.id, refused)
                raise UpstreamError(
                    str(records[-1].error), model=records[-1].model, retryable=False
                ) from None
            raise
        retry_timeouts = self._timeouts_retried(entry, asked)
        return Streamed(
            entry,
            request,
            self.limits,
            hold,
            call_id,
            deadline,
            retry_timeouts=retry_timeouts,
        )


def _not_again(fallback: str, asked: set[str], deadline: float) -> str:
    """Why a failed call's ``fallback`` is not called ("" when it is)."""
    if fallback in asked:
        return "this request has called it already"
    if time.monotonic() >= deadline:
        return "the episode's time ran out"
    return ""


def _not_sent(entry: PoolEntry, why: BackendError) -> CallRecord:
    """The record of a call that was not sent (nothing spent), failed for ``why``."""
    return CallRecord(
        model=entry.card.id,
        response=None,
        usage=Usage(0, 0),
        cost_usd=0.0,
        latency_s=0.0,
        finish_reason="error",
        error=f"{why.kind}: {why}",
        attempts=0,
    )


def _fallback_skipped(
    record: CallRecord, fallback: str, why: BudgetExceededError | str
) -> CallRecord:
    """A failed call's ``record``, its error saying that its fallback was not
    called and why (a budget's refusal, in words that leave the failure an
    upstream one: the call that failed was within budget)."""
    if isinstance(why, BudgetExceededError):
        why = why.reason or (
            f"it may cost up to ${usd_text(why.amount_usd)} and the {why.ledger} "
            f"has ${usd_text(why.available_usd)} left"
        )
    return replace(
        record, error=f"{record.error}; its fallback {fallback} was not called: {why}"
    )
