# ruff: noqa: T201  (a developer script: its output is the point)
"""How often xrouter's verifiers agree with the verdicts the sources published.

Usage: python scripts/verifier_agreement.py /path/to/shared/data [--skip-mbpp]

Prints, per task and model: our accuracy, the official (ZeroEval) figure, the
difference, and what a re-implementation of ZeroEval's own rules gives (to show
the data and the accuracy convention reproduce the official figures, so that any
gap is a difference in verdicts). For RouterBench and RouteLLM, which record
per-response verdicts, it prints how often our verdict equals the recorded one.
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import json
import re
import sys
import time
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

from xrouter.records import verifiers
from xrouter.records.verifiers._expr import evaluate

KINDS = {"gsm": "gsm8k", "math-l5": "math", "crux": "cruxeval"}
# ZeroEval publishes some runs under another name than their file
RENAMED = {
    "gemma-2-27b-it@together": "gemma-2-27b-it",
    "deepseek-chat": "deepseek-v2-chat-0628",
    "deepseek-coder": "deepseek-v2-coder-0614",
    "DeepSeek-Coder-V2-0724": "deepseek-v2-coder-0724",
    "Llama-3.1-405B-Inst-fp8": "Llama-3.1-405B-Inst-fp8@together",
    "Llama-3.1-405B-Instruct-Turbo": "Llama-3.1-405B-Inst-fp8@together",
    "Meta-Llama-3.1-405B-Instruct@hyperbolic": "Llama-3.1-405B-Inst@hyperbolic",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the shared data folder")
    parser.add_argument("--skip-mbpp", action="store_true", help="no sandbox runs")
    parser.add_argument("--workers", type=int, default=4, help="parallel sandboxes")
    args = parser.parse_args()
    csv.field_size_limit(sys.maxsize)
    zeroeval(args.data / "zeroeval")
    routerbench_choice(args.data / "routerbench")
    if not args.skip_mbpp:
        routerbench_mbpp(args.data, args.workers)
    routellm_gsm8k(args.data / "routellm" / "evals" / "gsm8k")


# --- ZeroEval ---------------------------------------------------------------


def zeroeval(folder: Path) -> None:
    official = json.loads((folder / "official_accuracy.json").read_text())
    seconds = 0.0
    for task, kind in KINDS.items():
        print(f"\n== ZeroEval {task} (verifier {kind!r}) ==")
        print(
            f"{'model':44s} {'n':>5s} {'ours':>6s} {'official':>8s} {'diff':>6s} "
            f"{'ZE-rules':>8s}"
        )
        worst = 0.0
        for file in sorted((folder / "raw_gz").glob(f"{task}__*.json.gz")):
            model = file.name.removesuffix(".json.gz").split("__", 1)[1]
            with gzip.open(file, "rt", encoding="utf-8") as handle:
                rows = _unique(json.load(handle))
            start = time.perf_counter()
            ours = sum(
                verifiers.verify(kind, r["output"][0], str(r["answer"]))
                + 0 * bool(verifiers.extract_answer(kind, r["output"][0]))
                for r in rows
            )
            seconds += time.perf_counter() - start
            rules = sum(_zeroeval_rule(task, model, r) for r in rows)
            ref = official[task].get(RENAMED.get(model, model))
            ours_pct, rules_pct = 100 * ours / len(rows), 100 * rules / len(rows)
            diff = "" if ref is None else f"{ours_pct - ref:+6.2f}"
            if ref is not None:
                worst = max(worst, abs(ours_pct - ref))
            ref_text = "-" if ref is None else f"{ref:8.2f}"
            print(
                f"{model:44s} {len(rows):5d} {ours_pct:6.2f} {ref_text:>8s} {diff:>6s} "
                f"{rules_pct:8.2f}"
            )
        print(f"max |ours - official| for {task}: {worst:.2f} points")
    print(f"\nverify + extract_answer on every ZeroEval response: {seconds:.1f} s")


def _unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    kept = []
    for row in rows:
        if str(row["id"]) not in seen:
            seen.add(str(row["id"]))
            kept.append(row)
    return kept


def _zeroeval_rule(task: str, model: str, row: dict[str, Any]) -> bool:
    """ZeroEval's published rules, re-implemented: the first JSON object's answer
    (or a regex fallback), then the first number (gsm, math-l5) or the text with
    quotes stripped (crux)."""
    text = row["output"][0]
    answer = _ze_answer(model, text)
    if answer is None:
        return False
    gold = str(row["answer"])
    if task == "crux":
        mine, theirs = str(answer).strip("'\""), gold.strip("'\"")
        return bool(mine) and mine == theirs
    a, g = _ze_first_number(str(answer)), _ze_first_number(gold.replace("#", ""))
    return a is not None and a == g


def _ze_answer(model: str, text: str) -> object:
    parsed = _ze_first_object(text)
    if isinstance(parsed, dict) and "answer" in parsed:
        return parsed["answer"]
    for pattern in (
        r'"answer"\s*:\s*"([^"]*?)"',
        r'"answer"\s*:\s*"(.*?)"',
        r'"answer"\s*:\s*([^,\s]*)',
        r"answer\s*:\s*([^,\s]*)",
    ):
        match = re.search(pattern, text, re.DOTALL)
        if match:
            return match.group(1)
    if "Llama-3.1" in model and "boxed" in text[-30:]:
        match = re.search(r"\\boxed{([\w\d]+)}", text)
        return match.group(1) if match else None
    return None


def _ze_first_object(text: str) -> object:
    depth, start = 0, -1
    for i, ch in enumerate(text):
        if ch == "{":
            start = i if depth == 0 else start
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                try:
                    return json.loads(text[start : i + 1].replace("\n", ""))
                except ValueError:
                    return None
    return None


def _ze_first_number(text: str) -> float | None:
    text = text.replace("$", "").strip().replace(",", "")
    if "/" in text:  # ZeroEval evaluates any answer holding a "/" as arithmetic
        value = evaluate(text)
        if isinstance(value, Fraction):
            text = str(float(value))
    match = re.search(r"-?\d+(\.\d+)?", text)
    return float(match.group()) if match else None


# --- RouterBench --------------------------------------------------------------


def _routerbench_rows(folder: Path, task: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for split in ("train", "test"):
        with (folder / f"{task}_{split}.csv").open(newline="") as handle:
            rows.extend(csv.DictReader(handle))
    return rows


def _responses(row: dict[str, str]) -> dict[str, tuple[str, float]]:
    """model -> (response, recorded score) for the models the row scores."""
    out = {}
    for column, value in row.items():
        if column.endswith("|model_response") and value:
            model = column.split("|")[0]
            score = row.get(model, "")
            texts = ast.literal_eval(value)
            if score and texts:
                out[model] = (str(texts[0]), float(score))
    return out


def routerbench_choice(folder: Path) -> None:
    for task in ("arc_challenge", "winograde"):
        agree: Counter[str] = Counter()
        total: Counter[str] = Counter()
        no_gold = 0
        for row in _routerbench_rows(folder, task):
            answers = _responses(row)
            letters = {
                m: verifiers.extract_answer("choice", t)
                for m, (t, _) in answers.items()
            }
            for model, (text, score) in answers.items():
                # leave one out: the gold comes from the other models' right answers
                votes: Counter[str] = Counter()
                for other, (_, other_score) in answers.items():
                    letter = letters[other]
                    if other != model and other_score >= 1.0 and letter:
                        votes[letter] += 1
                if not votes:
                    no_gold += 1
                    continue
                gold = votes.most_common(1)[0][0]
                total[model] += 1
                agree[model] += verifiers.verify("choice", text, gold) == (score >= 1.0)
        print(f"\n== RouterBench {task}: our verdict == recorded score ==")
        for model in sorted(total):
            print(
                f"{model:40s} {agree[model]:5d}/{total[model]:5d} "
                f"{100 * agree[model] / total[model]:6.2f}%"
            )
        print(
            f"all models: {100 * sum(agree.values()) / sum(total.values()):.2f}% "
            f"of {sum(total.values())} (no gold for {no_gold} responses)"
        )


def routerbench_mbpp(data: Path, workers: int) -> None:
    tests = _mbpp_tests(data / "llmrouter" / "example_data" / "query_data")
    pairs: list[tuple[str, str, float, list[str]]] = []
    prompts = 0
    for row in _routerbench_rows(data / "routerbench", "mbpp"):
        prompt = str(ast.literal_eval(row["prompt"])[0]).strip()
        if prompt not in tests:
            continue
        prompts += 1
        for model, (text, score) in _responses(row).items():
            pairs.append((model, text, score, tests[prompt]))
    print(
        f"\n== RouterBench mbpp: {prompts} prompts with tests, {len(pairs)} replies =="
    )
    for rebind in (False, True):
        start = time.perf_counter()
        verdicts = _run_code(pairs, rebind, workers)
        seconds = time.perf_counter() - start
        table: dict[tuple[bool, bool], int] = defaultdict(int)
        for (_, _, score, _), ok in zip(pairs, verdicts, strict=True):
            table[(ok, score >= 1.0)] += 1
        agree = table[(True, True)] + table[(False, False)]
        print(
            f"rebind={rebind!s:5s} agreement {100 * agree / len(pairs):6.2f}% "
            f"(ours pass & recorded 1: {table[(True, True)]}, ours fail & 1: "
            f"{table[(False, True)]}, ours pass & 0: {table[(True, False)]}, "
            f"both fail: {table[(False, False)]}); {seconds:.0f} s"
        )


def _run_code(
    pairs: list[tuple[str, str, float, list[str]]], rebind: bool, workers: int
) -> list[bool]:
    from concurrent.futures import ThreadPoolExecutor

    from xrouter.records.verifiers.sandbox import run_tests

    # parse here, run the sandboxes in threads (the parser's warning filters are
    # process-wide, the sandboxes are separate processes)
    jobs = [
        (verifiers.prepare_solution(text, tests, rebind=rebind), tests)
        for _, text, _, tests in pairs
    ]

    def one(job: tuple[str | None, list[str]]) -> bool:
        return job[0] is not None and run_tests(job[0], job[1]).passed

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, jobs))


def _mbpp_tests(folder: Path) -> dict[str, list[str]]:
    tests: dict[str, list[str]] = {}
    for name in ("default_query_train.jsonl", "default_query_test.jsonl"):
        for line in (folder / name).read_text().split("\n"):
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("task_name") == "mbpp":
                tests[str(row["query"]).strip()] = list(
                    ast.literal_eval(row["ground_truth"])
                )
    return tests


# --- RouteLLM -----------------------------------------------------------------


def routellm_gsm8k(folder: Path) -> None:
    gold = {}
    for line in (folder / "test.jsonl").read_text().splitlines():
        row = json.loads(line)
        gold[row["question"]] = row["answer"].split("####")[-1].strip()
    with (folder / "gsm8k_responses.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    models = [c.removesuffix("_response") for c in rows[0] if c.endswith("_response")]
    print(f"\n== RouteLLM gsm8k: {len(rows)} prompts ==")
    for model in models:
        agree = ours = theirs = n = 0
        for row in rows:
            if row["prompt"] not in gold:
                continue
            n += 1
            mine = verifiers.verify(
                "gsm8k", row[f"{model}_response"], gold[row["prompt"]]
            )
            recorded = row[model] == "True"
            agree += mine == recorded
            ours += mine
            theirs += recorded
        print(
            f"{model:40s} agreement {100 * agree / n:6.2f}% of {n}; accuracy ours "
            f"{100 * ours / n:6.2f}% vs recorded {100 * theirs / n:6.2f}%"
        )


if __name__ == "__main__":
    main()
