"""``xrouter train``: train router policies with reinforcement learning."""

from __future__ import annotations

import importlib.util
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
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
from xrouter.cli.data import DataDir, open_store, suites_with_records
from xrouter.core.catalog import load_catalog
from xrouter.core.yamlfile import read_settings_text

if TYPE_CHECKING:
    from xrouter.train.env import TrainingData
    from xrouter.train.grpo import TrainResult
    from xrouter.train.router_config import RouterTrainConfig

train_app = typer.Typer(help="Train router policies on the recorded outputs.")
app.add_typer(train_app, name="train")


CheckpointDir = Annotated[
    Path,
    typer.Option(
        "--out",
        help="Checkpoint directory: policy.safetensors, manifest.json and "
        "metrics.jsonl are written there (the metrics go to metrics.jsonl.partial "
        "until the weights are saved, so a failed run leaves an earlier "
        "checkpoint whole).",
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
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="Torch CPU threads (default 2: 0.6x the time of one on two idle "
        "cores, but about twice it when another process keeps a core busy); a run "
        "repeats for a given seed and thread count.",
        min=1,
    ),
]
SuitesFile = Annotated[
    Path | None,
    typer.Option("--suites", help="YAML list of suites replacing the defaults."),
]
EmbeddingKind = Annotated[
    str,
    typer.Option(
        "--embedding",
        help="Prompt embedding: static (MiniLM's distilled word-piece vectors, "
        "under a millisecond a prompt) or minilm (the full transformer).",
    ),
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
    threads: Threads = None,
    embedding: EmbeddingKind = "static",
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace a checkpoint that --out already holds."),
    ] = False,
    suites_file: SuitesFile = None,
    store: StorePath = None,
    catalog: CatalogFiles = None,
) -> None:
    """Train one routing policy for every lambda on all suites' train splits."""
    from xrouter.core.errors import ConfigError
    from xrouter.evaluate.suites import load_suites
    from xrouter.policies.checkpoint import MANIFEST
    from xrouter.policies.embedding import KINDS
    from xrouter.records.ingest import ensure_ingested
    from xrouter.train.grpo import GRPOConfig
    from xrouter.train.router_checkpoint import LATEST
    from xrouter.train.run import run_training

    if embedding not in KINDS:
        raise ConfigError(
            f"--embedding {embedding!r} is not a kind of prompt embedding; use one "
            f"of {', '.join(KINDS)}"
        )
    started = time.perf_counter()
    chosen_settings: dict[str, Any] = {
        "seed": seed,
        "steps": steps,
        "lam_min": lambda_min,
        "lam_max": lambda_max,
        "default_lambda": default_lambda,
        "threads": threads,
    }
    config = GRPOConfig(**{k: v for k, v in chosen_settings.items() if v is not None})
    if (out / LATEST).exists() or any(out.glob("checkpoint-*")):
        raise ConfigError(
            f"{out} holds a run of `xrouter train router`; give the policy an --out "
            "of its own (nothing there is replaced, --force or not)"
        )
    if (out / MANIFEST).exists() and not force:
        raise ConfigError(
            f"{out} already holds a policy checkpoint; pass --force to replace it "
            "(it stays whole until the new one is written), or choose another --out"
        )
    writable_dir(out, "checkpoint directory")
    target = open_store(store)
    cards = load_catalog(catalog or ())
    suites = load_suites(suites_file)
    chosen = suites_with_records(suites, target, data_dir)
    with progress_reporter() as reporter:
        needed = sorted({s.source for s in chosen})
        ensure_ingested(data_dir, target, cards, reporter, sources=needed)
        data, result = run_training(
            target, chosen, cards, out, config, reporter=reporter, embedding=embedding
        )
    _summary(out, data, result, time.perf_counter() - started)


def _summary(
    out: Path, data: TrainingData, result: TrainResult, seconds: float
) -> None:
    """Per suite the train items and the kept weights' dev AIQ, then the files."""
    from xrouter.train.curves import CURVES_FILE
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
        f"{out / 'manifest.json'}, {out / METRICS_FILE} and {out / CURVES_FILE} "
        f"(its curves) in {seconds:.1f} s"
    )


def _opt(flag: str, help_text: str) -> Any:
    """A typer option that defaults to None (not given: the config's value)."""
    return typer.Option(flag, help=help_text, show_default=False)


@train_app.command("router")
@guarded
def router_command(
    data_dir: DataDir,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Output directory: checkpoint-<phase>-<step>/ (model, tokenizer, "
            "optimizer, manifest.json), latest.json and metrics.jsonl.",
            show_default=False,
        ),
    ],
    base: Annotated[
        str | None,
        _opt("--base", "Router model: smollm2-135m or a transformers model dir."),
    ] = None,
    suite_name: Annotated[
        str, typer.Option("--suite", help="Suite whose train split is used.")
    ] = "zeroeval",
    items: Annotated[int | None, _opt("--items", "Cap on train items.")] = None,
    sft_steps: Annotated[
        int | None, _opt("--sft-steps", "Warm-start (SFT) steps (default 40).")
    ] = None,
    rl_steps: Annotated[
        int | None, _opt("--rl-steps", "GRPO steps (default 10).")
    ] = None,
    group_size: Annotated[
        int | None,
        _opt("--group-size", "G: episodes per example in a GRPO group (>= 2; 4)."),
    ] = None,
    prompts_per_step: Annotated[
        int | None, _opt("--prompts-per-step", "Groups per GRPO step (default 2).")
    ] = None,
    refill_rounds: Annotated[
        int | None,
        _opt(
            "--refill-rounds",
            "Dynamic sampling: extra rounds of fresh examples that replace groups "
            "whose rewards are all equal (default 2; 0: none).",
        ),
    ] = None,
    clip_low: Annotated[
        float | None, _opt("--clip-low", "Ratio clip below 1 (default 0.2).")
    ] = None,
    clip_high: Annotated[
        float | None, _opt("--clip-high", "Ratio clip above 1 (default 0.28).")
    ] = None,
    lambda_min: Annotated[
        float | None,
        _opt(
            "--lambda-min",
            "Smallest lambda (cost weight) drawn per example (0.1), log-uniformly "
            "up to --lambda-max; 0 draws uniformly instead.",
        ),
    ] = None,
    lambda_max: Annotated[
        float | None, _opt("--lambda-max", "Largest lambda drawn (default 1000).")
    ] = None,
    temperature: Annotated[
        float | None, _opt("--temperature", "GRPO sampling temperature (1.0).")
    ] = None,
    lr: Annotated[float | None, _opt("--lr", "GRPO learning rate (1e-6).")] = None,
    sft_lr: Annotated[
        float | None, _opt("--sft-lr", "Warm-start learning rate (5e-5).")
    ] = None,
    teacher: Annotated[
        str | None,
        _opt(
            "--teacher",
            "Whose choices the warm start imitates: oracle (the cheapest right "
            "model; default) or a policy checkpoint dir (`xrouter train policy`), "
            "whose traces come in pairs: the same request at two lambdas where "
            "the policy chooses differently (sft_contrast: false in --config "
            "turns that off).",
        ),
    ] = None,
    choice_weight: Annotated[
        float | None,
        _opt(
            "--choice-weight",
            "Warm-start weight of the tokens that name the chosen model, against "
            "1 for the rest of the router's tokens (default 10).",
        ),
    ] = None,
    eval_items: Annotated[
        int | None,
        _opt(
            "--eval-items",
            "Test items evaluated before/after each phase, at lambda 1 and 100 "
            "(eval_lambdas in --config) (0).",
        ),
    ] = None,
    choice_items: Annotated[
        int | None,
        _opt(
            "--choice-items",
            "Test items whose first call is read from the router's chances at "
            "each evaluation, without playing episodes (0).",
        ),
    ] = None,
    checkpoint_every: Annotated[
        int | None, _opt("--checkpoint-every", "Steps between checkpoints (20).")
    ] = None,
    config_file: Annotated[
        Path | None,
        _opt("--config", "YAML file of settings; options given here override it."),
    ] = None,
    seed: Annotated[int | None, _opt("--seed", "Random seed (default 0).")] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue from the last checkpoint in --out."),
    ] = False,
    suites_file: SuitesFile = None,
    store: StorePath = None,
    catalog: CatalogFiles = None,
) -> None:
    """Train the LLM router itself: warm start on a teacher's traces, then GRPO.

    Episodes run through the orchestrator against the replay pool. Each example
    draws a lambda (the cost weight, written into the router's prompt) from
    --lambda-min..--lambda-max and a random pool subset; each group holds
    --group-size episodes; the ratio is clipped to [1 - clip-low, 1 + clip-high].
    """
    if importlib.util.find_spec("trl") is None:
        from xrouter.core.errors import ConfigError

        raise ConfigError(
            "training the LLM router needs trl: install `xrouter-rl[train]`"
        )
    from xrouter.train.router_config import RouterTrainConfig

    given = {
        "base": base,
        "items": items,
        "sft_steps": sft_steps,
        "rl_steps": rl_steps,
        "group_size": group_size,
        "prompts_per_step": prompts_per_step,
        "refill_rounds": refill_rounds,
        "clip_low": clip_low,
        "clip_high": clip_high,
        "lambda_min": lambda_min,
        "lambda_max": lambda_max,
        "temperature": temperature,
        "lr": lr,
        "sft_lr": sft_lr,
        "teacher": teacher,
        "choice_weight": choice_weight,
        "eval_items": eval_items,
        "choice_items": choice_items,
        "checkpoint_every": checkpoint_every,
        "seed": seed,
    }
    settings = router_settings(config_file) | {
        k: v for k, v in given.items() if v is not None
    }
    config = RouterTrainConfig.from_mapping(settings)
    _train_router(
        config, data_dir, out, suite_name, resume, suites_file, store, catalog
    )


def router_settings(path: Path | None) -> dict[str, Any]:
    """The settings of a ``--config`` YAML file (under ``settings:`` or at the
    top level); none without a file."""
    from xrouter.core.errors import ConfigError

    if path is None:
        return {}
    text = read_settings_text(path, "--config")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc}") from exc
    settings = loaded.get("settings", loaded) if isinstance(loaded, dict) else None
    if not isinstance(settings, dict):
        raise ConfigError(f"--config {path} must hold a mapping of settings")
    beside = sorted(str(k) for k in loaded if k != "settings")
    if settings is not loaded and beside:
        raise ConfigError(
            f"--config {path}: {', '.join(beside)} beside 'settings:' would not be "
            "read; move them under settings: (or put every setting at the top level)"
        )
    return settings


def _train_router(
    config: RouterTrainConfig,
    data_dir: Path,
    out: Path,
    suite_name: str,
    resume: bool,
    suites_file: Path | None,
    store: Path | None,
    catalog: list[Path] | None,
) -> None:
    from xrouter.core.errors import ConfigError
    from xrouter.evaluate.suites import load_suites
    from xrouter.records.ingest import ensure_ingested
    from xrouter.train.curves import CURVES_FILE
    from xrouter.train.router_run import METRICS_FILE, process_state, train_router

    writable_dir(out, "output directory")
    cards = load_catalog(catalog or ())
    suites = {s.name: s for s in load_suites(suites_file)}
    suite = suites.get(suite_name)
    if suite is None:
        raise ConfigError(
            f"no suite {suite_name!r}; the suites are {', '.join(suites)} (add "
            "your own with --suites FILE)"
        )
    target = open_store(store)
    started = time.perf_counter()
    # Under torchrun or accelerate launch: one process ingests, one reports.
    state = process_state()
    with progress_reporter() if state.is_main_process else nullcontext() as reporter:
        with state.main_process_first():
            ensure_ingested(data_dir, target, cards, reporter, sources=[suite.source])
        manifest = train_router(
            target, suite, cards, config, out, resume=resume, reporter=reporter
        )
    if not state.is_main_process:
        return
    table = Table(
        "stage", "lambda", "parse %", "acc %", "$/1k", "reward", title=str(out)
    )
    for key, line in manifest["metrics"].items():
        if key.startswith("eval/") and "accuracy" in line:
            table.add_row(
                line["stage"],
                f"{line['lambda']:g}",
                f"{line['first_turn_parse_rate']:.0%}",
                f"{line['accuracy']:.1%}",
                f"{line['cost_per_1k']:.3f}",
                f"{line['reward']:.3f}",
            )
    if table.row_count:
        console.print(table)
    console.print(
        f"trained in {time.perf_counter() - started:.1f} s; checkpoints, "
        f"{METRICS_FILE} and {CURVES_FILE} (its curves) are in {out}"
    )
