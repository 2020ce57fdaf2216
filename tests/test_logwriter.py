"""The gateway's log writes while another program holds the SQLite file locked:
rows wait in order and are written once the lock goes, the spend they carry
still counts, and rows still waiting at shutdown are saved beside the log and
written in by the next owner."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from test_requestlog import MAY_9, entry
from typer.testing import CliRunner

from xrouter.cli import logs  # noqa: F401  (registers the sub-commands)
from xrouter.cli.app import app
from xrouter.core.errors import ConfigError
from xrouter.serve import requestlog
from xrouter.serve.logwriter import LogWriter, unsaved_path
from xrouter.serve.requestlog import IN_FLIGHT, INTERRUPTED, RequestLog

runner = CliRunner()


@pytest.fixture
def path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(requestlog, "_BUSY_TIMEOUT_S", 0.2)
    return tmp_path / "requests.sqlite"


@pytest.fixture
def locker(path: Path) -> Iterator[sqlite3.Connection]:
    """Another program's connection to the log, which the test locks it with."""
    RequestLog(path).close()  # the file exists, with its schema
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        yield other


def wait_until_written(writer: LogWriter) -> None:
    for _ in range(200):  # the writer retries every half second
        if writer.held == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"{writer.held} rows still wait: {writer.problem}")


def test_rows_wait_while_the_log_is_locked_and_are_written_after(
    path: Path, locker: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    writer = LogWriter(RequestLog(path, owner=True))
    try:
        writer.write(entry("before"))
        locker.execute("BEGIN EXCLUSIVE")  # as an sqlite3 shell or a backup may
        start = entry("r1", outcome=IN_FLIGHT, cost_usd=0.0, calls=())
        with caplog.at_level(logging.WARNING, logger="xrouter.serve.logwriter"):
            writer.write(start)  # waits out the busy timeout once
            writer.write(entry("r1"))  # joins the waiting row without a wait
            writer.write(entry("r2", key_name="bob", cost_usd=0.5))
        locked = (
            f"cannot write to the request log {path} (database is locked); another "
            "program holds it locked (an sqlite3 shell, a backup): close it"
        )
        assert (writer.held, writer.problem) == (3, locked)
        assert caplog.messages == [
            f"{locked}; answers go on, and their log rows are held in memory until "
            "the log can be written (at most 10000, then new requests are refused)"
        ]
        # The waiting rows' spend counts in the day's limits meanwhile.
        assert writer.spend(MAY_9) == 0.25 + 0.25 + 0.5
        assert writer.spend(MAY_9, "bob") == 0.5
        assert not writer.full

        locker.execute("ROLLBACK")
        wait_until_written(writer)
        assert writer.problem is None
        logged = {e.request_id: e for e in writer.log.recent(10)}
        assert sorted(logged) == ["before", "r1", "r2"]
        assert logged["r1"] == entry("r1")  # the answer replaced its in-flight row
        assert writer.spend(MAY_9) == 1.0
    finally:
        writer.close()
    assert not unsaved_path(path).exists()


def test_the_limit_of_waiting_rows_makes_the_writer_full(
    path: Path, locker: sqlite3.Connection
) -> None:
    writer = LogWriter(RequestLog(path, owner=True), limit=2)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        writer.write(entry("r1"))
        assert not writer.full
        writer.write(entry("r2"))
        assert writer.full
        locker.execute("ROLLBACK")
        wait_until_written(writer)
        assert not writer.full
    finally:
        writer.close()


def test_rows_still_waiting_at_shutdown_are_saved_and_written_by_the_next_owner(
    path: Path, locker: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    writer = LogWriter(RequestLog(path, owner=True))
    locker.execute("BEGIN EXCLUSIVE")
    served, left = entry("r1"), entry("r2", outcome=IN_FLIGHT, cost_usd=0.0, calls=())
    writer.write(served)
    writer.write(left)  # a request that never ended
    with caplog.at_level(logging.ERROR, logger="xrouter.serve.logwriter"):
        writer.close()
    saved = unsaved_path(path)
    assert saved.name == "requests.sqlite.unsaved.jsonl"
    lines = saved.read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["r1", "r2"]
    assert caplog.messages[-1] == (
        f"request log {path} could not be written (cannot write to the request log "
        f"{path} (database is locked); another program holds it locked (an sqlite3 "
        "shell, a backup): close it): saved its last 2 requests to "
        f"{saved}; the next gateway on this log writes them in"
    )
    locker.execute("ROLLBACK")
    shown = runner.invoke(app, ["logs", "--db", str(path)])
    assert shown.exit_code == 0
    assert " ".join(shown.stderr.split()) == (
        f"note: 2 rows the gateway could not write wait in {saved}; they are not "
        "shown or counted here until the next `xrouter serve` on this log writes "
        "them in"
    )

    writer = LogWriter(RequestLog(path, owner=True))
    try:
        logged = {e.request_id: e for e in writer.log.recent(10)}
        assert logged["r1"] == served
        assert logged["r2"].outcome == INTERRUPTED
        assert not saved.exists()
    finally:
        writer.close()
    # Written in once: a start that finds the rows already there skips them.
    saved.write_text(lines[0] + "\n")
    writer = LogWriter(RequestLog(path, owner=True))
    try:
        assert [e.request_id for e in writer.log.recent(10)] == ["r2", "r1"]
    finally:
        writer.close()


def test_a_damaged_saved_file_stops_the_start_and_says_which_line(
    path: Path,
) -> None:
    saved = unsaved_path(path)
    saved.parent.mkdir(parents=True, exist_ok=True)
    good = json.dumps(entry("r1").as_dict())
    saved.write_text(f"{good}\n{{not json\n")
    log = RequestLog(path, owner=True)
    with pytest.raises(ConfigError) as info:
        LogWriter(log)
    log.close()
    assert str(info.value) == (
        f"line 2 of {saved} is not a saved request (Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1)); repair or remove "
        "that line, or move the file aside, and start the gateway again"
    )
    assert saved.exists()  # kept for the person to repair
