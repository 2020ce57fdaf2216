"""Times policy training with one torch thread and with two, side by side.

    python benchmarks/train_threads.py [--steps 150] [--threads 1 2 1 2]

It loads the default suites' training data from the store once (ingest and
embed them first, e.g. with ``xrouter train policy``), then trains the policy
network for ``steps`` update steps (a dev evaluation every 50) once per entry
of ``--threads``, in that order, so both counts see the same machine load. It
prints each run's seconds, the seconds per step, the mean per thread count and
their ratio, and the dev AIQ each run reached: a run repeats exactly for a
given seed and thread count, but not across thread counts, as the sums of
matrix products are taken in another order.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

from xrouter.core.catalog import load_catalog
from xrouter.evaluate.suites import DEFAULT_SUITES
from xrouter.policies.embedding import Embedder
from xrouter.records.store import Store, default_store_path
from xrouter.train.env import load_training_data
from xrouter.train.grpo import GRPOConfig, train_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 1, 2])
    parser.add_argument("--store", default=None)
    args = parser.parse_args()
    store = Store(default_store_path() if args.store is None else Path(args.store))
    embedder = Embedder(store.path / "embeddings")
    data = load_training_data(store, DEFAULT_SUITES, load_catalog(()), embedder)
    seconds: dict[int, list[float]] = defaultdict(list)
    for threads in args.threads:
        config = GRPOConfig(steps=args.steps, threads=threads, eval_every=50)
        started = time.perf_counter()
        result = train_policy(data, config)
        took = time.perf_counter() - started
        seconds[threads].append(took)
        aiq = " ".join(
            f"{s.name} {result.dev[f'dev/aiq/{s.name}']:.4f}" for s in data.suites
        )
        print(
            f"{threads} thread(s): {took:6.1f} s, {took / args.steps:.3f} s/step; "
            f"dev AIQ {aiq}",
            flush=True,
        )
    means = {t: statistics.mean(s) for t, s in sorted(seconds.items())}
    for threads, mean in means.items():
        print(f"mean, {threads} thread(s): {mean:6.1f} s")
    if len(means) > 1:
        fewest = min(means)
        for threads, mean in means.items():
            if threads != fewest:
                print(
                    f"{threads} threads take {mean / means[fewest]:.2f}x the time "
                    f"of {fewest}"
                )


if __name__ == "__main__":
    main()
