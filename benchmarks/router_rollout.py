"""Times GRPO rollouts of the LLM router on this CPU: a group's first turns decoded
together against every episode decoded alone.

    python benchmarks/router_rollout.py [--base smollm2-135m] [--examples 4] [--group 4]

For each of ``examples`` train examples of the zeroeval suite (real prompts, a
lambda and pool subset drawn as in training), it plays the group's ``group``
episodes through the orchestrator and the replay pool twice, side by side in one
run: as training does (``collect_groups``: the first turns share one pass over
their prompt and are decoded as one batch), and one episode at a time with
nothing shared. Sampling is at temperature 1.0 with 96 new tokens at most, as in
training; torch uses one thread. It prints the seconds of each and their ratio,
and the router turns and tokens generated, which differ between the two only by
what was drawn.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from xrouter.backends.local import local_model_dir
from xrouter.core.catalog import load_catalog
from xrouter.evaluate.suites import DEFAULT_SUITES
from xrouter.records.store import Store, default_store_path
from xrouter.train.router_data import draw_examples, load_router_task
from xrouter.train.router_policy import PolicyBackend, load_router_model
from xrouter.train.router_rl import Episode, collect_groups, play_episode


def _played(groups: list[list[Episode]]) -> str:
    turns = [t for g in groups for e in g for t in e.turns]
    tokens = sum(len(t.completion_ids) for t in turns)
    return f"{len(turns)} router turns, {tokens} tokens generated"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--store", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    store = Store(default_store_path() if args.store is None else args.store)
    catalog = load_catalog()
    suite = next(s for s in DEFAULT_SUITES if s.name == "zeroeval")
    task = load_router_task(store, suite, catalog, items=200)
    model, tokenizer = load_router_model(
        local_model_dir(args.base, home=store.path.parent)
    )
    card = catalog.get("smollm2-135m")
    examples = draw_examples(
        np.random.default_rng(0),
        task.train,
        args.examples,
        task.records.models,
        lam_min=0.1,
        lam_max=1000.0,
    )

    def backend() -> PolicyBackend:
        return PolicyBackend(model, tokenizer, card, max_new_tokens=96, seed=0)

    started = time.perf_counter()
    shared = collect_groups(task, examples, backend(), args.group)
    shared_s = time.perf_counter() - started

    alone = backend()
    started = time.perf_counter()
    single = [
        [play_episode(task, ex, alone) for _ in range(args.group)] for ex in examples
    ]
    single_s = time.perf_counter() - started

    print(f"{args.examples} examples x {args.group} episodes, router {args.base}")
    print(f"first turns decoded together: {shared_s:7.1f} s   ({_played(shared)})")
    print(f"every episode decoded alone:  {single_s:7.1f} s   ({_played(single)})")
    print(f"speed-up: {single_s / shared_s:.2f}x")


if __name__ == "__main__":
    main()
