"""The gateway's request log on real SQLite files: round trips, sums and groupings,
durability across a SIGKILL, concurrent appends, refusals of bad files, and the
`xrouter logs` / `xrouter spend` commands."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from xrouter.cli import logs  # noqa: F401  (registers the sub-commands)
from xrouter.cli.app import app
from xrouter.core.errors import ConfigError
from xrouter.serve import requestlog
from xrouter.serve.requestlog import (
    IN_FLIGHT,
    INTERRUPTED,
    CallEntry,
    RequestEntry,
    RequestLog,
)

runner = CliRunner()
MAY_9 = datetime(2026, 5, 9, tzinfo=UTC).timestamp()
HOUR = 3600.0


def entry(request_id: str, **fields: Any) -> RequestEntry:
    """A served request by key alice, one call to m1; ``fields`` override."""
    values: dict[str, Any] = dict(
        ts=MAY_9 + HOUR, key_name="alice", router="xrouter-policy",
        requested_model="xrouter", strategy="single", answered_by=("m1",),
        calls=(CallEntry("m1", 100, 20, 0.25, 1.0),), input_tokens=100,
        output_tokens=20, cost_usd=0.25, latency_s=1.0, status=200, outcome="ok",
        stream=False,
    )  # fmt: skip
    return RequestEntry(request_id, **{**values, **fields})


@pytest.fixture
def log(tmp_path: Path) -> Any:
    with closing(RequestLog(tmp_path / "gateway" / "requests.sqlite")) as opened:
        yield opened


@pytest.fixture
def filled(log: RequestLog) -> RequestLog:
    """Six requests over two days, two keys, two routers, two models."""
    m1, m2 = CallEntry("m1", 100, 20, 0.25, 1.0), CallEntry("m2", 50, 10, 0.5, 3.0)
    failed = CallEntry("m2", 50, 0, 0.0, 0.5, error="timeout: 60 s")
    log.append(entry("a1", ts=MAY_9 - HOUR, latency_s=9.0))  # May 8
    log.append(entry("a2", latency_s=1.0))
    log.append(entry("a3", calls=(m1, m2), cost_usd=0.75, latency_s=2.0))
    log.append(entry("b1", key_name="bob", router="direct", calls=(m2,), cost_usd=0.5))
    log.append(entry("b2", key_name="bob", calls=(failed, m1), latency_s=4.0))
    log.append(
        entry(
            "n1", key_name=None, calls=(), cost_usd=0.0, latency_s=0.125,
            status=429, outcome="budget", answered_by=(), error="over the limit",
        )
    )  # fmt: skip
    return log


def test_an_entry_comes_back_as_it_went_in(log: RequestLog) -> None:
    calls = (
        CallEntry("smollm2-135m", 300, 12, 0.0, 0.2, None, by_router=True),
        CallEntry("m1", 100, 20, 0.25, 1.5),
        CallEntry("m2", 100, 0, 0.0, 0.1, error="upstream: 502"),
    )
    sent = entry(
        "r1", calls=calls, answered_by=("m1",), prompt='[{"role": "user"}]',
        stream=True, router="llm:smollm2-135m",
    )  # fmt: skip
    log.append(sent)
    assert log.recent(5) == [sent]
    assert log.recent(5)[0].calls[0].by_router is True


def test_recent_is_newest_first_and_filters_by_key(filled: RequestLog) -> None:
    assert [e.request_id for e in filled.recent(3)] == ["n1", "b2", "b1"]
    assert [e.request_id for e in filled.recent(10, "alice")] == ["a3", "a2", "a1"]
    assert [e.request_id for e in filled.recent(1, "bob")] == ["b2"]
    assert filled.recent(5, "nobody") == []
    two_calls = filled.recent(10, "alice")[0]
    assert [c.model for c in two_calls.calls] == ["m1", "m2"]


def test_spend_sums_cost_since_a_time_for_all_keys_or_one(
    filled: RequestLog,
) -> None:
    assert filled.spend(0) == 0.25 * 2 + 0.75 + 0.5 + 0.25
    assert filled.spend(MAY_9) == 0.25 + 0.75 + 0.5 + 0.25
    assert filled.spend(MAY_9, "alice") == 1.0
    assert filled.spend(MAY_9, "bob") == 0.75
    assert filled.spend(MAY_9 + 2 * HOUR) == 0.0


def figures(*values: Any, **group: Any) -> dict[str, Any]:
    """A summary row: the group, then requests, errors, tokens in and out, cost,
    p50 and p95 latency (compared to 1e-12 s)."""
    names = ("requests", "errors", "input_tokens", "output_tokens", "cost_usd")
    names += ("p50_latency_s", "p95_latency_s")
    close = [*values[:5], *(pytest.approx(v, abs=1e-12) for v in values[5:])]
    return {**group, **dict(zip(names, close, strict=True))}


def test_summary_by_key_counts_errors_tokens_cost_and_latency(
    filled: RequestLog,
) -> None:
    assert filled.summary(MAY_9, "key") == [
        figures(2, 0, 200, 40, 1.0, 1.5, 1.95, key="alice"),
        figures(2, 0, 200, 40, 0.75, 2.5, 3.85, key="bob"),
        figures(1, 1, 100, 20, 0.0, 0.125, 0.125, key=None),
    ]


def test_summary_by_model_counts_a_request_for_each_model_it_called(
    filled: RequestLog,
) -> None:
    # m1 answered a1, a2, a3 and b2; m2 answered a3 and b1, and failed for b2.
    assert filled.summary(0, "model") == [
        figures(4, 0, 400, 80, 1.0, 1.0, 1.0, model="m1"),
        figures(3, 1, 150, 20, 1.0, 3.0, 3.0, model="m2"),
    ]


def test_summary_by_day_router_and_outcome(filled: RequestLog) -> None:
    days = filled.summary(0, "day")
    assert [(d["day"], d["requests"], d["cost_usd"]) for d in days] == [
        ("2026-05-08", 1, 0.25),
        ("2026-05-09", 5, 1.75),
    ]
    routers = filled.summary(MAY_9, "router")
    assert [(r["router"], r["requests"]) for r in routers] == [
        ("xrouter-policy", 4),
        ("direct", 1),
    ]
    outcomes = filled.summary(MAY_9, "outcome")
    assert [(o["outcome"], o["requests"], o["errors"]) for o in outcomes] == [
        ("ok", 4, 0),
        ("budget", 1, 1),
    ]
    assert filled.totals(MAY_9) == figures(5, 1, 500, 100, 1.75, 1.0, 3.6)
    assert filled.totals(MAY_9 + 9 * HOUR)["p50_latency_s"] is None


def test_percentiles_interpolate_between_ranks(log: RequestLog) -> None:
    for n, latency in enumerate([5.0, 1.0, 4.0, 2.0, 3.0, 0.0, 6.0, 7.0, 8.0, 9.0]):
        log.append(entry(f"r{n}", latency_s=latency))
    (row,) = log.summary(0, "key")
    assert row["p50_latency_s"] == 4.5
    assert row["p95_latency_s"] == pytest.approx(8.55, abs=1e-12)


def test_a_duplicate_request_id_is_refused_and_leaves_nothing(
    log: RequestLog,
) -> None:
    log.append(entry("r1"))
    two_calls = (CallEntry("m9", 1, 1, 1.0, 1.0), CallEntry("m9", 1, 1, 1.0, 1.0))
    with pytest.raises(ValueError, match="request 'r1' is already in the request"):
        log.append(entry("r1", calls=two_calls))
    assert [row["model"] for row in log.summary(0, "model")] == ["m1"]
    log.append(entry("r2"))
    assert len(log.recent(10)) == 2


def test_the_file_is_in_wal_mode_with_normal_sync(log: RequestLog) -> None:
    with closing(sqlite3.connect(log.path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        assert sorted(name for (name,) in tables) == ["calls", "requests"]
    assert log._writer.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    assert log._writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (10_000,)


CHILD = """
import sys
from pathlib import Path
from xrouter.serve.requestlog import (
    IN_FLIGHT,
    INTERRUPTED,
    CallEntry,
    RequestEntry,
    RequestLog,
)

log = RequestLog(Path(sys.argv[1]))
for n in range(int(sys.argv[2])):
    call = CallEntry("m1", 10, 5, 0.25, 0.5)
    log.append(RequestEntry(f"r{n}", 1.0 + n, "alice", "direct", "m1", "single",
                            ("m1",), (call,), 10, 5, 0.25, 0.5, 200, "ok", False))
    print(f"appended {n}", flush=True)
sys.stdin.read()  # wait to be killed, the log still open
"""


def test_acknowledged_appends_survive_a_sigkill(tmp_path: Path) -> None:
    path, count = tmp_path / "requests.sqlite", 50
    command = [sys.executable, "-c", CHILD, str(path), str(count)]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        for n in range(count):
            assert child.stdout.readline() == f"appended {n}\n"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    # No clean close happened: the rows are still in the write-ahead log.
    assert Path(f"{path}-wal").stat().st_size > 0
    with closing(RequestLog(path)) as log:
        found = [e.request_id for e in log.recent(count + 10)]
        assert found == [f"r{n}" for n in reversed(range(count))]
        assert log.spend(0) == count * 0.25
        assert log.summary(0, "model")[0]["requests"] == count


def test_one_gateway_at_a_time_owns_a_log(tmp_path: Path) -> None:
    path = tmp_path / "requests.sqlite"
    first = RequestLog(path, owner=True)
    try:
        with pytest.raises(ConfigError) as info:
            RequestLog(path, owner=True)
        assert str(info.value) == (
            f"another gateway (pid {os.getpid()}) is writing the request log {path}; "
            "two gateways on one log would each spend the whole daily limits. Give "
            "this one its own log.path, or stop the other"
        )
        with closing(RequestLog(path)) as reader:  # reading needs no ownership
            assert reader.recent(1) == []
    finally:
        first.close()
    with closing(RequestLog(path, owner=True)):  # free again once closed
        pass


def test_a_request_in_flight_is_replaced_when_it_ends_or_marked_if_never(
    tmp_path: Path,
) -> None:
    path = tmp_path / "requests.sqlite"
    started = dict(status=0, outcome=IN_FLIGHT, calls=(), cost_usd=0.0)
    with closing(RequestLog(path, owner=True)) as log:
        log.append(entry("done", **started))
        log.append(entry("left", **started, ts=MAY_9 + 2 * HOUR))
        log.append(entry("done"))  # its trace takes the in-flight row's place
        assert [(e.request_id, e.outcome) for e in log.recent(5)] == [
            ("left", IN_FLIGHT),
            ("done", "ok"),
        ]
        with pytest.raises(ValueError, match="'done' is already in the request log"):
            log.append(entry("done"))
    # Read by someone else, the row is as it was left.
    with closing(RequestLog(path)) as reader:
        assert reader.recent(1)[0].outcome == IN_FLIGHT
    # The next gateway to own the log knows the one that left it stopped.
    with closing(RequestLog(path, owner=True)) as log:
        left = log.recent(1)[0]
        assert (left.request_id, left.status, left.outcome) == ("left", 0, INTERRUPTED)
        assert left.error == (
            "the gateway stopped (killed or crashed) before this request ended; the "
            "upstreams may have billed calls that this log has no record of"
        )
        assert log.spend(0) == 0.25  # the finished request's cost, once


def test_concurrent_appends_and_reads_lose_nothing(log: RequestLog) -> None:
    threads, each = 8, 150
    failures: list[BaseException] = []
    done = threading.Event()

    def write(t: int) -> None:
        try:
            for n in range(each):
                calls = (
                    CallEntry("m1", 1, 1, 0.25, 0.1),
                    CallEntry("m2", 1, 1, 0, 0.1),
                )
                log.append(entry(f"t{t}-{n}", calls=calls, cost_usd=0.25))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            failures.append(exc)

    def read() -> None:
        while not done.is_set():
            try:
                log.summary(0, "model")
                log.spend(0)
                log.recent(5)
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)
                return

    writers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    reader = threading.Thread(target=read)
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()
    assert failures == []
    assert len(log.recent(10_000)) == threads * each
    assert log.spend(0) == threads * each * 0.25
    models = {row["model"]: row["requests"] for row in log.summary(0, "model")}
    assert models == {"m1": threads * each, "m2": threads * each}


def test_paths_that_cannot_hold_a_log_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        RequestLog(tmp_path)
    assert str(info.value) == (
        f"request log path {tmp_path} is a directory; give the path of a file, "
        f"such as {tmp_path / 'requests.sqlite'}"
    )
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError) as info:
        RequestLog(blocker / "requests.sqlite")
    assert str(info.value) == (
        f"cannot write the request log {blocker / 'requests.sqlite'} (File exists); "
        "give a path in a writable folder"
    )


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "requests.sqlite"
    path.write_bytes(b"not a database " * 500)
    with pytest.raises(ConfigError) as info:
        RequestLog(path)
    assert str(info.value) == (
        f"cannot use {path} as the request log (SQLite: file is not a database); "
        "if another program holds it locked, stop that program; if it is damaged, "
        "move it aside (a new log is then started); or give another path"
    )


def test_another_database_or_another_schema_version_is_refused(
    tmp_path: Path,
) -> None:
    other = tmp_path / "other.sqlite"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.commit()
    with pytest.raises(ConfigError) as info:
        RequestLog(other)
    assert str(info.value) == (
        f"{other} is a SQLite database but not an xrouter request log; give "
        "another path"
    )
    path = tmp_path / "requests.sqlite"
    RequestLog(path).close()
    for version, advice in ((2, "upgrade xrouter"), (0, "move it aside")):
        with closing(sqlite3.connect(path)) as conn:
            conn.execute(f"PRAGMA user_version = {version}")
        with pytest.raises(ConfigError) as info:
            RequestLog(path)
        assert str(info.value) == (
            f"request log {path} has schema version {version}, and this xrouter "
            f"reads version 1 only; {advice} or give another path"
        )


def test_the_read_commands_leave_a_file_of_another_kind_as_it_was(
    tmp_path: Path,
) -> None:
    empty, blank = tmp_path / "empty.sqlite", tmp_path / "blank.db"
    empty.write_bytes(b"")
    with closing(sqlite3.connect(blank)) as conn:
        conn.execute("VACUUM")
    before = {path: path.read_bytes() for path in (empty, blank)}
    for command, path in (("logs", empty), ("spend", blank)):
        result = runner.invoke(app, [command, "--db", str(path)])
        assert result.exit_code == 1
        assert result.output == (
            f"error: {path} is a SQLite database but not an xrouter request log; "
            "give another path\n"
        )
    assert {path: path.read_bytes() for path in before} == before
    result = runner.invoke(app, ["spend", "--db", str(blank), "--days", "36501"])
    assert result.exit_code == 2 and "Invalid value for '--days'" in result.output
    result = runner.invoke(app, ["logs", "--db", str(blank), "--last", str(10**20)])
    assert result.exit_code == 2 and "Invalid value for '--last'" in result.output


def test_damaged_pages_give_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "requests.sqlite"
    with closing(RequestLog(path)) as log:
        for n in range(400):
            log.append(entry(f"r{n}", prompt="x" * 200))
    data = path.read_bytes()  # checkpointed into the file on close
    path.write_bytes(data[:8192] + b"\xff" * (len(data) - 8192))
    with (
        pytest.raises(ConfigError, match=f"request log {path} .*SQLite: "),
        closing(RequestLog(path)) as log,
    ):
        log.summary(0, "key")
    result = runner.invoke(app, ["logs", "--db", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


# -- the CLI ------------------------------------------------------------------


def test_logs_prints_json_lines_newest_first(filled: RequestLog) -> None:
    result = runner.invoke(app, ["logs", "--db", str(filled.path), "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["request_id"] for line in lines] == [
        "n1", "b2", "b1", "a3", "a2", "a1",
    ]  # fmt: skip
    failed = CallEntry("m2", 50, 0, 0.0, 0.5, error="timeout: 60 s")
    assert lines[1]["calls"][0] == asdict(failed)
    assert lines[0]["key_name"] is None and lines[0]["outcome"] == "budget"
    only_bob = runner.invoke(
        app, ["logs", "--db", str(filled.path), "--json", "--key", "bob", "--last", "1"]
    )
    assert [json.loads(x)["request_id"] for x in only_bob.stdout.splitlines()] == ["b2"]


def test_logs_table_shows_names_as_given(log: RequestLog) -> None:
    log.append(entry("r1", requested_model="[/]odd[bold]", key_name="k[1]"))
    result = runner.invoke(app, ["logs", "--db", str(log.path)])
    assert result.exit_code == 0, result.output
    assert "[/]odd[bold]" in result.stdout and "k[1]" in result.stdout
    assert "2026-05-09 01:00:00" in result.stdout and "200 ok" in result.stdout


def test_spend_prints_groups_and_a_total_as_json(filled: RequestLog) -> None:
    args = ["spend", "--db", str(filled.path), "--since", "2026-05-09"]
    result = runner.invoke(app, [*args, "--by", "outcome", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["since"] == "2026-05-09" and report["by"] == "outcome"
    assert report["groups"] == filled.summary(MAY_9, "outcome")
    assert report["total"] == filled.totals(MAY_9)
    table = runner.invoke(app, [*args, "--by", "model"])
    assert table.exit_code == 0, table.output
    assert "spend since 2026-05-09 (UTC) by model" in table.stdout
    assert "total" in table.stdout and "1.750000" in table.stdout


def test_spend_days_counts_from_a_utc_midnight(log: RequestLog) -> None:
    now = time.time()
    log.append(entry("today", ts=now, cost_usd=0.5))
    log.append(entry("old", ts=now - 3 * 86_400, cost_usd=0.25))
    today = runner.invoke(app, ["spend", "--db", str(log.path), "--json"])
    assert json.loads(today.stdout)["total"]["cost_usd"] == 0.5
    week = runner.invoke(app, ["spend", "--db", str(log.path), "--days", "7", "--json"])
    assert json.loads(week.stdout)["total"]["cost_usd"] == 0.75


def test_cli_refusals_are_one_line(tmp_path: Path, log: RequestLog) -> None:
    missing = tmp_path / "none.sqlite"
    for command in ("logs", "spend"):
        result = runner.invoke(app, [command, "--db", str(missing)])
        assert result.exit_code == 1
        assert result.stderr == (
            f"error: no request log at {missing}; start the gateway with "
            "`xrouter serve` first, or pass --db\n"
        )
    assert not missing.exists()
    both = ["spend", "--db", str(log.path), "--since", "2026-05-01", "--days", "2"]
    refused = runner.invoke(app, both).stderr
    assert refused == "error: give --since or --days, not both\n"
    bad = runner.invoke(app, ["spend", "--db", str(log.path), "--since", "May 9"])
    assert bad.stderr == "error: --since must be a date as YYYY-MM-DD, got 'May 9'\n"


def test_a_log_another_program_holds_locked_is_named_as_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(requestlog, "_BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "requests.sqlite"
    with closing(RequestLog(path)) as log, closing(sqlite3.connect(path)) as other:
        other.execute("BEGIN EXCLUSIVE")  # as an sqlite3 shell or a backup may
        with pytest.raises(ConfigError) as info:
            log.append(entry("held"))
        other.rollback()
        log.append(entry("after"))
    assert str(info.value) == (
        f"cannot write to the request log {path} (database is locked); another "
        "program holds it locked (an sqlite3 shell, a backup): close it"
    )
