"""The HTTP face of the gateway: OpenAI's chat-completions API on FastAPI.

Endpoints: ``POST /v1/chat/completions`` (plain or server-sent events),
``GET /v1/models`` and ``/v1/models/<name>``, ``GET /health`` (200 once the router
is loaded, 503 before or if it failed) and ``GET /metrics`` (Prometheus).

What the caller learns about routing, on every answer:

- the body's ``xrouter`` field: ``request_id``, ``router``, ``strategy``, ``models``
  (those whose text is the answer), ``lambda``, ``cost_usd`` (the episode's, every
  call and the router's own included) and ``calls`` (model, tokens, cost, latency,
  error of each call); every streamed chunk carries the same field, its
  ``cost_usd`` being what the calls that have ended cost (the call being streamed
  is billed when it ends), the last chunk's the total;
- headers ``x-xrouter-request-id``, ``x-xrouter-router``, ``x-xrouter-strategy``,
  ``x-xrouter-models`` and ``x-xrouter-cost-usd`` (a stream's headers leave out
  what is not known before its first token: models and cost);
- ``usage``: the tokens of every call of the episode.

Every error is an OpenAI-style JSON body ``{"error": {"message", "type", "param",
"code"}}`` with a 4xx status for anything the client sent (its field named in
``param`` and the message), 402 when the request's own cost ceiling refuses it
or a call is larger than a whole limit (a retry cannot succeed), 429 when a daily
limit refuses it, 400 when the models reject it as given, 502/504 when every
upstream failed, 503 before start-up (see ``failures``). An error for a request
that reached the models also carries the ``xrouter`` field and the
``x-xrouter-cost-usd`` header: its failed calls may have been billed. No input
gets a 5xx. A client that leaves before its body or its stream ends is counted
(and a stream logged) with status 499, which nobody receives; so is one that hangs
up while its plain request runs, and no call, retry or fallback starts for it
after that (those under way end and are booked).

A routed stream from the policy router relays its first choice's tokens as they
arrive and does not escalate; the header ``x-xrouter-stream: episode`` (or
``router.stream: episode`` in the config) runs the whole episode first, as an
answer that does not stream would, and then sends its answer in pieces.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from xrouter.core.errors import BackendError, BudgetExceededError
from xrouter.orchestrator.budget import Budget, Ledger
from xrouter.serve.config import GatewayConfig
from xrouter.serve.failures import CEILING, RequestError, failure_of
from xrouter.serve.gateway import Gateway
from xrouter.serve.metrics import CONTENT_TYPE_LATEST, Metrics
from xrouter.serve.schema import ChatRequestBody, error_body, validation_message
from xrouter.serve.service import Service, error_response

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
# How long a request waits for the gateway to finish starting before a 503: the
# pool and the router load in seconds, the default policy trains in minutes.
START_WAIT_S = 15.0
STREAM_HEADER = "x-xrouter-stream"
# Deeper bodies are refused: nothing the API takes nests this far, and the
# steps after parsing (validation, the upstream's JSON) recurse.
_MAX_DEPTH = 64
# Digits an integer of the body may have (seeds and token counts need far fewer).
_MAX_DIGITS = 100
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def create_app(config: GatewayConfig, gateway: Gateway | None = None) -> FastAPI:
    """The gateway's ASGI app; loading starts when the app starts."""
    gateway = gateway or Gateway(config)
    service = Service(config, gateway, Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.open()
        # Loading may take minutes the first time (training the default policy):
        # the server listens meanwhile, /health says "starting", and requests
        # wait up to START_WAIT_S for it, then get 503 with Retry-After.
        starting = asyncio.create_task(gateway.start())
        try:
            yield
        finally:
            if not starting.done():
                starting.cancel()
            await gateway.aclose()
            service.close()

    app = FastAPI(title="xrouter gateway", lifespan=lifespan, docs_url=None)
    app.state.service = service

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        if request.url.path != CHAT_PATH:
            return error_response(exc)
        key = getattr(request.state, "key", None)
        request_id = await service.refused(
            exc,
            key.name if key is not None else None,
            getattr(request.state, "model", ""),
        )
        return error_response(exc, request_id)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return JSONResponse(error_body(message, kind), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return JSONResponse(
            error_body(
                "internal error; the gateway log has the details", "server_error"
            ),
            status_code=500,
        )

    @app.get("/health")
    async def health() -> JSONResponse:
        if gateway.failed is not None:
            return JSONResponse({"status": "failed", "error": gateway.failed}, 503)
        if not gateway.ready.is_set():
            return JSONResponse({"status": "starting"}, 503)
        state: dict[str, object] = {
            "status": "ok",
            "router": gateway.router_name,
            "models": gateway.models(),
        }
        log = service.log
        if log is not None and log.problem is not None:  # answers go on; rows wait
            state["request_log"] = {
                "waiting_rows": log.waiting,
                "problem": log.problem,
                "dropped_rows": log.dropped,
            }
            if log.full:  # chat requests get 503 until the rows are written
                state["status"] = "log_full"
                return JSONResponse(state, 503)
        return JSONResponse(state)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        service.authenticate(request)
        await gateway.wait_ready(START_WAIT_S)
        data = [_model_object(name) for name in gateway.models()]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/v1/models/{model:path}")
    async def model(model: str, request: Request) -> JSONResponse:
        service.authenticate(request)
        await gateway.wait_ready(START_WAIT_S)
        target = gateway.target(model)  # an unknown name: 404, as a chat gets
        name = target.model if target.model is not None else model.strip()
        return JSONResponse(_model_object(name))

    @app.post(CHAT_PATH)
    async def chat(request: Request) -> Response:
        started = time.monotonic()
        key = request.state.key = service.authenticate(request)
        body = await _read_body(request, config.max_body_bytes)
        request.state.model = body.model
        await gateway.wait_ready(START_WAIT_S)
        outcome = gateway.new_outcome(gateway.target(body.model))
        outcome.started = started
        budget = Budget(
            [*service.ledgers(key), *_ceiling(request, config.request_limit_header)]
        )
        await service.begin(outcome, body, key)
        if body.stream:
            mode = _stream_mode(request, config.router.stream)
            return await service.stream(
                outcome, body, key, budget, whole_episode=mode == "episode"
            )
        # A client that hangs up stops the spending: no call, retry, fallback or
        # turn starts after it; the calls under way end and are booked.
        client = Ledger("request", None)
        watch = asyncio.create_task(_hang_up(request, client))
        failure: RequestError | None = None
        try:
            await gateway.complete(
                outcome, body.conversation(), body.caller(), budget + Budget([client])
            )
        except (BackendError, BudgetExceededError) as exc:
            failure = failure_of(exc, config.request_limit_header)
        except Exception:
            logger.exception("unexpected error on request %s", outcome.request_id)
            return await service.crashed(outcome, body, key)
        finally:
            watch.cancel()
        if client.closed:  # what failed, or the answer, reaches nobody
            failure = RequestError(499, client.closed, code="client_closed")
        if failure is not None:
            await service.finish(outcome, body, key, failure.status, failure)
            return error_response(failure, outcome.request_id, outcome)
        await service.finish(outcome, body, key, 200)
        return JSONResponse(
            service.completion_body(outcome), headers=service.headers(outcome)
        )

    return app


_HUNG_UP = "the client hung up before its answer was ready"


async def _hang_up(request: Request, client: Ledger) -> None:
    """Close ``client`` when the client of ``request`` (its body read) hangs up."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    client.close(_HUNG_UP)


async def _read_body(request: Request, limit: int) -> ChatRequestBody:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the request body is over {limit:,} bytes")
    raw = bytearray()
    try:
        async for piece in request.stream():
            raw += piece
            if len(raw) > limit:
                raise RequestError(413, f"the request body is over {limit:,} bytes")
    except ClientDisconnect:
        raise RequestError(
            499, "the client left before sending its whole body", code="client_closed"
        ) from None
    data = _parse_json(bytes(raw))
    if not isinstance(data, dict):
        raise RequestError(400, "the request body must be a JSON object")
    try:
        return ChatRequestBody.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise RequestError(400, message, param=param) from None


def _parse_json(raw: bytes) -> Any:
    """The body's JSON: UTF-8, finite numbers, nested at most ``_MAX_DEPTH`` deep,
    no lone surrogates (which no later step could encode)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(
            400, f"the request body is not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        data = json.loads(
            text,
            parse_float=_finite,
            parse_int=_bounded_int,
            parse_constant=_no_constant,
        )
    except RecursionError:
        raise _nested() from None
    except ValueError as exc:
        raise RequestError(400, f"the request body is not valid JSON: {exc}") from None
    # A body with fewer brackets than the limit cannot nest deeper than it.
    if raw.count(b"[") + raw.count(b"{") > _MAX_DEPTH and _too_deep(data):
        raise _nested()
    if _ESCAPED_SURROGATE.search(text):
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(
                400,
                "the request body has a lone UTF-16 surrogate escape (\\ud800 to "
                "\\udfff without its pair), which is not text",
            ) from None
    return data


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:32]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    # No field takes more than a few digits; Python refuses past 4,300 anyway,
    # with advice meant for programmers.
    digits = len(text.lstrip("-"))
    if digits > _MAX_DIGITS:
        raise ValueError(f"an integer of {digits:,} digits is too long")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _nested() -> RequestError:
    return RequestError(
        400, f"the request body nests arrays or objects over {_MAX_DEPTH} deep"
    )


def _too_deep(data: Any) -> bool:
    stack = [(data, 1)] if isinstance(data, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _stream_mode(request: Request, default: str) -> str:
    """How a routed stream runs: the ``x-xrouter-stream`` header, else the
    config's ``router.stream``."""
    given = request.headers.get(STREAM_HEADER)
    if given is None:
        return default
    if given not in ("live", "episode"):
        raise RequestError(
            400,
            f"header {STREAM_HEADER} must be 'live' (the policy's first choice "
            "streams as it comes) or 'episode' (the whole episode runs, then its "
            f"answer streams), got {given[:64]!r}",
        )
    return given


def _model_object(name: str) -> dict[str, object]:
    """A model as OpenAI's models endpoints describe one."""
    created = int(time.time())
    return {"id": name, "object": "model", "created": created, "owned_by": "xrouter"}


def _ceiling(request: Request, header: str) -> list[Ledger]:
    """The per-request cost ceiling a header asks for, as a ledger."""
    values = request.headers.getlist(header)
    if not values:
        return []
    if len(values) > 1:
        raise RequestError(
            400,
            f"header {header} is given {len(values)} times; give one cost ceiling",
            param=header,
        )
    given = values[0]
    try:
        usd = float(given)
    except ValueError:
        usd = -1.0
    if not math.isfinite(usd) or usd < 0:
        raise RequestError(
            400,
            f"header {header} must be a number of USD >= 0, got {given[:40]!r}"
            + (f" ({len(given):,} characters)" if len(given) > 40 else ""),
            param=header,
        )
    return [Ledger(CEILING, usd)]
