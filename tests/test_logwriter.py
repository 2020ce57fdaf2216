"""The gateway's log writes while the SQLite file cannot be written (another
program holds it locked, it was removed): rows wait in order and are written once
it can be, the spend they carry still counts, concurrent writers wait out the lock
once, and rows still waiting at shutdown are saved beside the log and written in
by the next owner, in place of the rows their requests left in flight."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import ClientDisconnect
from test_requestlog import MAY_9, entry
from typer.testing import CliRunner

from xrouter.cli import logs  # noqa: F401  (registers the sub-commands)
from xrouter.cli.app import app
from xrouter.core.errors import ConfigError
from xrouter.serve import requestlog
from xrouter.serve.logwriter import LogWriter, unsaved_path
from xrouter.serve.requestlog import IN_FLIGHT, INTERRUPTED, RequestLog

runner = CliRunner()
STARTED = dict(outcome=IN_FLIGHT, status=0, cost_usd=0.0, calls=())
REFUSED = dict(outcome="auth", status=401, cost_usd=0.0, calls=(), answered_by=())


@pytest.fixture
def path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(requestlog, "_BUSY_TIMEOUT_S", 0.3)
    return tmp_path / "requests.sqlite"


@pytest.fixture
def locker(path: Path) -> Iterator[sqlite3.Connection]:
    """Another program's connection to the log, which the test locks it with."""
    RequestLog(path).close()  # the file exists, with its schema
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        yield other


def locked(path: Path) -> str:
    return (
        f"cannot write to the request log {path} (database is locked); another "
        "program holds it locked (an sqlite3 shell, a backup): close it"
    )


def wait_until_written(writer: LogWriter) -> None:
    for _ in range(200):  # the writer tries again every half second
        if writer.waiting == 0 and writer.problem is None:
            return
        time.sleep(0.05)
    raise AssertionError(f"{writer.waiting} rows still wait: {writer.problem}")


def test_rows_wait_while_the_log_is_locked_and_are_written_after(
    path: Path, locker: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    writer = LogWriter(RequestLog(path, owner=True))
    try:
        writer.write(entry("before"))
        locker.execute("BEGIN EXCLUSIVE")  # as an sqlite3 shell or a backup may
        with caplog.at_level(logging.WARNING, logger="xrouter.serve.logwriter"):
            writer.write(entry("r1", **STARTED))  # waits out the busy timeout
            writer.write(entry("r1"))  # joins the waiting row
            writer.write(entry("r2", key_name="bob", cost_usd=0.5))
            # The count stays right while the writer tries again and again.
            counts = set()
            for _ in range(15):
                counts.add((writer.waiting, writer.problem))
                time.sleep(0.1)
            assert counts == {(3, locked(path))}
            # The waiting rows' spend counts in the day's limits meanwhile.
            assert writer.spend(MAY_9) == 0.25 + 0.25 + 0.5
            assert writer.spend(MAY_9, "bob") == 0.5
            assert not writer.full

            locker.execute("ROLLBACK")
            wait_until_written(writer)
        assert caplog.messages == [
            f"{locked(path)}; answers go on, and their log rows wait in memory until "
            "the log can be written (at most 10000, then new requests get 503)",
            f"request log {path} can be written again: wrote the 3 rows that waited",
        ]
        assert writer.problem is None
        logged = {e.request_id: e for e in writer.log.recent(10)}
        assert sorted(logged) == ["before", "r1", "r2"]
        assert logged["r1"] == entry("r1")  # the answer replaced its in-flight row
        assert writer.spend(MAY_9) == 1.0
    finally:
        writer.close()
    assert not unsaved_path(path).exists()


def test_concurrent_writers_wait_out_one_lock_together(
    path: Path, locker: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(requestlog, "_BUSY_TIMEOUT_S", 2.0)  # all start within it
    writer = LogWriter(RequestLog(path, owner=True))
    attempts: list[int] = []
    append_all = writer.log.append_all

    def counted(entries: Any, **options: Any) -> None:
        attempts.append(len(entries))
        append_all(entries, **options)

    monkeypatch.setattr(writer.log, "append_all", counted)
    locker.execute("BEGIN EXCLUSIVE")
    seen: list[int] = []  # attempts made when each write returned

    def write(n: int) -> None:
        writer.write(entry(f"r{n}"))
        seen.append(len(attempts))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        # One busy wait that all eight rows wait out together, not eight in turn.
        assert seen == [1] * 8 and writer.waiting == 8
        locker.execute("ROLLBACK")
        wait_until_written(writer)
        assert len(writer.log.recent(10)) == 8
    finally:
        writer.close()


def test_the_limit_of_waiting_rows_makes_the_writer_full(
    path: Path, locker: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    writer = LogWriter(RequestLog(path, owner=True), limit=2)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        writer.write(entry("r1"))
        # While the log fails, a refusal's row is counted, not kept.
        assert not writer.write(entry("no-key", **REFUSED))
        assert not writer.full
        writer.write(entry("r2"))
        assert writer.full
        assert writer.write(entry("r3"))  # an answer's row still waits
        assert (writer.waiting, writer.dropped) == (3, 1)
        locker.execute("ROLLBACK")
        wait_until_written(writer)
        assert not writer.full
        assert [e.request_id for e in writer.log.recent(5)] == ["r3", "r2", "r1"]
    finally:
        writer.close()
    assert caplog.messages[-1] == (
        f"request log {path}: no row kept for 1 request refused or starting while "
        "it could not be written"
    )


def test_rows_still_waiting_at_shutdown_are_saved_and_written_by_the_next_owner(
    path: Path, locker: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    writer = LogWriter(RequestLog(path, owner=True))
    writer.write(entry("r1", **STARTED))  # logged in flight before the lock
    locker.execute("BEGIN EXCLUSIVE")
    served = entry("r1")
    left = entry("r2", **STARTED)  # a request that never ended
    writer.write(left)  # kept: the log was not known to fail yet
    writer.write(served)
    with caplog.at_level(logging.WARNING, logger="xrouter.serve.logwriter"):
        writer.close()
    saved = unsaved_path(path)
    assert saved.name == "requests.sqlite.unsaved.jsonl"
    lines = saved.read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["r2", "r1"]
    assert caplog.messages[-2:] == [
        f"request log {path}: 2 rows still waiting; trying once more before saving",
        f"{locked(path)}. Saved the 2 rows that waited to {saved}; the next gateway "
        "on this log writes them in",
    ]
    locker.execute("ROLLBACK")
    shown = runner.invoke(app, ["logs", "--db", str(path)])
    assert shown.exit_code == 0
    assert " ".join(shown.stderr.split()) == (
        f"note: 2 rows the gateway could not write wait in {saved}; they are not "
        "shown or counted here until the next `xrouter serve` on this log writes "
        "them in"
    )

    # The next owner marks r1's in-flight row interrupted on opening; the saved
    # answer then takes its place, with its cost.
    writer = LogWriter(RequestLog(path, owner=True))
    try:
        logged = {e.request_id: e for e in writer.log.recent(10)}
        assert logged["r1"] == served
        assert logged["r2"].outcome == INTERRUPTED
        assert writer.log.spend(0) == 0.25
        assert not saved.exists()
    finally:
        writer.close()
    # Written in once: a start that finds the rows already there skips them.
    saved.write_text(lines[0] + "\n\n")
    writer = LogWriter(RequestLog(path, owner=True))
    try:
        assert [e.request_id for e in writer.log.recent(10)] == ["r2", "r1"]
        assert writer.log.spend(0) == 0.25
    finally:
        writer.close()


def test_a_removed_log_keeps_its_rows_for_the_next_start(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = LogWriter(RequestLog(path, owner=True))
    writer.write(entry("r1"))
    for name in ("requests.sqlite", "requests.sqlite-wal", "requests.sqlite-shm"):
        (path.parent / name).unlink(missing_ok=True)
    writer.write(entry("r2"))
    assert writer.waiting == 1
    assert writer.problem == (
        f"the request log {path} was removed or replaced while the gateway ran; the "
        "rows wait in memory, are saved beside it when the gateway stops, and the "
        "next start writes them into the log there"
    )
    writer.close()
    writer = LogWriter(RequestLog(path, owner=True))
    try:
        assert [e.request_id for e in writer.log.recent(5)] == ["r2"]
    finally:
        writer.close()


def test_rows_that_cannot_be_saved_either_go_to_stderr_one_a_line(
    path: Path, locker: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = LogWriter(RequestLog(path, owner=True))
    locker.execute("BEGIN EXCLUSIVE")
    writer.write(entry("r1"))
    writer.write(entry("r2"))
    unsaved_path(path).mkdir()  # in the way of the saved file
    writer.close()
    printed = capsys.readouterr().err.splitlines()
    assert [json.loads(line) for line in printed] == [
        json.loads(json.dumps(entry(n).as_dict())) for n in ("r1", "r2")
    ]


def test_a_log_locked_at_start_is_refused_in_one_line(
    path: Path, locker: sqlite3.Connection
) -> None:
    locker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(ConfigError) as info:
        RequestLog(path, owner=True)
    assert str(info.value) == locked(path)
    locker.execute("ROLLBACK")
    RequestLog(path, owner=True).close()  # the lock file was let go


GOOD = json.dumps(entry("r1").as_dict())


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (f"{GOOD}\n{{not json\n", "line 2 of {saved} is not a saved request row "
         "(Invalid JSON: key must be a string at line 1 column 2)"),
        ("null\n", "line 1 of {saved} is not a saved request row (Input should be "
         "an object)"),
        (GOOD.replace('"ts": ', '"ts": null, "x": '), "line 1 of {saved} is not a "
         "saved request row (ts: Input should be a valid number)"),
        (GOOD.replace('"cost_usd": 0.25', '"cost_usd": "lots"', 1), "line 1 of "
         "{saved} is not a saved request row (calls.0.cost_usd: Input should be a "
         "valid number)"),
        (b"\xff\xfe\n", "line 1 of {saved} is not a saved request row (Invalid "
         "JSON: expected value at line 1 column 1)"),
        (GOOD.replace('"cost_usd": 0.25', '"cost_usd": NaN', 1), "line 1 of {saved} "
         "is not a saved request row (calls.0.cost_usd: nan is not a number >= 0)"),
        (GOOD.replace('"latency_s": 1.0', '"latency_s": -1.0'), "line 1 of {saved} "
         "is not a saved request row (latency_s: -1.0 is not a number >= 0)"),
        (GOOD.replace('"r1"', '""'), "line 1 of {saved} is not a saved request row "
         "(request_id: it is empty)"),
    ],
)  # fmt: skip
def test_a_damaged_saved_file_stops_the_start_and_says_which_line(
    path: Path, content: str | bytes, says: str
) -> None:
    saved = unsaved_path(path)
    saved.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        saved.write_bytes(content)
    else:
        saved.write_text(content)
    log = RequestLog(path, owner=True)
    with pytest.raises(ConfigError) as info:
        LogWriter(log)
    log.close()
    assert str(info.value) == says.format(saved=saved) + (
        "; repair or remove that line, or move the file aside, and start the "
        "gateway again"
    )
    assert saved.exists()  # kept for the person to repair
    with closing(RequestLog(path)) as reader:
        assert reader.recent(5) == []  # nothing of it written


def test_a_saved_file_that_is_a_folder_is_named(path: Path) -> None:
    saved = unsaved_path(path)
    saved.mkdir(parents=True)
    log = RequestLog(path, owner=True)
    with pytest.raises(ConfigError) as info:
        LogWriter(log)
    log.close()
    assert str(info.value) == (
        f"{saved} should hold the rows a gateway could not write to its request "
        "log, but it is not a file; move it aside and start the gateway again"
    )


def test_a_stream_whose_events_never_ran_is_still_logged() -> None:
    # The client is gone before the first event: the response's start cannot be
    # sent, the events never run, and their own logging with them.
    from xrouter.serve.service import _EventStream

    ran, left = [], []

    async def events() -> Any:
        ran.append("events")
        yield "data: {}\n\n"

    async def log_left() -> None:
        left.append("logged as left")

    async def gone(message: Any) -> None:
        raise OSError("the client left")

    async def nothing() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    response = _EventStream(events(), log_left, media_type="text/event-stream")
    scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
    with pytest.raises(ClientDisconnect):
        asyncio.run(response(scope, nothing, gone))
    assert (ran, left) == ([], ["logged as left"])
