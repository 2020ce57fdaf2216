"""Accuracy-vs-cost plot of one suite: single models, router sweeps, the oracle.

matplotlib is imported inside :func:`plot_suite` so that importing xrouter never
loads it or touches the process-wide backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xrouter.evaluate.results import CurvePoint, PolicyResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["MAX_SINGLE_LABELS", "plot_suite"]

MAX_SINGLE_LABELS = 12
"""Single models beyond this many are drawn unlabeled to keep the plot readable."""

_ROUTER_COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
)


def _cost_floor(results: Sequence[PolicyResult]) -> float:
    """Smallest x drawn on the log axis: a decade below the cheapest positive cost."""
    positive = [p.cost_per_1k for r in results for p in r.points if p.cost_per_1k > 0]
    return min(positive) / 10.0 if positive else 1e-6


def _xy(point: CurvePoint, floor: float) -> tuple[float, float]:
    """Plot coordinates: cost clipped to the log-axis floor, accuracy in percent."""
    return max(point.cost_per_1k, floor), point.accuracy * 100.0


def _label_order(singles: Sequence[PolicyResult]) -> list[PolicyResult]:
    """Singles ordered for labelling: Pareto-optimal ones first, then by accuracy."""

    def key(r: PolicyResult) -> tuple[bool, float]:
        p = r.at_default
        dominated = any(
            o.at_default.cost_per_1k <= p.cost_per_1k
            and o.at_default.accuracy >= p.accuracy
            and (o.at_default.cost_per_1k, o.at_default.accuracy)
            != (p.cost_per_1k, p.accuracy)
            for o in singles
        )
        return dominated, -p.accuracy

    return sorted(singles, key=key)


def _plot_singles(ax: Axes, singles: Sequence[PolicyResult], floor: float) -> None:
    """Single models as grey points; the most useful ones get small text labels."""
    ordered = _label_order(singles)
    for rank, result in enumerate(ordered):
        x, y = _xy(result.at_default, floor)
        ax.scatter([x], [y], s=28, color="dimgray", zorder=3)
        if rank < MAX_SINGLE_LABELS:
            ax.annotate(
                result.name,
                (x, y),
                xytext=(4, 3),
                textcoords="offset points",
                fontsize=7,
                color="dimgray",
            )
    unlabeled = max(0, len(ordered) - MAX_SINGLE_LABELS)
    legend = "single models"
    if unlabeled:
        legend += f" ({unlabeled} unlabeled)"
    if ordered:
        ax.scatter([], [], s=28, color="dimgray", label=legend)


# The same policy keeps its colour in every plot: baselines have fixed places,
# other routers take the remaining colours by a stable hash of their name.
_FIXED = {"random-mix": 0, "cascade": 1, "knn": 2}


def _colour(name: str) -> str:
    if name in _FIXED:
        return _ROUTER_COLOURS[_FIXED[name]]
    free = len(_ROUTER_COLOURS) - len(_FIXED)
    digest = sum(name.encode()) % free
    return _ROUTER_COLOURS[len(_FIXED) + digest]


def _plot_routers(ax: Axes, routers: Sequence[PolicyResult], floor: float) -> None:
    """Each router as its knob sweep sorted by cost; the default point enlarged."""
    for result in routers:
        colour = _colour(result.name)
        points = sorted(result.points, key=lambda p: (p.cost_per_1k, p.accuracy))
        xs, ys = zip(*(_xy(p, floor) for p in points), strict=True)
        ax.plot(
            xs,
            ys,
            marker="o",
            markersize=4,
            linewidth=1.5,
            color=colour,
            label=result.name,
            zorder=4,
        )
        dx, dy = _xy(result.at_default, floor)
        ax.scatter(
            [dx],
            [dy],
            s=110,
            color=colour,
            edgecolors="black",
            linewidths=1.2,
            zorder=5,
        )
    if routers:
        ax.scatter(
            [],
            [],
            s=110,
            facecolors="none",
            edgecolors="black",
            linewidths=1.2,
            label="router default point",
        )


def _plot_oracles(ax: Axes, oracles: Sequence[PolicyResult], floor: float) -> None:
    """Oracle points as large gold stars."""
    for result in oracles:
        for point in result.points:
            x, y = _xy(point, floor)
            ax.scatter(
                [x],
                [y],
                marker="*",
                s=260,
                color="gold",
                edgecolors="black",
                linewidths=0.8,
                zorder=6,
            )
        ax.scatter(
            [],
            [],
            marker="*",
            s=260,
            color="gold",
            edgecolors="black",
            label=result.name,
        )


def _validate(results: Sequence[PolicyResult]) -> None:
    """Raise ValueError for input that cannot be drawn."""
    if not results:
        raise ValueError("plot_suite needs at least one PolicyResult; got none")
    for r in results:
        if not r.points:
            raise ValueError(f"policy {r.name!r} has no points; expected at least 1")
        if not 0 <= r.default < len(r.points):
            raise ValueError(
                f"policy {r.name!r} has default={r.default} but {len(r.points)} "
                "points; expected 0 <= default < number of points"
            )


def plot_suite(
    suite: str,
    results: Sequence[PolicyResult],
    path: Path,
    *,
    title: str | None = None,
) -> Path:
    """Write one PNG: accuracy (%) against USD per 1,000 queries on a log axis.

    Single models are labelled points (at most ``MAX_SINGLE_LABELS`` labels,
    Pareto-optimal ones first), routers are cost-sorted knob sweeps with the
    default point enlarged, oracles are gold stars. Costs of 0 cannot sit on a
    log axis, so they are drawn at a floor a decade below the cheapest positive
    cost and a note on the figure says so. Returns ``path``.
    """
    _validate(results)
    # Drawing on an Agg canvas directly (no pyplot) keeps the process-wide
    # backend and pyplot's figure registry untouched: safe in notebooks/threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    floor = _cost_floor(results)
    fig = Figure(figsize=(10, 6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    _plot_singles(ax, [r for r in results if r.kind == "single"], floor)
    _plot_routers(ax, [r for r in results if r.kind == "router"], floor)
    _plot_oracles(ax, [r for r in results if r.kind == "oracle"], floor)
    ax.set_xscale("log")
    ax.set_xlabel("USD per 1,000 queries (log scale)")
    ax.set_ylabel("Accuracy (%)")
    ax.set_title(title if title is not None else f"{suite}: accuracy vs cost")
    ax.grid(True, which="both", linewidth=0.4, alpha=0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    zero = sum(1 for r in results for p in r.points if p.cost_per_1k <= 0)
    if zero:
        fig.text(
            0.01,
            0.01,
            f"Note: {zero} point(s) with zero cost drawn at ${floor:.3g} per 1k "
            "(log-axis floor).",
            fontsize=7,
            color="dimgray",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path
