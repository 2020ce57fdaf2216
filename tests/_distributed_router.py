"""Run by the tests under ``torchrun --nproc_per_node 2``: the LLM router's
training with its work shared between processes.

    _distributed_router.py run STORE MODEL OUT      train_router, 1 SFT + 1 GRPO step
    _distributed_router.py update STORE MODEL OUT   one grpo_update; OUT: groups and
                                                    the weights after, for the test
                                                    to repeat in one process
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _router_suite import POOL, SUITE
from accelerate import Accelerator
from accelerate.utils import gather_object

from xrouter.core.catalog import load_catalog
from xrouter.records.store import Store
from xrouter.train.router_config import RouterTrainConfig
from xrouter.train.router_data import draw_examples, load_router_task
from xrouter.train.router_policy import PolicyBackend, load_router_model
from xrouter.train.router_rl import Episode, UpdateStats, collect_groups, grpo_update
from xrouter.train.router_run import train_router

RUN = {
    "items": 20,
    "sft_steps": 1,
    "sft_batch": 2,
    "micro_batch": 1,
    "rl_steps": 1,
    "prompts_per_step": 2,
    "refill_rounds": 1,
    "group_size": 2,
    "max_new_tokens": 8,
    "sft_lr": 1e-3,
    "eval_items": 3,
}


def update_step(
    model: Any, accelerator: Accelerator, groups: list[list[Episode]]
) -> tuple[Any, UpdateStats]:
    """The update both sides of the comparison take: plain SGD, so that the
    step is the gradient's, scale included, and two minibatches."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    stats = grpo_update(
        model,
        optimizer,
        accelerator,
        groups,
        clip_low=0.2,
        clip_high=0.28,
        minibatches=2,
        rng=np.random.default_rng(0),
    )
    return model, stats


def update(store: Store, model_dir: Path, out: Path) -> None:
    """Four examples' groups, each process playing two, gathered; rewards set so
    every group is informative; one update in two minibatches."""
    accelerator = Accelerator(cpu=True)
    catalog = load_catalog()
    task = load_router_task(store, SUITE, catalog, items=40)
    model, tokenizer = load_router_model(model_dir)
    card = catalog.get("smollm2-135m")
    rank, processes = accelerator.process_index, accelerator.num_processes
    backend = PolicyBackend(model, tokenizer, card, max_new_tokens=12, seed=1 + rank)
    examples = draw_examples(
        np.random.default_rng(0), task.train, 4, POOL, lam_min=0.1, lam_max=100.0
    )
    groups = gather_object(collect_groups(task, examples[rank::processes], backend, 2))
    for g, group in enumerate(groups):
        for e, episode in enumerate(group):
            episode.reward = float((g + e) % 2)
    model, stats = update_step(model, accelerator, groups)
    weights = accelerator.unwrap_model(model).state_dict()
    checksums = gather_object([float(sum(w.double().sum() for w in weights.values()))])
    if accelerator.is_main_process:
        torch.save(
            {
                "groups": groups,
                "stats": asdict(stats),
                "weights": weights,
                "checksums": checksums,
            },
            out,
        )


def main() -> None:
    mode, store, model_dir, out = sys.argv[1:5]
    if mode == "run":
        config = RouterTrainConfig(base=model_dir, **RUN)  # type: ignore[arg-type]
        train_router(Store(Path(store)), SUITE, load_catalog(), config, Path(out))
    else:
        update(Store(Path(store)), Path(model_dir), Path(out))


if __name__ == "__main__":
    main()
