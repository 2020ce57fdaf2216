"""Evaluate a router that runs whole episodes (the LLM router) on replayed items.

Such a router is slow on a CPU, so it is run on a fixed random sample of a suite's
test split (seeded, the same for every run) through the shared orchestrator, with
every pool model answering from its records. An episode's score is the recorded
verdict of the response it returned when that response is a pool model's verbatim
(a select, or the turn-limit rule); when the router wrote the answer itself, the
task's verifier judges the text (no verifier: scored 0, and said so in the notes).
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xrouter.backends.pool import Pool, PoolEntry
from xrouter.backends.replay import PromptIndex, ReplayBackend, ReplayPool
from xrouter.core.catalog import Catalog
from xrouter.core.progress import Reporter, Silent
from xrouter.evaluate.results import CurvePoint, PolicyResult
from xrouter.orchestrator.loop import (
    EpisodeFailedError,
    EpisodeResult,
    Limits,
    Orchestrator,
    Router,
)
from xrouter.records.schema import Item
from xrouter.records.verifiers import verify

__all__ = [
    "EpisodeEvaluation",
    "EpisodeScore",
    "evaluate_episodes",
    "pool_figures",
    "run_episode",
    "sample_items",
]


def run_episode(episode: Coroutine[Any, Any, EpisodeResult]) -> EpisodeResult:
    """``asyncio.run`` for one episode, with a Ctrl-C raising KeyboardInterrupt
    where the code is, as outside asyncio. asyncio's own handler would only
    cancel the episode's task, and a router model run in-process takes its turn
    without awaiting anything: the turn completes, the timeout around it returns
    its result, the cancellation is lost and the run goes on."""
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(episode)
    previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        with asyncio.Runner() as runner:
            # The interrupt may end a task the episode started (a call's) while
            # no one awaits it; that is the interrupt itself, not news to log.
            runner.get_loop().set_exception_handler(_unless_interrupted)
            return runner.run(episode)
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _unless_interrupted(
    loop: asyncio.AbstractEventLoop, context: dict[str, Any]
) -> None:
    if not isinstance(context.get("exception"), KeyboardInterrupt):
        loop.default_exception_handler(context)


@dataclass(frozen=True)
class EpisodeScore:
    """One sampled item: what the episode returned, its score and cost."""

    item_id: str
    score: float
    cost_usd: float
    strategy: str
    answered_by: tuple[str, ...]
    calls: int
    seconds: float
    tool_errors: int


@dataclass
class EpisodeEvaluation:
    """Every sampled episode, and the pool's own figures on the same items."""

    router: str
    lam: float
    episodes: list[EpisodeScore]
    singles: dict[str, tuple[float, float]] = field(default_factory=dict)
    oracle: tuple[float, float] = (0.0, 0.0)
    unverifiable: int = 0

    @property
    def accuracy(self) -> float:
        return float(np.mean([e.score for e in self.episodes]))

    @property
    def cost_per_1k(self) -> float:
        return float(np.mean([e.cost_usd for e in self.episodes]) * 1000.0)

    def result(self) -> PolicyResult:
        """The router as a row of the suite's report, with notes on the sample."""
        n = len(self.episodes)
        calls = float(np.mean([e.calls for e in self.episodes]))
        strategies: dict[str, int] = {}
        for e in self.episodes:
            strategies[e.strategy] = strategies.get(e.strategy, 0) + 1
        seconds = statistics.median(e.seconds for e in self.episodes)
        best = max(self.singles.items(), key=lambda kv: (kv[1][0], -kv[1][1]))
        notes = [
            f"{self.router} evaluated on {n} sampled test items (the other rows use "
            f"the whole test split); on the same items the best single model "
            f"{best[0]} scores {best[1][0]:.1%} at ${best[1][1]:.3f} per 1k and the "
            f"oracle {self.oracle[0]:.1%} at ${self.oracle[1]:.3f} per 1k",
            f"{self.router}: strategies "
            + ", ".join(f"{k} {v}" for k, v in sorted(strategies.items()))
            + f"; median episode {seconds:.1f} s; "
            f"{sum(e.tool_errors for e in self.episodes)} tool errors",
        ]
        if self.unverifiable:
            notes.append(
                f"{self.router}: {self.unverifiable} answers written by the router "
                "had no verifier for their task and were scored 0"
            )
        point = CurvePoint(
            knob=self.lam,
            accuracy=self.accuracy,
            cost_per_1k=self.cost_per_1k,
            calls_per_query=calls,
        )
        return PolicyResult(
            name=self.router,
            kind="router",
            points=[point],
            knob_name="lambda",
            notes=notes,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "router": self.router,
            "lambda": self.lam,
            "accuracy": self.accuracy,
            "cost_per_1k": self.cost_per_1k,
            "episodes": [e.__dict__ for e in self.episodes],
            "singles_on_sample": self.singles,
            "oracle_on_sample": self.oracle,
        }


def sample_items(
    records: ReplayPool, test: NDArray[np.int64], size: int, seed: int = 0
) -> NDArray[np.int64]:
    """A fixed random sample of ``test`` (row indices), in item order."""
    if size >= len(test):
        return test
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(test, size=size, replace=False))


def replay_entries(records: ReplayPool, catalog: Catalog) -> Pool:
    index = PromptIndex(records.items())
    cards = [catalog.get(m) for m in records.models]
    return Pool([PoolEntry(c, ReplayBackend(c, records, index)) for c in cards])


def score_episode(
    result: EpisodeResult, item: Item, records: ReplayPool, row: int
) -> float | None:
    """The episode's score on ``item``; None when nothing can judge it."""
    who = result.answered_by[0] if result.answered_by else ""
    if result.strategy in ("select", "turn_limit") and who in records.models:
        return float(records.score[row, records.model_index(who)])
    if item.verifier is None or item.gold is None:
        return None
    return 1.0 if verify(item.verifier, result.answer, item.gold) else 0.0


def evaluate_episodes(
    router: Router,
    records: ReplayPool,
    rows: NDArray[np.int64],
    catalog: Catalog,
    *,
    lam: float = 1.0,
    limits: Limits | None = None,
    reporter: Reporter | None = None,
    on_episode: Callable[[EpisodeScore], None] | None = None,
) -> EpisodeEvaluation:
    """Run ``router`` on the items at ``rows`` of ``records`` and score each."""
    reporter = reporter or Silent()
    orchestrator = Orchestrator(replay_entries(records, catalog), limits, seed=0)
    items = records.items([int(r) for r in rows])
    evaluation = EpisodeEvaluation(router=router.name, lam=lam, episodes=[])
    reporter.start(f"episodes of {router.name}", len(items))
    for row, item in zip(rows, items, strict=True):
        messages = list(item.chat())
        started = time.monotonic()
        try:
            result = run_episode(
                orchestrator.run(router, messages, lam=lam, item_id=item.item_id)
            )
            score = score_episode(result, item, records, int(row))
            scored = EpisodeScore(
                item.item_id,
                score or 0.0,
                result.cost_usd,
                result.strategy,
                result.answered_by,
                sum(not c.by_router for c in result.trace.calls),
                time.monotonic() - started,
                len(result.tool_errors),
            )
        except EpisodeFailedError as failed:
            score = 0.0
            scored = EpisodeScore(
                item.item_id,
                0.0,
                failed.cost_usd,
                "failed",
                (),
                0,
                time.monotonic() - started,
                1,
            )
        if score is None:
            evaluation.unverifiable += 1
        evaluation.episodes.append(scored)
        if on_episode is not None:
            on_episode(scored)
        reporter.advance()
    evaluation.singles, evaluation.oracle = pool_figures(records, rows)
    return evaluation


def pool_figures(
    records: ReplayPool, rows: NDArray[np.int64]
) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
    """Accuracy and USD per 1,000 queries of each model alone on ``rows``, and
    the oracle's (the cheapest right model per item, else the cheapest)."""
    singles = {
        m: (
            float(records.score[rows, j].mean()),
            float(records.cost[rows, j].mean() * 1000.0),
        )
        for j, m in enumerate(records.models)
    }
    right = records.score[rows] > 0
    cost = np.where(right, records.cost[rows], np.inf)
    best = cost.argmin(axis=1)
    any_right = right.any(axis=1)
    oracle_cost = np.where(
        any_right,
        cost[np.arange(len(rows)), best],
        records.cost[rows].min(axis=1),
    )
    return singles, (float(any_right.mean()), float(oracle_cost.mean() * 1000.0))
