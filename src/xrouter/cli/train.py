"""``xrouter train``: train router policies with reinforcement learning."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from xrouter.cli.app import (
    CatalogFiles,
    StorePath,
    app,
    console,
    guarded,
    progress_reporter,
    writable_dir,
)
from xrouter.cli.data import DataDir, open_store
from xrouter.core.catalog import load_catalog

if TYPE_CHECKING:
    from xrouter.train.env import TrainingData
    from xrouter.train.grpo import TrainResult

train_app = typer.Typer(help="Train router policies on the recorded outputs.")
app.add_typer(train_app, name="train")


CheckpointDir = Annotated[
    Path,
    typer.Option(
        "--out",
        help="Checkpoint directory: policy.safetensors, manifest.json and "
        "metrics.jsonl are written there.",
        show_default=False,
    ),
]
Steps = Annotated[
    int | None,
    typer.Option("--steps", help="Update steps (default 1000).", min=1),
]
LambdaMin = Annotated[
    float | None,
    typer.Option("--lambda-min", help="Smallest lambda trained (default 0.1)."),
]
LambdaMax = Annotated[
    float | None,
    typer.Option("--lambda-max", help="Largest lambda trained (default 3e4)."),
]
DefaultLambda = Annotated[
    float | None,
    typer.Option(
        "--default-lambda",
        help="The lambda the policy reports at by default (default 2.0, the "
        "reward's); must lie in the trained range.",
    ),
]
SuitesFile = Annotated[
    Path | None,
    typer.Option("--suites", help="YAML list of suites replacing the defaults."),
]


@train_app.command("policy")
@guarded
def policy_command(
    data_dir: DataDir,
    out: CheckpointDir,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    steps: Steps = None,
    lambda_min: LambdaMin = None,
    lambda_max: LambdaMax = None,
    default_lambda: DefaultLambda = None,
    suites_file: SuitesFile = None,
    store: StorePath = None,
    catalog: CatalogFiles = None,
) -> None:
    """Train one routing policy for every lambda on all suites' train splits."""
    from xrouter.core.errors import ConfigError
    from xrouter.evaluate.suites import load_suites
    from xrouter.records.ingest import ensure_ingested, sources_under
    from xrouter.train.grpo import GRPOConfig
    from xrouter.train.run import run_training

    started = time.perf_counter()
    chosen_settings = {
        "seed": seed,
        "steps": steps,
        "lam_min": lambda_min,
        "lam_max": lambda_max,
        "default_lambda": default_lambda,
    }
    config = GRPOConfig(
        **{k: v for k, v in chosen_settings.items() if v is not None}  # type: ignore[arg-type]
    )
    writable_dir(out, "checkpoint directory")
    target = open_store(store)
    cards = load_catalog(catalog or ())
    suites = load_suites(suites_file)
    present = sources_under(data_dir)
    chosen = [s for s in suites if s.source in present]
    if not chosen:
        raise ConfigError(
            f"no suite's source is under {data_dir}; the suites read "
            f"{', '.join(sorted({s.source for s in suites}))}"
        )
    with progress_reporter() as reporter:
        needed = sorted({s.source for s in chosen})
        ensure_ingested(data_dir, target, cards, reporter, sources=needed)
        data, result = run_training(
            target, chosen, cards, out, config, reporter=reporter
        )
    _summary(out, data, result, time.perf_counter() - started)


def _summary(
    out: Path, data: TrainingData, result: TrainResult, seconds: float
) -> None:
    """Per suite the train items and the kept weights' dev AIQ, then the files."""
    from xrouter.train.run import METRICS_FILE

    table = Table("suite", "train items", "dev AIQ", title=f"checkpoint {out}")
    for suite, rows in zip(data.suites, data.train, strict=True):
        aiq = result.dev.get(f"dev/aiq/{suite.name}")
        table.add_row(
            suite.name, f"{len(rows):,}", "-" if aiq is None else f"{aiq:.4f}"
        )
    console.print(table)
    console.print(
        f"trained {result.steps} steps in {result.seconds:.1f} s (kept step "
        f"{result.best_step}); wrote {out / 'policy.safetensors'}, "
        f"{out / 'manifest.json'} and {out / METRICS_FILE} in {seconds:.1f} s"
    )
