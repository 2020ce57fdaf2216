"""``xrouter data collect``: run a benchmark's items through a pool's live models.

The answers land in the store as the source ``collected-<name>``; an interrupted
or capped run resumes from its journal without paying for any pair twice.
"""

from __future__ import annotations

import asyncio
import math
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from xrouter.backends.build import build_pool
from xrouter.backends.pool import load_pool_spec
from xrouter.cli.app import (
    CatalogFiles,
    StorePath,
    console,
    err_console,
    guarded,
    progress_reporter,
)
from xrouter.cli.data import data_app, open_store
from xrouter.core.catalog import load_catalog
from xrouter.core.errors import ConfigError
from xrouter.core.progress import Reporter
from xrouter.orchestrator.collect import (
    CollectSummary,
    benchmark_items,
    collect,
    collected_source,
)

__all__ = ["collect_command"]


@data_app.command("collect")
@guarded
def collect_command(
    pool_file: Annotated[
        Path,
        typer.Option(
            "--pool",
            help="Pool file (YAML) of the live models to call.",
            metavar="FILE",
        ),
    ],
    task: Annotated[
        str, typer.Option("--task", help="Benchmark task whose items are sent.")
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="Ingested source to take the items from (default: the only one "
            "that has the task).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Collection name; the records go to source collected-NAME "
            "(default: the pool file's name without extension).",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="Items of this split: train, dev, test, all.")
    ] = "all",
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            help="Only the first N items, in item-id order, after --split.",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", help="Calls in flight at most.")
    ] = 4,
    rpm: Annotated[
        int, typer.Option("--rpm", help="Calls started per minute and model, at most.")
    ] = 60,
    max_cost: Annotated[
        float,
        typer.Option(
            "--max-cost",
            help="Cost ceiling in USD of the whole collection, earlier runs included; "
            "no call starts whose worst case would pass it.",
        ),
    ] = 1.0,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Output tokens per call, at most.")
    ] = 1024,
    system_prompt: Annotated[
        str | None,
        typer.Option(
            "--system-prompt",
            help="System message put before each item's messages.",
            show_default=False,
        ),
    ] = None,
    store: StorePath = None,
    catalog: CatalogFiles = None,
) -> None:
    """Call every pool model on the task's items and store the answers, usage and
    cost as records; rerun to resume (no answer is paid for twice; a call that
    times out is not asked again in the run, as its provider may bill it)."""
    if not (math.isfinite(max_cost) and max_cost >= 0):
        raise ConfigError(f"--max-cost must be a number of USD >= 0, got {max_cost}")
    target = open_store(store)
    source_name = collected_source(name if name is not None else pool_file.stem)
    spec = load_pool_spec(pool_file)
    replayed = [m.model for m in spec.models if m.backend == "replay"]
    if replayed:
        raise ConfigError(
            f"pool file {pool_file} replays {', '.join(replayed)}; collecting calls "
            "live models only, so give them a live backend (http, local or litellm)"
        )
    items = benchmark_items(target, task, source=source, split=split, limit=limit)
    # The command line's cards come last: they override the pool file's.
    pool = build_pool(spec, load_catalog([*spec.catalog, *(catalog or ())]))

    async def run(reporter: Reporter) -> CollectSummary:
        try:
            return await collect(
                target,
                pool,
                items,
                source_name=source_name,
                concurrency=concurrency,
                rpm=rpm,
                max_cost_usd=max_cost,
                max_tokens=max_tokens,
                system_prompt=system_prompt,
                reporter=reporter,
            )
        finally:
            await pool.aclose()

    try:
        with progress_reporter() as reporter:
            summary = asyncio.run(run(reporter))
    except KeyboardInterrupt:
        err_console.print(
            Text(
                f"what was journaled is kept in source {source_name}; calls abandoned "
                "in flight may still be billed by their servers; rerun to resume"
            )
        )
        raise
    console.print(_table(summary))
    if summary.failed:
        err_console.print(
            Text(
                f"{summary.failed} calls failed for good; their pairs are journaled as "
                "failures and tried again when you rerun"
            )
        )
        for model, (count, error) in summary.errors.items():
            err_console.print(Text(f"  {model}: {count} failed, the last with {error}"))
        if any(error.startswith("timeout:") for _, error in summary.errors.values()):
            err_console.print(
                Text(
                    "a call that timed out was not asked again, and is booked at $0, "
                    "but its provider may still bill the answer it finished; raise "
                    "the model's timeout_s in the pool file before you rerun"
                )
            )
    if summary.interrupted_by is not None:
        err_console.print(
            Text(
                f"interrupted by {summary.interrupted_by}: the calls in flight were "
                f"finished and kept; {summary.left} pairs left, rerun to resume"
            )
        )
        raise typer.Exit(128 + signal.Signals[summary.interrupted_by].value)
    if summary.stopped:
        err_console.print(
            Text(
                f"stopped at the cost ceiling of ${max_cost:g}: {summary.left} pairs "
                "left; rerun with a higher --max-cost to resume, or a lower "
                "--max-tokens (a call starts only if its worst case, its prompt "
                f"and --max-tokens of output, fits) ({summary.stopped})"
            )
        )
    if summary.failed or summary.stopped:
        raise typer.Exit(1)


def _table(summary: CollectSummary) -> Table:
    table = Table("", "", title=f"collected {summary.source}", show_header=False)
    written = summary.written
    rows = {
        "calls made now": f"{summary.calls:,}",
        "failed": f"{summary.failed:,}",
        "skipped (collected before)": f"{summary.skipped:,}",
        "pairs left": f"{summary.left:,}",
        "spent now": f"${summary.spent_usd:.6f}",
        "spent in total": f"${summary.spent_total_usd:.6f}",
        "seconds": f"{summary.seconds:.1f}",
        "store source": (
            f"{summary.source}: {written.items:,} items, {written.records:,} records"
            if written
            else "nothing written yet (no call has succeeded)"
        ),
        "journal": str(summary.journal),
    }
    for key, value in rows.items():
        table.add_row(key, value)
    return table
