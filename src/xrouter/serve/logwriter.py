"""The gateway's writes to its request log, which neither stall nor lose a request.

One thread writes the log: rows queue in order and it commits what has queued in
one transaction, while :meth:`LogWriter.write` waits for its row's commit (a row
is durable before its answer leaves). When a commit fails (another program holds
the log locked past the busy timeout, the disk is full, the file was removed or
replaced), the rows stay queued and every waiting request goes on at once; while
the log cannot be written, rows join the queue without waiting, and the thread
tries again every half second, without a busy wait, until it commits them all.
Their spend still counts (:meth:`LogWriter.spend`). Meanwhile rows of requests
that called no model (refusals, the in-flight rows of requests starting) are only
counted (``dropped``), and with ``limit`` rows waiting the writer is ``full``: the
gateway takes no new requests.

On close, rows still waiting are saved as JSON lines to ``<log>.unsaved.jsonl``
beside the log; the next gateway to own the log writes them in (a saved answer
takes the place of the row its request left in flight) and removes the file. Only
a kill of the process while rows wait loses them.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from xrouter.core.errors import ConfigError
from xrouter.serve.requestlog import RequestEntry, RequestLog

__all__ = ["LogWriter", "unsaved_path"]

logger = logging.getLogger(__name__)

_RETRY_EVERY_S = 0.5
_WAIT_WHILE_FAILING_S = 0.05  # SQLite's busy wait once rows are held anyway
_SAVED = TypeAdapter(RequestEntry)
_NUMBERS = ("ts", "input_tokens", "output_tokens", "cost_usd", "latency_s")


def unsaved_path(log_path: Path) -> Path:
    """Where a gateway saves the rows it could not write to ``log_path``."""
    return log_path.with_name(log_path.name + ".unsaved.jsonl")


def rows(n: int, noun: str = "row") -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class LogWriter:
    """Writes rows to ``log`` from one thread, holding them while it cannot."""

    def __init__(self, log: RequestLog, *, limit: int = 10_000) -> None:
        self.log = log
        self.limit = limit
        self.problem: str | None = None  # why the log cannot be written now
        self.dropped = 0  # refusals not kept while full
        self._queue: list[RequestEntry] = []  # not yet committed, in order
        self._committed = 0  # rows committed so far (a prefix of all queued)
        self._queued = 0
        self._committed_before_failing = 0
        self._retry_at = 0.0
        self._closing = False
        self._cond = threading.Condition()
        stat = os.stat(log.path)
        self._file = (stat.st_dev, stat.st_ino)
        self._recover()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """How many rows wait to be written."""
        return len(self._queue)

    @property
    def full(self) -> bool:
        """Whether as many rows wait as may: take no new requests."""
        return self.problem is not None and len(self._queue) >= self.limit

    def write(self, entry: RequestEntry) -> bool:
        """Queue ``entry``; return once it is committed, or as soon as the log is
        found unwritable (the row then waits in memory). False for a row not
        kept: while the log cannot be written, rows of requests that called no
        model (refusals, requests starting) are counted, not kept, so that
        requests anyone can send do not fill the memory the answers need."""
        with self._cond:
            if self.problem is not None and not entry.calls:
                self.dropped += 1
                return False
            self._queue.append(entry)
            self._queued += 1
            ticket = self._queued
            self._cond.notify_all()
            while self._committed < ticket and self.problem is None:
                self._cond.wait()
            return True

    def spend(self, since_ts: float, key_name: str | None = None) -> float:
        """The log's spend since ``since_ts`` (see ``RequestLog.spend``) with the
        spend of the rows that wait. A row committed between the two reads is
        counted twice, never missed: a limit errs on the safe side."""
        with self._cond:
            waiting = sum(
                e.cost_usd
                for e in self._queue
                if e.ts >= since_ts and key_name in (None, e.key_name)
            )
        return self.log.spend(since_ts, key_name) + waiting

    def close(self) -> None:
        """Write what waits (else save it beside the log), then close the log."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        if self._queue:
            logger.warning(
                "request log %s: %s still waiting; trying once more before saving",
                self.log.path,
                rows(len(self._queue)),
            )
            self._commit(list(self._queue))
        if self._queue:
            self._save()
        if self.dropped:
            logger.warning(
                "request log %s: no row kept for %s refused or starting while it "
                "could not be written",
                self.log.path,
                rows(self.dropped, "request"),
            )
        self.log.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and (
                    not self._queue
                    or (self.problem and time.monotonic() < self._retry_at)
                ):
                    wait = self._retry_at - time.monotonic() if self._queue else None
                    self._cond.wait(wait)
                if self._closing:
                    return
                batch = list(self._queue)
            self._commit(batch)

    def _commit(self, batch: list[RequestEntry]) -> None:
        """Write ``batch``, the first rows of the queue, and take them off it. A
        row whose request the log already holds is skipped, not refused: a stream
        the client left while its row was being written is logged again as left,
        and the first row stands."""
        failing = self.problem is not None
        try:
            self._check_file()
            wait_s = _WAIT_WHILE_FAILING_S if failing else None
            self.log.append_all(batch, saved=True, wait_s=wait_s)  # see _commit
        except Exception as exc:
            problem = str(exc) if isinstance(exc, ConfigError) else repr(exc)
            with self._cond:
                self.problem = problem
                self._retry_at = time.monotonic() + _RETRY_EVERY_S
                if not failing:
                    self._committed_before_failing = self._committed
                self._cond.notify_all()  # the rows wait; their requests go on
            if not failing:
                logger.warning(
                    "%s; answers go on, and their log rows wait in memory until the "
                    "log can be written (at most %d, then new requests get 503)",
                    problem,
                    self.limit,
                    exc_info=not isinstance(exc, ConfigError),
                )
            return
        with self._cond:
            del self._queue[: len(batch)]
            self._committed += len(batch)
            self._retry_at = 0.0
            if failing and not self._queue:  # said before anyone sees it cleared
                logger.warning(
                    "request log %s can be written again: wrote the %s that waited",
                    self.log.path,
                    rows(self._committed - self._committed_before_failing),
                )
            if not self._queue:
                self.problem = None
            self._cond.notify_all()

    def _check_file(self) -> None:
        """``ConfigError`` if the log's file was removed or replaced: SQLite would
        go on writing into the file it holds open, which no one can read."""
        try:
            stat = os.stat(self.log.path)
            same = (stat.st_dev, stat.st_ino) == self._file
        except OSError:
            same = False
        if not same:
            raise ConfigError(
                f"the request log {self.log.path} was removed or replaced while the "
                "gateway ran; the rows wait in memory, are saved beside it when the "
                "gateway stops, and the next start writes them into the log there"
            )

    def _save(self) -> None:
        path = unsaved_path(self.log.path)
        lines = "".join(_SAVED.dump_json(e).decode() + "\n" for e in self._queue)
        existed = path.exists()
        try:
            with path.open("a", encoding="utf-8") as handle:
                handle.write(lines)
        except OSError as exc:
            if not existed:
                path.unlink(missing_ok=True)
            logger.error(
                "request log %s: could not save its %s that wait to %s (%s); they "
                "follow on stderr, one JSON object a line",
                self.log.path,
                rows(len(self._queue)),
                path,
                exc.strerror,
            )
            sys.stderr.write(lines)
            sys.stderr.flush()
            return
        logger.error(
            "%s. Saved the %s that waited to %s; the next gateway on this log "
            "writes them in",
            self.problem,
            rows(len(self._queue)),
            path,
        )

    def _recover(self) -> None:
        """Write in the rows a gateway saved beside this log, then remove them."""
        path = unsaved_path(self.log.path)
        if not path.exists():
            return
        entries = _read_saved(path)
        self.log.append_all(entries, saved=True)
        self.log.mark_interrupted()  # saved in flight: they never ended
        path.unlink()
        logger.warning(
            "request log %s: wrote in the %s saved in %s",
            self.log.path,
            rows(len(entries)),
            path,
        )


def _read_saved(path: Path) -> list[RequestEntry]:
    """The rows saved in ``path``; ``ConfigError`` naming a line that is not one."""
    if not path.is_file():
        raise ConfigError(
            f"{path} should hold the rows a gateway could not write to its request "
            "log, but it is not a file; move it aside and start the gateway again"
        )
    entries = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                entry = _SAVED.validate_json(line, strict=True)
                why = _implausible(entry)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                why = f"{where + ': ' if where else ''}{first['msg']}"
            if why:
                raise ConfigError(
                    f"line {number} of {path} is not a saved request row ({why}); "
                    "repair or remove that line, or move the file aside, and start "
                    "the gateway again"
                )
            entries.append(entry)
    return entries


def _implausible(entry: RequestEntry) -> str:
    """What a well-typed row holds that no gateway writes, or ""."""
    if not entry.request_id:
        return "request_id: it is empty"
    numbers = [(name, getattr(entry, name)) for name in _NUMBERS]
    for k, call in enumerate(entry.calls):
        numbers += [(f"calls.{k}.{name}", getattr(call, name)) for name in _NUMBERS[1:]]
    for name, value in numbers:
        if not (math.isfinite(value) and value >= 0):
            return f"{name}: {value} is not a number >= 0"
    return ""
