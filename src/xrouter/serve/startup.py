"""The gateway's slow start-up steps, kept off the event loop.

Ingesting the records the pool replays, and training the default policy once when
no checkpoint exists (in a child process, so that torch never runs the embedding
model in a thread other than the one that serves requests).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

from xrouter.backends.build import build_pool
from xrouter.backends.pool import load_pool_spec
from xrouter.core.catalog import Catalog, load_catalog
from xrouter.core.errors import ConfigError
from xrouter.serve.config import GatewayConfig

__all__ = ["prepare", "train_default_policy"]

logger = logging.getLogger(__name__)


def prepare(config: GatewayConfig, catalog: Catalog) -> None:
    """Ingest what the pool replays and train the default policy if need be."""
    from xrouter.cli.data import ensure_source, open_store
    from xrouter.evaluate.suites import DEFAULT_SUITES

    store = open_store(None)
    suite = next((s for s in DEFAULT_SUITES if s.name == config.suite), None)
    path = config.checkpoint_path
    training = config.router.kind == "policy" and _needs_training(config)
    if config.pool is not None:
        spec = load_pool_spec(config.pool)
        cards = load_catalog(list(spec.catalog))
        trained_on = set(suite.resolved(cards).pool) if suite else set()
        others = sorted({cards.get(m.model).id for m in spec.models} - trained_on)
        if training and others:
            raise ConfigError(
                f"the default policy is trained on the {config.suite} suite's "
                f"models, and the pool {config.pool} has others ({', '.join(others)}); "
                "train a policy on records of this pool (`xrouter data collect`, "
                "then `xrouter train policy --suites FILE --out DIR`) and set "
                "router.checkpoint to DIR, or use router.kind: llm"
            )
        if spec.replay is not None:
            ensure_source(store, cards, spec.replay.source, config.data_dir)
        if training:  # a pool that cannot be built fails now, not after training
            pool = build_pool(spec, cards, store if spec.replay else None)
            asyncio.run(pool.aclose())
    elif suite is not None:
        ensure_source(store, catalog, suite.source, config.data_dir)
    if training:
        logger.warning(
            "no trained policy at %s (or one from an older xrouter): training one "
            "on the %s records, once (a few minutes on a CPU)",
            path,
            config.suite,
        )
        code = (
            "import sys; from xrouter.serve.startup import train_default_policy; "
            "train_default_policy(sys.argv[1], sys.argv[2])"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, str(path), config.suite], check=False
        )
        if done.returncode != 0:
            raise ConfigError(
                f"training the default policy into {path} failed (exit "
                f"{done.returncode}); run `xrouter train policy --from DIR --out "
                f"{path}` to see why, or set router.checkpoint in the config"
            )
    if config.router.kind == "policy":
        _load_static_embedding(path)


def _load_static_embedding(path: Path) -> None:
    """Distil or load the static embedding here, off the event loop, when the
    policy was trained on it (it is plain numpy: any thread may use it after;
    the full transformer is left for the thread that will run it)."""
    from xrouter.policies import embedding

    try:
        kind = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        kind = kind.get("embedding")
    except (OSError, ValueError, AttributeError):
        return  # loading the checkpoint will say what is wrong with it
    if kind == "static":
        embedding.load(kind)


def _needs_training(config: GatewayConfig) -> bool:
    """At the default path the gateway manages itself, no checkpoint or one
    written in an older format. A checkpoint the config names is never trained
    over: a missing one is an error, not a cue to train another."""
    from xrouter.policies.checkpoint import FORMAT, MANIFEST

    if config.router.checkpoint is not None:
        return False  # the user's own: loading it tells them what is wrong
    file = config.checkpoint_path / MANIFEST
    if not file.is_file():
        return True
    try:
        return bool(json.loads(file.read_text(encoding="utf-8"))["format"] != FORMAT)
    except (OSError, ValueError, KeyError, TypeError):
        return True


def train_default_policy(path: str, suite_name: str) -> None:
    """Train the default policy once, on the suite's train split (run in a child
    process by the gateway's start-up)."""
    from xrouter.cli.data import open_store
    from xrouter.evaluate.suites import DEFAULT_SUITES
    from xrouter.train.grpo import GRPOConfig
    from xrouter.train.run import run_training

    suites = [s for s in DEFAULT_SUITES if s.name == suite_name]
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    run_training(open_store(None), suites, load_catalog(), target, GRPOConfig())
