"""The gateway's core: one request in, a routed, budgeted, logged answer out.

The ``model`` a request names picks the path:

- ``xrouter`` or ``xrouter:lambda=4``: the configured router runs an episode through
  the shared orchestrator (lambda defaults to the config's);
- a pool model's id or alias: routing is bypassed and that model answers, still
  under the budget, retries and its fallback.

Each request is charged to a budget made of today's global ledger, the API key's
daily ledger and the request's own ceiling (a header), so that no call of any
episode, fallbacks included, can take spend past a limit, whatever runs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

from xrouter.backends.build import build_pool, replay_pool
from xrouter.backends.pool import Pool, PoolEntry, load_pool_spec
from xrouter.core.catalog import Catalog, load_catalog
from xrouter.core.errors import (
    BackendError,
    CatalogError,
    ConfigError,
)
from xrouter.core.types import CallerOptions, CallRecord, ChatRequest, Message, Trace
from xrouter.orchestrator.budget import Budget
from xrouter.orchestrator.limits import Limits
from xrouter.orchestrator.loop import (
    EpisodeFailedError,
    EpisodeResult,
    Orchestrator,
    Router,
)
from xrouter.orchestrator.reward import read_lambda
from xrouter.serve.config import GatewayConfig
from xrouter.serve.failures import RequestError
from xrouter.serve.startup import prepare

__all__ = [
    "Gateway",
    "Target",
    "aclose",
    "new_request_id",
]

logger = logging.getLogger(__name__)

ROUTED = "xrouter"
_RETRY_STARTING_S = 10  # the Retry-After of a request refused while starting


@dataclass(frozen=True)
class Target:
    """Where a request goes: the router at a lambda, or one pool model."""

    routed: bool
    model: str | None = None
    lam: float = 1.0


@dataclass
class Outcome:
    """What one request produced, for the response, the log and the metrics."""

    request_id: str
    router: str
    target: Target
    answer: str = ""
    answered_by: tuple[str, ...] = ()
    strategy: str = ""
    calls: list[CallRecord] = field(default_factory=list)
    tool_calls: tuple[dict[str, Any], ...] = ()
    finish_reason: str = "stop"
    started: float = field(default_factory=time.monotonic)
    logged: bool = False  # its final log row is written

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.calls)

    def metadata(self) -> dict[str, Any]:
        """The documented ``xrouter`` extension field of every response and chunk."""
        return {
            "request_id": self.request_id,
            "router": self.router,
            "strategy": self.strategy,
            "models": list(self.answered_by),
            "lambda": self.target.lam if self.target.routed else None,
            "cost_usd": round(self.cost_usd, 10),
            "calls": [
                {
                    "model": c.model,
                    "by_router": c.by_router,
                    "input_tokens": c.usage.input_tokens,
                    "output_tokens": c.usage.output_tokens,
                    "cost_usd": round(c.cost_usd, 10),
                    "latency_s": round(c.latency_s, 4),
                    "error": c.error,
                }
                for c in self.calls
            ],
        }

    def take(self, result: EpisodeResult) -> None:
        self.answer, self.answered_by = result.answer, result.answered_by
        self.strategy, self.calls = result.strategy, list(result.trace.calls)
        self.tool_calls, self.finish_reason = result.tool_calls, result.finish_reason


class Gateway:
    """Pool, router and limits of one gateway process."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.ready = asyncio.Event()
        self.error: Exception | None = None  # why start-up failed
        # Called, instead of logging, when start-up fails: the command line
        # stops the server and exits with the reason; a server run otherwise
        # stays up and answers 503 with it.
        self.on_failure: Callable[[], None] | None = None
        self.catalog: Catalog = load_catalog()
        self.pool: Pool | None = None
        self.router: Router | None = None
        self.orchestrator: Orchestrator | None = None
        # The lambda of plain ``xrouter``: the config's, else the policy's default
        # (set once its checkpoint is loaded), else 1.
        self.lam = 1.0 if config.router.lam is None else config.router.lam
        self._ids = itertools.count(1)

    # -- start-up ----------------------------------------------------------------

    async def start(self) -> None:
        """Prepare, then load the pool and the router; /health and requests wait.

        The slow part (ingesting the records, training the default policy when
        no checkpoint exists: minutes) runs off the event loop, training in a
        child process, so the server answers /health meanwhile. The router is
        then loaded on the event loop's thread, the one that routes requests
        afterwards: once torch has run a model in one thread, the same model
        takes twice as long in another (MiniLM: ~7 ms becomes ~16 ms on two
        cores).
        """
        try:
            await asyncio.to_thread(prepare, self.config, self.catalog)
            self._load()
        except Exception as exc:  # noqa: BLE001 - reported by /health and requests
            self.error = exc
            if self.on_failure is not None:
                self.on_failure()
            else:
                logger.error("the gateway could not start: %s", self.failed)
        self.ready.set()

    @property
    def failed(self) -> str | None:
        """Why start-up failed, as /health and refused requests say it."""
        if self.error is None:
            return None
        return f"{type(self.error).__name__}: {self.error}"

    def _load(self) -> None:
        """Build the pool and the router (``prepare`` has ingested the records)."""
        from xrouter.cli.data import open_store
        from xrouter.evaluate.suites import DEFAULT_SUITES

        config = self.config
        suite = next((s for s in DEFAULT_SUITES if s.name == config.suite), None)
        if suite is None:
            raise ConfigError(
                f"unknown suite {config.suite!r}; choose from "
                f"{', '.join(s.name for s in DEFAULT_SUITES)}"
            )
        suite = suite.resolved(self.catalog)
        store = open_store(None)
        if config.pool is not None:
            spec = load_pool_spec(config.pool)
            self.catalog = load_catalog(list(spec.catalog))
            pool = build_pool(spec, self.catalog, store if spec.replay else None)
        else:
            pool = _offline_pool(
                replay_pool(store, suite.source, suite.pool, self.catalog),
                self.catalog,
            )
        limits = Limits(**config.limits.model_dump())
        self.pool = pool
        routed = [m for m in pool.ids if m != LOCAL_FALLBACK or config.pool]
        self.router = self._make_router(routed, suite.self_model)
        self.orchestrator = Orchestrator(pool, limits)

    def _make_router(self, pool: list[str], self_model: str | None) -> Router:
        spec = self.config.router
        if spec.kind == "llm":
            from xrouter.backends.build import backend_for
            from xrouter.policies.llm_router import LLMRouter

            return LLMRouter(backend_for(self.catalog.get(spec.model)))
        from xrouter.policies.checkpoint import load_checkpoint
        from xrouter.policies.embedding import Embedder
        from xrouter.policies.policy_router import PolicyRouter

        checkpoint = load_checkpoint(self.config.checkpoint_path)
        if spec.lam is None:
            self.lam = checkpoint.default_lambda
        router = PolicyRouter(
            checkpoint,
            self.catalog,
            pool,
            self_model if self_model in pool else None,
            Embedder(),
        )
        router.first_choice([Message("user", "warm up")], self.lam)
        return router

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()

    # -- requests ----------------------------------------------------------------

    async def wait_ready(self, wait_s: float) -> None:
        """Wait up to ``wait_s`` for start-up to end; then refuse with 503 if it
        failed or is still going on (training the default policy takes minutes:
        a request is not kept waiting that long)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), wait_s)
        if self.failed is not None:
            raise RequestError(
                503,
                f"the gateway failed to start: {self.failed}",
                "server_error",
                code="not_ready",
            )
        if not self.ready.is_set():
            raise RequestError(
                503,
                "the gateway is still starting (loading its pool and router, or "
                "training its default policy once); retry in a while, or wait "
                "for GET /health to answer 200",
                "server_error",
                code="starting",
                retry_after_s=_RETRY_STARTING_S,
            )

    def models(self) -> list[str]:
        names = [ROUTED]
        if self.pool is not None:
            names += self.pool.ids
        return names

    def target(self, model: str) -> Target:
        """What the ``model`` field asks for; unknown names are refused."""
        name = model.strip()
        if name == ROUTED or name.startswith(ROUTED + ":"):
            return Target(True, lam=self._lambda(name))
        assert self.pool is not None
        try:
            card = self.catalog.get(name)
        except CatalogError:
            card = None
        if card is None or card.id not in self.pool:
            raise RequestError(
                404,
                f"model {model[:80]!r} is not served here; use 'xrouter', "
                f"'xrouter:lambda=<number>' or one of the pool's models: "
                f"{', '.join(self.pool.ids)}",
                param="model",
                code="model_not_found",
            )
        return Target(False, model=card.id)

    def _lambda(self, name: str) -> float:
        """The lambda of ``xrouter`` (the config's) or ``xrouter:lambda=X``."""
        if name == ROUTED:
            return self.lam
        setting, _, given = name.removeprefix(ROUTED + ":").partition("=")
        lam = read_lambda(given) if setting == "lambda" else math.nan
        if not math.isfinite(lam):
            raise RequestError(
                400,
                f"model {name[:80]!r}: lambda must be a finite number written in "
                "ASCII digits, as in 'xrouter:lambda=4'",
                param="model",
            )
        from xrouter.policies.policy_router import PolicyRouter

        if isinstance(self.router, PolicyRouter):
            low, high = self.router.checkpoint.lambda_range
            if not low <= lam <= high:
                raise RequestError(
                    400,
                    f"lambda {lam:g} is outside the range the router was trained "
                    f"on ({low:g} to {high:g}); choose one in it",
                    param="model",
                )
        elif lam < 0:
            raise RequestError(
                400,
                f"model {name[:80]!r}: lambda must be >= 0, as in 'xrouter:lambda=4'",
                param="model",
            )
        return lam

    def new_outcome(self, target: Target) -> Outcome:
        router = self.router_name if target.routed else "direct"
        return Outcome(new_request_id(), router, target)

    @property
    def _max_tokens(self) -> int:
        assert self.orchestrator is not None
        return self.orchestrator.limits.default_max_tokens

    @property
    def router_name(self) -> str:
        return self.router.name if self.router is not None else "none"

    async def complete(
        self,
        outcome: Outcome,
        messages: list[Message],
        caller: CallerOptions,
        budget: Budget,
    ) -> None:
        """Run the request to its end, filling ``outcome``."""
        assert self.orchestrator is not None and self.router is not None
        target = outcome.target
        if target.routed:
            try:
                result = await self.orchestrator.run(
                    self.router, messages, lam=target.lam, budget=budget, caller=caller
                )
            except EpisodeFailedError as exc:
                outcome.calls = list(exc.trace.calls)
                raise
            outcome.take(result)
            return
        assert target.model is not None
        records = await self.orchestrator.calls.run(
            target.model,
            _direct_request(messages, caller, self._max_tokens),
            budget,
            call_id=f"c{next(self._ids)}",
        )
        outcome.calls = records
        last = records[-1]
        if last.error is not None:
            # Each model's reason: the one asked for, then its fallbacks'.
            reasons = dict.fromkeys(r.error.rstrip(".") for r in records if r.error)
            raise EpisodeFailedError(
                f"no model produced an answer: {'; then '.join(reasons)}",
                Trace(records),
            )
        outcome.answer, outcome.answered_by = last.response or "", (last.model,)
        outcome.strategy, outcome.tool_calls = "direct", last.tool_calls
        outcome.finish_reason = last.finish_reason

    async def stream(
        self,
        outcome: Outcome,
        messages: list[Message],
        caller: CallerOptions,
        budget: Budget,
        *,
        whole_episode: bool = False,
    ) -> AsyncIterator[str]:
        """The answer's text as it arrives.

        A direct request's model streams live, and so does the policy router's
        first choice unless ``whole_episode``: tokens already sent cannot be taken
        back, so a live stream does not escalate as a whole episode may. With
        ``whole_episode``, and always for the LLM router, the episode runs to its
        end first, then its answer is sent in pieces.
        """
        from xrouter.policies.policy_router import PolicyRouter

        assert self.orchestrator is not None
        target = outcome.target
        live = isinstance(self.router, PolicyRouter) and not whole_episode
        if target.routed and not live:
            await self.complete(outcome, messages, caller, budget)
            for start in range(0, len(outcome.answer), 64):
                yield outcome.answer[start : start + 64]
            return
        request = _direct_request(messages, caller, self._max_tokens)
        records: list[CallRecord] = []
        if not target.routed:
            assert target.model is not None
            outcome.strategy = "direct"
            relay = self._relay(outcome, target.model, request, budget, records)
            async with aclosing(relay) as pieces:
                async for text in pieces:
                    yield text
            return
        # The policy's first choice streams live. Until its first piece arrives a
        # failed choice is passed over, as a whole episode passes over a failed
        # call: the policy chooses again among the models not yet tried.
        assert isinstance(self.router, PolicyRouter)
        outcome.strategy = "select"
        fits = [
            card.id for card in self.orchestrator.affordable(messages, caller, budget)
        ]
        untried = fits
        while True:
            model = self.router.first_choice(messages, target.lam, untried)
            before = len(records)
            try:
                relay = self._relay(outcome, model, request, budget, records)
                async with aclosing(relay) as pieces:
                    async for text in pieces:
                        yield text
                return
            except BackendError:
                tried = {record.model for record in records}
                untried = [m for m in fits if m not in tried]
                if outcome.answer or len(records) == before or not untried:
                    raise
                logger.info(
                    "stream of %s failed before its first piece; the policy "
                    "chooses again among %d untried models",
                    model,
                    len(untried),
                )

    async def _relay(
        self,
        outcome: Outcome,
        model: str,
        request: ChatRequest,
        budget: Budget,
        records: list[CallRecord],
    ) -> AsyncGenerator[str, None]:
        """Stream ``model``'s answer into ``outcome``, its calls into ``records``."""
        assert self.orchestrator is not None
        first = len(records)
        deltas = self.orchestrator.calls.stream(
            model, request, budget, records, call_id=f"c{next(self._ids)}"
        )
        try:
            async for delta in deltas:
                if not outcome.answered_by:
                    outcome.answered_by = (self._streaming(model, records[first:]),)
                if delta.tool_calls:
                    outcome.tool_calls += delta.tool_calls
                if delta.finish_reason:
                    outcome.finish_reason = delta.finish_reason
                if delta.text:
                    outcome.answer += delta.text
                    yield delta.text
        finally:
            # A client that leaves closes this generator: the model's stream
            # stops here too, not whenever the garbage collector finds it.
            await aclose(deltas)
            outcome.calls = list(records)
            if len(records) > first and records[-1].error is None:
                outcome.answered_by = (records[-1].model,)

    def _streaming(self, model: str, failed: list[CallRecord]) -> str:
        """The model a stream's pieces come from: ``model``, or after the
        models in ``failed`` failed before their first piece, the fallback of
        the last of them."""
        assert self.pool is not None
        if not failed:
            return model
        return self.pool.entry(failed[-1].model).fallback or failed[-1].model


def new_request_id() -> str:
    return f"xr-{uuid.uuid4().hex[:20]}"


async def aclose(iterator: object) -> None:
    """Close an async generator (an iterator without ``aclose`` needs none)."""
    closing = getattr(iterator, "aclose", None)
    if closing is not None:
        await closing()


def _direct_request(
    messages: list[Message], caller: CallerOptions, max_tokens: int
) -> ChatRequest:
    """The request as the caller sent it, for one pool model; ``max_tokens``
    defaults to the limits' (a budget needs a worst case to hold)."""
    return ChatRequest(
        messages=tuple(messages),
        max_tokens=caller.max_tokens or max_tokens,
        temperature=caller.temperature,
        stop=caller.stop,
        tools=caller.tools,
        tool_choice=caller.tool_choice,
        user=caller.user,
        extra=caller.extra,
    )


# Offline, replay answers only recorded prompts; any other goes to this model,
# run in-process, as every replayed model's fallback.
LOCAL_FALLBACK = "smollm2-135m"


def _offline_pool(replayed: Pool, catalog: Catalog) -> Pool:
    from xrouter.backends.local import LocalBackend

    card = catalog.get(LOCAL_FALLBACK)
    entries = [replace(entry, fallback=card.id) for entry in replayed]
    return Pool([*entries, PoolEntry(card, LocalBackend(card))])
