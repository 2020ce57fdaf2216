"""Collecting records: a benchmark's items run through a pool's live models.

``collect`` makes one call per (item, pool model) pair and stores what came back
as the records of a source of its own, ``collected-<name>``, which evaluation and
training then replay like any ingested source. Every call goes through the
orchestrator's ``CallRunner`` (worst-case hold on the budget, timeout, retries) but
never to a fallback model: a record must be the answer of the model it names.

Every finished call is appended to a journal, ``<store>/collect/<source>.jsonl``
(see ``xrouter.orchestrator.journal``), and reaches the disk before anything else
happens. A rerun reads the journal first and skips every pair that already
succeeded, so no item is paid for twice; pairs that failed for good are tried
again, and cost nothing unless the server billed a reply it sent without an answer
(its usage is booked, see ``xrouter.orchestrator.calls``). A last line cut short
by a crash is dropped with a warning.
The journal is the truth: after each run, interrupted or not, the store source is
rewritten from it, each response scored by the item's verifier. Token counts are
the server's (``usage_origin`` "recorded"), or, when a server reports none, counted
with the o200k tokenizer (``counted``).

The cost ceiling covers every run of the collection, the journal's earlier spend
included. A call whose worst case does not fit waits for a call in flight to end
(its real cost frees what its worst case held) and tries again; when none is in
flight and it still does not fit, no new call starts, and a rerun with a higher
ceiling carries on.

A first SIGINT (Ctrl-C) or SIGTERM stops the run the same way: the calls already
sent upstream, which will be billed, finish and are journaled. A second one
abandons them (their pairs are called again on the next run).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import re
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from xrouter.backends.pool import Pool, PoolEntry
from xrouter.core.errors import BudgetExceededError, ConfigError, UnknownTaskError
from xrouter.core.progress import Reporter, Silent
from xrouter.core.types import ChatRequest, Message
from xrouter.orchestrator.budget import Budget, Ledger
from xrouter.orchestrator.calls import CallRunner
from xrouter.orchestrator.journal import Journal, JournalEntry
from xrouter.orchestrator.limits import Limits
from xrouter.records.schema import (
    Item,
    Record,
    item_from_row,
    items_to_table,
    records_to_table,
)
from xrouter.records.splits import SPLITS, split_of
from xrouter.records.store import SourceInfo, Store
from xrouter.records.verifiers import extract_answer, verify_many

__all__ = [
    "PREFIX",
    "CollectSummary",
    "RateLimiter",
    "benchmark_items",
    "collect",
    "collected_source",
    "journal_path",
]

logger = logging.getLogger(__name__)

PREFIX = "collected-"
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def collected_source(name: str) -> str:
    """The store source of the collection ``name`` (``collected-`` added once)."""
    bare = name.removeprefix(PREFIX)
    if not _NAME.fullmatch(bare):
        raise ConfigError(
            f"collection name {name!r} may hold only letters, digits, '-' and '_'; "
            "pass another --name"
        )
    return PREFIX + bare


def journal_path(store: Store, source: str) -> Path:
    """Where the journal of the collected ``source`` lives."""
    return store.path / "collect" / f"{source}.jsonl"


def benchmark_items(
    store: Store,
    task: str,
    *,
    source: str | None = None,
    split: str = "all",
    limit: int | None = None,
) -> list[Item]:
    """The stored items of ``task``, in item-id order: of ``source``, or of the one
    ingested source that has the task; only ``split``'s, then the first ``limit``."""
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    if split != "all" and split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose all, {', '.join(SPLITS)}")
    if source is None:
        table = store.items(columns=["source", "task"]).to_pydict()
        pairs = set(zip(table["source"], table["task"], strict=True))
        holders = sorted(s for s, t in pairs if t == task and not s.startswith(PREFIX))
        if not holders:
            raise UnknownTaskError(
                f"no source in the store at {store.path} has items of task {task!r}; "
                f"its tasks are {', '.join(sorted({t for _, t in pairs}))}"
            )
        if len(holders) > 1:
            raise ConfigError(
                f"task {task!r} is in several sources ({', '.join(holders)}); "
                "choose one with --source"
            )
        source = holders[0]
    rows = store.items([source], tasks=[task]).to_pylist()
    if not rows:
        raise UnknownTaskError(f"source {source!r} has no items of task {task!r}")
    items = sorted((item_from_row(row) for row in rows), key=lambda i: i.item_id)
    if split != "all":
        items = [item for item in items if split_of(item.item_id) == split]
    if not items:
        raise ConfigError(f"source {source!r} has no {split} items of task {task!r}")
    return items[:limit]


class RateLimiter:
    """At most ``per_minute`` starts per key in any 60 s window (a sliding log).

    ``clock`` and ``sleep`` are injectable so that tests need not wait.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        window_s: float = 60.0,
    ) -> None:
        if per_minute < 1:
            raise ConfigError(f"--rpm must be at least 1, got {per_minute}")
        self.per_minute, self.window_s = per_minute, window_s
        self._clock, self._sleep = clock, sleep
        self._starts: dict[str, collections.deque[float]] = {}

    async def acquire(self, key: str) -> None:
        """Wait until ``key`` may start one more call, and count it."""
        starts = self._starts.setdefault(key, collections.deque())
        while True:
            now = self._clock()
            while starts and starts[0] <= now - self.window_s:
                starts.popleft()
            if len(starts) < self.per_minute:
                starts.append(now)
                return
            await self._sleep(starts[0] + self.window_s - now)


@dataclass(frozen=True)
class CollectSummary:
    """What one run of ``collect`` did, and where the collection stands."""

    source: str
    journal: Path
    calls: int  # calls made in this run, failed ones included
    failed: int  # of those, failed for good (tried again on the next run)
    skipped: int  # pairs that earlier runs already collected
    spent_usd: float  # this run
    spent_total_usd: float  # every run, as the journal says
    left: int  # pairs of this run's items and models still without a record
    seconds: float
    records: int  # records in the store source written
    stopped: str | None  # why new calls stopped early (ceiling, signal), or None
    written: SourceInfo | None  # None when there is nothing to write yet
    interrupted_by: str | None = None  # the signal that stopped the run, if any
    # Per model, this run's calls that failed for good and the last one's error.
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)


# How often a worker whose call the ceiling refused looks whether another ended.
_SETTLE_POLL_S = 0.02


@dataclass
class _Run:
    """The calls of one run: workers, rate limits, ceiling and journal."""

    runner: CallRunner
    journal: Journal
    budget: Budget
    limiter: RateLimiter
    request: Callable[[Item], ChatRequest]
    reporter: Reporter
    calls: int = 0
    spent_usd: float = 0.0
    stopped: str | None = None
    interrupted_by: str | None = None
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)  # per model
    waiting: set[asyncio.Task[object]] = field(default_factory=set)
    in_flight: int = 0  # calls started and not yet ended
    ended: int = 0  # calls ended in this run

    async def go(self, todo: list[tuple[Item, str]], concurrency: int) -> None:
        queue = collections.deque(todo)
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(todo))):
                group.create_task(self._worker(queue))

    async def _worker(self, queue: collections.deque[tuple[Item, str]]) -> None:
        while queue and self.stopped is None:
            item, model = queue.popleft()
            if not await self._slot(model):
                return
            self.in_flight += 1
            refused = None
            try:
                calls = await self.runner.run(
                    model, self.request(item), self.budget, call_id=item.item_id
                )
            except BudgetExceededError as exc:
                refused = str(exc)
            finally:
                self.in_flight -= 1
            if refused is not None:
                # The calls in flight hold their worst case, and most will cost
                # less: wait for one to end and try again; stop only when none is
                # left to free room.
                if self.in_flight == 0:
                    self.stop(refused)
                    return
                queue.appendleft((item, model))
                await self._one_ends(self.ended)
                continue
            self.ended += 1
            entry = JournalEntry.of(item.item_id, calls[0])
            self.journal.append(entry)
            self.calls += 1
            if entry.error is not None:
                count = self.errors.get(model, (0, ""))[0]
                self.errors[model] = (count + 1, entry.error)
            self.spent_usd += entry.cost_usd
            self.reporter.advance()

    async def _one_ends(self, ended: int) -> None:
        """Return once a call in flight has ended since ``ended`` calls had, or
        the run stopped."""
        while self.ended == ended and self.in_flight and self.stopped is None:
            await asyncio.sleep(_SETTLE_POLL_S)

    async def _slot(self, model: str) -> bool:
        """Wait for ``model``'s rate limit; False if the run stopped meanwhile."""
        task = cast("asyncio.Task[object]", asyncio.current_task())
        self.waiting.add(task)  # a stop cancels the wait, up to a minute long
        try:
            await self.limiter.acquire(model)
        except asyncio.CancelledError:
            if self.stopped is None:
                raise
        finally:
            self.waiting.discard(task)
        return self.stopped is None

    def stop(self, reason: str) -> None:
        self.stopped = reason
        for task in self.waiting:
            task.cancel()


class _Interrupts:
    """SIGINT and SIGTERM during a run: the first stops new calls and lets those
    in flight finish and be journaled; the second cancels the run. Only the main
    thread can take signals: elsewhere the process's own handling stands."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.task = asyncio.current_task()
        self.loop = asyncio.get_running_loop()
        self.taken: dict[signal.Signals, Any] = {}  # each with its handler before

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.taken[sig] = signal.getsignal(sig)
                self.loop.add_signal_handler(sig, self._on, sig)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, before in self.taken.items():
            self.loop.remove_signal_handler(sig)
            signal.signal(sig, before)

    def _on(self, sig: signal.Signals) -> None:
        if self.run.interrupted_by is None:
            self.run.interrupted_by = sig.name
            logger.warning(
                "%s: no new calls; finishing the calls in flight, which are paid "
                "for (again to abandon them)",
                sig.name,
            )
            self.run.stop(f"interrupted by {sig.name}")
        elif self.task is not None:
            self.task.cancel()


def _checked(items: Sequence[Item], knobs: dict[str, float]) -> None:
    for name, value in knobs.items():
        if not value >= 1:
            raise ConfigError(f"--{name} must be at least 1, got {value:g}")
    if not items:
        raise ConfigError("there are no items to collect")
    if len({item.item_id for item in items}) != len(items):
        raise ConfigError("the items to collect repeat an item id; pass each once")
    unverified = collections.Counter(i.task for i in items if i.verifier is None)
    if unverified:
        task, count = unverified.most_common(1)[0]
        raise UnknownTaskError(
            f"{count} items of task {task!r} have no verifier, so their collected "
            "responses could not be scored; collect a task that xrouter verifies "
            "(gsm8k, math, cruxeval, choice or mbpp)"
        )
    ungraded = collections.Counter((i.task, i.source) for i in items if i.gold is None)
    if ungraded:
        (task, source), count = ungraded.most_common(1)[0]
        raise UnknownTaskError(
            f"{count} items of task {task!r} in source {source} have no gold answer, "
            "so their collected responses could not be scored; take the task's "
            "items from a source that records its answers (--source)"
        )


async def collect(
    store: Store,
    pool: Pool,
    items: Sequence[Item],
    *,
    source_name: str,
    concurrency: int = 4,
    rpm: int = 60,
    max_cost_usd: float = 1.0,
    max_tokens: int = 1024,
    system_prompt: str | None = None,
    reporter: Reporter | None = None,
    limits: Limits | None = None,
    limiter: RateLimiter | None = None,
) -> CollectSummary:
    """Call every pool model on every item not yet collected and (re)write the
    store source ``source_name`` from the journal; see the module docstring.

    Every item needs a verifier and a gold answer (``UnknownTaskError`` otherwise).
    The caller keeps ownership of ``pool`` and closes it.
    """
    started = time.monotonic()
    if source_name != collected_source(source_name):
        raise ConfigError(f"name a collected source {PREFIX}NAME, not {source_name}")
    _checked(items, {"concurrency": concurrency, "max-tokens": max_tokens})
    ledger = Ledger("collection cost ceiling", max_cost_usd)
    limiter = limiter or RateLimiter(rpm)
    runner = CallRunner(
        Pool([PoolEntry(entry.card, entry.backend) for entry in pool]),
        # A timed-out call is not asked again in this run: its provider may bill
        # the generation it finishes anyway, and a rerun is the user's choice.
        replace(limits or Limits(default_max_tokens=max_tokens), retry_timeouts=False),
    )
    prefix = (Message("system", system_prompt),) if system_prompt else ()

    def request(item: Item) -> ChatRequest:
        messages = item.chat()
        return ChatRequest(prefix + messages, max_tokens, item_id=item.item_id)

    journal = Journal(journal_path(store, source_name))
    try:
        done = {(e.item_id, e.model) for e in journal.entries if e.error is None}
        pairs = [(item, model) for item in items for model in pool.ids]
        todo = [(i, m) for i, m in pairs if (i.item_id, m) not in done]
        ledger.spent_usd = sum(e.cost_usd for e in journal.entries)
        skipped = len(pairs) - len(todo)
        logger.info("collecting %d pairs, %d before", len(todo), skipped)
        reporter = reporter or Silent()
        reporter.start(f"collecting {source_name}", len(todo))
        run = _Run(runner, journal, Budget([ledger]), limiter, request, reporter)
        try:
            with _Interrupts(run):
                await run.go(todo, concurrency)
        except asyncio.CancelledError:
            if run.interrupted_by is None:
                raise
            raise KeyboardInterrupt from None  # abandoned by a second signal
        finally:
            written = _write_source(store, source_name, items, journal, started)
    finally:
        journal.close()
    done = {(e.item_id, e.model) for e in journal.entries if e.error is None}
    return CollectSummary(
        source=source_name,
        journal=journal.path,
        calls=run.calls,
        failed=sum(count for count, _ in run.errors.values()),
        skipped=skipped,
        spent_usd=run.spent_usd,
        spent_total_usd=sum(e.cost_usd for e in journal.entries),
        left=sum((i.item_id, m) not in done for i, m in pairs),
        seconds=time.monotonic() - started,
        records=written.records if written else 0,
        stopped=run.stopped,
        written=written,
        interrupted_by=run.interrupted_by,
        errors=run.errors,
    )


def _write_source(
    store: Store,
    source: str,
    items: Sequence[Item],
    journal: Journal,
    started: float,
) -> SourceInfo | None:
    """Rewrite ``source`` from every call the journal says succeeded."""
    known: dict[str, Item] = {}
    if source in store.manifest():
        known = {
            row["item_id"]: item_from_row(row)
            for row in store.items([source]).to_pylist()
        }
    known.update({item.item_id: item for item in items})
    answered: dict[tuple[str, str], JournalEntry] = {}
    for entry in journal.entries:
        if entry.error is None and entry.item_id in known:
            answered.setdefault((entry.item_id, entry.model), entry)
    strays = {e.item_id for e in journal.entries if e.item_id not in known}
    if strays:
        logger.warning(
            "%s: %d journaled items are neither given nor in the source; their "
            "records are left out",
            journal.path,
            len(strays),
        )
    if not answered:
        return None
    by_kind: dict[str, list[JournalEntry]] = collections.defaultdict(list)
    for entry in sorted(answered.values(), key=lambda e: (e.item_id, e.model)):
        by_kind[cast(str, known[entry.item_id].verifier)].append(entry)
    records: list[Record] = []
    for kind, entries in by_kind.items():
        texts = [entry.response or "" for entry in entries]
        golds = [cast(str, known[entry.item_id].gold) for entry in entries]
        verdicts = verify_many(kind, zip(texts, golds, strict=True))
        for entry, text, right in zip(entries, texts, verdicts, strict=True):
            records.append(
                Record(
                    item_id=entry.item_id,
                    model=entry.model,
                    score=1.0 if right else 0.0,
                    score_origin="verifier",
                    input_tokens=entry.input_tokens,
                    output_tokens=entry.output_tokens,
                    usage_origin="counted" if entry.usage_counted else "recorded",
                    cost_usd=entry.cost_usd,
                    cost_origin="estimated",
                    response=entry.response,
                    extracted=extract_answer(kind, text),
                )
            )
    ids = sorted({entry.item_id for entry in answered.values()})
    table = items_to_table([replace(known[i], source=source) for i in ids])
    records.sort(key=lambda r: (r.item_id, r.model))
    lines = "\n".join(json.dumps(asdict(entry)) for entry in journal.entries)
    digest = hashlib.sha256(lines.encode()).hexdigest()[:16]
    return store.write_source(
        source,
        table,
        records_to_table(records),
        data_dir=journal.path,
        fingerprint=f"journal:{digest}",
        seconds=time.monotonic() - started,
    )
