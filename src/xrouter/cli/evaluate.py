"""``xrouter eval``: the main job, every policy on every suite's test split."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from xrouter.cli.app import (
    CatalogFiles,
    StorePath,
    app,
    console,
    guarded,
    progress_reporter,
)
from xrouter.cli.data import DataDir, open_store
from xrouter.core.catalog import load_catalog
from xrouter.evaluate.runner import SuiteReport


@app.command("eval")
@guarded
def eval_command(
    data_dir: DataDir,
    out: Annotated[
        Path, typer.Option("--out", help="Directory for report.json, report.md, plots.")
    ] = Path("out/eval"),
    suites_file: Annotated[
        Path | None,
        typer.Option("--suites", help="YAML list of suites replacing the defaults."),
    ] = None,
    suite: Annotated[
        list[str] | None,
        typer.Option("--suite", help="Evaluate only this suite; may be repeated."),
    ] = None,
    store: StorePath = None,
    catalog: CatalogFiles = None,
) -> None:
    """Evaluate the baselines (and any given policy) on each suite's test split."""
    from xrouter.core.errors import ConfigError
    from xrouter.evaluate.report import write_report
    from xrouter.evaluate.runner import evaluate_suite
    from xrouter.evaluate.suites import load_suites
    from xrouter.policies.embedding import Embedder
    from xrouter.records.ingest import ensure_ingested

    started = time.perf_counter()
    target = open_store(store)
    cards = load_catalog(catalog or ())
    suites = load_suites(suites_file)
    if suite:
        unknown = sorted(set(suite) - {s.name for s in suites})
        if unknown:
            raise ConfigError(
                f"unknown suite {', '.join(unknown)}; choose from "
                f"{', '.join(s.name for s in suites)}"
            )
        suites = tuple(s for s in suites if s.name in suite)
    embedder = Embedder(target.path / "embeddings")
    reports = []
    with progress_reporter() as reporter:
        present = ensure_ingested(data_dir, target, cards, reporter)
        for s in suites:
            if s.source not in present:
                continue
            reports.append(
                evaluate_suite(target, s, embedder, cards, reporter=reporter)
            )
    if not reports:
        raise ConfigError(
            f"no suite's source is under {data_dir}; the suites read "
            f"{', '.join(sorted({s.source for s in suites}))}"
        )
    meta = {"data_dir": str(data_dir), "store": str(target.path)}
    written = write_report(reports, out, meta)
    for report in reports:
        console.print(_table(report))
    console.print(
        f"wrote {', '.join(str(p) for p in written[:2])} and "
        f"{len(written) - 2} plots in {time.perf_counter() - started:.1f} s"
    )


_SHORT = (
    "policy",
    "acc %",
    "$/1k",
    "$/right",
    "calls",
    "AIQ",
    "APGR",
    "match %",
    "gap",
)


def _table(report: SuiteReport) -> Table:
    """The suite's rows, routers first, each group by AIQ."""
    from xrouter.evaluate.report import format_row

    title = f"{report.suite.name}: {report.items['test']} test items"
    table = Table(
        title=title,
        caption="match %: cost to reach the best single model's "
        "accuracy, as % of its cost; gap: points below the oracle",
    )
    table.add_column(_SHORT[0], no_wrap=True, max_width=40)
    for header in _SHORT[1:]:
        table.add_column(header, justify="right", no_wrap=True)
    for row in sorted(report.rows, key=lambda r: (r["kind"] != "router", -r["aiq"])):
        table.add_row(*format_row(row))
    return table
