"""One model call under the orchestrator's guard: budget, timeout, retries, fallback.

Before a call starts, its worst case is held on the budget: a replayed call's known
cost, otherwise its prompt tokens (everything sent: messages, the caller's tool
calls and tool definitions, counted with one tokenizer for every model, plus a
margin for vendors' own counts) and all of its ``max_tokens``, priced by the card.
A call that does not fit is refused. A call gets ``call_timeout_s`` (and never more
than the episode has left; a stream gets it for each piece, and its whole answer
never more than ``episode_timeout_s``); a retryable failure (timeout, rate limit,
upstream error) is retried up to ``retries`` times after an exponential, jittered
backoff, or after the rate limit's own ``retry_after_s``. A call that still fails
goes to its pool entry's fallback model, once, under a hold of its own; a timeout
goes to the fallback at once (a slow model asked again would spend the time the
fallback needs). Failed
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
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from xrouter.backends.base import counted_usage
from xrouter.backends.pool import Pool, PoolEntry
from xrouter.core.errors import (
    BackendError,
    BackendTimeoutError,
    BudgetExceededError,
    ConfigError,
    UpstreamError,
)
from xrouter.core.types import CallRecord, ChatRequest, StreamDelta, Usage
from xrouter.orchestrator.budget import Budget, Hold, usd_text
from xrouter.records.tokens import count_request_tokens, count_tokens, first_tokens

__all__ = ["CallRunner", "Limits", "reply_cap", "with_margin"]

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
    ) -> list[CallRecord]:
        """Call ``model``, retried, then its fallback: a record of each model
        tried. Raises ``BudgetExceededError`` when the first call does not fit."""
        if deadline is None:
            deadline = time.monotonic() + self.limits.episode_timeout_s
        entry = self.pool.entry(model)
        records: list[CallRecord] = []
        tried = [model]
        while True:
            try:
                hold = budget.hold(
                    self.worst_case(entry, request), f"a call to {entry.card.id}"
                )
            except BudgetExceededError as refused:
                if records:
                    records[-1] = _fallback_skipped(records[-1], entry.card.id, refused)
                    return records
                raise
            try:
                record = await self._attempts(
                    entry, request, hold, deadline, self._timeouts_retried(entry, tried)
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
            if time.monotonic() >= deadline:  # no time to call it: not called
                records[-1] = _fallback_skipped(
                    records[-1], fallback, "the episode's time ran out"
                )
                return records
            tried.append(fallback)
            entry = self.pool.entry(fallback)

    def _timeouts_retried(self, entry: PoolEntry, tried: list[str]) -> bool:
        """Whether a timed-out attempt at ``entry`` is asked again: not when a
        fallback is left to ask instead (the retry of a slow model would spend
        the time its fallback needs, and a timed-out generation may be billed)."""
        left = entry.fallback is not None and entry.fallback not in tried
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
        deadline = time.monotonic() + self.limits.episode_timeout_s
        while True:
            try:
                hold = budget.hold(
                    self.worst_case(entry, request), f"a call to {entry.card.id}"
                )
            except BudgetExceededError as refused:
                if records:  # the fallback does not fit: the first failure stands
                    records[-1] = _fallback_skipped(records[-1], entry.card.id, refused)
                    raise UpstreamError(
                        str(records[-1].error), model=model, retryable=False
                    ) from None
                raise
            streamed = _Streamed(
                entry,
                request,
                self.limits,
                hold,
                call_id,
                deadline,
                retry_timeouts=self._timeouts_retried(entry, tried),
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
            record = replace(
                streamed.record(), fallback_for=tried[0] if len(tried) > 1 else None
            )
            records.append(record)
            if record.error is None:
                return
            if streamed.started or entry.fallback is None or entry.fallback in tried:
                raise streamed.failure or UpstreamError(record.error, model=model)
            if time.monotonic() >= deadline:  # no time to call it: not called
                records[-1] = _fallback_skipped(
                    record, entry.fallback, "the episode's time ran out"
                )
                raise streamed.failure or UpstreamError(record.error, model=model)
            tried.append(entry.fallback)
            entry = self.pool.entry(entry.fallback)


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


class _Streamed:
    """One model's streamed call: attempts until the first piece, then relay."""

    def __init__(
        self,
        entry: PoolEntry,
        request: ChatRequest,
        limits: Limits,
        hold: Hold,
        call_id: str,
        deadline: float,
        *,
        retry_timeouts: bool,
    ) -> None:
        self.entry, self.request, self.limits = entry, request, limits
        self.hold, self.call_id, self.deadline = hold, call_id, deadline
        self.retry_timeouts = retry_timeouts
        self.started = False
        self.text: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.usage: Usage | None = None
        self.billed = Usage(0, 0)  # of attempts that failed with a billed reply
        self.finish = "stop"
        self.failure: BackendError | None = None
        self.attempts = 0
        self.began = time.monotonic()
        self.cost = 0.0
        # An upstream that streams on past max_tokens (it ignored it) is stopped
        # soon after: reading on would pay for output nobody asked for.
        self.cap = reply_cap(request.max_tokens or limits.default_max_tokens)
        self.sent = 0  # output tokens relayed, counted

    async def run(
        self, backoff: Callable[[int, BackendError], float]
    ) -> AsyncGenerator[StreamDelta, None]:
        card, limits = self.entry.card, self.limits
        for attempt in range(1, limits.retries + 2):
            self.attempts = attempt
            pieces = self.entry.backend.stream(self.request).__aiter__()
            try:
                while True:
                    # The piece is awaited in this task, not in one wait_for would
                    # make: a reader who leaves cancels this task, and the backend's
                    # stream must have stopped running before it is closed below.
                    left = self.deadline - time.monotonic()
                    wait = min(limits.call_timeout_s, left)
                    try:
                        async with asyncio.timeout(max(wait, 0.0)):
                            delta = await anext(pieces)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        what = (
                            f"sent nothing for {wait:.1f} s"
                            if wait == limits.call_timeout_s
                            else "ran past the episode's time limit "
                            f"({limits.episode_timeout_s:g} s)"
                        )
                        raise BackendTimeoutError(
                            f"{card.id} {what}", model=card.id
                        ) from None
                    tokens = count_tokens(delta.text) if delta.text else 0
                    over = self.sent + tokens > self.cap
                    if over:  # cut to the cap; the stream ends "length"
                        text = first_tokens(delta.text, self.cap - self.sent)
                        delta = replace(delta, text=text, finish_reason="length")
                    self._take(delta)
                    if delta.text or delta.tool_calls or delta.finish_reason:
                        self.started = True
                        yield delta
                    self.sent = min(self.sent + tokens, self.cap)
                    if over:
                        break
            except BackendError as exc:
                self.failure = exc
                if exc.billed is not None and self.started:
                    self.usage = exc.billed  # reported before it failed: not counted
                elif exc.billed is not None:
                    self.billed = self.billed + exc.billed
            except BaseException:
                self.settle()
                raise
            else:
                self.failure = None
                self.settle()
                return
            finally:
                closing = getattr(pieces, "aclose", None)
                if closing is not None:
                    await closing()
            if self.started or not self.failure.retryable or attempt > limits.retries:
                break
            timed_out = isinstance(self.failure, BackendTimeoutError)
            if timed_out and not self.retry_timeouts:
                break
            await asyncio.sleep(backoff(attempt, self.failure))
        self.settle()

    def _take(self, delta: StreamDelta) -> None:
        self.text.append(delta.text)
        self.tool_calls.extend(delta.tool_calls)
        if delta.usage is not None:
            self.usage = delta.usage
        if delta.finish_reason is not None:
            self.finish = delta.finish_reason

    def _counted(self) -> Usage:
        """The usage reported, or counted where none (or a negative one) was,
        with that of any reply billed without an answer."""
        usage = self.usage
        if usage is not None and min(usage.input_tokens, usage.output_tokens) >= 0:
            return usage + self.billed
        if not self.started:
            return self.billed
        return counted_usage(self.request, "".join(self.text)) + self.billed

    def settle(self) -> None:
        if not self.hold.open:
            return
        usage = self._counted()
        quote = getattr(self.entry.backend, "quote", None)
        known = quote(self.request) if callable(quote) and self.started else None
        if isinstance(known, float):
            self.cost = known
        else:
            self.cost = self.entry.card.cost(usage.input_tokens, usage.output_tokens)
        self.hold.settle(self.cost)

    def record(self) -> CallRecord:
        usage = self._counted()
        failure = self.failure
        return CallRecord(
            model=self.entry.card.id,
            response="".join(self.text) if failure is None else None,
            usage=usage,
            cost_usd=self.cost,
            latency_s=time.monotonic() - self.began,
            finish_reason=self.finish if failure is None else "error",
            call_id=self.call_id,
            error=None if failure is None else f"{failure.kind}: {failure}",
            attempts=self.attempts,
            tool_calls=tuple(self.tool_calls),
        )
