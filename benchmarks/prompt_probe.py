"""How well can a single-call router that reads only the prompt do, per suite?

    python benchmarks/prompt_probe.py [--suite routellm ...] [--store DIR]

Two predictors of each pool model's score from the prompt embedding the
routers use, both fitted on the suite's train split:

- the nearest-neighbour router as ``xrouter eval`` runs it (its neighbour
  count tuned on train items);
- a probe: a one-hidden-layer network trained on the train prompts' recorded
  scores (binary cross-entropy, one output per model), stopped where its loss on
  a seventh of the train prompts held out stops falling, at three sizes.

Each routes every test item to the model with the best ``predicted score -
lambda x cost`` (the cost the neighbours predict), over the evaluation's lambda
sweep, and the curve's AIQ is printed beside the probe averaged with the
neighbours. Where the probe does no better than the neighbours, a router
deciding from the prompt alone has little left to learn on that suite; what
remains is what its calls' responses reveal.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from xrouter.backends.replay import ReplayPool
from xrouter.core.catalog import load_catalog
from xrouter.evaluate.metrics import aiq
from xrouter.evaluate.suites import DEFAULT_SUITES
from xrouter.policies.base import LAMBDA_SWEEP, outcome, single_call
from xrouter.policies.embedding import Embedder
from xrouter.policies.knn import NearestNeighbour
from xrouter.policies.memory import centred
from xrouter.records.splits import split_mask
from xrouter.records.store import Store, default_store_path

# (hidden width, weight decay) of the probes tried.
PROBES = ((256, 1e-4), (256, 1e-3), (64, 1e-3))


def _curve_aiq(
    pool: ReplayPool,
    test: NDArray[np.int64],
    score: NDArray[np.float64],
    cost: NDArray[np.float64],
    cost_range: tuple[float, float],
) -> float:
    """AIQ of routing each test item to its best ``score - lambda x cost``."""
    points = []
    for lam in sorted({0.0, *LAMBDA_SWEEP}):
        chosen = np.argmax(score - lam * cost, axis=1).astype(np.int64)
        points.append(outcome(pool, test, single_call(chosen, len(pool.models))))
    return aiq(
        [p.cost.mean() * 1000 for p in points],
        [p.score.mean() for p in points],
        cost_range,
    )


def _probe(
    x: torch.Tensor,
    y: torch.Tensor,
    train: NDArray[np.int64],
    hidden: int,
    decay: float,
    seed: int,
) -> nn.Module:
    """A one-hidden-layer network fitted to ``y[train]``, early-stopped."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(train)
    held, fit = order[: len(train) // 7], order[len(train) // 7 :]
    net = nn.Sequential(
        nn.Linear(x.shape[1], hidden),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(hidden, y.shape[1]),
    )
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=decay)
    loss = nn.functional.binary_cross_entropy_with_logits
    best, best_state, best_epoch = np.inf, net.state_dict(), 0
    for epoch in range(200):
        net.train()
        for batch in np.array_split(rng.permutation(fit), max(1, len(fit) // 256)):
            optimiser.zero_grad()
            loss(net(x[batch]), y[batch]).backward()  # type: ignore[no-untyped-call]
            optimiser.step()
        net.eval()
        with torch.no_grad():
            held_loss = float(loss(net(x[held]), y[held]))
        if held_loss < best:
            best, best_epoch = held_loss, epoch
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch > 15:
            break
    net.load_state_dict(best_state)
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", help="suite name (repeatable)")
    parser.add_argument("--store", type=Path, default=default_store_path())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    catalog = load_catalog()
    store = Store(args.store)
    embedder = Embedder(args.store / "embeddings")
    names = args.suite or [s.name for s in DEFAULT_SUITES]
    for suite in DEFAULT_SUITES:
        if suite.name not in names:
            continue
        pool = suite.resolved(catalog).replay_pool(store)
        train = np.flatnonzero(split_mask(pool.item_ids, "train"))
        test = np.flatnonzero(split_mask(pool.item_ids, "test"))
        singles = pool.cost[test].mean(axis=0) * 1000
        cost_range = (float(singles.min()), float(singles.max()))
        vectors = embedder.encode_items(pool.sources[0], pool.items())
        knn = NearestNeighbour(vectors)
        knn.fit(pool, train)
        knn_score, knn_cost = knn.predict(pool, test)
        x = torch.from_numpy(centred(vectors, vectors[train].mean(axis=0)))
        y = torch.from_numpy(pool.score.astype(np.float32))
        print(
            f"{suite.name}: {len(train)} train, {len(test)} test items; "
            f"nearest neighbours (k={knn.k}) AIQ "
            f"{_curve_aiq(pool, test, knn_score, knn_cost, cost_range):.4f}"
        )
        for hidden, decay in PROBES:
            net = _probe(x, y, train, hidden, decay, args.seed)
            with torch.no_grad():
                probe = torch.sigmoid(net(x[test])).numpy().astype(np.float64)
            alone = _curve_aiq(pool, test, probe, knn_cost, cost_range)
            mixed = _curve_aiq(
                pool, test, (probe + knn_score) / 2, knn_cost, cost_range
            )
            print(
                f"  probe {hidden:3d} wide, decay {decay:g}: AIQ {alone:.4f}; "
                f"averaged with the neighbours {mixed:.4f}"
            )


if __name__ == "__main__":
    main()
