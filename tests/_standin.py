"""A deterministic stand-in for the MiniLM embedder, for tests that train."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from xrouter.policies.embedding import Embedder


class StandInEmbedder(Embedder):
    """Unit vectors drawn from a hash of each text, instead of MiniLM's.

    Its vectors go to the same per-source cache as the real embedder's, so a
    command run after it (``xrouter eval``) reads them instead of embedding.
    """

    def encode(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> NDArray[np.float32]:
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for k, text in enumerate(texts):
            # The whole text seeds the vector: prompts of one benchmark share their
            # template's ending, and a vector drawn from the ending alone would tie
            # every neighbour, leaving their order to the sort's build.
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
            out[k] = np.random.default_rng(seed).normal(size=384)
        return out / np.linalg.norm(out, axis=1, keepdims=True)
