"""``xrouter eval``: the main job, every policy on every suite's test split."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

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
from xrouter.core.catalog import Catalog, load_catalog
from xrouter.core.errors import ConfigError
from xrouter.evaluate.runner import PolicyFactory, ResultFactory, SuiteReport
from xrouter.evaluate.suites import Suite

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from xrouter.backends.replay import ReplayPool
    from xrouter.evaluate.results import PolicyResult
    from xrouter.policies.checkpoint import Checkpoint


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
    policy: Annotated[
        list[Path] | None,
        typer.Option(
            "--policy",
            help="Checkpoint of a trained policy (`xrouter train policy`) to "
            "evaluate beside the baselines; may be repeated.",
            show_default=False,
        ),
    ] = None,
    llm_router: Annotated[
        str | None,
        typer.Option(
            "--llm-router",
            help="A tool-calling LLM router to evaluate on a sample of the test "
            "split (of the suites given by --suite, or of zeroeval): a model card "
            "(e.g. smollm2-135m) or a model directory, such as a checkpoint of "
            "`xrouter train router`.",
            show_default=False,
        ),
    ] = None,
    llm_sample: Annotated[
        int, typer.Option("--llm-sample", help="Test items the LLM router runs on.")
    ] = 20,
    llm_lambda: Annotated[
        float, typer.Option("--llm-lambda", help="Cost weight the LLM router is told.")
    ] = 1.0,
    store: StorePath = None,
    catalog: CatalogFiles = None,
) -> None:
    """Evaluate the baselines (and any given policy) on each suite's test split."""
    from xrouter.evaluate.report import write_report
    from xrouter.evaluate.runner import evaluate_suite
    from xrouter.evaluate.suites import load_suites
    from xrouter.policies.embedding import Embedder
    from xrouter.records.ingest import ensure_ingested

    started = time.perf_counter()
    writable_dir(out, "output directory")
    target = open_store(store)
    cards = load_catalog(catalog or ())
    suites = suites_with_records(
        _chosen(load_suites(suites_file), suite), target, data_dir, named=bool(suite)
    )
    embedder = Embedder(target.path / "embeddings")
    learned = _learned_policies(policy or [])
    _check_pools(learned, suites, cards)
    reports = []
    with progress_reporter() as reporter:
        needed = sorted({s.source for s in suites})
        ensure_ingested(data_dir, target, cards, reporter, sources=needed)
        stored = {name: info.fingerprint for name, info in target.manifest().items()}
        for s in suites:
            extra = [_factory(c, name, s, cards) for c, name in learned]
            episodes = []
            if llm_router and (suite or s.name == "zeroeval"):
                episodes.append(
                    _llm_factory(llm_router, llm_sample, llm_lambda, cards, out, s)
                )
            report = evaluate_suite(
                target,
                s,
                embedder,
                cards,
                extra=extra,
                episodes=episodes,
                reporter=reporter,
            )
            report.notes += _other_data(learned, s.source, stored.get(s.source))
            reports.append(report)
    meta = {"data_dir": str(data_dir), "store": str(target.path)}
    written = write_report(reports, out, meta)
    for report in reports:
        console.print(_table(report))
        for note in report.notes:
            console.print(Text(f"  note: {note}"))
    console.print(
        f"wrote {', '.join(str(p) for p in written[:2])} and "
        f"{len(written) - 2} plot{'s' if len(written) != 3 else ''} in "
        f"{time.perf_counter() - started:.1f} s"
    )


def _chosen(suites: tuple[Suite, ...], names: list[str] | None) -> tuple[Suite, ...]:
    if not names:
        return suites
    unknown = sorted(set(names) - {s.name for s in suites})
    if unknown:
        raise ConfigError(
            f"unknown suite {', '.join(unknown)}; choose from "
            f"{', '.join(s.name for s in suites)}"
        )
    return tuple(s for s in suites if s.name in names)


def _learned_policies(paths: list[Path]) -> list[tuple[Checkpoint, str]]:
    """The checkpoints, loaded before any work starts, with their report names."""
    from xrouter.policies.checkpoint import load_checkpoint

    if len(paths) == 1:
        return [(load_checkpoint(paths[0]), "rl-router")]
    names = _distinct_names(paths)
    return [
        (load_checkpoint(path), f"rl-router:{name}")
        for path, name in zip(paths, names, strict=True)
    ]


def _check_pools(
    learned: list[tuple[Checkpoint, str]], suites: Sequence[Suite], cards: Catalog
) -> None:
    """Refuse, before any work, a suite whose pool a checkpoint cannot route."""
    from xrouter.policies.checkpoint import check_models

    for s in suites:
        pool = s.resolved(cards).pool
        for checkpoint, _ in learned:
            check_models(checkpoint, pool)


def _other_data(
    learned: list[tuple[Checkpoint, str]], source: str, fingerprint: str | None
) -> list[str]:
    """A note for each checkpoint trained on other records of ``source`` than
    the store holds now (its figures then measure it on data it did not see), or
    on the same records priced otherwise (it routes with the new prices)."""
    notes = []
    for checkpoint, name in learned:
        trained = checkpoint.manifest.get("data", {}).get("fingerprints", {})
        if source not in trained or trained[source] == fingerprint:
            continue
        # A fingerprint ends with the digest of the catalog's prices.
        records = trained[source].rpartition("-")[0]
        if records and records == (fingerprint or "").rpartition("-")[0]:
            notes.append(
                f"{name} was trained on these records of {source} at other prices "
                "of its models than the catalog's now; it routes with the new "
                "prices (retrain it at them to compare like with like)"
            )
            continue
        notes.append(
            f"{name} was trained on other records of {source} than the store "
            f"holds now (data fingerprint {trained[source]}, now {fingerprint}); "
            "retrain it on these to compare like with like"
        )
    return notes


def _distinct_names(paths: list[Path]) -> list[str]:
    """Each path's shortest trailing part that no other path ends with: ``a/ckpt``
    and ``b/ckpt`` are told apart by their parents."""
    full = [path.resolve() for path in paths]
    for path in full:
        if full.count(path) > 1:
            raise ConfigError(f"--policy {path} is given twice; give it once")
    depth = 1
    while True:
        names = ["/".join(path.parts[-depth:]) for path in full]
        if len(set(names)) == len(names):
            return names
        depth += 1


def _factory(
    checkpoint: Checkpoint, name: str, suite: Suite, cards: Catalog
) -> PolicyFactory:
    """Makes the learned policy for one suite; the router answers as its
    ``self_model``."""
    from xrouter.policies.learned import LearnedPolicy

    self_model = suite.resolved(cards).self_model
    return lambda pool, embedder: LearnedPolicy(
        checkpoint, cards, embedder, self_model, name=name
    )


def _llm_factory(
    model: str, sample: int, lam: float, cards: Catalog, out: Path, suite: Suite
) -> ResultFactory:
    """Runs the LLM router on a sample of the suite's test items; writes each
    episode to ``OUT/episodes-SUITE.json``."""
    import json

    from xrouter.backends.build import router_backend, router_dir
    from xrouter.evaluate.episodes import evaluate_episodes, sample_items
    from xrouter.policies.llm_router import LLMRouter

    if sample < 1:
        raise ConfigError(f"--llm-sample must be at least 1, got {sample}")
    if not 0 <= lam < math.inf:
        raise ConfigError(f"--llm-lambda must be a number >= 0, got {lam:g}")
    backend = router_backend(model, cards)
    folder = router_dir(model)  # a trained router is named by its checkpoint too
    name = f"llm:{backend.card.id}" + ("" if folder is None else f"@{folder.name}")
    router = LLMRouter(backend, name=name)

    def run(records: ReplayPool, test: NDArray[np.int64]) -> PolicyResult:
        rows = sample_items(records, test, sample)
        evaluation = evaluate_episodes(router, records, rows, cards, lam=lam)
        path = out / f"episodes-{suite.name}.json"
        path.write_text(json.dumps(evaluation.as_json(), indent=1))
        return evaluation.result()

    return run


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
    from xrouter.evaluate.report import format_row, ordered

    title = f"{report.suite.name}: {report.items['test']} test items"
    table = Table(
        title=title,
        caption="match %: cost to reach the best single model's "
        "accuracy, as % of its cost; gap: points below the oracle",
    )
    table.add_column(_SHORT[0], no_wrap=True, max_width=40)
    for header in _SHORT[1:]:
        table.add_column(header, justify="right", no_wrap=True)
    for row in ordered(report.rows):
        table.add_row(*format_row(row))
    return table
