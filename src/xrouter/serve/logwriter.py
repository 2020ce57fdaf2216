"""The gateway's writes to its request log, which neither stall nor lose a request.

A write that fails (another program holds the log locked, the disk is full, the
file was removed) does not fail the request: its entry is held in memory, in
order, and a thread writes what is held as soon as the log takes writes again.
While entries are held, new ones join them at once, so requests do not each wait
out SQLite's busy timeout. Past ``limit`` held entries the gateway takes no new
requests (``full``) until the log is writable.

On close, entries still held are saved as JSON lines to ``<log>.unsaved.jsonl``
beside the log; the next gateway to own the log writes them in and removes the
file. Only a kill of the process while entries are held loses them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xrouter.core.errors import ConfigError
from xrouter.serve.requestlog import CallEntry, RequestEntry, RequestLog

__all__ = ["LogWriter", "unsaved_path"]

logger = logging.getLogger(__name__)

_RETRY_EVERY_S = 0.5


def unsaved_path(log_path: Path) -> Path:
    """Where a gateway saves the entries it could not write to ``log_path``."""
    return log_path.with_name(log_path.name + ".unsaved.jsonl")


class LogWriter:
    """Writes entries to ``log``, holding them back while it cannot be written."""

    def __init__(self, log: RequestLog, *, limit: int = 10_000) -> None:
        self.log = log
        self.limit = limit
        self.problem: str | None = None  # why the log cannot be written now
        self._held: list[RequestEntry] = []
        self._flushing = False  # held entries are being written: new ones wait
        self._lock = threading.Lock()  # guards the three above, never held on I/O
        self._closing = threading.Event()
        self._recover()
        self._retrier = threading.Thread(target=self._retry, daemon=True)
        self._retrier.start()

    @property
    def held(self) -> int:
        """How many entries wait to be written."""
        return len(self._held)

    @property
    def full(self) -> bool:
        """Whether the held entries reached the limit: take no new requests."""
        return len(self._held) >= self.limit

    def write(self, entry: RequestEntry) -> None:
        """Write ``entry`` now, or hold it if the log cannot be written (or others
        already wait); ``ValueError`` for a request id already in the log."""
        with self._lock:
            if self._held or self._flushing:  # keep a request's rows in order
                self._held.append(entry)
                return
        try:
            self.log.append(entry)
        except ConfigError as exc:
            self._hold([entry], str(exc))

    def spend(self, since_ts: float, key_name: str | None = None) -> float:
        """The log's spend since ``since_ts`` (see ``RequestLog.spend``), with the
        spend of the entries held back."""
        with self._lock:
            held = sum(
                e.cost_usd
                for e in self._held
                if e.ts >= since_ts and key_name in (None, e.key_name)
            )
        return self.log.spend(since_ts, key_name) + held

    def close(self) -> None:
        """Write what is held (else save it beside the log), then close the log."""
        self._closing.set()
        self._retrier.join()
        if self._held and not self._flush():
            self._save()
        self.log.close()

    def _hold(self, entries: list[RequestEntry], problem: str) -> None:
        with self._lock:
            first = self.problem is None
            self._held[:0] = entries  # before any that joined meanwhile
            self.problem = problem
        if first:
            logger.warning(
                "%s; answers go on, and their log rows are held in memory until "
                "the log can be written (at most %d, then new requests are refused)",
                problem,
                self.limit,
            )

    def _flush(self) -> bool:
        """Write the held entries, those that join meanwhile too; whether the log
        took them all. A request id the log already holds is skipped."""
        written = 0
        while True:
            with self._lock:
                batch, self._held = self._held, []
                self._flushing = bool(batch)
            if not batch:
                break
            try:
                self.log.append_all(batch, known=True)
            except ConfigError as exc:
                self._hold(batch, str(exc))
                return False
            finally:
                with self._lock:
                    self._flushing = False
            written += len(batch)
        with self._lock:
            self.problem = None
        if written:
            logger.warning(
                "request log %s can be written again: wrote the %d requests held back",
                self.log.path,
                written,
            )
        return True

    def _retry(self) -> None:
        while not self._closing.wait(_RETRY_EVERY_S):
            if self._held:
                self._flush()

    def _save(self) -> None:
        path = unsaved_path(self.log.path)
        lines = "".join(json.dumps(e.as_dict()) + "\n" for e in self._held)
        try:
            with path.open("a", encoding="utf-8") as handle:
                handle.write(lines)
        except OSError as exc:
            logger.error(
                "request log %s: could not save %d unwritten requests to %s (%s); "
                "here they are, one JSON object a line:\n%s",
                self.log.path,
                self.held,
                path,
                exc.strerror,
                lines,
            )
            return
        logger.error(
            "request log %s could not be written (%s): saved its last %d requests "
            "to %s; the next gateway on this log writes them in",
            self.log.path,
            self.problem,
            self.held,
            path,
        )

    def _recover(self) -> None:
        """Write in the entries a gateway saved beside this log, then remove them."""
        path = unsaved_path(self.log.path)
        if not path.exists():
            return
        entries = _read_saved(path)
        self.log.append_all(entries, known=True)
        self.log.mark_interrupted()  # saved in flight: never ended
        path.unlink()
        logger.warning(
            "request log %s: wrote in the %d requests saved in %s",
            self.log.path,
            len(entries),
            path,
        )


def _read_saved(path: Path) -> Sequence[RequestEntry]:
    entries = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                entries.append(_from_dict(json.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                raise ConfigError(
                    f"line {number} of {path} is not a saved request ({exc}); "
                    "repair or remove that line, or move the file aside, and start "
                    "the gateway again"
                ) from None
    return entries


def _from_dict(values: dict[str, Any]) -> RequestEntry:
    calls = tuple(CallEntry(**call) for call in values.pop("calls"))
    answered_by = tuple(values.pop("answered_by"))
    return RequestEntry(**values, calls=calls, answered_by=answered_by)
