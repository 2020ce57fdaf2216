"""Times a GRPO step's two halves for the LLM router on this CPU, each with the
work its turns share against the same work done turn by turn.

    python benchmarks/router_rollout.py [--base NAME|DIR] [--examples 4] [--group 4]

For each of ``examples`` train examples of the zeroeval suite (real prompts, a
lambda and pool subset drawn as in training), it times side by side in one run:

- the rollout: the group's ``group`` episodes played through the orchestrator
  and the replay pool as training plays them (``collect_groups``: the first turns
  share one pass over their prompt and are decoded as one batch, and later turns
  continue that prompt's cache), then one episode at a time with nothing shared;
- the update's passes over the turns played (forward and backward of each turn's
  log-probabilities): a group's turns continuing one pass over the prompt prefix
  they share (``group_backward``), then a full pass per turn (``turn_logps``).

Sampling is at temperature 1.0 with 96 new tokens at most, as in training; torch
uses one thread. ``--base`` takes a warm-started checkpoint directory: the base
model makes no tool calls, so its episodes have a single turn. It prints the
seconds of each and their ratios, and the router turns and tokens played.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from accelerate import Accelerator

from xrouter.backends.model_dir import local_model_dir
from xrouter.core.catalog import load_catalog
from xrouter.evaluate.suites import DEFAULT_SUITES
from xrouter.records.store import Store, default_store_path
from xrouter.train.router_data import draw_examples, load_router_task
from xrouter.train.router_policy import PolicyBackend, load_router_model
from xrouter.train.router_rl import (
    Episode,
    collect_groups,
    group_backward,
    play_episode,
    turn_logps,
)


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

    def backend(reuse: bool = True) -> PolicyBackend:
        return PolicyBackend(
            model, tokenizer, card, max_new_tokens=96, seed=0, reuse_prompt=reuse
        )

    started = time.perf_counter()
    shared = collect_groups(task, examples, backend(), args.group)
    shared_s = time.perf_counter() - started

    alone = backend(reuse=False)
    started = time.perf_counter()
    single = [
        [play_episode(task, ex, alone) for _ in range(args.group)] for ex in examples
    ]
    single_s = time.perf_counter() - started

    print(f"{args.examples} examples x {args.group} episodes, router {args.base}")
    print(f"rollout, prompts shared:      {shared_s:7.1f} s   ({_played(shared)})")
    print(f"rollout, episode by episode:  {single_s:7.1f} s   ({_played(single)})")
    print(f"speed-up: {single_s / shared_s:.2f}x")

    model.train()
    accelerator = Accelerator()
    started = time.perf_counter()
    for group in shared:
        turns = [t for e in group for t in e.turns if t.completion_ids]
        group_backward(model, accelerator, turns, lambda _, lp: lp.sum(), 1.0)
    shared_s = time.perf_counter() - started
    started = time.perf_counter()
    for group in shared:
        for turn in (t for e in group for t in e.turns if t.completion_ids):
            turn_logps(model, turn, 1.0).sum().backward()
    single_s = time.perf_counter() - started
    print(f"update passes, prefix shared: {shared_s:7.1f} s   ({_played(shared)})")
    print(f"update passes, turn by turn:  {single_s:7.1f} s")
    print(f"speed-up: {single_s / shared_s:.2f}x")


if __name__ == "__main__":
    main()
