"""A pool: the models a router may call, each with its card, backend and fallback.

A pool file (YAML) names the models and how each is reached::

    models:
      - model: gpt-4o-mini-2024-07-18      # a card id or alias from the catalog
        backend: http                       # http (default), replay, local or litellm
        base_url: https://api.openai.com/v1 # overrides the card's, if any
        api_key_env: OPENAI_API_KEY
        fallback: gpt-4o-2024-05-13         # tried when a call fails for good
      - model: smollm2-135m
        backend: local
    replay:                                 # where backend: replay finds records
      source: zeroeval
    fallback: gpt-4o-mini-2024-07-18        # default fallback of every model
    catalog: [my-cards.yaml]                # extra model cards, relative to this file

Nothing here calls a model: building a pool makes the backends, which connect or
load weights lazily on their first call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from xrouter.backends.base import Backend
from xrouter.core.catalog import Catalog, ModelCard
from xrouter.core.errors import ConfigError
from xrouter.core.yamlfile import read_yaml_model

__all__ = [
    "Pool",
    "PoolEntry",
    "PoolSpec",
    "ReplaySpec",
    "load_pool_spec",
]

BackendKind = Literal["http", "replay", "local", "litellm"]


class PoolModelSpec(BaseModel):
    """One model of a pool file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    backend: BackendKind = "http"
    base_url: str | None = Field(None, pattern=r"^https?://\S+$")
    api_key_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    route: str | None = None
    fallback: str | None = None
    timeout_s: float | None = Field(None, gt=0)
    model_dir: Path | None = None


class ReplaySpec(BaseModel):
    """The records that replay backends answer from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1)
    tasks: tuple[str, ...] | None = None


class PoolSpec(BaseModel):
    """A whole pool file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[PoolModelSpec, ...] = Field(min_length=1)
    replay: ReplaySpec | None = None
    fallback: str | None = None
    catalog: tuple[Path, ...] = ()


def load_pool_spec(path: Path) -> PoolSpec:
    """Read and check a pool file; errors name the file and the field."""
    spec = read_yaml_model(
        path, PoolSpec, "pool file", shape="a mapping with a 'models' list"
    )
    base = path.parent
    return spec.model_copy(
        update={
            "catalog": tuple(p if p.is_absolute() else base / p for p in spec.catalog)
        }
    )


def card_for(spec: PoolModelSpec, catalog: Catalog) -> ModelCard:
    """The catalog's card of ``spec.model`` with the pool file's overrides."""
    card = catalog.get(spec.model)
    update = {
        key: value
        for key, value in {
            "base_url": spec.base_url,
            "api_key_env": spec.api_key_env,
            "route": spec.route,
        }.items()
        if value is not None
    }
    return card.model_copy(update=update) if update else card


@dataclass(frozen=True)
class PoolEntry:
    """A pool model: its card, its backend, the model tried when it fails."""

    card: ModelCard
    backend: Backend
    fallback: str | None = None


class Pool:
    """The models a router may call, by card id, in the order given."""

    def __init__(self, entries: Sequence[PoolEntry]) -> None:
        if not entries:
            raise ConfigError("a pool needs at least one model")
        self._entries: dict[str, PoolEntry] = {}
        for entry in entries:
            if entry.card.id in self._entries:
                raise ConfigError(f"model {entry.card.id} appears twice in the pool")
            self._entries[entry.card.id] = entry
        for entry in entries:
            if entry.fallback is not None and entry.fallback not in self._entries:
                raise ConfigError(
                    f"the fallback of {entry.card.id}, {entry.fallback}, is not in "
                    f"the pool ({', '.join(self._entries)}); add it or drop the "
                    "fallback"
                )

    def __contains__(self, model: object) -> bool:
        return model in self._entries

    def __iter__(self) -> Iterator[PoolEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def ids(self) -> list[str]:
        return list(self._entries)

    @property
    def cards(self) -> list[ModelCard]:
        return [entry.card for entry in self._entries.values()]

    def entry(self, model: str) -> PoolEntry:
        try:
            return self._entries[model]
        except KeyError:
            raise ConfigError(
                f"model {model!r} is not in the pool ({', '.join(self._entries)})"
            ) from None

    async def aclose(self) -> None:
        for entry in self._entries.values():
            await entry.backend.aclose()
