"""``xrouter train``: train router policies with reinforcement learning."""

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

train_app = typer.Typer(help="Train router policies on the recorded outputs.")
app.add_typer(train_app, name="train")


@train_app.command("policy")
@guarded
def policy_command(
    data_dir: DataDir,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Checkpoint directory: policy.safetensors, manifest.json and "
            "metrics.jsonl are written there.",
            show_default=False,
        ),
    ],
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    steps: Annotated[
        int | None,
        typer.Option("--steps", help="Update steps (default: the trainer's).", min=1),
    ] = None,
    lambda_min: Annotated[
        float | None,
        typer.Option("--lambda-min", help="Smallest lambda trained (default 0.1)."),
    ] = None,
    lambda_max: Annotated[
        float | None,
        typer.Option("--lambda-max", help="Largest lambda trained (default 1e4)."),
    ] = None,
    suites_file: Annotated[
        Path | None,
        typer.Option("--suites", help="YAML list of suites replacing the defaults."),
    ] = None,
    store: StorePath = None,
    catalog: CatalogFiles = None,
) -> None:
    """Train one routing policy for every lambda on all suites' train splits."""
    from xrouter.core.errors import ConfigError
    from xrouter.evaluate.suites import load_suites
    from xrouter.records.ingest import ensure_ingested
    from xrouter.train.grpo import GRPOConfig
    from xrouter.train.run import METRICS_FILE, run_training

    started = time.perf_counter()
    target = open_store(store)
    cards = load_catalog(catalog or ())
    suites = load_suites(suites_file)
    overrides: dict[str, float | int] = {"seed": seed}
    for key, value in (
        ("steps", steps),
        ("lam_min", lambda_min),
        ("lam_max", lambda_max),
    ):
        if value is not None:
            overrides[key] = value
    config = GRPOConfig(**overrides)  # type: ignore[arg-type]
    with progress_reporter() as reporter:
        present = ensure_ingested(data_dir, target, cards, reporter)
        chosen = [s for s in suites if s.source in present]
        if not chosen:
            raise ConfigError(
                f"no suite's source is under {data_dir}; the suites read "
                f"{', '.join(sorted({s.source for s in suites}))}"
            )
        data, result = run_training(
            target, chosen, cards, out, config, reporter=reporter
        )
    table = Table("suite", "train items", "dev AIQ", title=f"checkpoint {out}")
    for suite, rows in zip(data.suites, data.train, strict=True):
        aiq = result.dev.get(f"dev/aiq/{suite.name}")
        table.add_row(
            suite.name, f"{len(rows):,}", "-" if aiq is None else f"{aiq:.4f}"
        )
    console.print(table)
    console.print(
        f"trained {config.steps} steps in {result.seconds:.1f} s (kept step "
        f"{result.best_step}); wrote {out / 'policy.safetensors'}, "
        f"{out / 'manifest.json'} and {out / METRICS_FILE} in "
        f"{time.perf_counter() - started:.1f} s"
    )
