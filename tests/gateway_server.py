"""The gateway on loopback for tests and benchmarks, and what it serves.

``GatewayServer(config)`` runs ``create_app(config)`` under uvicorn in a background
thread on ``127.0.0.1`` (a free port), from the app's start-up (router loaded) to
``stop()`` or the end of its ``with`` block::

    with GatewayServer(config) as gateway:   # gateway.base_url: http://127.0.0.1:P/v1
        ...                                  # any client; gateway.service: keys, log

The pool is the three ZeroEval models of the small test store, each an ``http``
backend on one upstream (an ``UpstreamServer``) under a route of its own, so the
upstream's request log tells them apart (``ROUTES``). The router is a policy
checkpoint trained in seconds over stand-in embeddings (``train_checkpoint``); the
gateway itself embeds with MiniLM, which the checkpoint only needs to accept.

``flood`` sends many requests at once through the openai client, to test budgets;
``GatewayServer.leave_stream`` plays a client that hangs up in the middle of a
stream, which no HTTP client does on demand.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import httpx
import openai
import uvicorn
import yaml
from _standin import StandInEmbedder
from fastapi import FastAPI
from starlette.types import Message
from upstream import serve_in_thread, stop_serving

from xrouter.core.catalog import load_catalog
from xrouter.evaluate.suites import Suite
from xrouter.policies.checkpoint import save_checkpoint
from xrouter.records.store import Store
from xrouter.serve.app import create_app
from xrouter.serve.config import GatewayConfig
from xrouter.serve.service import Service
from xrouter.train.env import load_training_data
from xrouter.train.grpo import GRPOConfig, train_policy
from xrouter.train.run import checkpoint_manifest

__all__ = [
    "CLAUDE",
    "FALLBACKS",
    "GEMMA",
    "GPT",
    "MODELS",
    "ROUTES",
    "GatewayServer",
    "flood",
    "train_checkpoint",
    "write_config",
    "write_pool",
]

GPT, CLAUDE, GEMMA = (
    "gpt-4o-mini-2024-07-18",
    "claude-3-haiku-20240307",
    "gemma-2-2b-it",
)
MODELS: Final = (GPT, CLAUDE, GEMMA)
# The model name each pool model sends upstream.
ROUTES: Final = {GPT: "echo-gpt", CLAUDE: "echo-claude", GEMMA: "echo-gemma"}
# Who answers when a model fails for good.
FALLBACKS: Final = {GPT: CLAUDE, CLAUDE: GPT, GEMMA: GPT}
_SUITE = Suite(
    name="gateway-tests",
    source="zeroeval",
    pool=MODELS,
    strong=GPT,
    weak=GEMMA,
    self_model=GEMMA,
)
_TRAINING = GRPOConfig(steps=40, prompts_per_step=32, eval_every=1000, seed=3)


def train_checkpoint(store: Store, out: Path) -> Path:
    """A policy over ``MODELS`` trained on ``store``'s ZeroEval records, written to
    ``out`` (kept: a second call with the same ``out`` reads it back)."""
    if (out / "manifest.json").is_file():
        return out
    catalog = load_catalog()
    embedder = StandInEmbedder(out.parent / f"{out.name}-embeddings")
    data = load_training_data(store, [_SUITE], catalog, embedder)
    result = train_policy(data, _TRAINING)
    reward = _TRAINING.reward()
    manifest = checkpoint_manifest(data, _TRAINING, reward, result, "static")
    save_checkpoint(out, result.net, data.memory, data.models, manifest)
    return out


def write_pool(path: Path, upstream_url: str, timeout_s: float = 30.0) -> Path:
    """A pool file: ``MODELS`` over HTTP at ``upstream_url``, with ``FALLBACKS``."""
    models = [
        {
            "model": model,
            "backend": "http",
            "base_url": upstream_url,
            "route": ROUTES[model],
            "fallback": FALLBACKS[model],
            "timeout_s": timeout_s,
        }
        for model in MODELS
    ]
    path.write_text(yaml.safe_dump({"models": models}), encoding="utf-8")
    return path


def write_config(
    path: Path, upstream_url: str, checkpoint: Path, **fields: Any
) -> Path:
    """A gateway YAML at ``path``: the pool of ``MODELS`` at ``upstream_url``
    (written beside it), the policy at ``checkpoint`` (lambda 2), and ``fields``."""
    pool = write_pool(path.with_suffix(".pool.yaml"), upstream_url)
    config = {
        "pool": str(pool),
        "router": {"checkpoint": str(checkpoint), "lambda": 2.0},
        **fields,
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def flood(base_url: str, key: str, n: int, model: str = GPT) -> list[int]:
    """Send ``n`` small requests at once; the HTTP status of each (a refusal by
    a budget must be a 429 of type ``insufficient_quota``)."""

    async def one(client: openai.AsyncOpenAI, k: int) -> int:
        ask: Any = [{"role": "user", "content": f"request {k} of a flood"}]
        try:
            await client.chat.completions.create(
                model=model, messages=ask, max_tokens=20
            )
        except openai.RateLimitError as exc:
            assert isinstance(exc.body, dict)
            assert exc.body["type"] == "insufficient_quota"
            return 429
        return 200

    async def run() -> list[int]:
        async with openai.AsyncOpenAI(
            base_url=base_url, api_key=key, max_retries=0
        ) as client:
            return list(await asyncio.gather(*(one(client, k) for k in range(n))))

    return asyncio.run(run())


class GatewayServer:
    """``create_app(config)`` served on 127.0.0.1 in a thread (see the module)."""

    def __init__(self, config: GatewayConfig, *, start_timeout_s: float = 60) -> None:
        self.config = config
        self.app: FastAPI = create_app(config)
        self.start_timeout_s = start_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("GatewayServer is not started: call start() first")
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def service(self) -> Service:
        """The app's keys, daily limits, request log and metrics."""
        service: Service = self.app.state.service
        return service

    def start(self) -> GatewayServer:
        """Serve in a background thread; returns once ``/health`` says ok."""
        if self._server is not None:
            raise RuntimeError("GatewayServer is already started")
        deadline = time.monotonic() + self.start_timeout_s
        self._server, self._thread = serve_in_thread(
            self.app, "gateway", lifespan="on", timeout_s=self.start_timeout_s
        )
        listening = self._server.servers[0]
        self.port = listening.sockets[0].getsockname()[1]
        self.loop = listening.get_loop()
        while True:
            health = httpx.get(f"{self.url}/health", timeout=5)
            starting = health.status_code == 503 and "starting" in health.text
            if not starting or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if health.status_code != 200:
            self.stop()
            raise RuntimeError(f"the gateway is not healthy: {health.text}")
        return self

    def stop(self) -> None:
        """Stop serving (the app's shutdown runs) and wait for the thread."""
        stop_serving(self._server, self._thread, "gateway")
        self._server = self._thread = None

    def leave_stream(self, body: dict[str, Any]) -> list[bytes]:
        """Post ``body`` (a streamed request) to the app as uvicorn does, and
        hang up once the first chunk came; returns what was received."""
        if self.loop is None:
            raise RuntimeError("GatewayServer is not started: call start() first")
        done = asyncio.run_coroutine_threadsafe(self._leave(body), self.loop)
        return done.result(timeout=10)

    async def _leave(self, body: dict[str, Any]) -> list[bytes]:
        left = asyncio.Event()
        received: list[bytes] = []
        messages: list[Message] = [
            {"type": "http.request", "body": json.dumps(body).encode()}
        ]

        async def receive() -> Message:
            if messages:
                return messages.pop()
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                received.append(message["body"])
                left.set()
                await asyncio.sleep(0.05)  # time for the server to notice

        path = "/v1/chat/completions"
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 9),
            "server": ("127.0.0.1", self.port),
        }
        await self.app(scope, receive, send)
        return received

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
