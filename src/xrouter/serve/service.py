"""Per-request bookkeeping of the gateway: keys, budgets, log, metrics, bodies.

The request log row of a request is committed before its answer leaves (for a
stream: before its last event), so an acknowledged request is never lost.

What the log holds: every request to the chat endpoint, whatever came of it
(in flight, until it ends; answered; refused by a daily limit, 429, or the
request's ceiling, 402; rejected by the models, 400; failed upstream, 502/504; a
stream the client left before its end, 499; refused before any model was asked
for its API key, body, model name or a header, 401/400/404/413, under router
``none``). Each error response carries the ``x-xrouter-request-id`` of its log
row.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from xrouter.core.errors import BackendError, BudgetExceededError
from xrouter.orchestrator.budget import Budget, Ledger
from xrouter.serve.config import GatewayConfig
from xrouter.serve.failures import RequestError, failure_of
from xrouter.serve.gateway import Gateway, Outcome, aclose, new_request_id
from xrouter.serve.keys import ApiKey, DailyLimits, KeyRing
from xrouter.serve.logwriter import LogWriter
from xrouter.serve.metrics import Metrics
from xrouter.serve.requestlog import IN_FLIGHT, CallEntry, RequestEntry, RequestLog
from xrouter.serve.schema import ChatRequestBody, error_body

__all__ = ["Service", "error_response"]

logger = logging.getLogger(__name__)


class Service:
    """Keys, spend limits, the request log and metrics of one gateway."""

    def __init__(
        self, config: GatewayConfig, gateway: Gateway, metrics: Metrics
    ) -> None:
        self.config = config
        self.gateway = gateway
        self.metrics = metrics
        self.keys = KeyRing(config.keys)
        self.log: LogWriter | None = None
        self.limits: DailyLimits | None = None

    def open(self) -> None:
        log = RequestLog(self.config.log_path, owner=True)
        try:
            self.log = LogWriter(log, limit=self.config.log.max_held)
        except BaseException:
            log.close()
            raise
        self.metrics.watch(self.log)
        self.limits = DailyLimits(self.config.daily_limit_usd, self.log)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    async def _write(self, entry: RequestEntry) -> bool:
        """Log ``entry`` off the event loop (a locked log waits in a thread);
        whether the row is kept (see ``logwriter``)."""
        if self.log is None:
            return False
        return await asyncio.to_thread(self.log.write, entry)

    # -- keys and budgets -------------------------------------------------------

    def authenticate(self, request: Request) -> ApiKey | None:
        if self.keys.open:
            return None
        given = request.headers.get("authorization", "")
        raw = given[7:].strip() if given.lower().startswith("bearer ") else None
        key = self.keys.authenticate(raw)
        if key is None:
            raise RequestError(
                401,
                "missing or unknown API key: send it as 'Authorization: Bearer KEY'",
                code="invalid_api_key",
            )
        return key

    def ledgers(self, key: ApiKey | None) -> list[Ledger]:
        assert self.limits is not None
        return self.limits.ledgers(key)

    # -- answers ------------------------------------------------------------------

    def headers(self, outcome: Outcome, final: bool = True) -> dict[str, str]:
        headers = {
            "x-xrouter-request-id": outcome.request_id,
            "x-xrouter-router": outcome.router,
        }
        if outcome.strategy:
            headers["x-xrouter-strategy"] = outcome.strategy
        if final:
            headers["x-xrouter-models"] = ",".join(outcome.answered_by)
            headers["x-xrouter-cost-usd"] = cost_header(outcome)
        return headers

    def completion_body(self, outcome: Outcome) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": outcome.answer}
        if outcome.tool_calls:
            # As OpenAI answers: no text beside the calls is null, not "".
            message["content"] = outcome.answer or None
            message["tool_calls"] = list(outcome.tool_calls)
        return {
            "id": outcome.request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": outcome.answered_by[0] if outcome.answered_by else "xrouter",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": outcome.finish_reason,
                }
            ],
            "usage": _usage(outcome),
            "xrouter": outcome.metadata(),
        }

    async def stream(
        self,
        outcome: Outcome,
        body: ChatRequestBody,
        key: ApiKey | None,
        budget: Budget,
        *,
        whole_episode: bool = False,
    ) -> Response:
        """A server-sent-events answer (see ``Gateway.stream``). A refusal or
        failure before the first piece is a plain HTTP error; after it, an error
        event ends the stream."""
        conversation, caller = body.conversation(), body.caller()
        pieces = self.gateway.stream(
            outcome, conversation, caller, budget, whole_episode=whole_episode
        )
        try:
            first = await anext(pieces, None)
        except (BackendError, BudgetExceededError) as exc:
            failure = failure_of(exc, self.config.request_limit_header)
            await self.finish(outcome, body, key, failure.status, failure, stream=True)
            return error_response(failure, outcome.request_id, outcome)
        except Exception:
            logger.exception("unexpected error on request %s", outcome.request_id)
            return await self.crashed(outcome, body, key)

        async def left() -> None:
            """Log a stream whose events never ran to their end (the client left
            before the first, or while its last row was being written)."""
            if not outcome.logged:
                failure = RequestError(
                    499, "the stream ended before its answer did", code="client_closed"
                )
                await self.finish(outcome, body, key, 499, failure, stream=True)

        return _EventStream(
            self._events(outcome, body, key, pieces, first),
            left,
            media_type="text/event-stream",
            headers={**self.headers(outcome, final=False), "cache-control": "no-cache"},
        )

    async def _events(
        self,
        outcome: Outcome,
        body: ChatRequestBody,
        key: ApiKey | None,
        pieces: AsyncIterator[str],
        first: str | None,
    ) -> AsyncIterator[str]:
        chunks = _Chunks(outcome)
        try:
            yield chunks.event({"role": "assistant", "content": ""})
            if first is not None:
                yield chunks.event({"content": first})
            async for text in pieces:
                yield chunks.event({"content": text})
        except (BackendError, BudgetExceededError) as exc:
            failure = failure_of(exc, self.config.request_limit_header)
            await self.finish(outcome, body, key, 200, failure, stream=True)
            error = error_body(str(failure), failure.kind, code=failure.code)
            error["xrouter"] = outcome.metadata()  # what the text sent cost
            yield f"data: {json.dumps(error)}\n\n"
            yield "data: [DONE]\n\n"
            return
        except BaseException as exc:
            # The client left (the server closes or cancels this generator) or
            # something broke: stop the model's stream and log what it cost.
            gone = isinstance(exc, GeneratorExit | asyncio.CancelledError)
            status, code = (499, "client_closed") if gone else (500, "server_error")
            failure = RequestError(
                status, "the stream ended before its answer did", code=code
            )
            with anyio.CancelScope(shield=True):
                await aclose(pieces)
                await self.finish(outcome, body, key, status, failure, stream=True)
            raise
        final: dict[str, Any] = {}
        if outcome.tool_calls:
            final["tool_calls"] = [
                {"index": k, **call} for k, call in enumerate(outcome.tool_calls)
            ]
        await self.finish(outcome, body, key, 200, stream=True)
        yield chunks.event(final, outcome.finish_reason)
        if body.stream_options is not None and body.stream_options.include_usage:
            yield chunks.usage()
        yield "data: [DONE]\n\n"

    async def crashed(
        self, outcome: Outcome, body: ChatRequestBody, key: ApiKey | None
    ) -> JSONResponse:
        """A 500 for a request the gateway failed on unexpectedly, logged under
        its id (the caller logs the exception)."""
        failure = RequestError(
            500,
            "internal error; the gateway log has the details",
            "server_error",
            code="server_error",
        )
        await self.finish(outcome, body, key, 500, failure, stream=body.stream)
        return error_response(failure, outcome.request_id)

    # -- the record of a request ---------------------------------------------------

    async def refused(
        self, failure: RequestError, key_name: str | None = None, model: str = ""
    ) -> str:
        """Count and log a request refused before any model was asked (a bad
        key, body or model, the gateway not ready); returns its request id, or ""
        when its row is not kept (while the log cannot be written)."""
        kind = failure.code or failure.kind
        self.metrics.refused(failure.status, kind)
        request_id = new_request_id()
        if self.log is None:
            return request_id
        entry = RequestEntry(
            request_id=request_id,
            ts=time.time(),
            key_name=key_name,
            router="none",
            requested_model=model,
            strategy="none",
            answered_by=(),
            calls=(),
            input_tokens=0,
            output_tokens=0,
            cost_usd=0.0,
            latency_s=0.0,
            status=failure.status,
            outcome=kind,
            stream=False,
            error=str(failure),
        )
        return request_id if await self._write(entry) else ""

    async def begin(
        self, outcome: Outcome, body: ChatRequestBody, key: ApiKey | None
    ) -> None:
        """Log the request as in flight, before any model is called: a gateway
        stopped mid-request leaves the row, which its next start marks
        interrupted (see ``requestlog``). Refused (503) while the log holds back
        as many rows as it may (see ``logwriter``)."""
        if self.log is None:
            return
        if self.log.full:
            raise RequestError(
                503,
                "the gateway cannot write its request log, and takes no new "
                "requests until it can; try again later",
                "server_error",
                code="log_unwritable",
                retry_after_s=5,
            )
        entry = self._entry(outcome, body, key, 0, None, body.stream)
        await self._write(replace(entry, outcome=IN_FLIGHT, latency_s=0.0))

    async def finish(
        self,
        outcome: Outcome,
        body: ChatRequestBody,
        key: ApiKey | None,
        status: int,
        failure: RequestError | None = None,
        stream: bool = False,
    ) -> None:
        """Log the request durably and count it in the metrics."""
        entry = self._entry(outcome, body, key, status, failure, stream)
        # Counted first: a log that cannot be written does not hide the request
        # from the metrics.
        self.metrics.observe(
            outcome.router,
            status,
            entry.latency_s,
            outcome.calls,
            None if failure is None else str(failure.code or failure.kind),
        )
        await self._write(entry)
        outcome.logged = True

    def _entry(
        self,
        outcome: Outcome,
        body: ChatRequestBody,
        key: ApiKey | None,
        status: int,
        failure: RequestError | None,
        stream: bool,
    ) -> RequestEntry:
        seconds = time.monotonic() - outcome.started
        usage = _usage(outcome)
        prompt = None
        if self.config.log.keep_prompts:
            prompt = json.dumps(
                [m.model_dump(exclude_none=True) for m in body.messages]
            )
        return RequestEntry(
            request_id=outcome.request_id,
            # When it arrived: its spend belongs to that day, as its daily limits
            # were charged then, even if it ends after midnight.
            ts=time.time() - seconds,
            key_name=key.name if key is not None else None,
            router=outcome.router,
            requested_model=body.model,
            strategy=outcome.strategy or "none",
            answered_by=outcome.answered_by,
            calls=tuple(
                CallEntry(
                    c.model,
                    c.usage.input_tokens,
                    c.usage.output_tokens,
                    c.cost_usd,
                    c.latency_s,
                    c.error,
                    c.by_router,
                )
                for c in outcome.calls
            ),
            input_tokens=usage["prompt_tokens"],
            output_tokens=usage["completion_tokens"],
            cost_usd=outcome.cost_usd,
            latency_s=seconds,
            status=status,
            outcome="ok" if failure is None else str(failure.code or failure.kind),
            stream=stream,
            prompt=prompt,
            error=None if failure is None else str(failure),
        )


class _EventStream(StreamingResponse):
    """A streamed answer whose events are closed when the response ends, also
    when the client left midway: the model's stream stops and the request is
    logged then, not when the garbage collector finds the generator."""

    def __init__(
        self,
        events: AsyncIterator[str],
        left: Callable[[], Awaitable[None]],
        **options: Any,
    ) -> None:
        super().__init__(events, **options)
        self.left = left

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await aclose(self.body_iterator)
                await self.left()


class _Chunks:
    """The ``chat.completion.chunk`` events of one streamed answer."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.created = int(time.time())

    def _base(self) -> dict[str, Any]:
        outcome = self.outcome
        return {
            "id": outcome.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": outcome.answered_by[0] if outcome.answered_by else "xrouter",
        }

    def event(self, delta: dict[str, Any], finish: str | None = None) -> str:
        data = self._base()
        data["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        data["xrouter"] = self.outcome.metadata()
        return f"data: {json.dumps(data)}\n\n"

    def usage(self) -> str:
        """The last chunk a client asks for with ``stream_options.include_usage``."""
        data = self._base()
        data["choices"], data["usage"] = [], _usage(self.outcome)
        data["xrouter"] = self.outcome.metadata()
        return f"data: {json.dumps(data)}\n\n"


def cost_header(outcome: Outcome) -> str:
    """What the request's calls cost, as the ``x-xrouter-cost-usd`` header."""
    return f"{outcome.cost_usd:.10f}"


def error_response(
    failure: RequestError, request_id: str = "", outcome: Outcome | None = None
) -> JSONResponse:
    """A refusal as its OpenAI-style JSON error, with the request id its log
    entry has. A request that got as far as the models (``outcome``) also
    carries what its calls cost, as an answer would: a failed call may be billed.
    """
    body = error_body(str(failure), failure.kind, failure.param, failure.code)
    headers = {"x-xrouter-request-id": request_id} if request_id else {}
    if outcome is not None:
        body["xrouter"] = outcome.metadata()
        headers["x-xrouter-cost-usd"] = cost_header(outcome)
    if failure.retry_after_s is not None:
        headers["retry-after"] = str(failure.retry_after_s)
    return JSONResponse(body, status_code=failure.status, headers=headers)


def _usage(outcome: Outcome) -> dict[str, int]:
    tokens_in = sum(c.usage.input_tokens for c in outcome.calls)
    tokens_out = sum(c.usage.output_tokens for c in outcome.calls)
    return {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }
