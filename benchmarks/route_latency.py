"""Times the learned router's decision for one request, on this CPU.

    python benchmarks/route_latency.py --policy CKPT [--suite zeroeval] [--n 300]

For each of ``n`` real prompts of the suite (read from the store), one at a time
as a gateway would see them, it times side by side in one run:

- the decision alone: features, the network and the argmax, from a prompt
  embedding computed beforehand;
- the decision with the embedding: all-MiniLM-L6-v2 on the prompt, then the same.

It prints the median and the 99th percentile of each, and of the embedding alone.
Torch uses one thread, as a router serving one request at a time would.
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
    router = LiveRouter(
        load_checkpoint(args.policy), catalog, suite.pool, suite.self_model
    )
    embedder = Embedder()

    # Warm up both paths (model load, first allocations).
    for text in texts[:10]:
        router.first_decision(embedder.encode([text])[0], args.lam, 100)

    embed_s, decide_s, both_s = [], [], []
    for text, n_tokens in zip(texts, tokens, strict=True):
        started = time.perf_counter()
        vector = embedder.encode([text])[0]
        embedded = time.perf_counter()
        router.first_decision(vector, args.lam, int(n_tokens))
        done = time.perf_counter()
        embed_s.append(embedded - started)
        both_s.append(done - started)

        # The decision alone, again, from the embedding already in hand.
        started = time.perf_counter()
        router.first_decision(vector, args.lam, int(n_tokens))
        decide_s.append(time.perf_counter() - started)

    print(f"{args.suite}: {len(texts)} prompts, pool of {len(suite.pool)} models")
    print(f"decision, embedding excluded   {_ms(decide_s)}")
    print(f"decision, embedding included   {_ms(both_s)}")
    print(f"embedding alone (MiniLM)       {_ms(embed_s)}")


if __name__ == "__main__":
    main()
