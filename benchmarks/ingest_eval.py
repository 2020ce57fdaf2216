"""Times the main job's stages on a data directory: ingest, embedding, evaluation.

    python benchmarks/ingest_eval.py --from ../shared/data

Each stage runs in a fresh temporary store, side by side in one process, so the
figures compare on the same machine state: a cold ingest of every source, the
one-off embedding of every prompt, then a warm evaluation of every baseline on every
suite (records and embeddings cached), which is what a repeated `xrouter eval` costs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from xrouter.core.catalog import load_catalog
from xrouter.evaluate.runner import evaluate_suite
from xrouter.evaluate.suites import DEFAULT_SUITES
from xrouter.policies.embedding import Embedder
from xrouter.records.ingest import ingest
from xrouter.records.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="data", type=Path, required=True)
    args = parser.parse_args()
    catalog = load_catalog()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        embedder = Embedder(store.path / "embeddings")

        started = time.perf_counter()
        infos = ingest(args.data, store, catalog)
        ingest_s = time.perf_counter() - started
        for info in infos:
            line = f"{info.records:>8,} records {info.seconds:5.1f} s"
            print(f"ingest {info.name:12s} {line}")
        print(f"ingest total {ingest_s:.1f} s")

        started = time.perf_counter()
        for suite in DEFAULT_SUITES:
            evaluate_suite(store, suite, embedder, catalog)
        cold_s = time.perf_counter() - started
        print(f"first evaluation (embeds every prompt once) {cold_s:.1f} s")

        started = time.perf_counter()
        for suite in DEFAULT_SUITES:
            report = evaluate_suite(store, suite, embedder, catalog)
            print(
                f"eval {suite.name:12s} {len(report.results):>3} policies "
                f"{report.items['test']:>5} test items {report.seconds:6.2f} s"
            )
        warm_s = time.perf_counter() - started
        print(f"warm evaluation of all baselines on all suites {warm_s:.1f} s")


if __name__ == "__main__":
    main()
