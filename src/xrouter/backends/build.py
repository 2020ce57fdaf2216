"""Make backends and pools from cards, pool files and recorded data."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

from xrouter.backends.base import Backend
from xrouter.backends.pool import Pool, PoolEntry, PoolSpec, card_for
from xrouter.backends.replay import PromptIndex, ReplayBackend, ReplayPool
from xrouter.core.catalog import Catalog, ModelCard
from xrouter.core.errors import ConfigError
from xrouter.records.store import Store

__all__ = ["backend_for", "build_pool", "replay_pool", "router_backend", "router_dir"]

_TRAINED_ROUTER_CARD = "smollm2-135m"  # bills a router directory's tokens by default


def backend_for(
    card: ModelCard,
    kind: str | None = None,
    *,
    timeout_s: float | None = None,
    model_dir: Path | None = None,
) -> Backend:
    """A live backend for ``card``: ``local`` for in-process models, ``http`` for an
    OpenAI-compatible endpoint, ``litellm`` for the providers LiteLLM covers.

    With no ``kind``, a card whose provider is ``local`` runs in-process and any
    other goes over HTTP.
    """
    kind = kind or ("local" if card.provider == "local" else "http")
    if kind == "local":
        from xrouter.backends.local import LocalBackend

        return LocalBackend(card, model_dir=model_dir)
    if kind == "http":
        from xrouter.backends.http import HttpBackend

        return HttpBackend(card, timeout_s=timeout_s or 60.0)
    if kind == "litellm":
        from xrouter.backends.litellm import LiteLLMBackend

        return LiteLLMBackend(card, timeout_s=timeout_s or 60.0)
    raise ConfigError(
        f"backend {kind!r} of {card.id} is not one of local, http, litellm, replay"
    )


def router_backend(name: str, catalog: Catalog) -> Backend:
    """The backend of an LLM router named by a model card, or by the path of a
    transformers chat model directory (a checkpoint of ``xrouter train router``
    among them), run in-process and billed at the card its manifest names
    (``settings.router_card``), else at smollm2-135m's."""
    folder = router_dir(name)
    if folder is None:
        return backend_for(catalog.get(name))
    card = _TRAINED_ROUTER_CARD
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        card = str(manifest["settings"]["router_card"])
    return backend_for(catalog.get(card), "local", model_dir=folder)


def router_dir(name: str) -> Path | None:
    """The model directory an LLM router's name points at: the folder itself, or
    for a run of ``xrouter train router`` its latest checkpoint; None for a card."""
    folder = Path(name).expanduser()
    if folder.is_dir() and (folder / "latest.json").is_file():
        from xrouter.train.router_checkpoint import latest_checkpoint

        found = latest_checkpoint(folder)
        assert found is not None
        folder = found.path
    if folder.is_dir() and not (folder / "config.json").is_file():
        if (folder / "policy.safetensors").is_file():
            raise ConfigError(
                f"{folder} is a policy checkpoint of `xrouter train policy`, not a "
                "language model: give it with --policy"
            )
        raise ConfigError(
            f"{folder} holds no transformers model (no config.json): give a "
            "checkpoint of `xrouter train router`, or a model card's id"
        )
    return folder if folder.is_dir() else None


def replay_pool(
    store: Store,
    source: str,
    models: Sequence[str],
    catalog: Catalog,
    *,
    tasks: Sequence[str] | None = None,
    fallback: str | None = None,
) -> Pool:
    """A pool whose every model answers from its records in ``source``."""
    cards = [catalog.get(m) for m in models]
    _refuse_twice([(m, c.id) for m, c in zip(models, cards, strict=True)])
    records = ReplayPool.load(store, [source], [c.id for c in cards], tasks=tasks)
    index = PromptIndex(records.items())
    return Pool(
        [
            PoolEntry(
                card,
                ReplayBackend(card, records, index),
                fallback if fallback != card.id else None,
            )
            for card in cards
        ]
    )


def build_pool(spec: PoolSpec, catalog: Catalog, store: Store | None = None) -> Pool:
    """The pool a pool file describes; replay entries read ``store``."""
    cards = {m.model: card_for(m, catalog) for m in spec.models}
    _refuse_twice([(m.model, cards[m.model].id) for m in spec.models])
    replayed = [m for m in spec.models if m.backend == "replay"]
    records: ReplayPool | None = None
    index: PromptIndex | None = None
    if replayed:
        if spec.replay is None or store is None:
            raise ConfigError(
                "the pool file has replay models but no 'replay: {source: ...}' "
                "section naming the records they answer from"
            )
        records = ReplayPool.load(
            store,
            [spec.replay.source],
            [cards[m.model].id for m in replayed],
            tasks=spec.replay.tasks,
        )
        index = PromptIndex(records.items())
    entries = []
    for model in spec.models:
        card = cards[model.model]
        backend: Backend
        if model.backend == "replay":
            assert records is not None and index is not None
            backend = ReplayBackend(card, records, index)
        else:
            backend = backend_for(
                card,
                model.backend,
                timeout_s=model.timeout_s,
                model_dir=model.model_dir,
            )
        fallback = model.fallback or spec.fallback
        if fallback is not None:
            fallback = catalog.get(fallback).id
        entries.append(
            PoolEntry(card, backend, None if fallback == card.id else fallback)
        )
    return Pool(entries)


def _refuse_twice(names: Sequence[tuple[str, str]]) -> None:
    """Refuse a pool that lists a model twice, under its id or another name;
    ``names`` pairs each entry's name with its card's id."""
    first: dict[str, str] = {}
    for name, card_id in names:
        if card_id in first:
            alias = (
                f" ({name!r} and {first[card_id]!r} name the same model)"
                if name != first[card_id]
                else ""
            )
            raise ConfigError(
                f"model {card_id} appears twice in the pool{alias}; list it once"
            )
        first[card_id] = name
