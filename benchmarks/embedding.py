"""The two prompt embeddings side by side: speed, and how well they route.

    python benchmarks/embedding.py [--store DIR] [--n 300]

Speed: ``n`` real prompts (routellm and zeroeval, the largest and the longest
sources) embedded one at a time, as the gateway embeds a request, then all in
batches, as training and evaluation do. Torch uses one thread.

Routing quality: for each default suite, every test prompt's 64 nearest train
prompts (cosine similarity after centring on the train prompts' mean) predict
each pool model's score as their similarity-weighted mean; the Brier score of
that prediction against the recorded score (lower is better), beside the
Brier score of predicting each model's train accuracy for every prompt.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from xrouter.core.catalog import load_catalog
from xrouter.evaluate.suites import DEFAULT_SUITES
from xrouter.policies.embedding import KINDS, Embedder, routing_text
from xrouter.records.schema import item_from_row
from xrouter.records.splits import split_mask
from xrouter.records.store import Store, default_store_path

NEIGHBOURS = 64


def _speed(texts: list[str]) -> None:
    for kind in KINDS:
        embedder = Embedder(kind=kind)
        embedder.encode(texts[:16])  # load and warm up
        one = []
        for text in texts:
            started = time.perf_counter()
            embedder.encode([text])
            one.append(time.perf_counter() - started)
        started = time.perf_counter()
        embedder.encode(texts)
        batched = (time.perf_counter() - started) / len(texts)
        print(
            f"{kind:7s} one at a time: median {1000 * statistics.median(one):7.3f} ms"
            f"  p99 {1000 * float(np.percentile(one, 99)):7.3f} ms   "
            f"batched {1000 * batched:6.3f} ms a prompt"
        )


def _unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
    out: NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _brier(
    vectors: NDArray[np.float32], score: NDArray[np.float64], ids: list[str]
) -> float:
    train, test = split_mask(ids, "train"), split_mask(ids, "test")
    centre = vectors[train].mean(axis=0)
    sims = _unit(vectors[test] - centre) @ _unit(vectors[train] - centre).T
    near = np.argpartition(-sims, NEIGHBOURS - 1, axis=1)[:, :NEIGHBOURS]
    weight = np.maximum(np.take_along_axis(sims, near, axis=1), 1e-3)[..., None]
    predicted = (score[train][near] * weight).sum(axis=1) / weight.sum(axis=1)
    return float(((predicted - score[test]) ** 2).mean())


def _quality(store: Store) -> None:
    catalog = load_catalog()
    cache = store.path / "embeddings"
    present = set(store.sources())
    print(f"\nBrier score of {NEIGHBOURS}-neighbour predictions (lower is better)")
    print(f"{'suite':12s} {'prior':>7s} " + " ".join(f"{k:>7s}" for k in KINDS))
    for suite in DEFAULT_SUITES:
        if suite.source not in present:
            continue
        suite = suite.resolved(catalog)
        pool = suite.replay_pool(store)
        items = pool.items()
        train = split_mask(pool.item_ids, "train")
        test = split_mask(pool.item_ids, "test")
        prior = float(((pool.score[train].mean(axis=0) - pool.score[test]) ** 2).mean())
        briers = [
            _brier(
                Embedder(cache, kind=kind).encode_items(suite.source, items),
                pool.score,
                pool.item_ids,
            )
            for kind in KINDS
        ]
        print(f"{suite.name:12s} {prior:7.4f} " + " ".join(f"{b:7.4f}" for b in briers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=default_store_path())
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = Store(args.store)
    rows = store.items(["routellm", "zeroeval"]).to_pylist()
    pick = np.random.default_rng(0).choice(len(rows), size=args.n, replace=False)
    _speed([routing_text(item_from_row(rows[i])) for i in pick])
    _quality(store)


if __name__ == "__main__":
    main()
