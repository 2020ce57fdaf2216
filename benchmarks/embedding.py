"""Embedding throughput: prompts in input order against length-sorted batches.

    python benchmarks/embedding.py [--store DIR] [--n 1024]

Both runs embed the same prompts of a store (the routellm and zeroeval sources, the
largest and the longest), one after the other in one process.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from xrouter.policies.embedding import Embedder, _model, routing_text
from xrouter.records.schema import item_from_row
from xrouter.records.store import Store, default_store_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=default_store_path())
    parser.add_argument("--n", type=int, default=1024)
    args = parser.parse_args()
    store = Store(args.store)
    rows = store.items(["routellm", "zeroeval"]).to_pylist()
    pick = np.random.default_rng(0).choice(len(rows), size=args.n, replace=False)
    texts = [routing_text(item_from_row(rows[i])) for i in pick]
    model = _model()
    model.encode(texts[:64])  # warm up

    started = time.perf_counter()
    plain = np.concatenate(
        [
            model.encode(texts[i : i + 64], normalize_embeddings=True)
            for i in range(0, len(texts), 64)
        ]
    )
    plain_s = time.perf_counter() - started

    started = time.perf_counter()
    sorted_ = Embedder(batch_size=64).encode(texts)
    sorted_s = time.perf_counter() - started

    assert np.allclose(plain, sorted_, atol=1e-4)
    print(f"{args.n} prompts, input order:  {1000 * plain_s / args.n:.1f} ms a prompt")
    print(
        f"{args.n} prompts, sorted batches: {1000 * sorted_s / args.n:.1f} ms a prompt"
    )
    print(f"speed-up {plain_s / sorted_s:.2f}x")


if __name__ == "__main__":
    main()
