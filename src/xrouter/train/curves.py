"""Training curves: a run's ``metrics.jsonl`` drawn as one PNG beside it.

Both trainers log one JSON line per step; :func:`write_curves` reads the file and
draws what it holds:

- a policy network's run (``xrouter train policy``): the sampled episodes' mean
  reward and accuracy, their cost per 1,000 queries, calls per episode and the
  share of groups kept, and the greedy policy's dev AIQ per suite at each
  evaluation;
- an LLM router's run (``xrouter train router``): the warm start's loss, then
  per GRPO step the episodes' reward and accuracy, first-turn parse failures and
  calls per episode; and the held-out evaluations before and after each phase,
  the router's reward at each lambda beside the nearest-neighbour router's and
  the policy network's on the same items.

Each panel is drawn from the series it returns (name -> steps, values), so what a
figure shows can be checked against the log; a long series is drawn with its
moving average. matplotlib is imported when drawing,
on an Agg canvas, as for the cost-accuracy plots.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xrouter.core.errors import DataError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["CURVES_FILE", "Series", "read_metrics", "write_curves"]

CURVES_FILE = "curves.png"
_SMOOTH_FROM = 50  # steps in a series from which it is smoothed
_BASELINE = "baseline: "  # a series drawn dashed, in the colour of the one it names
Series = dict[str, tuple[list[float], list[float]]]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a metrics file (blank lines skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read metrics file {path}: {exc.strerror}") from exc
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            lines.append(json.loads(line))
        except ValueError as exc:
            raise DataError(
                f"{path}, line {number}, is not JSON; the metrics file is damaged"
            ) from exc
    return lines


def write_curves(metrics: Path, out: Path) -> dict[str, Series]:
    """Draw ``metrics`` (a run's metrics.jsonl) into ``out``; returns each
    panel's title and the series drawn in it."""
    lines = read_metrics(metrics)
    if any("phase" in line for line in lines):
        panels = _router_panels(lines)
    else:
        panels = _policy_panels(lines)
    _draw(panels, out, title=f"training curves: {metrics}")
    return panels


def _series(
    lines: Sequence[dict[str, Any]], key: str, x: str = "step"
) -> tuple[list[float], list[float]]:
    rows = [line for line in lines if line.get(key) is not None]
    return [float(r[x]) for r in rows], [float(r[key]) for r in rows]


def _policy_panels(lines: Sequence[dict[str, Any]]) -> dict[str, Series]:
    dev = "dev/aiq/"
    suites = sorted(
        {k[len(dev) :] for line in lines for k in line if k.startswith(dev)}
    )
    return {
        "episodes sampled in training": {
            "reward": _series(lines, "train/reward"),
            "accuracy": _series(lines, "train/accuracy"),
        },
        "USD per 1,000 queries (training episodes)": {
            "cost": _series(lines, "train/cost_per_1k"),
        },
        "calls per episode; share of groups kept": {
            "calls": _series(lines, "train/calls"),
            "groups kept": _series(lines, "groups/kept"),
        },
        "dev AIQ of the greedy policy (dashed: the best baseline's)": {
            **{suite: _series(lines, dev + suite) for suite in suites},
            **{
                _BASELINE + suite: _series(lines, f"dev/baseline/{suite}")
                for suite in suites
            },
        },
    }


def _router_panels(lines: Sequence[dict[str, Any]]) -> dict[str, Series]:
    sft = [line for line in lines if line.get("phase") == "sft"]
    rl = [line for line in lines if line.get("phase") == "rl"]
    # Evaluations that played episodes or read the first call's chances (a parse
    # rate alone has no reward).
    evals = [
        line
        for line in lines
        if line.get("phase") == "eval" and ("reward" in line or "first_call" in line)
    ]
    stages = list(dict.fromkeys(line["stage"] for line in evals))
    held_out: Series = {}
    for lam in sorted({float(line["lambda"]) for line in evals}):
        at = [line for line in evals if float(line["lambda"]) == lam]
        played = [line for line in at if "reward" in line]
        steps = [float(stages.index(line["stage"])) for line in played]
        if played:
            held_out[f"router @ lambda {lam:g}"] = (
                steps,
                [float(line["reward"]) for line in played],
            )
        for rival in ("knn", "policy"):
            if played and all(rival in line for line in played):
                held_out[f"{rival} @ lambda {lam:g}"] = (
                    steps,
                    [float(line[rival]["reward"]) for line in played],
                )
        read = [line for line in at if "first_call" in line]
        if read:
            held_out[f"first call, expected @ lambda {lam:g}"] = (
                [float(stages.index(line["stage"])) for line in read],
                [float(line["first_call"]["expected_reward"]) for line in read],
            )
    return {
        "warm start (SFT) loss": {"loss": _series(sft, "loss")},
        "GRPO episodes": {
            "reward": _series(rl, "reward"),
            "accuracy": _series(rl, "accuracy"),
        },
        "GRPO: first-turn parse failures; calls per episode": {
            "parse failures": _series(rl, "parse_failures"),
            "calls": _series(rl, "calls_per_episode"),
        },
        "held-out reward by stage: "
        + ", ".join(f"{k} {stage}" for k, stage in enumerate(stages)): held_out,
    }


def _draw(panels: dict[str, Series], out: Path, *, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8), dpi=100)
    FigureCanvasAgg(fig)
    for k, (name, series) in enumerate(panels.items()):
        ax = fig.add_subplot(2, 2, k + 1)
        _panel(ax, name, series)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")


def _panel(ax: Axes, name: str, series: Series) -> None:
    """One panel; a long series of noisy steps is drawn faintly, with its moving
    average over a fortieth of the run on top."""
    from matplotlib.ticker import MaxNLocator

    colours: dict[str, Any] = {}
    for label, (xs, ys) in series.items():
        if not xs:
            continue
        if label.startswith(_BASELINE):
            twin = colours.get(label.removeprefix(_BASELINE))
            ax.plot(xs, ys, linestyle="--", linewidth=1, color=twin)
        elif len(xs) > _SMOOTH_FROM:
            window = max(5, len(xs) // 40)
            (line,) = ax.plot(xs, ys, alpha=0.25, linewidth=0.8)
            mean = np.convolve(ys, np.ones(window) / window, mode="valid")
            ax.plot(xs[window - 1 :], mean, color=line.get_color(), label=label)
            colours[label] = line.get_color()
        else:
            (line,) = ax.plot(xs, ys, marker="o", label=label)
            colours[label] = line.get_color()
    drawn = bool(colours)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and stages
    ax.set_title(name, fontsize=9)
    ax.grid(True, linewidth=0.4, alpha=0.5)
    if drawn:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "nothing logged", ha="center", va="center")
