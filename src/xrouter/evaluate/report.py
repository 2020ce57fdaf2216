"""Writes the evaluation report: ``report.json``, ``report.md`` and a plot per suite."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xrouter.evaluate.plots import plot_suite
from xrouter.evaluate.runner import SuiteReport

__all__ = ["COLUMNS", "format_row", "ordered", "write_report"]

COLUMNS = (
    ("policy", "name"),
    ("accuracy %", "accuracy"),
    ("$ / 1k queries", "cost_per_1k"),
    ("$ / correct", "cost_per_correct"),
    ("calls / query", "calls_per_query"),
    ("AIQ", "aiq"),
    ("APGR", "apgr"),
    ("match-best cost %", "match_best_single_cost_fraction"),
    ("gap to oracle (pts)", "oracle_gap"),
)


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if key == "accuracy":
        return f"{100 * value:.1f}"
    if key == "match_best_single_cost_fraction":
        return f"{100 * value:.1f}"
    if key in ("cost_per_1k", "cost_per_correct"):
        if value >= 10:
            return f"{value:.2f}"
        return f"{value:.4f}" if value >= 0.01 else f"{value:.6f}"
    if key in ("aiq", "apgr"):
        return f"{value:.4f}"
    return f"{value:.2f}"


def ordered(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Routers first, then the oracle, then single models; each group by AIQ (by
    accuracy where AIQ is not reported)."""
    group = {"router": 0, "oracle": 1, "single": 2}

    def key(row: dict[str, Any]) -> tuple[int, float]:
        score = row["aiq"] if row["aiq"] is not None else row["accuracy"]
        return group.get(str(row["kind"]), 3), -float(score)

    return sorted(rows, key=key)


def format_row(row: dict[str, Any]) -> list[str]:
    """A report row as the strings shown in tables (CLI and markdown alike)."""
    return [_fmt(key, row.get(key)) for _, key in COLUMNS]


def _markdown(reports: Sequence[SuiteReport], meta: dict[str, Any]) -> str:
    lines = ["# xrouter evaluation report", ""]
    lines.append(
        f"Test split of each suite, replayed from recorded outputs (from "
        f"`{meta['data_dir']}`, or collected into the store `{meta['store']}`). "
        "Costs in USD; AIQ over the range of the single "
        "models' costs (RouterBench); APGR against the suite's weak/strong pair "
        "(RouteLLM); match-best cost: the cost at which a policy first reaches the "
        "best single model's accuracy, as a share of that model's cost."
    )
    for report in reports:
        suite = report.suite
        lines += ["", f"## {suite.name}", ""]
        lines.append(
            f"Source `{suite.source}`, {report.items['test']} test items "
            f"({report.items['train']} train), pool of {len(report.pool)} models; "
            f"APGR pair: strong {suite.strong}, weak {suite.weak}."
            + (
                f" `{suite.self_model}` stands for the router answering itself."
                if suite.self_model
                else ""
            )
        )
        lines += ["", "| " + " | ".join(h for h, _ in COLUMNS) + " |"]
        lines.append("|" + "---|" * len(COLUMNS))
        for row in sorted(
            report.rows, key=lambda r: (r["kind"] != "router", r["name"])
        ):
            lines.append("| " + " | ".join(format_row(row)) + " |")
        lines += ["", f"![{suite.name}]({suite.name}.png)"]
        for note in report.notes:
            lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(
    reports: Sequence[SuiteReport], out: Path, meta: dict[str, Any]
) -> list[Path]:
    """Write the JSON and markdown reports and one PNG per suite into ``out``.

    The plots of suites that an earlier report in ``out`` had and this one has
    not are removed, so that every plot beside the report is the report's.
    """
    out.mkdir(parents=True, exist_ok=True)
    now = {r.suite.name for r in reports}
    for name in sorted(_reported_suites(out / "report.json") - now):
        (out / f"{name}.png").unlink(missing_ok=True)
    body = {**meta, "suites": {r.suite.name: r.as_json() for r in reports}}
    written = [out / "report.json", out / "report.md"]
    _atomic_write(written[0], json.dumps(body, indent=2))
    _atomic_write(written[1], _markdown(reports, meta))
    for report in reports:
        written.append(
            plot_suite(
                report.suite.name, report.results, out / f"{report.suite.name}.png"
            )
        )
    return written


def _reported_suites(path: Path) -> set[str]:
    """The suite names of the report at ``path`` (none when there is none, or
    when it cannot be read as one)."""
    try:
        suites = json.loads(path.read_text(encoding="utf-8")).get("suites", {})
    except (OSError, ValueError, AttributeError):
        return set()
    return {name for name in suites if isinstance(name, str) and "/" not in name}
