"""Smoke tests for xrouter.evaluate.plots: a real PNG is written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xrouter.evaluate.plots import plot_suite
from xrouter.evaluate.results import CurvePoint, PolicyResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _single(name: str, acc: float, cost: float) -> PolicyResult:
    return PolicyResult(
        name=name, kind="single", points=[CurvePoint(0.0, acc, cost, 1.0)]
    )


def _suite(cheapest_cost: float) -> list[PolicyResult]:
    singles = [
        _single(f"model-{i}", 0.4 + 0.03 * i, cheapest_cost + 0.5 * i)
        for i in range(15)
    ]
    router = PolicyResult(
        name="knn-router",
        kind="router",
        points=[
            CurvePoint(0.9, 0.72, 4.0, 1.3),
            CurvePoint(0.1, 0.45, 0.3, 1.0),
            CurvePoint(0.5, 0.65, 1.2, 1.1),
        ],
        default=2,
        knob_name="threshold",
    )
    oracle = PolicyResult(
        name="oracle", kind="oracle", points=[CurvePoint(0, 0.9, 0.8, 1)]
    )
    return [*singles, router, oracle]


def _assert_png(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert len(data) > 0
    assert data[:8] == PNG_MAGIC


def test_plot_suite_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "plots" / "suite.png"
    returned = plot_suite("gsm8k", _suite(0.2), out, title="GSM8K test split")
    assert returned == out
    _assert_png(out)


def test_plot_suite_handles_zero_cost_points(tmp_path: Path) -> None:
    out = tmp_path / "zero.png"
    plot_suite("local", _suite(0.0), out)
    _assert_png(out)


def test_plot_suite_all_zero_costs(tmp_path: Path) -> None:
    out = tmp_path / "free.png"
    plot_suite("free", [_single("a", 0.5, 0.0), _single("b", 0.6, 0.0)], out)
    _assert_png(out)


def test_plot_suite_rejects_empty_results(tmp_path: Path) -> None:
    message = "plot_suite needs at least one PolicyResult; got none"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        plot_suite("s", [], tmp_path / "x.png")


def test_importing_plots_does_not_load_matplotlib() -> None:
    # A fresh interpreter, since this test process may already have matplotlib.
    code = "import sys, xrouter.evaluate.plots; sys.exit('matplotlib' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, check=False)
    assert done.returncode == 0
