"""One model's streamed call under the orchestrator's guard (see ``calls``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from typing import Any

from xrouter.backends.base import counted_usage
from xrouter.backends.pool import PoolEntry
from xrouter.core.errors import BackendError, BackendTimeoutError
from xrouter.core.types import CallRecord, ChatRequest, StreamDelta, Usage
from xrouter.orchestrator.budget import Hold
from xrouter.orchestrator.limits import Limits, reply_cap
from xrouter.records.tokens import count_tokens, first_tokens

__all__ = ["Streamed"]


class Streamed:
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
