"""The LLM router's first call across a training run's checkpoints, read from
its chances on held-out items rather than from sampled episodes.

    python benchmarks/router_choice.py RUN_DIR [--items 200] [--lambdas 1 100]
                                      [--no-base]

For the run's base model (unless ``--no-base``) and each ``checkpoint-*`` in
RUN_DIR (warm start first, then GRPO, by step), at each lambda, on the same
``items`` test items of the run's suite (every pool model offered), it prints:
the chance that the first turn opens with a call to a pool model, the reward
that first call earns in expectation (calls drawn by the router's chances, as
GRPO samples them at temperature 1), and the reward, accuracy and USD per 1,000
queries of its likeliest call; then the best single model's and the oracle's
reward on the same items. Only the first call counts, so the figures compare
checkpoints; a whole episode adds the select turn and any second call. Torch
uses one thread unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from xrouter.backends.model_dir import local_model_dir
from xrouter.core.catalog import load_catalog
from xrouter.evaluate.suites import DEFAULT_SUITES
from xrouter.records.store import Store, default_store_path
from xrouter.train.router_data import load_router_task
from xrouter.train.router_eval import choice_figures, eval_rows, first_call_logps
from xrouter.train.router_policy import load_router_model

_PHASES = ("sft", "rl")


def _checkpoints(run: Path) -> list[tuple[str, Path]]:
    found = []
    for folder in run.glob("checkpoint-*"):
        manifest = json.loads((folder / "manifest.json").read_text())
        order = (_PHASES.index(manifest["phase"]), int(manifest["step"]))
        found.append((order, f"{manifest['phase']}-{manifest['step']}", folder))
    return [(name, folder) for _, name, folder in sorted(found)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[1.0, 100.0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-base", action="store_true")
    parser.add_argument("--store", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    stages = _checkpoints(args.run)
    if not stages:
        raise SystemExit(f"no checkpoint-* folders in {args.run}")
    manifest = json.loads((stages[0][1] / "manifest.json").read_text())
    settings, suite_name = manifest["settings"], manifest["suite"]
    store = Store(default_store_path() if args.store is None else args.store)
    catalog = load_catalog()
    suite = next(s for s in DEFAULT_SUITES if s.name == suite_name)
    task = load_router_task(
        store, suite, catalog, items=settings["items"], seed=settings["seed"]
    )
    card = catalog.get(settings["router_card"])
    rows = eval_rows(task, args.items)
    base = local_model_dir(settings["base"], home=store.path.parent)
    print(f"{suite_name}: {len(rows)} test items, router {settings['base']}")
    print(
        f"{'stage':>10} {'lambda':>7} {'call':>6} {'expected':>9} {'likeliest':>10} "
        f"{'accuracy':>9} {'$/1k':>8} {'seconds':>8}"
    )
    references = {}
    for name, folder in [("base", base)][args.no_base :] + stages:
        model, tokenizer = load_router_model(folder)
        for lam in args.lambdas:
            started = time.perf_counter()
            logps = first_call_logps(model, tokenizer, card, task, rows, lam=lam)
            seconds = time.perf_counter() - started
            read = list(zip(rows.tolist(), logps, strict=True))
            found = choice_figures(task, read, lam=lam, cost_max=settings["cost_max"])
            references[lam] = found
            print(
                f"{name:>10} {lam:7g} {found['call_mass']:6.3f} "
                f"{found['expected_reward']:9.4f} {found['likeliest_reward']:10.4f} "
                f"{found['likeliest_accuracy']:9.3f} "
                f"{found['likeliest_cost_per_1k']:8.3f} {seconds:8.1f}"
            )
    for lam, found in references.items():
        best = found["best_single_by_reward"]
        print(
            f"lambda {lam:g}: best single {best['model']} {best['reward']:.4f}, "
            f"oracle {found['oracle_reward']:.4f}"
        )


if __name__ == "__main__":
    main()
