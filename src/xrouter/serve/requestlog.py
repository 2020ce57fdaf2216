"""The gateway's durable request log: a SQLite row per request and one per call.

The gateway logs a request as ``in_flight`` before it calls any model, and
replaces that row with the request's trace before it acknowledges the request; the
daily limits read the day's spend back from it after a restart, and ``xrouter
logs`` / ``xrouter spend`` show it to people. A gateway that opens its log finds
the rows a stopped one left in flight (it was killed or crashed mid-request) and
marks them ``interrupted``: their calls may have been billed by the upstreams
without being logged.

Durability: the file is in WAL mode with ``synchronous=NORMAL``, so a row survives
a crash or a kill of the gateway process once :meth:`RequestLog.append` has
returned (the commit has reached the WAL file). A crash of the operating system
or a power cut may lose the last commits; ``synchronous=FULL`` would prevent that
at the price of an fsync per request.

Appends use one connection under a lock. Reads, and the checkpoints that copy
the WAL into the database file five times a second, use a second one, so neither
delays an append. Any thread may use a log. The tables are in ``_SCHEMA``;
``PRAGMA user_version`` holds the schema version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import operator
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from xrouter.core.errors import ConfigError
from xrouter.records.store import default_store_path
from xrouter.serve.logpath import check_path, own

__all__ = [
    "INTERRUPTED",
    "IN_FLIGHT",
    "CallEntry",
    "RequestEntry",
    "RequestLog",
    "SummaryBy",
    "default_log_path",
]

# The outcome of a request still running, and of one its gateway never finished.
IN_FLIGHT, INTERRUPTED = "in_flight", "interrupted"
_INTERRUPTED_ERROR = (
    "the gateway stopped (killed or crashed) before this request ended; the "
    "upstreams may have billed calls that this log has no record of"
)

_SCHEMA_VERSION = 1
_APPLICATION_ID = 0x78526C67  # "xRlg"
_BUSY_TIMEOUT_S = 5.0
_CHECKPOINT_EVERY_S = 0.2
logger = logging.getLogger(__name__)

# IF NOT EXISTS: two processes may create the same new log at once.
_SCHEMA = f"""BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, ts REAL NOT NULL, key_name TEXT,
    router TEXT NOT NULL, requested_model TEXT NOT NULL, strategy TEXT NOT NULL,
    answered_by TEXT NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, latency_s REAL NOT NULL,
    status INTEGER NOT NULL, outcome TEXT NOT NULL, stream INTEGER NOT NULL,
    prompt TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS calls (
    request_id TEXT NOT NULL, seq INTEGER NOT NULL, model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL, latency_s REAL NOT NULL, error TEXT,
    by_router INTEGER NOT NULL, PRIMARY KEY (request_id, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE INDEX IF NOT EXISTS requests_key_ts ON requests (key_name, ts);
PRAGMA application_id = {_APPLICATION_ID};
PRAGMA user_version = {_SCHEMA_VERSION};
COMMIT;"""
# Column order of the inserts and selects; answered_by is stored as a JSON list.
_REQUEST_FIELDS = (
    "request_id", "ts", "key_name", "router", "requested_model", "strategy",
    "input_tokens", "output_tokens", "cost_usd", "latency_s", "status", "outcome",
    "stream", "prompt", "error",
)  # fmt: skip
_CALL_FIELDS = (
    "model", "input_tokens", "output_tokens", "cost_usd", "latency_s", "error",
    "by_router",
)  # fmt: skip
_REQUEST_COLUMNS = ", ".join((*_REQUEST_FIELDS, "answered_by"))
_CALL_COLUMNS = ", ".join(_CALL_FIELDS)
_INSERT_REQUEST = f"INSERT INTO requests ({_REQUEST_COLUMNS}) VALUES ({'?, ' * 15}?)"
_INSERT_CALL = (
    f"INSERT INTO calls (request_id, seq, {_CALL_COLUMNS}) VALUES ({'?, ' * 8}?)"
)
_request_values = operator.attrgetter(*_REQUEST_FIELDS)
_call_values = operator.attrgetter(*_CALL_FIELDS)

SummaryBy = Literal["key", "model", "router", "day", "outcome"]
# Each grouping's SQL expression, and whether it groups calls (else requests).
_GROUPS: dict[str, tuple[str, bool]] = {
    "key": ("key_name", False),
    "router": ("router", False),
    "outcome": ("outcome", False),
    "day": ("strftime('%Y-%m-%d', requests.ts, 'unixepoch')", False),
    "model": ("calls.model", True),
}
_COUNTS = ("requests", "errors", "input_tokens", "output_tokens")


def default_log_path() -> Path:
    """``$XROUTER_HOME/gateway/requests.sqlite`` (XROUTER_HOME: ~/.cache/xrouter)."""
    return default_store_path().parent / "gateway" / "requests.sqlite"


@dataclass(frozen=True)
class CallEntry:
    """One model call made for a request (by the router or by the orchestrator)."""

    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    error: str | None = None
    by_router: bool = False


@dataclass(frozen=True)
class RequestEntry:
    """What the gateway did with one request: ``ts`` in unix seconds,
    ``requested_model`` the ``model`` field the client sent, ``outcome`` "ok" or
    the refusal or failure ("budget", "auth", ...), ``prompt`` only when the
    gateway is configured to keep prompts."""

    request_id: str
    ts: float
    key_name: str | None
    router: str
    requested_model: str
    strategy: str
    answered_by: tuple[str, ...]
    calls: tuple[CallEntry, ...]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    status: int
    outcome: str
    stream: bool
    prompt: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The entry as plain JSON-ready values."""
        return asdict(self)


class RequestLog:
    """The request log in the SQLite file at ``path``, created if missing.

    ``ConfigError`` for a directory, an unwritable place, a damaged file, another
    program's database or the log of a newer xrouter.

    A gateway opens its log as its ``owner``, which it stays until it closes it:
    its daily limits count the spend of the requests it logs, so a second gateway
    writing the same log would let both spend a whole limit. A second owner is
    refused (an exclusive ``flock`` on ``<path>.lock`` beside the log).
    """

    def __init__(self, path: Path, *, owner: bool = False, create: bool = True) -> None:
        self.path = Path(path)
        check_path(self.path)
        self._owned = own(self.path) if owner else None
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        try:
            self._writer = _connect(self.path, create=create)
        except BaseException:
            self._release()
            raise
        try:
            self._reader = _connect(self.path, create=False)
            if owner:  # no other gateway writes it: what is in flight was left
                self.mark_interrupted()
        except BaseException:
            self._writer.close()
            self._release()
            raise
        # Checkpoints (fsync included) run in a thread; appends do one only when
        # it falls behind by 10,000 pages (SQLite's default would be 1,000).
        self._writer.execute("PRAGMA wal_autocheckpoint = 10000")
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoints, daemon=True)
        self._checkpointer.start()

    def close(self) -> None:
        """Close both connections; closing twice is harmless."""
        self._closing.set()
        self._checkpointer.join()
        with self._write_lock, self._read_lock:
            self._writer.close()
            self._reader.close()
        self._release()

    def _release(self) -> None:
        if self._owned is not None:
            self._owned.close()  # releases the lock
            self._owned = None

    def _checkpoints(self) -> None:
        """Copy the WAL into the database file, off the request path."""
        while not self._closing.wait(_CHECKPOINT_EVERY_S):
            try:
                with self._read_lock:
                    self._reader.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                logger.warning("request log %s: checkpoint failed: %s", self.path, exc)

    def append(self, entry: RequestEntry) -> None:
        """Write ``entry`` and its calls in one transaction, committed on return,
        in place of the request's ``in_flight`` row if it has one; ``ValueError``
        for a request id already in the log otherwise, ``ConfigError`` when the
        file cannot be written (disk full, removed, locked by another program)."""
        self.append_all([entry])

    def append_all(
        self,
        entries: Sequence[RequestEntry],
        *,
        saved: bool = False,
        wait_s: float | None = None,
    ) -> None:
        """Write ``entries`` in order, in one transaction, as :meth:`append` does
        one. ``saved``: rows a gateway kept (its own, or saved beside the log),
        which also replace their requests' ``interrupted`` rows and skip rows the
        log already holds.
        ``wait_s``: how long to wait for another program's lock (default 5 s)."""
        wait_ms = round(1000 * (_BUSY_TIMEOUT_S if wait_s is None else wait_s))
        with self._write_lock, self._writing():
            self._writer.execute(f"PRAGMA busy_timeout = {wait_ms}")
            self._writer.execute("BEGIN IMMEDIATE")
            for entry in entries:
                try:
                    _insert(self._writer, entry, saved)
                except sqlite3.IntegrityError:
                    raise ValueError(
                        f"request {entry.request_id!r} is already in the request "
                        f"log {self.path}; give each request its own id"
                    ) from None
            self._writer.execute("COMMIT")

    def mark_interrupted(self) -> None:
        """Mark the rows in flight as interrupted: for a gateway that owns the log,
        no request of its own is in flight yet, so these are a stopped one's."""
        with self._write_lock, self._writing():
            self._writer.execute("BEGIN IMMEDIATE")
            self._writer.execute(
                "UPDATE requests SET outcome = ?, error = ? WHERE outcome = ?",
                (INTERRUPTED, _INTERRUPTED_ERROR, IN_FLIGHT),
            )
            self._writer.execute("COMMIT")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Roll back a failed write; ``ConfigError`` for a file it cannot write."""
        try:
            yield
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                self._writer.rollback()
            if isinstance(exc, sqlite3.DatabaseError):
                advice = (
                    "another program holds it locked (an sqlite3 shell, a backup): "
                    "close it"
                    if "locked" in str(exc)
                    else "check that the disk has room and the file is still writable"
                )
                raise ConfigError(
                    f"cannot write to the request log {self.path} ({exc}); {advice}"
                ) from exc
            raise

    def spend(self, since_ts: float, key_name: str | None = None) -> float:
        """USD spent by the requests that arrived at or after ``since_ts``, of
        all keys or of the key named ``key_name``."""
        where = "" if key_name is None else " AND key_name = ?"
        args: list[object] = [since_ts] if key_name is None else [since_ts, key_name]
        sql = f"SELECT total(cost_usd) FROM requests WHERE ts >= ?{where}"
        with self._snapshot() as conn:
            (total,) = conn.execute(sql, args).fetchone()
        return float(total)

    def recent(self, n: int, key_name: str | None = None) -> list[RequestEntry]:
        """The last ``n`` requests (of the key named ``key_name``), newest first."""
        where = "" if key_name is None else "WHERE key_name = ?"
        args: list[object] = [n] if key_name is None else [key_name, n]
        latest = f"FROM requests {where} ORDER BY ts DESC, rowid DESC LIMIT ?"
        with self._snapshot() as conn:
            rows = conn.execute(f"SELECT {_REQUEST_COLUMNS} {latest}", args).fetchall()
            call_rows = conn.execute(
                f"SELECT request_id, {_CALL_COLUMNS} FROM calls WHERE request_id "
                f"IN (SELECT request_id {latest}) ORDER BY request_id, seq",
                args,
            ).fetchall()
        calls: dict[str, list[CallEntry]] = {}
        for request_id, *values in call_rows:
            call = dict(zip(_CALL_FIELDS, values, strict=True))
            call["by_router"] = bool(call["by_router"])
            calls.setdefault(request_id, []).append(CallEntry(**call))
        return [_entry(row, calls.get(row[0], [])) for row in rows]

    def summary(self, since_ts: float, by: SummaryBy) -> list[dict[str, Any]]:
        """Figures per group of the requests that arrived at or after ``since_ts``:
        ``requests``, ``errors`` (outcome not "ok"), ``input_tokens``,
        ``output_tokens``, ``cost_usd``, ``p50_latency_s`` and ``p95_latency_s``,
        with the group's value under the key ``by``. By model the figures are the
        calls': a request that called two models counts for both, ``errors``
        counts failed calls, requests that called no model are left out. Days
        (UTC) come in order, other groups by cost, highest first."""
        if by not in _GROUPS:
            raise ValueError(f"cannot group by {by!r}; choose one of {list(_GROUPS)}")
        groups = self._aggregate(*_GROUPS[by], since_ts)
        if by == "day":
            groups.sort(key=lambda g: str(g["group"]))
        else:
            groups.sort(key=lambda g: (-g["cost_usd"], str(g["group"])))
        return [{by: g.pop("group"), **g} for g in groups]

    def totals(self, since_ts: float) -> dict[str, Any]:
        """The figures of :meth:`summary` for all requests since ``since_ts``."""
        found = self._aggregate("NULL", False, since_ts)
        total = found[0] if found else _figures((None, 0, 0, 0, 0, 0.0), [])
        return {name: value for name, value in total.items() if name != "group"}

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """The reading connection, inside one read transaction."""
        with self._read_lock:
            try:
                self._reader.execute("BEGIN")
                try:
                    yield self._reader
                finally:
                    self._reader.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                raise ConfigError(
                    f"cannot read the request log {self.path} (SQLite: {exc}); if "
                    "it is damaged, move it aside (a new log is then started)"
                ) from None

    def _aggregate(
        self, expr: str, on_calls: bool, since_ts: float
    ) -> list[dict[str, Any]]:
        rows, table, counted = "requests WHERE ts >= ?", "requests", "*"
        failed = "requests.outcome != 'ok'"
        if on_calls:
            rows = "calls JOIN requests USING (request_id) WHERE requests.ts >= ?"
            table, counted = "calls", "DISTINCT calls.request_id"
            failed = "calls.error IS NOT NULL"
        sums = (
            f"SELECT {expr}, count({counted}), total({failed}), "
            f"total({table}.input_tokens), total({table}.output_tokens), "
            f"total({table}.cost_usd) FROM {rows} GROUP BY 1"
        )
        spread: dict[Any, list[float]] = {}
        with self._snapshot() as conn:
            grouped = conn.execute(sums, (since_ts,)).fetchall()
            latencies = f"SELECT {expr}, {table}.latency_s FROM {rows}"
            for group, latency in conn.execute(latencies, (since_ts,)):
                spread.setdefault(group, []).append(latency)
        return [_figures(row, spread[row[0]]) for row in grouped]


def _figures(row: Sequence[Any], latencies: list[float]) -> dict[str, Any]:
    latencies.sort()
    return {
        "group": row[0],
        **dict(zip(_COUNTS, map(int, row[1:5]), strict=True)),
        "cost_usd": float(row[5]),
        "p50_latency_s": _percentile(latencies, 0.50),
        "p95_latency_s": _percentile(latencies, 0.95),
    }


def _percentile(ordered: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of sorted values, as numpy's default method computes it."""
    if not ordered:
        return None
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _insert(conn: sqlite3.Connection, entry: RequestEntry, saved: bool) -> None:
    """Insert ``entry`` and its calls, in place of its ``in_flight`` row (or, for a
    ``saved`` one, ``interrupted`` row) if any."""
    replaced = (IN_FLIGHT, INTERRUPTED if saved else IN_FLIGHT)
    conn.execute(
        "DELETE FROM requests WHERE request_id = ? AND outcome IN (?, ?)",
        (entry.request_id, *replaced),
    )
    found = "SELECT 1 FROM requests WHERE request_id = ?"
    if saved and conn.execute(found, (entry.request_id,)).fetchone():
        return  # written in by an earlier start
    conn.execute(
        _INSERT_REQUEST, (*_request_values(entry), json.dumps(entry.answered_by))
    )
    calls = [
        (entry.request_id, n, *_call_values(call)) for n, call in enumerate(entry.calls)
    ]
    if calls:
        conn.executemany(_INSERT_CALL, calls)


def _entry(row: Sequence[Any], calls: list[CallEntry]) -> RequestEntry:
    fields = dict(zip(_REQUEST_FIELDS, row, strict=False))
    fields["stream"] = bool(fields["stream"])
    answered_by = tuple(json.loads(row[len(_REQUEST_FIELDS)]))
    return RequestEntry(**fields, answered_by=answered_by, calls=tuple(calls))


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    """A connection in WAL mode to a log of this schema (created if ``create``)."""
    conn = sqlite3.connect(
        path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        _check_schema(conn, path, create)  # first: a file of another kind is kept
        if conn.execute("PRAGMA journal_mode=WAL").fetchone() != ("wal",):
            raise ConfigError(
                f"request log {path} cannot be put in WAL mode; put it on a local disk"
            )
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.DatabaseError as exc:  # a damaged file, a lock held too long
        conn.close()
        raise ConfigError(
            f"cannot use {path} as the request log (SQLite: {exc}); if another "
            "program holds it locked, stop that program; if it is damaged, move it "
            "aside (a new log is then started); or give another path"
        ) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _check_schema(conn: sqlite3.Connection, path: Path, create: bool) -> None:
    header = "SELECT * FROM pragma_application_id, pragma_user_version"
    app_id, version = conn.execute(header).fetchone()
    if create and (app_id, version) == (0, 0):
        (tables,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if tables == 0:
            conn.executescript(_SCHEMA)
            app_id, version = conn.execute(header).fetchone()
    if app_id != _APPLICATION_ID:
        raise ConfigError(
            f"{path} is a SQLite database but not an xrouter request log; give "
            "another path"
        )
    if version != _SCHEMA_VERSION:
        what = "upgrade xrouter" if version > _SCHEMA_VERSION else "move it aside"
        raise ConfigError(
            f"request log {path} has schema version {version}, and this xrouter "
            f"reads version {_SCHEMA_VERSION} only; {what} or give another path"
        )
