"""``xrouter logs``, ``xrouter spend`` and ``xrouter key-hash``: the gateway's
request log and API keys, for the people who run it."""

from __future__ import annotations

import enum
import getpass
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from xrouter.cli.app import app, console, err_console, guarded
from xrouter.core.errors import ConfigError
from xrouter.serve.keys import hash_key, new_key
from xrouter.serve.logwriter import unsaved_path
from xrouter.serve.requestlog import RequestLog, default_log_path

__all__ = ["open_log"]

_DAY_S = 86_400
_FIGURE_HEADERS = (
    "requests", "errors", "tokens in", "tokens out", "cost $", "p50 latency s",
    "p95 latency s",
)  # fmt: skip

LogPath = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help="The gateway's request log (default: "
        "$XROUTER_HOME/gateway/requests.sqlite).",
        show_default=False,
    ),
]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print one JSON object per line (JSON Lines).")
]


class Grouping(enum.StrEnum):
    """What ``xrouter spend`` totals by."""

    key = "key"
    model = "model"
    router = "router"
    day = "day"
    outcome = "outcome"


def open_log(path: Path | None) -> RequestLog:
    """The request log at ``path`` (or the default one), which must exist."""
    target = path or default_log_path()
    if not target.exists():
        raise ConfigError(
            f"no request log at {target}; start the gateway with `xrouter serve` "
            "first, or pass --db"
        )
    log = RequestLog(target, create=False)  # read: a file of another kind is kept
    saved = unsaved_path(target)
    if saved.is_file():
        with saved.open("rb") as handle:
            count = sum(1 for _ in handle)
        err_console.print(
            Text(
                f"note: {count} rows the gateway could not write wait in {saved}; "
                "they are not shown or counted here until the next `xrouter serve` "
                "on this log writes them in"
            ),
            soft_wrap=True,
        )
    return log


@app.command("logs")
@guarded
def logs_command(
    db: LogPath = None,
    last: Annotated[
        int,
        typer.Option("--last", min=1, max=1_000_000, help="How many requests to show."),
    ] = 20,
    key: Annotated[
        str | None, typer.Option("--key", help="Only the requests of this key.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Show the gateway's most recent requests, newest first."""
    log = open_log(db)
    try:
        entries = log.recent(last, key)
    finally:
        log.close()
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry.as_dict()))
        return
    if not entries:
        whose = "" if key is None else f" of key {key!r}"
        console.print(Text(f"no requests{whose} in {log.path}"))
        return
    table = Table(
        "time (UTC)",
        "key",
        "model asked",
        "strategy",
        "answered by",
        "tokens in/out",
        "cost $",
        "latency s",
        "status",
        title=f"last {len(entries)} requests in {log.path}",
    )
    for entry in entries:
        cells = (
            _utc(entry.ts, "%Y-%m-%d %H:%M:%S"),
            entry.key_name or "-",
            entry.requested_model,
            entry.strategy,
            ", ".join(entry.answered_by) or "-",
            f"{entry.input_tokens:,}/{entry.output_tokens:,}",
            f"{entry.cost_usd:.6f}",
            f"{entry.latency_s:.2f}",
            f"{entry.status} {entry.outcome}",
        )
        # Text, not markup: model and key names come from clients and configs.
        table.add_row(*(Text(cell) for cell in cells))
    console.print(table)


@app.command("spend")
@guarded
def spend_command(
    db: LogPath = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="First UTC day to count, as YYYY-MM-DD."),
    ] = None,
    days: Annotated[
        int | None,
        typer.Option(
            "--days",
            min=1,
            max=36_500,
            help="Count the last N UTC days, today included.  [default: 1]",
            show_default=False,
        ),
    ] = None,
    by: Annotated[
        Grouping, typer.Option("--by", help="What to total by.")
    ] = Grouping.key,
    as_json: AsJson = False,
) -> None:
    """Total the gateway's requests, errors, tokens, cost and latency."""
    since_ts = _since(since, days)
    log = open_log(db)
    try:
        groups = log.summary(since_ts, by.value)
        total = log.totals(since_ts)
    finally:
        log.close()
    day = _utc(since_ts, "%Y-%m-%d")
    if as_json:
        report = {"since": day, "by": by.value, "groups": groups, "total": total}
        typer.echo(json.dumps(report))
        return
    if not total["requests"]:
        console.print(Text(f"no requests since {day} (UTC) in {log.path}"))
        return
    table = Table(by.value, title=f"spend since {day} (UTC) by {by.value}")
    for header in _FIGURE_HEADERS:
        table.add_column(header, justify="right")
    for group in groups:
        table.add_row(*_figures(group[by.value], group))
    table.add_section()
    table.add_row(*_figures("total", total), style="bold")
    console.print(table)
    if by is Grouping.model:
        note = (
            "by model, a request that called several models counts for each, and "
            "errors are the model's failed calls (a request can fail several)"
        )
        err_console.print(Text(f"{note}; the total counts it once"), soft_wrap=True)


@app.command("key-hash")
@guarded
def key_hash_command(
    new: Annotated[
        bool,
        typer.Option("--new", help="Make a fresh random key; print it and its hash."),
    ] = False,
) -> None:
    """Print the sha256 of an API key read from stdin, for the gateway's config."""
    if new:
        key = new_key()
        typer.echo(f"key:    {key}")
        typer.echo(f"sha256: {hash_key(key)}")
        hint = (
            "give the key to its user (it is stored nowhere) and put the sha256 in "
            "the gateway config: keys: [{name: NAME, sha256: HASH}]"
        )
        err_console.print(Text(hint), soft_wrap=True)
        return
    if sys.stdin.isatty():
        lines = [getpass.getpass("API key (not echoed): ")]
    else:
        lines = sys.stdin.read().strip().splitlines()
    if len(lines) != 1 or not lines[0].strip():
        raise ConfigError(
            "give one API key on stdin (for example `printf %s KEY | xrouter "
            "key-hash`), or pass --new to make one"
        )
    typer.echo(hash_key(lines[0].strip()))


def _since(since: str | None, days: int | None) -> float:
    """The unix time that ``--since`` or ``--days`` starts from (a UTC midnight)."""
    if since is not None and days is not None:
        raise ConfigError("give --since or --days, not both")
    if since is None:
        today = int(time.time() // _DAY_S) * _DAY_S
        return float(today - ((days or 1) - 1) * _DAY_S)
    try:
        start = datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ConfigError(
            f"--since must be a date as YYYY-MM-DD, got {since!r}"
        ) from None
    return start.timestamp()


def _utc(ts: float, spec: str) -> str:
    return time.strftime(spec, time.gmtime(ts))


def _figures(group: Any, figures: dict[str, Any]) -> list[Text]:
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    cells = [
        "-" if group is None else str(group),
        f"{figures['requests']:,}",
        f"{figures['errors']:,}",
        f"{figures['input_tokens']:,}",
        f"{figures['output_tokens']:,}",
        f"{figures['cost_usd']:.6f}",
        seconds(figures["p50_latency_s"]),
        seconds(figures["p95_latency_s"]),
    ]
    return [Text(cell) for cell in cells]
