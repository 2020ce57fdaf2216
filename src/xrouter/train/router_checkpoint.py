"""Checkpoints of the LLM router's training, and resuming from them.

A checkpoint is a directory ``OUT/checkpoint-<phase>-<step>`` holding the model
and tokenizer (``save_pretrained``), the optimizer's state (``optimizer.pt``) and
``manifest.json``: the phase (``sft`` or ``rl``) and step reached, the settings,
the data fingerprint and the latest metrics. ``OUT/latest.json`` names the newest
one; ``--resume`` continues from it. The checkpoint that ends a phase is kept;
of the periodic ones only the newest ``keep`` are. :class:`MetricsLog` keeps the
run's ``metrics.jsonl``, cut back to the checkpoint a resumed run starts from.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from xrouter.backends.model_dir import quiet_progress
from xrouter.core.errors import CheckpointError
from xrouter.train.curves import read_metrics

__all__ = [
    "LATEST",
    "Checkpoint",
    "MetricsLog",
    "latest_checkpoint",
    "save_router_checkpoint",
]

LATEST = "latest.json"
_PREFIX = "checkpoint-"


@dataclass(frozen=True)
class Checkpoint:
    """Where a checkpoint is and what its manifest says."""

    path: Path
    phase: str
    step: int
    phase_done: bool
    manifest: dict[str, Any]

    def load_optimizer(self, optimizer: torch.optim.Optimizer) -> bool:
        """Restore ``optimizer`` from the checkpoint; False when it holds none."""
        file = self.path / "optimizer.pt"
        if not file.is_file():
            return False
        optimizer.load_state_dict(torch.load(file, weights_only=True))
        return True


def save_router_checkpoint(
    out: Path,
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer | None,
    *,
    phase: str,
    step: int,
    phase_done: bool,
    manifest: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write a checkpoint, point ``latest.json`` at it, prune old periodic ones."""
    target = out / f"{_PREFIX}{phase}-{step:06d}"
    partial = out / f".partial-{target.name}"
    shutil.rmtree(partial, ignore_errors=True)
    with quiet_progress():
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), partial / "optimizer.pt")
    record = {
        **manifest,
        "phase": phase,
        "step": step,
        "phase_done": phase_done,
        "saved_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    (partial / "manifest.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    (out / LATEST).write_text(json.dumps({"checkpoint": target.name}) + "\n")
    _prune(out, keep, target)
    return target


def _prune(out: Path, keep: int, newest: Path) -> None:
    periodic = []
    for folder in sorted(out.glob(f"{_PREFIX}*")):
        manifest = folder / "manifest.json"
        if folder == newest or not manifest.is_file():
            continue
        if not json.loads(manifest.read_text()).get("phase_done"):
            periodic.append(folder)
    for folder in periodic[: max(len(periodic) - (keep - 1), 0)]:
        shutil.rmtree(folder, ignore_errors=True)


def latest_checkpoint(out: Path) -> Checkpoint | None:
    """The checkpoint ``latest.json`` names in ``out``, or None when there is none."""
    pointer = out / LATEST
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
        path = out / name
        manifest = json.loads((path / "manifest.json").read_text())
        return Checkpoint(
            path,
            str(manifest["phase"]),
            int(manifest["step"]),
            bool(manifest["phase_done"]),
            manifest,
        )
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"{pointer} names no readable checkpoint ({exc}); delete {pointer} to "
            "start afresh, or point --out at another directory"
        ) from exc


class MetricsLog:
    """Appends metric lines to ``metrics.jsonl`` and hands them to a callback."""

    def __init__(
        self,
        path: Path,
        on_line: Callable[[dict[str, Any]], None],
        *,
        writes: bool = True,
    ) -> None:
        self.path, self.on_line, self.writes = path, on_line, writes
        self.last: dict[str, dict[str, Any]] = {}

    def keep_until(self, phase: str, step: int) -> None:
        """Drop the lines logged after the checkpoint a run resumes from (phase
        ``phase``, step ``step``), and the evaluations just after it; the
        resumed run logs its steps again from there."""
        if not self.writes or not self.path.is_file():
            return
        kept = []
        lines = read_metrics(self.path)
        for k, line in enumerate(lines):
            kept.append(line)
            if (line["phase"], line.get("step")) == (phase, step):
                after = lines[k + 1 :]
                kept += itertools.takewhile(lambda x: x["phase"] == "eval", after)
                break
        text = "".join(json.dumps(line) + "\n" for line in kept)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.path)

    def write(self, line: dict[str, Any]) -> None:
        if self.writes:
            with self.path.open("a") as file:
                file.write(json.dumps(line) + "\n")
        key = line["phase"]
        if key == "eval":
            key = f"eval/{line['stage']}@{line['lambda']:g}"
        self.last[key] = line
        self.on_line(line)
