"""One training run end to end: data in, checkpoint out.

The command line calls ``run_training``; tests and notebooks can too. The
checkpoint's manifest records what the network was trained on (suites, pools,
every model's catalog price, the store's data fingerprints), how (hyper-parameters,
seed, lambda range, reward settings) and what it achieved (train and dev metrics).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from xrouter.core.catalog import Catalog
from xrouter.core.progress import Reporter
from xrouter.evaluate.suites import Suite
from xrouter.orchestrator.reward import RewardConfig
from xrouter.policies.checkpoint import save_checkpoint
from xrouter.policies.embedding import DEFAULT_KIND, Embedder
from xrouter.records.store import Store
from xrouter.train.curves import CURVES_FILE, write_curves
from xrouter.train.env import TrainingData, load_training_data
from xrouter.train.grpo import GRPOConfig, TrainResult, train_policy

__all__ = ["METRICS_FILE", "checkpoint_manifest", "run_training"]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def checkpoint_manifest(
    data: TrainingData,
    config: GRPOConfig,
    reward: RewardConfig,
    result: TrainResult,
    embedding: str,
) -> dict[str, Any]:
    """What the checkpoint's manifest says beyond the network and its models."""
    return {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "embedding": embedding,
        "suites": {
            s.name: {
                "source": s.source,
                "pool": list(s.pool),
                "self_model": s.self_model,
                "train_items": len(rows),
                "dev_items": len(dev),
            }
            for s, rows, dev in zip(data.suites, data.train, data.dev, strict=True)
        },
        "data": {"fingerprints": data.fingerprints},
        "lambda_range": [config.lam_min, config.lam_max],
        "default_lambda": config.default_lambda,
        "reward": {"k": reward.k, "cost_max": reward.cost_max},
        "seed": config.seed,
        "hyperparameters": asdict(config),
        "metrics": {
            "train_seconds": round(result.seconds, 2),
            "best_step": result.best_step,
            "dev": {k: round(v, 6) for k, v in result.dev.items()},
            "final": {k: round(v, 6) for k, v in result.final.items()},
        },
    }


def run_training(
    store: Store,
    suites: Sequence[Suite],
    catalog: Catalog,
    out: Path,
    config: GRPOConfig,
    *,
    reporter: Reporter | None = None,
    embedding: str = DEFAULT_KIND,
) -> tuple[TrainingData, TrainResult]:
    """Train on the suites' train splits and write the checkpoint to ``out``;
    prompts are embedded with the ``embedding`` kind (see ``Embedder``)."""
    reward = config.reward()
    embedder = Embedder(store.path / "embeddings", kind=embedding)
    data = load_training_data(store, suites, catalog, embedder, reporter)
    # The run's metrics replace an earlier checkpoint's only with its weights, so
    # a failed or interrupted run leaves that checkpoint whole.
    partial = out / (METRICS_FILE + ".partial")
    result = train_policy(data, config, reporter=reporter, metrics_path=partial)
    manifest = checkpoint_manifest(data, config, reward, result, embedder.kind)
    save_checkpoint(out, result.net, data.memory, data.models, manifest)
    partial.replace(out / METRICS_FILE)
    write_curves(out / METRICS_FILE, out / CURVES_FILE)
    logger.info("wrote the checkpoint to %s", out)
    return data, result
