"""The journal of a collection: every finished call, one JSON object a line.

``<store>/collect/<source>.jsonl`` holds one ``JournalEntry`` per call that ended,
in the order they ended, for instance::

    {"item_id": "zeroeval/gsm8k/gsm8k-main-test-#0", "model": "gpt-4o-mini-2024-07-18",
     "response": "...", "input_tokens": 99, "output_tokens": 98, "cost_usd": 7.365e-05,
     "finish_reason": "stop", "latency_s": 0.0123, "attempts": 1, "error": null,
     "at": 1718000000.123}

(on one line). A failed call has ``"error": "<kind>: <message>"``, no response and
no cost. Each line is flushed and fsync'd before the run goes on, so an interrupted
run loses nothing it paid for. Opening the journal takes an exclusive lock on it,
so two runs cannot collect the same source at once; a last line cut short by a crash
is dropped with a warning, any other malformed line is an error.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from xrouter.core.errors import ConfigError, SourceFormatError
from xrouter.core.types import CallRecord

__all__ = ["Journal", "JournalEntry"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JournalEntry:
    """One line of the journal: one finished call (``error`` set if it failed)."""

    item_id: str
    model: str
    response: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    finish_reason: str
    latency_s: float
    attempts: int
    error: str | None
    at: float
    usage_counted: bool = False  # xrouter counted the tokens: the server sent none

    @classmethod
    def of(cls, item_id: str, call: CallRecord) -> JournalEntry:
        return cls(
            item_id=item_id,
            model=call.model,
            response=call.response,
            input_tokens=call.usage.input_tokens,
            output_tokens=call.usage.output_tokens,
            cost_usd=call.cost_usd,
            finish_reason=call.finish_reason,
            latency_s=round(call.latency_s, 4),
            attempts=call.attempts,
            error=call.error,
            at=round(time.time(), 3),
            usage_counted=call.usage.counted,
        )


class Journal:
    """The append-only JSONL journal of one collection, locked while open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[JournalEntry] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = path.open("a+b")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise ConfigError(
                f"another `xrouter data collect` is writing {path}; wait for it to "
                "finish or collect under another --name"
            ) from None
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        self._file.seek(0)
        data = self._file.read()
        lines = data.split(b"\n")
        offset = 0
        for number, raw in enumerate(lines, 1):
            last = number == len(lines) or (number == len(lines) - 1 and not lines[-1])
            if raw.strip():
                try:
                    self.entries.append(JournalEntry(**json.loads(raw)))
                except (ValueError, TypeError) as exc:
                    # Only a last line that is not whole JSON was cut short by a
                    # write; whole JSON of another shape was written so.
                    if not last or not isinstance(exc, json.JSONDecodeError):
                        raise SourceFormatError(
                            f"{self.path}, line {number}: not a journal entry ({exc}); "
                            "fix or delete that line, then run again"
                        ) from None
                    logger.warning(
                        "%s: dropped its last line, cut short by an interrupted "
                        "write (%d bytes)",
                        self.path,
                        len(raw),
                    )
                    self._file.truncate(offset)
                    self._sync()
                    return
            offset += len(raw) + 1
        if data and not data.endswith(b"\n"):
            self._file.write(b"\n")
            self._sync()

    def append(self, entry: JournalEntry) -> None:
        self._file.write(json.dumps(asdict(entry)).encode() + b"\n")
        self._sync()
        self.entries.append(entry)

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
