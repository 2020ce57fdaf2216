"""Checkpoints of the learned router: weights and a manifest, and their checks.

A checkpoint is a directory::

    policy.safetensors   the network's weights and its memory of train prompts
    manifest.json        what the network was trained on and how: the models it
                         knows (in the order of its model embeddings) with their
                         catalog prices, the prompt embedding's kind, the suites'
                         pools, the data fingerprints, the lambda range,
                         hyper-parameters, seed and metrics

The weights file carries the SHA-256 of the manifest it was written with, so a
manifest edited or replaced afterwards (models reordered, another embedding named,
a lambda range changed) is refused rather than routed with silently. Loading
checks both files and refuses a damaged checkpoint with a ``CheckpointError``.
Applying it to a pool checks the pool against the manifest: a model the network
never saw is refused; a price that changed since training is logged as a warning
naming the model and both prices.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from xrouter.core.catalog import Catalog
from xrouter.core.errors import CheckpointError
from xrouter.policies.memory import NeighbourMemory
from xrouter.policies.router_net import EMBED_DIM, ModelTable, NetConfig, RouterNet

__all__ = [
    "FORMAT",
    "MANIFEST",
    "WEIGHTS",
    "Checkpoint",
    "check_models",
    "check_pool",
    "load_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

# Format 6: the weights carry the manifest's digest (format 5: the memory
# remembers whether each response's answer was extracted; format 4: it searches each
# collection of records apart; format 3: the network's residual reads no prompt
# and its head gives one output; format 2: memory similarities centred, the
# manifest names the embedding).
FORMAT = "xrouter-policy/6"
WEIGHTS = "policy.safetensors"
MANIFEST = "manifest.json"
_REQUIRED = (
    "format",
    "models",
    "prices",
    "net",
    "memory",
    "lambda_range",
    "default_lambda",
    "embedding",
)
_MEMORY = "memory."
_DIGEST = "manifest_sha256"  # the weights file's metadata keys
_TENSORS = "tensors_sha256"  # (absent from files written before it was added)


class _MemoryShape(BaseModel):
    """What the manifest says of the memory; checked before the weights load."""

    model_config = ConfigDict(extra="allow")
    items: Annotated[StrictInt, Field(ge=0)]
    near: Annotated[StrictInt, Field(ge=1)]
    wide: Annotated[StrictInt, Field(ge=1)]
    collections: list[StrictStr]
    wide_of: list[Annotated[StrictInt, Field(ge=0)]] = []


class _ManifestShape(BaseModel):
    """The types of the manifest's entries that loading and routing read, and
    how they must agree."""

    model_config = ConfigDict(extra="allow")
    models: list[StrictStr]
    prices: dict[str, dict[str, Annotated[float, Field(ge=0)]]]
    net: dict[str, float]
    memory: _MemoryShape
    lambda_range: tuple[float, float]
    default_lambda: float
    embedding: StrictStr

    @model_validator(mode="after")
    def _agree(self) -> _ManifestShape:
        lo, hi = self.lambda_range
        if not 0 < lo < hi < math.inf:
            raise ValueError(
                f"lambda_range must be [min, max] with 0 < min < max, got {lo:g} to "
                f"{hi:g}"
            )
        if not lo <= self.default_lambda <= hi:
            raise ValueError(
                f"default_lambda {self.default_lambda:g} lies outside lambda_range "
                f"{lo:g} to {hi:g}"
            )
        for model in self.models:
            price = self.prices.get(model, {})
            if not {"input_per_mtok", "output_per_mtok"} <= set(price):
                raise ValueError(f"prices lacks the input and output price of {model}")
        return self


@dataclass
class Checkpoint:
    """A loaded checkpoint: the network (in eval mode), its memory of train
    prompts, and its manifest."""

    path: Path
    net: RouterNet
    memory: NeighbourMemory
    manifest: dict[str, Any]
    digest: str = ""  # the manifest file's sha256, which its weights carry

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.manifest["models"])

    @property
    def lambda_range(self) -> tuple[float, float]:
        lo, hi = self.manifest["lambda_range"]
        return float(lo), float(hi)

    @property
    def embedding(self) -> str:
        """The kind of prompt embedding the network was trained on."""
        return str(self.manifest["embedding"])

    @property
    def default_lambda(self) -> float:
        return float(self.manifest["default_lambda"])

    def model_table(self, catalog: Catalog) -> ModelTable:
        """The network's models with today's catalog prices."""
        return ModelTable.from_catalog(self.models, catalog)


def save_checkpoint(
    path: Path,
    net: RouterNet,
    memory: NeighbourMemory,
    table: ModelTable,
    manifest: dict[str, Any],
) -> None:
    """Write ``policy.safetensors`` and ``manifest.json`` under ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    # The memory's prompt embeddings are stored at half precision (they are unit
    # vectors; a similarity moves by under 1e-3), its verdicts and costs in full.
    weights |= {
        _MEMORY + "embedding": torch.from_numpy(memory.embedding).half(),
        _MEMORY + "item": torch.from_numpy(memory.item),
        _MEMORY + "score": torch.from_numpy(memory.score),
        _MEMORY + "cost": torch.from_numpy(memory.cost),
        _MEMORY + "collection": torch.from_numpy(memory.collection),
        _MEMORY + "extracted": torch.from_numpy(memory.extracted),
    }
    full = {
        "format": FORMAT,
        "models": list(table.ids),
        "prices": {
            m: {
                "input_per_mtok": float(table.price_in[k]),
                "output_per_mtok": float(table.price_out[k]),
            }
            for k, m in enumerate(table.ids)
        },
        "net": net.config.as_dict(),
        "memory": {
            "items": len(memory.item),
            "near": memory.near,
            "wide": memory.wide,
            "collections": list(memory.collections),
            "wide_of": list(memory.wide_of),
        },
        **manifest,
    }
    text = json.dumps(full, indent=2) + "\n"
    # Both files are written whole beside the old ones before either moves into
    # place, so a failed write (a full disk) leaves an earlier checkpoint whole;
    # between the two moves the pair disagrees and is refused, never half read.
    weights_tmp, manifest_tmp = path / (WEIGHTS + ".tmp"), path / (MANIFEST + ".tmp")
    try:
        manifest_tmp.write_text(text, encoding="utf-8")
        metadata = {_DIGEST: _digest(text), _TENSORS: _tensors_digest(weights)}
        save_file(weights, str(weights_tmp), metadata=metadata)
        # safetensors creates its file readable by its owner only; give the
        # weights the manifest's permissions.
        weights_tmp.chmod(manifest_tmp.stat().st_mode & 0o777)
    except BaseException:
        for tmp in (weights_tmp, manifest_tmp):
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    weights_tmp.replace(path / WEIGHTS)
    manifest_tmp.replace(path / MANIFEST)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _tensors_digest(weights: dict[str, torch.Tensor]) -> str:
    """The sha256 of every tensor's name, type, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name]
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _read_manifest(path: Path) -> tuple[dict[str, Any], str]:
    """The manifest, checked, and its digest."""
    file = path / MANIFEST
    try:
        text = file.read_text(encoding="utf-8")
        raw = json.loads(text)
    except OSError as exc:
        raise CheckpointError(
            f"cannot read {file}: {exc.strerror}; a checkpoint directory holds "
            f"{WEIGHTS} and {MANIFEST} (write one with `xrouter train policy --out "
            f"{path}`)"
        ) from exc
    except ValueError as exc:
        raise CheckpointError(
            f"{file} is not valid JSON; the checkpoint is damaged, train the policy "
            "again"
        ) from exc
    missing = [k for k in _REQUIRED if not isinstance(raw, dict) or k not in raw]
    if missing:
        raise CheckpointError(
            f"{file} lacks {', '.join(missing)}; it is not an xrouter policy "
            "manifest, train the policy again"
        )
    if raw["format"] != FORMAT:
        raise CheckpointError(
            f"{file} has format {raw['format']!r}; this xrouter reads {FORMAT!r}, "
            "train the policy again"
        )
    try:
        shape = _ManifestShape.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(part) for part in error["loc"])
        where = f"{loc}: " if loc else ""  # a rule across entries names none
        what = error["msg"].removeprefix("Value error, ")
        if error["type"] == "model_type":  # not a mapping: no class names shown
            what = "Input should be an object"
        raise CheckpointError(
            f"{file}: {where}{what}; the checkpoint is damaged, train the policy again"
        ) from exc
    counts = shape.memory
    if len(set(counts.collections)) < len(counts.collections):
        raise CheckpointError(
            f"{file}: memory.collections names a collection twice; the checkpoint "
            "is damaged, train the policy again"
        )
    if len(counts.wide_of) not in (0, len(counts.collections)):
        raise CheckpointError(
            f"{file}: memory.wide_of must hold a neighbour count per name in "
            f"memory.collections ({len(counts.collections)}); the checkpoint is "
            "damaged, train the policy again"
        )
    return dict(raw), _digest(text)


def load_checkpoint(path: Path) -> Checkpoint:
    """Load a checkpoint directory, refusing damaged or incomplete ones."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(
            f"no checkpoint at {path}: it is a file; give the directory that "
            "`xrouter train policy --out` wrote"
        )
    if not path.is_dir():
        raise CheckpointError(
            f"no checkpoint at {path}: it does not exist; write one with "
            f"`xrouter train policy --out {path}`"
        )
    manifest, digest = _read_manifest(path)
    try:
        # A manifest written before ``reads_prompt`` existed is of a head that read it.
        config = NetConfig(**{"reads_prompt": True, **manifest["net"]})
    except TypeError as exc:
        raise CheckpointError(
            f"{path / MANIFEST}: the network settings are not this xrouter's; "
            "train the policy again"
        ) from exc
    except ValueError as exc:
        raise CheckpointError(
            f"{path / MANIFEST}: net: {exc}; the checkpoint is damaged, train the "
            "policy again"
        ) from exc
    net = RouterNet(len(manifest["models"]), config)
    file = path / WEIGHTS
    if not file.is_file():
        raise CheckpointError(
            f"{file} is missing; the checkpoint is incomplete, train it again"
        )
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
            names = handle.keys()  # the handle itself is not iterable
            weights = {name: handle.get_tensor(name) for name in names}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{file} is corrupt or truncated; train the policy again"
        ) from exc
    written_with = metadata.get(_DIGEST)
    stored = metadata.get(_TENSORS)
    if stored is not None and stored != _tensors_digest(weights):
        raise CheckpointError(
            f"{file} holds other numbers than it was written with (damaged since); "
            "train the policy again"
        )
    if written_with != digest:
        raise CheckpointError(
            f"{path / MANIFEST} is not the manifest {file} was written with (edited "
            "or replaced since); the checkpoint is damaged, train the policy again"
        )
    broken = sorted(  # the network's own (the memory marks gaps with NaN)
        name
        for name, tensor in weights.items()
        if not name.startswith(_MEMORY)
        and tensor.is_floating_point()
        and not bool(torch.isfinite(tensor).all())
    )
    if broken:
        raise CheckpointError(
            f"{file} holds weights that are not finite numbers ({', '.join(broken)}); "
            "the checkpoint is damaged, train the policy again"
        )
    counts = manifest["memory"]
    try:
        memory = NeighbourMemory(
            embedding=weights.pop(_MEMORY + "embedding").float().numpy(),
            item=weights.pop(_MEMORY + "item").numpy(),
            score=weights.pop(_MEMORY + "score").numpy(),
            cost=weights.pop(_MEMORY + "cost").numpy(),
            extracted=weights.pop(_MEMORY + "extracted").numpy(),
            near=counts["near"],
            wide=counts["wide"],
            collection=weights.pop(_MEMORY + "collection").numpy(),
            collections=tuple(counts["collections"]),
            wide_of=tuple(counts.get("wide_of", [])),
        )
        expected = (counts["items"], EMBED_DIM, len(manifest["models"]))
        found = (len(memory.item), memory.embedding.shape[1], memory.score.shape[1])
        if found != expected:
            raise ValueError(f"a memory of shape {found}, not {expected}")
        net.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(
            f"{file} does not fit the network {path / MANIFEST} describes; the "
            "checkpoint is damaged, train the policy again"
        ) from exc
    net.eval()
    return Checkpoint(path, net, memory, manifest, digest)


def check_models(checkpoint: Checkpoint, pool: Sequence[str]) -> None:
    """Refuse a pool with models the network never saw, or of one model."""
    unknown = [m for m in pool if m not in checkpoint.models]
    if unknown:
        raise CheckpointError(
            f"the policy at {checkpoint.path} was trained without "
            f"{', '.join(unknown)}; it knows {', '.join(checkpoint.models)}. "
            "Give it a pool of those models, or train again with this pool"
        )
    if len(pool) < 2:
        raise CheckpointError(
            f"a router needs a pool of at least 2 models; got {len(pool)} "
            f"({', '.join(pool)})"
        )


def check_pool(checkpoint: Checkpoint, pool: Sequence[str], catalog: Catalog) -> None:
    """Refuse a pool with models the network never saw; warn of changed prices."""
    check_models(checkpoint, pool)
    prices = checkpoint.manifest["prices"]
    for model in pool:
        card = catalog.get(model)
        then = prices.get(model, {})
        for side, now in (
            ("input", card.input_per_mtok),
            ("output", card.output_per_mtok),
        ):
            old = float(then.get(f"{side}_per_mtok", math.nan))
            if not math.isclose(old, now, rel_tol=1e-9, abs_tol=1e-12):
                logger.warning(
                    "price of %s changed since the policy at %s was trained: "
                    "%s $%g -> $%g per 1M tokens; it routes with the new price",
                    model,
                    checkpoint.path,
                    side,
                    old,
                    now,
                )
