"""Fixed train / dev / test splits decided by a hash of the item id.

The split of an item depends on its id alone, never on which other items are
present, so adding data or models cannot move an item from test into train.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["SPLITS", "Split", "split_mask", "split_of"]

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
# Cumulative upper bounds of each split on [0, 1): 60% train, 10% dev, 30% test.
_BOUNDS = {"train": 0.6, "dev": 0.7, "test": 1.0}
_SALT = b"xrouter-split-v1:"


def _unit(item_id: str) -> float:
    digest = hashlib.sha256(_SALT + item_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(item_id: str) -> Split:
    """The split an item belongs to, forever."""
    u = _unit(item_id)
    for name in SPLITS:
        if u < _BOUNDS[name]:
            return name
    return "test"


def split_mask(item_ids: Iterable[str], split: Split) -> NDArray[np.bool_]:
    """Boolean mask over ``item_ids`` selecting those in ``split``."""
    return np.array([split_of(i) == split for i in item_ids], dtype=bool)
