"""Policy checkpoints changed as a writer of them would change them, for tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file


def stamp_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` and stamp the weights with its digest, as the writer of
    a checkpoint with this manifest would."""
    text = json.dumps(manifest)
    (directory / "manifest.json").write_text(text)
    weights = directory / "policy.safetensors"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    save_file(load_file(weights), weights, metadata={"manifest_sha256": digest})
