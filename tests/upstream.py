"""A real OpenAI-compatible chat server on loopback, with faults on demand, for tests.

``UpstreamServer`` serves a small FastAPI app with uvicorn in a background thread on
``127.0.0.1`` (a free port), until ``stop()`` or the end of its ``with`` block::

    with UpstreamServer() as server:          # server.base_url: http://127.0.0.1:P/v1
        server.script(["500", "429", "ok"])   # the next three requests, in order
        ...                                   # call server.base_url with any client
        server.requests                       # JSON bodies received, in order
        server.headers                        # and their headers (lower-case names)
        server.attempts                       # how many chat requests came in

As a pytest fixture (one server per module, a clean slate per test)::

    @pytest.fixture(scope="module")
    def running() -> Iterator[UpstreamServer]:
        with UpstreamServer() as server:
            yield server

    @pytest.fixture
    def server(running: UpstreamServer) -> UpstreamServer:
        running.reset()
        return running

Endpoints: ``POST /v1/chat/completions`` (plain, or SSE when ``stream`` is true:
``data: {chunk}`` events, a last chunk with usage when ``stream_options.include_usage``,
then ``data: [DONE]``) and ``GET /v1/models`` (one model, ``upstream-echo``).

Answers are deterministic: ``"echo: <last user message>"``, cut to ``max_tokens``
words (finish reason ``length``); usage counts words (prompt: every message). With
``tool_choice`` ``"required"`` or naming a function, the answer is one call of that
(or the first) tool, with arguments ``{"input": <last user message>}``. Each answer
waits ``latency_s`` first (0 by default; a stand-in for model time in benchmarks).

Each request takes the next fault of the script, or ``server.mode`` once the script
is used up (``"ok"`` unless set). Faults (names in ``FAULTS``):

- ``ok``: the answer above.
- ``500``: HTTP 500 with an OpenAI error body.
- ``429``: HTTP 429 with ``Retry-After: <server.retry_after>`` (``"0"``).
- ``400``: HTTP 400 with an OpenAI error body (``invalid_request_error``).
- ``401``: HTTP 401, an invalid API key.
- ``stall``: wait ``stall_s`` seconds (5) before answering; ends early when the
  server stops or the client hangs up.
- ``cut``: a stream sends its first two text chunks, a plain answer the first bytes
  of its JSON, then the connection is closed mid-body.
- ``drop``: the connection is closed before any response is sent.
- ``garbage``: HTTP 200 with an HTML page, not JSON (a wrong base_url).
- ``error_event``: a stream sends one chunk then an SSE ``{"error": ...}`` event; a
  plain answer is HTTP 200 with an error body and no choices.
- ``no_usage``: the answer, with no usage in it (none in a stream either).
- ``drip``: a stream waits ``DRIP_S`` seconds before each text chunk.
- ``negative_usage``: the answer, with a usage of -1000 prompt tokens.
- ``no_choices``: HTTP 200 with the answer's usage and an empty list of choices
  (a reply billed that holds no answer); a stream sends that usage alone.
- ``no_choices_huge``: the same with 10**13 prompt tokens, more than any call has.
- ``usage_cut``: a stream sends the answer's usage, then the connection is closed;
  a stream ``text_usage``: the answer's text and usage, with no finish reason.
- ``sse_garbage``: a stream whose one event is not JSON.
- ``unbounded``: the answer said 50 times over, whatever ``max_tokens`` asked for
  (an upstream that ignores it), billed for all of it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any, Final, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

__all__ = ["DRIP_S", "FAULTS", "MODEL", "UpstreamServer"]

FAULTS: Final[tuple[str, ...]] = (
    "ok",
    "500",
    "429",
    "400",
    "401",
    "stall",
    "cut",
    "drop",
    "garbage",
    "error_event",
    "no_usage",
    "drip",
    "negative_usage",
    "no_choices",
    "no_choices_huge",
    "usage_cut",
    "text_usage",
    "sse_garbage",
    "unbounded",
)
DRIP_S: Final = 0.6
MODEL: Final = "upstream-echo"
_CONN = "upstream.connection"  # scope key: uvicorn's request cycle, to cut it


def serve_in_thread(
    app: Any, what: str, *, lifespan: Literal["on", "off"], timeout_s: float = 10.0
) -> tuple[uvicorn.Server, threading.Thread]:
    """``app`` served by uvicorn on 127.0.0.1 (a free port) in a daemon thread;
    returns once it listens. ``what`` names the server in errors."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http="h11",
        ws="none",
        loop="asyncio",
        lifespan=lifespan,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=what, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            stop_serving(server, thread, what)
            raise RuntimeError(f"the {what} did not start; see its log")
        time.sleep(0.005)
    return server, thread


def stop_serving(
    server: uvicorn.Server | None,
    thread: threading.Thread | None,
    what: str,
    timeout_s: float = 15.0,
) -> None:
    """Ask ``server`` to exit and wait for its thread."""
    if server is not None:
        server.should_exit = True
    if thread is not None:
        thread.join(timeout=timeout_s)
        if thread.is_alive():
            raise RuntimeError(f"the {what} did not stop in {timeout_s:g} s")


class UpstreamServer:
    """An OpenAI-compatible server on 127.0.0.1 with scripted faults (see module)."""

    def __init__(
        self, *, mode: str = "ok", stall_s: float = 5.0, latency_s: float = 0.0
    ) -> None:
        self._defaults = (_checked(mode), stall_s, latency_s)
        self._mode, self.stall_s, self.latency_s = self._defaults
        self.retry_after = "0"
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._script: deque[str] = deque()
        self._lock = threading.Lock()
        self._stopping = False
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        if self._server is None:
            raise RuntimeError("UpstreamServer is not started: call start() first")
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def mode(self) -> str:
        """The fault of every request once the script is used up."""
        return self._mode

    @mode.setter
    def mode(self, fault: str) -> None:
        self._mode = _checked(fault)

    @property
    def attempts(self) -> int:
        """How many chat completion requests arrived (faulted ones included)."""
        with self._lock:
            return len(self.requests)

    def script(self, faults: Iterable[str]) -> None:
        """Faults for the next requests, one each, in order (replaces any left)."""
        checked = [_checked(fault) for fault in faults]
        with self._lock:
            self._script = deque(checked)

    def reset(self) -> None:
        """Forget requests and script; mode and knobs back to the constructor's."""
        with self._lock:
            self.requests.clear()
            self.headers.clear()
            self._script.clear()
        self.mode, self.stall_s, self.latency_s = self._defaults
        self.retry_after = "0"

    def start(self) -> UpstreamServer:
        """Serve in a background thread; returns once the port is listening."""
        if self._server is not None:
            raise RuntimeError("UpstreamServer is already started")
        self._stopping = False
        self._server, self._thread = serve_in_thread(
            _Cuttable(_app(self)), "upstream test server", lifespan="off"
        )
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread to end (in-flight stalls end too)."""
        self._stopping = True
        stop_serving(self._server, self._thread, "upstream test server", 10.0)
        self._server = self._thread = None

    def __enter__(self) -> UpstreamServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _next_fault(self, body: dict[str, Any], headers: dict[str, str]) -> str:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            return self._script.popleft() if self._script else self.mode

    async def _wait(self, seconds: float, request: Request) -> None:
        """Sleep, but stop early when the server stops or the client is gone."""
        conn = request.scope.get(_CONN)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stopping:
            if getattr(conn, "disconnected", False):
                return
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))


def _checked(fault: str) -> str:
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; the faults are {', '.join(FAULTS)}")
    return fault


class _Cuttable:
    """ASGI wrapper that puts uvicorn's request cycle in the scope, to cut it."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope[_CONN] = getattr(send, "__self__", None)
        await self.app(scope, receive, send)


async def _cut(request: Request) -> None:
    """Close the client's connection now (after what was sent) and wait till gone."""
    conn = request.scope.get(_CONN)
    transport = getattr(conn, "transport", None)
    if transport is None:  # not uvicorn's h11 cycle: let uvicorn cut it instead
        raise ConnectionAbortedError("upstream fault: connection cut")
    transport.close()
    for _ in range(200):
        if getattr(conn, "disconnected", True):
            return
        await asyncio.sleep(0.005)


def _error(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def _words(text: str) -> int:
    return len(text.split())


def _answer(
    body: dict[str, Any], bounded: bool = True
) -> tuple[str, str, list[dict[str, Any]], int]:
    """Text, finish reason, tool calls and prompt tokens of the answer to ``body``
    (said 50 times over, and not cut to ``max_tokens``, unless ``bounded``)."""
    messages = body.get("messages") or []
    contents = [str(m.get("content") or "") for m in messages if isinstance(m, dict)]
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    question = users[-1] if users else ""
    prompt_tokens = sum(_words(content) for content in contents)
    choice, tools = body.get("tool_choice"), body.get("tools") or []
    if tools and (choice == "required" or isinstance(choice, dict)):
        name = tools[0]["function"]["name"]
        if isinstance(choice, dict):
            name = choice.get("function", {}).get("name", name)
        call = {
            "id": "call_upstream_1",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps({"input": question})},
        }
        return "", "tool_calls", [call], prompt_tokens
    words = f"echo: {question}".split() * (1 if bounded else 50)
    limit = body.get("max_tokens")
    finish = "stop"
    if bounded and isinstance(limit, int) and len(words) > limit:
        words, finish = words[:limit], "length"
    return " ".join(words), finish, [], prompt_tokens


def _app(upstream: UpstreamServer) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": MODEL, "object": "model", "created": 0, "owned_by": "tests"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        fault = upstream._next_fault(body, dict(request.headers))
        if fault == "drop":
            await _cut(request)
            return Response(status_code=500)  # never sent: the connection is gone
        if fault == "500":
            return _error(500, "upstream fault: internal error", "server_error")
        if fault == "429":
            return _error(
                429,
                "upstream fault: rate limit reached",
                "rate_limit_error",
                {"Retry-After": upstream.retry_after},
            )
        if fault == "400":
            return _error(400, "upstream fault: bad request", "invalid_request_error")
        if fault == "401":
            return _error(401, "upstream fault: invalid API key", "invalid_api_key")
        if fault == "garbage":
            html = "<html><body>upstream fault: not an API</body></html>"
            return Response(html, media_type="text/html")
        if fault == "stall":
            await upstream._wait(upstream.stall_s, request)
        if upstream.latency_s:
            await upstream._wait(upstream.latency_s, request)
        if body.get("stream"):
            events = _events(body, fault, request)
            return StreamingResponse(events, media_type="text/event-stream")
        if fault == "error_event":
            return _error(200, "upstream fault: error in a 200 body", "server_error")
        completion = _completion(
            body, usage=fault != "no_usage", bounded=fault != "unbounded"
        )
        if fault == "negative_usage":
            completion["usage"]["prompt_tokens"] = -1000
        if fault in ("no_choices", "no_choices_huge"):
            completion["choices"] = []
        if fault == "no_choices_huge":
            completion["usage"]["prompt_tokens"] = 10**13
        reply = json.dumps(completion)
        if fault == "cut":
            return StreamingResponse(
                _cut_after(reply[: len(reply) // 3], request),
                media_type="application/json",
            )
        return Response(reply, media_type="application/json")

    return app


def _completion(body: dict[str, Any], *, usage: bool, bounded: bool) -> dict[str, Any]:
    text, finish, calls, prompt_tokens = _answer(body, bounded)
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    reply: dict[str, Any] = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", MODEL),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if usage:
        reply["usage"] = _usage(prompt_tokens, text)
    return reply


def _usage(prompt_tokens: int, text: str) -> dict[str, int]:
    output = _words(text)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": output,
        "total_tokens": prompt_tokens + output,
    }


async def _cut_after(prefix: str, request: Request) -> AsyncIterator[bytes]:
    yield prefix.encode()
    await _cut(request)


async def _events(
    body: dict[str, Any], fault: str, request: Request
) -> AsyncIterator[bytes]:
    text, finish, calls, prompt_tokens = _answer(body, fault != "unbounded")
    base = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", MODEL),
    }

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return f"data: {json.dumps({**base, 'choices': choices, **extra})}\n\n".encode()

    def delta(piece: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": piece, "finish_reason": finish_reason}
        return event([choice])

    words = text.split()
    pieces = [word if i == 0 else f" {word}" for i, word in enumerate(words)]
    keep = {"cut": 2, "error_event": 1}.get(fault, len(pieces))
    if fault in ("no_choices", "usage_cut"):  # the usage alone: billed for nothing
        yield event([], usage=_usage(prompt_tokens, text))
        if fault == "usage_cut":
            await _cut(request)
            return
        yield b"data: [DONE]\n\n"
        return
    if fault == "sse_garbage":
        yield b"data: upstream fault: not JSON\n\n"
        return
    if fault == "text_usage":  # the whole text and its usage, never a finish
        yield delta({"content": text})
        yield event([], usage=_usage(prompt_tokens, text))
        yield b"data: [DONE]\n\n"
        return
    yield delta({"role": "assistant", "content": ""})
    for piece in pieces[:keep]:
        if fault == "drip":
            await asyncio.sleep(DRIP_S)
        yield delta({"content": piece})
    if fault == "cut":
        await _cut(request)
        return
    if fault == "error_event":
        error = {"message": "upstream fault: overloaded", "type": "server_error"}
        yield f"data: {json.dumps({'error': error})}\n\n".encode()
        return
    if calls:
        streamed = [{"index": 0, **call} for call in calls]
        yield delta({"tool_calls": streamed})
    yield delta({}, finish)
    options = body.get("stream_options") or {}
    if options.get("include_usage") and fault != "no_usage":
        usage = _usage(prompt_tokens, text)
        if fault == "negative_usage":
            usage["prompt_tokens"] = -1000
        yield event([], usage=usage)
    yield b"data: [DONE]\n\n"
