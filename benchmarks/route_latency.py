"""Times the learned router's decision for one request, on this CPU.

    python benchmarks/route_latency.py --policy CKPT [--suite zeroeval] [--n 300]

For each of ``n`` real prompts of the suite (read from the store), one at a time
as a gateway would see them, it times side by side in one run:

- the decision alone: the neighbour search, features, the network and the
  argmax, from a prompt embedding computed beforehand, for a prompt the router
  has not seen;
- the decision with the embedding the checkpoint was trained on (by default the
  static one), then the same with the full MiniLM transformer for comparison.

It prints the median and the 99th percentile of each, and of each embedding
alone. Torch uses one thread, as a router serving one request at a time would.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from xrouter.backends.replay import ReplayPool
from xrouter.core.catalog import load_catalog
from xrouter.evaluate.suites import DEFAULT_SUITES
from xrouter.policies.checkpoint import load_checkpoint
from xrouter.policies.embedding import Embedder, routing_text
from xrouter.policies.learned import LiveRouter
from xrouter.records.store import Store, default_store_path


def _ms(seconds: list[float]) -> str:
    median = statistics.median(seconds) * 1000
    p99 = float(np.percentile(seconds, 99)) * 1000
    return f"median {median:7.3f} ms   p99 {p99:7.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, required=True, help="checkpoint dir")
    parser.add_argument("--suite", default="zeroeval")
    parser.add_argument("--n", type=int, default=300, help="prompts to time")
    parser.add_argument("--lam", type=float, default=2.0)
    parser.add_argument("--store", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    catalog = load_catalog()
    suite = next(s for s in DEFAULT_SUITES if s.name == args.suite).resolved(catalog)
    store = Store(args.store or default_store_path())
    pool = ReplayPool.load(store, [suite.source], suite.pool, tasks=suite.tasks)
    items = pool.items(list(range(min(args.n, len(pool.item_ids)))))
    texts = [routing_text(item) for item in items]
    tokens = pool.input_tokens[: len(items), 0]
    checkpoint = load_checkpoint(args.policy)
    router = LiveRouter(checkpoint, catalog, suite.pool, suite.self_model)
    # A second router times the decision alone: a router keeps each prompt's
    # neighbours for its later turns, so a prompt it has seen costs it less.
    alone = LiveRouter(checkpoint, catalog, suite.pool, suite.self_model)
    trained = Embedder(kind=checkpoint.embedding)
    other = Embedder(kind="minilm" if trained.kind == "static" else "static")

    # Warm up every path (model loads, first allocations).
    for text in texts[:10]:
        for embedder in (trained, other):
            vector = embedder.encode([text])[0]
            router.first_decision(vector, args.lam, 100)
            alone.first_decision(vector, args.lam, 100)

    embed_s: dict[str, list[float]] = {trained.kind: [], other.kind: []}
    both_s: dict[str, list[float]] = {trained.kind: [], other.kind: []}
    decide_s = []
    for text, n_tokens in zip(texts, tokens, strict=True):
        for embedder in (trained, other):
            started = time.perf_counter()
            vector = embedder.encode([text])[0]
            embedded = time.perf_counter()
            router.first_decision(vector, args.lam, int(n_tokens))
            done = time.perf_counter()
            embed_s[embedder.kind].append(embedded - started)
            both_s[embedder.kind].append(done - started)

        # The decision alone, from the embedding already in hand.
        vector = trained.encode([text])[0]
        started = time.perf_counter()
        alone.first_decision(vector, args.lam, int(n_tokens))
        decide_s.append(time.perf_counter() - started)

    print(f"{args.suite}: {len(texts)} prompts, pool of {len(suite.pool)} models")
    print(f"checkpoint trained on the {trained.kind} embedding")
    print(f"decision, embedding excluded        {_ms(decide_s)}")
    for kind in (trained.kind, other.kind):
        print(f"decision with the {kind:7s} embedding {_ms(both_s[kind])}")
        print(f"{kind} embedding alone{' ' * (19 - len(kind))}{_ms(embed_s[kind])}")


if __name__ == "__main__":
    main()
