"""Cost-quality metrics for routers: hull, AIQ, APGR, cost to match, cost per correct.

All functions are pure (no I/O, no plotting). Costs are USD per 1,000 queries and
must be >= 0; accuracies are any finite numbers (fractions in [0, 1] in xrouter).

References:
- RouterBench (Hu et al. 2024, "RouterBench: A Benchmark for Multi-LLM Routing
  System"): non-decreasing convex hull and AIQ; reference code
  ``withmartian/routerbench`` ``evaluation/AIQ.py``
  (``get_non_descreasing_convex_hull_of``, ``calc_AIQ``).
- RouteLLM (Ong et al. 2024, "RouteLLM: Learning to Route LLMs with Preference
  Data"): PGR and APGR; reference code ``lm-sys/RouteLLM``
  ``routellm/evals/evaluate.py`` (``apgr_metric``) and
  ``routellm/evals/benchmarks.py`` (threshold sweep).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from xrouter.evaluate.results import CurvePoint, PolicyResult

__all__ = [
    "FloatArray",
    "aiq",
    "aiq_of",
    "apgr",
    "cost_per_correct",
    "match_cost_fraction",
    "nondecreasing_convex_hull",
    "oracle_gap",
    "summarise",
]

FloatArray = npt.NDArray[np.float64]
ArrayLike = FloatArray | Sequence[float]


def _as_vector(values: ArrayLike, name: str) -> FloatArray:
    """Convert to a finite 1-D float64 array or raise a ValueError naming ``name``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence; got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} must be finite numbers; got {arr[i]} at index {i}")
    return arr


def _as_points(
    costs: ArrayLike, accuracies: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Validate a policy's (cost, accuracy) points and return them as arrays."""
    c = _as_vector(costs, "costs")
    a = _as_vector(accuracies, "accuracies")
    if c.size != a.size:
        raise ValueError(
            "costs and accuracies must have the same length; "
            f"got {c.size} costs and {a.size} accuracies"
        )
    if c.size == 0:
        raise ValueError("costs and accuracies must not be empty; got 0 points")
    negative = np.flatnonzero(c < 0)
    if negative.size:
        i = int(negative[0])
        raise ValueError(f"costs must be >= 0 USD; got {c[i]} at index {i}")
    return c, a


def _check_number(value: float, name: str) -> float:
    """Return ``value`` as a float, raising if it is NaN or infinite."""
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number; got {v}")
    return v


def _check_cost_range(cost_range: tuple[float, float], log_cost: bool) -> None:
    """Raise unless ``cost_range`` is a finite (c_min, c_max) with c_max > c_min."""
    lo, hi = (float(x) for x in cost_range)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise ValueError(
            f"cost_range must be finite (c_min, c_max) with c_max > c_min; "
            f"got ({lo}, {hi})"
        )
    if log_cost and lo <= 0:
        raise ValueError(
            f"cost_range must have c_min > 0 when log_cost=True; got ({lo}, {hi})"
        )


def nondecreasing_convex_hull(
    costs: ArrayLike, accuracies: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Vertices of the non-decreasing (upper) convex hull of (cost, accuracy) points.

    Follows RouterBench (Hu et al. 2024): a router can reach any point on the segment
    between two operating points by randomly mixing them, and a point is dominated
    when another is no more expensive and at least as accurate. The hull starts at
    the cheapest point (the most accurate one at that cost), keeps only points that
    raise accuracy, and takes the upper concave envelope of those. Returns the hull
    vertices sorted by strictly increasing cost and strictly increasing accuracy;
    collinear points are dropped (they lie on the same curve).
    """
    c, a = _as_points(costs, accuracies)
    # Cost ascending, accuracy descending on ties, so the first point seen at each
    # cost is the best one there.
    order = np.lexsort((-a, c))
    frontier: list[tuple[float, float]] = []
    for i in order:
        x, y = float(c[i]), float(a[i])
        if frontier and y <= frontier[-1][1]:
            continue  # dominated: something no more expensive is at least as good
        frontier.append((x, y))

    hull: list[tuple[float, float]] = []
    for x2, y2 in frontier:
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = hull[-2], hull[-1]
            # hull[-1] stays only if it lies strictly above the chord to (x2, y2).
            if (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0) >= 0:
                hull.pop()
            else:
                break
        hull.append((x2, y2))
    xs = np.array([p[0] for p in hull], dtype=np.float64)
    ys = np.array([p[1] for p in hull], dtype=np.float64)
    return xs, ys


def _segment_area(x0: float, x1: float, y0: float, y1: float, log_cost: bool) -> float:
    """Exact integral of the line through (x0, y0), (x1, y1) over [x0, x1].

    With ``log_cost`` the measure is d(log10 c): the hull stays linear in cost
    (mixing is linear in cost) and only the averaging weight changes.
    """
    if x1 <= x0:
        return 0.0
    if not log_cost:
        return 0.5 * (y0 + y1) * (x1 - x0)
    slope = (y1 - y0) / (x1 - x0)
    intercept = y0 - slope * x0
    return (intercept * math.log(x1 / x0) + slope * (x1 - x0)) / math.log(10.0)


def aiq(
    costs: ArrayLike,
    accuracies: ArrayLike,
    cost_range: tuple[float, float],
    *,
    log_cost: bool = False,
) -> float:
    """Average Improvement in Quality (RouterBench, Hu et al. 2024).

    AIQ = (1 / (c_max - c_min)) * integral over [c_min, c_max] of H(c) dc, where H
    is the non-decreasing convex hull of the policy's points, linear between
    vertices. Conventions, as in RouterBench's ``calc_AIQ``:
    - below the policy's cheapest point H = 0 (the policy cannot operate there);
    - above its most expensive point H stays flat at the hull's last accuracy.
    (``calc_AIQ`` itself integrates over [0, largest cost of the compared
    routers]; here the caller picks the range, e.g. the single models' costs.)
    With ``log_cost=True`` the average is over log10 cost instead:
    integral of H(c) d(log10 c) / (log10 c_max - log10 c_min), with H unchanged.
    """
    _check_cost_range(cost_range, log_cost)
    lo, hi = float(cost_range[0]), float(cost_range[1])
    hull_c, hull_a = nondecreasing_convex_hull(costs, accuracies)
    start = max(lo, float(hull_c[0]))
    if start >= hi:
        return 0.0
    inner = hull_c[(hull_c > start) & (hull_c < hi)]
    xs = np.concatenate(([start], inner, [hi]))
    # np.interp clamps beyond the last vertex, which is the flat extension.
    ys = np.interp(xs, hull_c, hull_a)
    area = sum(
        _segment_area(
            float(xs[k]), float(xs[k + 1]), float(ys[k]), float(ys[k + 1]), log_cost
        )
        for k in range(xs.size - 1)
    )
    width = math.log10(hi / lo) if log_cost else hi - lo
    return float(area / width)


def aiq_of(
    result: PolicyResult, cost_range: tuple[float, float], *, log_cost: bool = False
) -> float:
    """AIQ of all of a policy's operating points (see :func:`aiq`)."""
    return aiq(
        [p.cost_per_1k for p in result.points],
        [p.accuracy for p in result.points],
        cost_range,
        log_cost=log_cost,
    )


def _trapezoid(ys: FloatArray, xs: FloatArray) -> float:
    """Trapezoidal rule (numpy renamed ``trapz``; this avoids version differences)."""
    return float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))


def apgr(
    policy_costs: ArrayLike,
    policy_accs: ArrayLike,
    weak_acc: float,
    strong_acc: float,
    strong_cost: float,
    weak_cost: float,
    *,
    grid_points: int = 101,
) -> float:
    """Average Performance Gap Recovered (RouteLLM, Ong et al. 2024), on a cost axis.

    PGR(x) = (acc(x) - weak_acc) / (strong_acc - weak_acc); APGR is the area under
    PGR for x in [0, 1]. RouteLLM's x is the fraction of calls sent to the strong
    model; xrouter policies are swept by a knob instead, so x here is the cost
    fraction (cost - weak_cost) / (strong_cost - weak_cost), clipped to [0, 1].
    acc(x) is the non-decreasing convex hull of the policy's points on that axis,
    with the weak model's point (0, weak_acc) added: at x = 0 RouteLLM's curve is
    the weak model by definition, and mixing it with the policy is what the hull
    allows. Above the policy's most expensive point acc stays flat. The area uses
    the trapezoidal rule on ``grid_points`` evenly spaced x values (101: 1% steps),
    like RouteLLM's ``np.trapz`` over its threshold sweep. Under this convention
    APGR >= 0; 0.5 is a straight line from weak to strong.
    """
    c, a = _as_points(policy_costs, policy_accs)
    w_acc = _check_number(weak_acc, "weak_acc")
    s_acc = _check_number(strong_acc, "strong_acc")
    w_cost = _check_number(weak_cost, "weak_cost")
    s_cost = _check_number(strong_cost, "strong_cost")
    if s_cost <= w_cost:
        raise ValueError(
            f"strong_cost must be greater than weak_cost; got strong_cost={s_cost}, "
            f"weak_cost={w_cost}"
        )
    if s_acc <= w_acc:
        raise ValueError(
            f"strong_acc must be greater than weak_acc; got strong_acc={s_acc}, "
            f"weak_acc={w_acc}"
        )
    if grid_points < 2:
        raise ValueError(f"grid_points must be >= 2; got {grid_points}")
    frac = np.clip((c - w_cost) / (s_cost - w_cost), 0.0, 1.0)
    hull_x, hull_y = nondecreasing_convex_hull(
        np.append(frac, 0.0), np.append(a, w_acc)
    )
    grid = np.linspace(0.0, 1.0, grid_points)
    pgr = (np.interp(grid, hull_x, hull_y) - w_acc) / (s_acc - w_acc)
    return _trapezoid(pgr, grid)


def match_cost_fraction(
    costs: ArrayLike,
    accuracies: ArrayLike,
    target_acc: float,
    reference_cost: float,
    *,
    tol: float = 1e-9,
) -> float | None:
    """Cheapest cost at which the policy's hull reaches ``target_acc``, / reference.

    Walks the non-decreasing convex hull (see :func:`nondecreasing_convex_hull`),
    interpolating linearly between vertices; the hull is not extended below the
    policy's cheapest point. ``tol`` absorbs float noise when the target equals a
    vertex's accuracy. Returns None if the hull never reaches ``target_acc``.
    """
    target = _check_number(target_acc, "target_acc")
    ref = _check_number(reference_cost, "reference_cost")
    if ref <= 0:
        raise ValueError(f"reference_cost must be > 0; got {ref}")
    hull_c, hull_a = nondecreasing_convex_hull(costs, accuracies)
    reached = np.flatnonzero(hull_a >= target - tol)
    if reached.size == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(hull_c[0]) / ref
    c0, c1 = float(hull_c[i - 1]), float(hull_c[i])
    a0, a1 = float(hull_a[i - 1]), float(hull_a[i])
    t = min(1.0, (target - a0) / (a1 - a0))
    return (c0 + t * (c1 - c0)) / ref


def oracle_gap(policy_acc: float, oracle_acc: float) -> float:
    """Accuracy points (percentage points) the policy is below the oracle.

    (oracle_acc - policy_acc) * 100, with both accuracies as fractions in [0, 1].
    """
    p = _check_number(policy_acc, "policy_acc")
    o = _check_number(oracle_acc, "oracle_acc")
    return (o - p) * 100.0


def cost_per_correct(accuracy: float, cost_per_1k: float) -> float | None:
    """USD per correct answer: cost_per_1k / (1000 * accuracy); None if accuracy 0."""
    acc = _check_number(accuracy, "accuracy")
    cost = _check_number(cost_per_1k, "cost_per_1k")
    if not 0.0 <= acc <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1]; got {acc}")
    if cost < 0:
        raise ValueError(f"cost_per_1k must be >= 0 USD; got {cost}")
    if acc == 0.0:
        return None
    return cost / (1000.0 * acc)


def _apgr_or_none(
    costs: FloatArray,
    accs: FloatArray,
    weak: CurvePoint | None,
    strong: CurvePoint | None,
) -> float | None:
    """APGR when weak/strong define a usable interval, else None."""
    if weak is None or strong is None:
        return None
    if strong.cost_per_1k <= weak.cost_per_1k or strong.accuracy <= weak.accuracy:
        return None
    return apgr(
        costs,
        accs,
        weak.accuracy,
        strong.accuracy,
        strong.cost_per_1k,
        weak.cost_per_1k,
    )


def summarise(
    result: PolicyResult,
    *,
    cost_range: tuple[float, float] | None,
    best_single: CurvePoint,
    oracle: CurvePoint,
    weak: CurvePoint | None,
    strong: CurvePoint | None,
) -> dict[str, float | str | None]:
    """One report row for a policy; point metrics are taken at its default point.

    Keys: name, kind, accuracy, cost_per_1k, cost_per_correct, calls_per_query,
    aiq (over ``cost_range``, linear cost; None without one, as when every single
    model costs the same), apgr (None unless strong is both costlier and more
    accurate than weak), match_best_single_cost_fraction (None if never reached or
    best_single costs 0) and oracle_gap (percentage points).
    """
    if not 0 <= result.default < len(result.points):
        raise ValueError(
            f"policy {result.name!r} has default={result.default} but "
            f"{len(result.points)} points; expected 0 <= default < number of points"
        )
    costs = np.array([p.cost_per_1k for p in result.points], dtype=np.float64)
    accs = np.array([p.accuracy for p in result.points], dtype=np.float64)
    point = result.at_default
    match = (
        match_cost_fraction(costs, accs, best_single.accuracy, best_single.cost_per_1k)
        if best_single.cost_per_1k > 0
        else None
    )
    return {
        "name": result.name,
        "kind": result.kind,
        "accuracy": point.accuracy,
        "cost_per_1k": point.cost_per_1k,
        "cost_per_correct": cost_per_correct(point.accuracy, point.cost_per_1k),
        "calls_per_query": point.calls_per_query,
        "aiq": aiq(costs, accs, cost_range) if cost_range is not None else None,
        "apgr": _apgr_or_none(costs, accs, weak, strong),
        "match_best_single_cost_fraction": match,
        "oracle_gap": oracle_gap(point.accuracy, oracle.accuracy),
    }
