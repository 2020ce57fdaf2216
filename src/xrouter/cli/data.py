"""``xrouter data``: ingest, pull, verify and inspect the recorded outputs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Column, Table
from rich.text import Text

from xrouter.cli.app import (
    CatalogFiles,
    StorePath,
    app,
    console,
    err_console,
    guarded,
    progress_reporter,
    writable_dir,
)
from xrouter.core.catalog import Catalog, load_catalog
from xrouter.core.errors import ConfigError, StoreError
from xrouter.records.store import Store, default_store_path

if TYPE_CHECKING:
    from xrouter.evaluate.suites import Suite

data_app = typer.Typer(help="Ingest, download and check the recorded model outputs.")
app.add_typer(data_app, name="data")

DataDir = Annotated[
    Path,
    typer.Option(
        "--from",
        help="Directory holding the recorded outputs (for example ../shared/data).",
        show_default=False,
    ),
]


def open_store(path: Path | None) -> Store:
    """The store at ``path`` (or the default one), refusing a path that is a file."""
    target = Path(path) if path else default_store_path()
    if target.exists() and not target.is_dir():
        raise StoreError(
            f"store path {target} is a file; give --store a directory (or set "
            "XROUTER_HOME to one)"
        )
    return Store(target)


def suites_with_records(
    suites: Sequence[Suite], store: Store, data_dir: Path, *, named: bool = False
) -> tuple[Suite, ...]:
    """The suites whose records can be read: a source with a folder under
    ``data_dir``, or a collected source in ``store``. Each other suite is named on
    stderr as skipped, so a partial data directory does not pass unnoticed;
    ``ConfigError`` when none is left, or when any is missing and the suites were
    ``named`` one by one (``--suite``): a suite asked for by name is never left out.
    """
    from xrouter.records.ingest import sources_under

    # Collected sources live in the store alone: there is no folder to ingest.
    present = set(sources_under(data_dir))
    present.update(s for s in store.sources() if s.startswith("collected-"))
    missing = [s for s in suites if s.source not in present]
    if named and missing:
        first = missing[0]
        raise ConfigError(
            f"suite {first.name} cannot be read: {_missing(first.source, data_dir)}"
        )
    for suite in missing:
        err_console.print(
            Text(f"suite {suite.name} skipped: {_missing(suite.source, data_dir)}"),
            soft_wrap=True,
        )
    chosen = tuple(s for s in suites if s.source in present)
    if not chosen:
        read = ", ".join(sorted({s.source for s in suites}))
        raise ConfigError(
            f"no suite's records can be read: the suites read {read}; point --from "
            "at the recorded data, or collect the source with `xrouter data collect`"
        )
    return chosen


def _missing(source: str, data_dir: Path) -> str:
    if source.startswith("collected-"):
        return (
            f"the store has no {source} source; collect it with `xrouter data "
            f"collect --name {source.removeprefix('collected-')}`"
        )
    return f"no {source} folder under {data_dir}"


@data_app.command("ingest")
@guarded
def ingest_command(
    data_dir: DataDir,
    store: StorePath = None,
    source: Annotated[
        list[str] | None,
        typer.Option("--source", help="Ingest only this source; may be repeated."),
    ] = None,
    catalog: CatalogFiles = None,
) -> None:
    """Read every source under --from into the records store."""
    from xrouter.records.ingest import ingest

    target = open_store(store)
    started = time.perf_counter()
    with progress_reporter() as reporter:
        infos = ingest(data_dir, target, load_catalog(catalog or ()), source, reporter)
    table = Table("source", "items", "records", "seconds", title=f"store {target.path}")
    for info in infos:
        table.add_row(
            info.name, f"{info.items:,}", f"{info.records:,}", f"{info.seconds:.1f}"
        )
    console.print(table)
    console.print(f"ingested in {time.perf_counter() - started:.1f} s")


@data_app.command("pull")
@guarded
def pull_command(
    to: Annotated[
        Path, typer.Option("--to", help="Directory to download the files into.")
    ] = Path("data"),
    source: Annotated[
        list[str] | None,
        typer.Option("--source", help="Download only this source; may be repeated."),
    ] = None,
) -> None:
    """Download the recorded outputs from their public origins (needs network)."""
    from xrouter.records.pull import pull

    writable_dir(to, "--to directory")  # before the network is tried
    with progress_reporter() as reporter:
        count = pull(to, source, reporter)
    console.print(
        f"downloaded {count} files into {to}; next: xrouter data ingest --from {to}"
    )


@data_app.command("verify")
@guarded
def verify_command(
    data_dir: DataDir,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the rows to this JSON file."),
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option("--source", help="Check only this source; may be repeated."),
    ] = None,
    store: StorePath = None,
    catalog: CatalogFiles = None,
) -> None:
    """Show stored verdicts beside each source's published accuracy."""
    from xrouter.records.agreement import agreement_rows
    from xrouter.records.ingest import ensure_ingested
    from xrouter.records.sources import get_source

    if json_out is not None:
        if json_out.is_dir():
            raise ConfigError(f"--json {json_out} is a directory; give a file path")
        writable_dir(json_out.parent, "directory for --json")
    for name in source or ():
        get_source(name)  # an unknown name is refused before any work
    target = open_store(store)
    cards = load_catalog(catalog or ())
    with progress_reporter() as reporter:
        ensure_ingested(data_dir, target, cards, reporter, source)
        rows = agreement_rows(target, data_dir, cards, reporter, source)
    # A narrow terminal folds model names rather than cutting them to one prefix.
    model = Column("model", overflow="fold")
    table = Table("source", "task", model, "n", "ours %", "published %")
    for header in ("source's verdicts %", "diff", "agree %", "own reading %"):
        table.add_column(header)

    def pct(value: float | None, spec: str = ".2f") -> str:
        return "-" if value is None else format(value, spec)

    for row in rows:
        table.add_row(
            row.source,
            row.task,
            row.model,
            str(row.n),
            pct(row.ours),
            pct(row.official),
            pct(row.recorded),
            pct(row.diff, "+.2f"),
            pct(row.agreement, ".1f"),
            pct(row.independent),
        )
    console.print(table)
    for task in sorted({r.task for r in rows if r.source == "zeroeval"}):
        diffs = [
            abs(r.diff)
            for r in rows
            if r.source == "zeroeval" and r.task == task and r.diff is not None
        ]
        if diffs:
            console.print(
                f"zeroeval {task}: {len(diffs)} models, max |diff| {max(diffs):.2f} "
                f"points, {sum(d <= 1.0 for d in diffs)} within 1 point"
            )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps([r.as_dict() for r in rows], indent=2))
        err_console.print(f"wrote {len(rows)} rows to {json_out}")


@data_app.command("models")
@guarded
def models_command(store: StorePath = None) -> None:
    """List each source's models with their record counts and mean scores."""
    target = open_store(store)
    if not target.sources():
        raise StoreError(
            f"the store at {target.path} is empty; run "
            "`xrouter data ingest --from DIR` first"
        )
    model = Column("model", overflow="fold")
    table = Table("source", model, "records", "mean score", "mean $ / query")
    for source in target.sources():
        records = target.records([source], columns=["model", "score", "cost_usd"])
        grouped = records.group_by("model").aggregate(
            [("score", "count"), ("score", "mean"), ("cost_usd", "mean")]
        )
        for row in sorted(grouped.to_pylist(), key=lambda r: r["model"]):
            table.add_row(
                source,
                row["model"],
                f"{row['score_count']:,}",
                f"{row['score_mean']:.3f}",
                f"{row['cost_usd_mean']:.6f}",
            )
    console.print(table)


def default_data_dir() -> Path | None:
    """Where recorded outputs are looked for when no --from is given:
    $XROUTER_DATA, else ../shared/data if it exists."""
    env = os.environ.get("XROUTER_DATA")
    if env:
        return Path(env)
    beside = Path("../shared/data")
    return beside if beside.is_dir() else None


def ensure_source(
    store: Store, catalog: Catalog, source: str, data_dir: Path | None
) -> None:
    """Make sure ``store`` holds ``source``, ingesting it from the data directory
    (given, or the default one) when it is missing or stale."""
    from xrouter.records.ingest import ensure_ingested

    root = data_dir or default_data_dir()
    if root is not None:
        with progress_reporter() as reporter:
            ensure_ingested(root, store, catalog, reporter, sources=[source])
    if source not in store.manifest():
        raise StoreError(
            f"the store at {store.path} has no records of source {source!r} and no "
            "recorded outputs were found to ingest; run `xrouter data ingest --from "
            "DIR` (or `xrouter data pull --to DIR` with network), or pass --from DIR"
        )
