"""Hand-computed cases for xrouter.evaluate.metrics."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from xrouter.evaluate.metrics import (
    aiq,
    aiq_of,
    apgr,
    cost_per_correct,
    match_cost_fraction,
    nondecreasing_convex_hull,
    oracle_gap,
    summarise,
)
from xrouter.evaluate.results import CurvePoint, PolicyResult

# --- nondecreasing_convex_hull ---------------------------------------------------


def test_hull_removes_dominated_and_below_chord_points() -> None:
    # (4, .65) is beaten by the cheaper (3, .7); (5, .7) is no better than (3, .7);
    # (2.5, .4) is beaten by (1, .5); (2, .55) lies under the chord (1,.5)-(3,.7),
    # which gives .6 at cost 2.
    costs = [1.0, 2.0, 3.0, 4.0, 2.5, 5.0]
    accs = [0.5, 0.55, 0.7, 0.65, 0.4, 0.7]
    hull_c, hull_a = nondecreasing_convex_hull(costs, accs)
    assert hull_c.tolist() == [1.0, 3.0]
    assert hull_a.tolist() == [0.5, 0.7]


def test_hull_keeps_point_above_chord_and_sorts() -> None:
    hull_c, hull_a = nondecreasing_convex_hull([3.0, 1.0, 2.0], [0.7, 0.5, 0.65])
    assert hull_c.tolist() == [1.0, 2.0, 3.0]
    assert hull_a.tolist() == [0.5, 0.65, 0.7]


def test_hull_same_cost_keeps_best_and_drops_collinear() -> None:
    # Two points at cost 1: keep .6. (2, .7) is on the line (1,.6)-(3,.8).
    hull_c, hull_a = nondecreasing_convex_hull(
        np.array([1.0, 1.0, 2.0, 3.0]), np.array([0.4, 0.6, 0.7, 0.8])
    )
    assert hull_c.tolist() == [1.0, 3.0]
    assert hull_a.tolist() == pytest.approx([0.6, 0.8])


def test_hull_single_point() -> None:
    hull_c, hull_a = nondecreasing_convex_hull([2.0], [0.3])
    assert hull_c.tolist() == [2.0]
    assert hull_a.tolist() == [0.3]


def test_hull_cheapest_point_is_most_accurate() -> None:
    hull_c, hull_a = nondecreasing_convex_hull([1.0, 2.0, 3.0], [0.9, 0.8, 0.5])
    assert hull_c.tolist() == [1.0]
    assert hull_a.tolist() == [0.9]


# --- aiq ----------------------------------------------------------------------------


def test_aiq_single_point_at_range_start_is_its_accuracy() -> None:
    assert aiq([1.0], [0.6], (1.0, 5.0)) == pytest.approx(0.6)


def test_aiq_single_point_is_a_step_from_zero() -> None:
    # 0 on [1, 2), 0.6 on [2, 5]: 0.6 * 3 / 4.
    assert aiq([2.0], [0.6], (1.0, 5.0)) == pytest.approx(0.45)


def test_aiq_point_above_range_scores_zero() -> None:
    assert aiq([6.0], [0.9], (1.0, 5.0)) == 0.0


def test_aiq_two_points() -> None:
    # 0 on [0, 1), trapezoid (0.5 + 0.7) / 2 * 2 = 1.2 on [1, 3], flat 0.7 on [3, 4].
    assert aiq([1.0, 3.0], [0.5, 0.7], (0.0, 4.0)) == pytest.approx(1.9 / 4.0)


def test_aiq_range_inside_hull_segment() -> None:
    # Hull is 0.5 + 0.1 * (c - 1) on [1, 3]; mean over [1.5, 2.5] is its value at 2.
    assert aiq([1.0, 3.0], [0.5, 0.7], (1.5, 2.5)) == pytest.approx(0.6)


def test_aiq_ignores_dominated_points() -> None:
    with_dominated = aiq([1.0, 2.0, 3.0], [0.5, 0.45, 0.7], (0.0, 4.0))
    assert with_dominated == pytest.approx(aiq([1.0, 3.0], [0.5, 0.7], (0.0, 4.0)))


def test_aiq_log_cost_step() -> None:
    # 0.6 over log10 cost from 2 to 5, averaged over log10 from 1 to 5.
    expected = 0.6 * math.log10(2.5) / math.log10(5.0)
    assert aiq([2.0], [0.6], (1.0, 5.0), log_cost=True) == pytest.approx(expected)


def test_aiq_log_cost_linear_segment() -> None:
    # H(c) = c / 10 on [1, 10]: integral of (c / 10) d(log10 c) = 0.9 / ln 10.
    expected = 0.9 / math.log(10.0)
    assert aiq([1.0, 10.0], [0.1, 1.0], (1.0, 10.0), log_cost=True) == pytest.approx(
        expected
    )


def test_aiq_of_policy_result() -> None:
    result = PolicyResult(
        name="r",
        kind="router",
        points=[CurvePoint(0.0, 0.5, 1.0, 1.0), CurvePoint(1.0, 0.7, 3.0, 1.2)],
    )
    assert aiq_of(result, (0.0, 4.0)) == pytest.approx(0.475)


# --- apgr ---------------------------------------------------------------------------


def test_apgr_straight_line_between_weak_and_strong_is_half() -> None:
    value = apgr([1.0, 1.5, 2.0], [0.5, 0.65, 0.8], 0.5, 0.8, 2.0, 1.0)
    assert value == pytest.approx(0.5)


def test_apgr_strong_accuracy_at_weak_cost_is_one() -> None:
    assert apgr([1.0], [0.8], 0.5, 0.8, 2.0, 1.0) == pytest.approx(1.0)


def test_apgr_mixes_with_weak_below_cheapest_point() -> None:
    # Strong accuracy at half the extra cost: PGR rises 0 -> 1 on [0, .5], then 1.
    assert apgr([1.5], [0.8], 0.5, 0.8, 2.0, 1.0) == pytest.approx(0.75)


def test_apgr_clips_costs_outside_weak_strong_interval() -> None:
    # Cheaper than weak counts as x = 0, dearer than strong as x = 1.
    assert apgr([0.2, 9.0], [0.5, 0.8], 0.5, 0.8, 2.0, 1.0) == pytest.approx(0.5)


def test_apgr_coarse_grid_like_routellm() -> None:
    assert apgr([1.0, 2.0], [0.5, 0.8], 0.5, 0.8, 2.0, 1.0, grid_points=11) == (
        pytest.approx(0.5)
    )


# --- match_cost_fraction ------------------------------------------------------------


def test_match_cost_fraction_interpolates_along_hull() -> None:
    # Hull (1, .5)-(3, .7) reaches .6 at cost 2; 2 / 4 = 0.5.
    assert match_cost_fraction([1.0, 3.0], [0.5, 0.7], 0.6, 4.0) == pytest.approx(0.5)


def test_match_cost_fraction_target_below_cheapest_point() -> None:
    assert match_cost_fraction([1.0, 3.0], [0.5, 0.7], 0.4, 4.0) == pytest.approx(0.25)


def test_match_cost_fraction_exact_vertex() -> None:
    assert match_cost_fraction([1.0, 3.0], [0.5, 0.7], 0.7, 3.0) == pytest.approx(1.0)


def test_match_cost_fraction_never_reached() -> None:
    assert match_cost_fraction([1.0, 3.0], [0.5, 0.7], 0.8, 4.0) is None


# --- oracle_gap, cost_per_correct ---------------------------------------------------


def test_oracle_gap_in_percentage_points() -> None:
    assert oracle_gap(0.72, 0.85) == pytest.approx(13.0)


def test_cost_per_correct() -> None:
    # $2 per 1,000 queries at 80% accuracy: 2 / 800 USD per correct answer.
    assert cost_per_correct(0.8, 2.0) == pytest.approx(0.0025)
    assert cost_per_correct(0.0, 2.0) is None


# --- summarise ----------------------------------------------------------------------


def test_summarise_router_row() -> None:
    router = PolicyResult(
        name="knn",
        kind="router",
        points=[
            CurvePoint(0.0, 0.5, 1.0, 1.0),
            CurvePoint(0.5, 0.7, 1.5, 1.1),
            CurvePoint(1.0, 0.8, 2.0, 1.5),
        ],
        default=1,
        knob_name="threshold",
    )
    weak = CurvePoint(0.0, 0.5, 1.0, 1.0)
    strong = CurvePoint(0.0, 0.8, 2.0, 1.0)
    oracle = CurvePoint(0.0, 0.9, 1.2, 1.0)
    row = summarise(
        router,
        cost_range=(1.0, 2.0),
        best_single=strong,
        oracle=oracle,
        weak=weak,
        strong=strong,
    )
    assert list(row) == [
        "name",
        "kind",
        "accuracy",
        "cost_per_1k",
        "cost_per_correct",
        "calls_per_query",
        "aiq",
        "apgr",
        "match_best_single_cost_fraction",
        "oracle_gap",
    ]
    assert row["name"] == "knn"
    assert row["kind"] == "router"
    assert row["accuracy"] == 0.7
    assert row["cost_per_1k"] == 1.5
    assert row["cost_per_correct"] == pytest.approx(1.5 / 700.0)
    assert row["calls_per_query"] == 1.1
    # Hull (1,.5)-(1.5,.7)-(2,.8): trapezoids 0.3 + 0.375 over a width of 1.
    assert row["aiq"] == pytest.approx(0.675)
    # PGR is 0 -> 2/3 on [0, .5] and 2/3 -> 1 on [.5, 1]: (1/3 + 5/6) / 2.
    assert row["apgr"] == pytest.approx(7.0 / 12.0)
    assert row["match_best_single_cost_fraction"] == pytest.approx(1.0)
    assert row["oracle_gap"] == pytest.approx(20.0)


def test_summarise_without_weak_strong_has_no_apgr() -> None:
    single = PolicyResult(
        name="m", kind="single", points=[CurvePoint(0.0, 0.0, 3.0, 1.0)]
    )
    best = CurvePoint(0.0, 0.6, 2.0, 1.0)
    row = summarise(
        single,
        cost_range=(1.0, 3.0),
        best_single=best,
        oracle=best,
        weak=None,
        strong=None,
    )
    assert row["apgr"] is None
    assert row["cost_per_correct"] is None
    assert row["match_best_single_cost_fraction"] is None
    assert row["aiq"] == 0.0
    assert row["oracle_gap"] == pytest.approx(60.0)


def test_summarise_equal_weak_and_strong_has_no_apgr() -> None:
    point = CurvePoint(0.0, 0.6, 2.0, 1.0)
    single = PolicyResult(name="m", kind="single", points=[point])
    row = summarise(
        single,
        cost_range=(1.0, 3.0),
        best_single=point,
        oracle=point,
        weak=point,
        strong=point,
    )
    assert row["apgr"] is None
    assert row["match_best_single_cost_fraction"] == pytest.approx(1.0)


# --- input validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("costs", "accs", "message"),
    [
        ([], [], "costs and accuracies must not be empty; got 0 points"),
        (
            [1.0, 2.0],
            [0.5],
            "costs and accuracies must have the same length; "
            "got 2 costs and 1 accuracies",
        ),
        (
            [1.0, float("nan")],
            [0.5, 0.6],
            "costs must be finite numbers; got nan at index 1",
        ),
        (
            [1.0],
            [float("inf")],
            "accuracies must be finite numbers; got inf at index 0",
        ),
        ([1.0, -2.0], [0.5, 0.6], "costs must be >= 0 USD; got -2.0 at index 1"),
        ([[1.0]], [0.5], "costs must be a 1-D sequence; got shape (1, 1)"),
    ],
)
def test_hull_rejects_bad_points(
    costs: list[float], accs: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        nondecreasing_convex_hull(costs, accs)


@pytest.mark.parametrize(
    ("cost_range", "log_cost", "message"),
    [
        (
            (2.0, 2.0),
            False,
            "cost_range must be finite (c_min, c_max) with c_max > c_min; "
            "got (2.0, 2.0)",
        ),
        (
            (3.0, 1.0),
            False,
            "cost_range must be finite (c_min, c_max) with c_max > c_min; "
            "got (3.0, 1.0)",
        ),
        (
            (0.0, float("nan")),
            False,
            "cost_range must be finite (c_min, c_max) with c_max > c_min; "
            "got (0.0, nan)",
        ),
        (
            (0.0, 1.0),
            True,
            "cost_range must have c_min > 0 when log_cost=True; got (0.0, 1.0)",
        ),
    ],
)
def test_aiq_rejects_bad_cost_range(
    cost_range: tuple[float, float], log_cost: bool, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        aiq([1.0], [0.5], cost_range, log_cost=log_cost)


def test_apgr_rejects_bad_weak_strong() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "strong_cost must be greater than weak_cost; "
            "got strong_cost=1.0, weak_cost=1.0"
        ),
    ):
        apgr([1.0], [0.5], 0.5, 0.8, 1.0, 1.0)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "strong_acc must be greater than weak_acc; got strong_acc=0.5, weak_acc=0.5"
        ),
    ):
        apgr([1.0], [0.5], 0.5, 0.5, 2.0, 1.0)
    with pytest.raises(
        ValueError, match=re.escape("weak_acc must be a finite number; got nan")
    ):
        apgr([1.0], [0.5], float("nan"), 0.8, 2.0, 1.0)


def test_match_cost_fraction_rejects_non_positive_reference() -> None:
    with pytest.raises(
        ValueError, match=re.escape("reference_cost must be > 0; got 0.0")
    ):
        match_cost_fraction([1.0], [0.5], 0.5, 0.0)


def test_cost_per_correct_rejects_out_of_range_accuracy() -> None:
    with pytest.raises(
        ValueError, match=re.escape("accuracy must be a fraction in [0, 1]; got 1.5")
    ):
        cost_per_correct(1.5, 2.0)
