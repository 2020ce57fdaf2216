"""RouterBench (as re-split by RouterDC): ARC, MBPP and Winogrande for 11 models.

The source records each model's verdict and the USD it was charged, so both are used
as recorded; token counts are not recorded and are counted here. It keeps no gold
answer: for multiple choice the gold letter is the one the correct responses chose,
and MBPP tests come from LLMRouter's copy of MBPP where the prompt matches.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from xrouter.core.errors import SourceFormatError
from xrouter.records import verifiers
from xrouter.records.schema import Item, Record
from xrouter.records.sources.base import (
    Origin,
    PriceBook,
    Source,
    SourceBatch,
    literal,
    read_csv,
    read_jsonl,
    reading,
)

__all__ = ["RouterBench"]

_FILES = tuple(
    f"{task}_{split}.csv"
    for task in ("arc_challenge", "mbpp", "winograde")
    for split in ("train", "test")
)
_TASKS = {"arc-challenge": "choice", "winogrande": "choice", "mbpp": "mbpp"}
_MBPP_TESTS = ("default_query_train.jsonl", "default_query_test.jsonl")
_MBPP_FOLDER = Path("llmrouter", "example_data", "query_data")


class RouterBench(Source):
    name = "routerbench"
    folder = "routerbench"
    origins = (
        Origin(
            repo="shuhao02/RouterDC",
            commit="0e63989c5bf4363330b8a4616386e3f7f116d9f8",
            patterns=tuple(f"datasets/routerbench_zs/{f}" for f in _FILES),
        ),
    )

    def files(self, root: Path) -> list[Path]:
        return [self.require(root, name) for name in _FILES]

    def companions(self, root: Path) -> list[Path]:
        return [root / _MBPP_FOLDER / name for name in _MBPP_TESTS]

    def read(
        self, root: Path, prices: PriceBook, advance: Callable[[], None]
    ) -> Iterator[SourceBatch]:
        tests = _mbpp_tests(root)
        seen: set[str] = set()
        for file in self.files(root):
            yield self._read_file(file, prices, tests, seen)
            advance()

    def _read_file(
        self,
        file: Path,
        prices: PriceBook,
        tests: dict[str, str],
        seen: set[str],
    ) -> SourceBatch:
        batch = SourceBatch()
        ids: dict[str, str] | None = None
        with reading(file):
            for line, row in read_csv(file):
                if ids is None:
                    ids = _models(row, file, prices)
                if row["sample_id"] in seen:
                    continue
                seen.add(row["sample_id"])
                item, records = _row(row, ids, file, line, prices, tests)
                batch.items.append(item)
                batch.records.extend(records)
        return batch


# Header columns that are not a model's verdicts.
_OTHER_COLUMNS = {"", "sample_id", "prompt", "eval_name", "oracle_model_to_route_to"}


def _models(row: dict[str, str], file: Path, prices: PriceBook) -> dict[str, str]:
    """Model column names of the header, mapped to their card ids; a model whose
    verdict or cost column is missing is refused (its records would be lost)."""
    models = [h.removesuffix("|total_cost") for h in row if h.endswith("|total_cost")]
    if not models or "prompt" not in row or "sample_id" not in row:
        raise SourceFormatError(
            f"{file}: header lacks sample_id, prompt or <model>|total_cost columns; "
            "fetch the file again"
        )
    verdicts = {h for h in row if "|" not in h} - _OTHER_COLUMNS
    for name in sorted(verdicts.symmetric_difference(models)):
        has, lacks = (name, f"{name}|total_cost")[:: 1 if name in verdicts else -1]
        raise SourceFormatError(
            f"{file}: the header has a column {has!r} but no {lacks!r}, so that "
            "model's records cannot be read; fetch the file again"
        )
    return {m: prices.model_id(m, file) for m in models}


def _literal_list(text: str, file: Path, line: int, column: str) -> list[str]:
    value = literal(text, file, line, f"column {column!r}")
    if not isinstance(value, list):
        raise SourceFormatError(f"{file}, line {line}: column {column!r} is no list")
    return [str(v) for v in value]


def _row(
    row: dict[str, str],
    ids: dict[str, str],
    file: Path,
    line: int,
    prices: PriceBook,
    tests: dict[str, str],
) -> tuple[Item, list[Record]]:
    task = row.get("eval_name") or ""
    if task not in _TASKS:
        raise SourceFormatError(
            f"{file}, line {line}: unknown eval_name {task!r} (known: "
            f"{', '.join(_TASKS)})"
        )
    kind = _TASKS[task]
    prompt = "\n\n".join(_literal_list(row["prompt"], file, line, "prompt"))
    answers: dict[str, tuple[str | None, float, float]] = {}
    for name, model in ids.items():
        score, cost = row.get(name, ""), row.get(f"{name}|total_cost", "")
        if not score or not cost:
            continue  # the source has no verdict for this model on this prompt
        column = f"{name}|model_response"
        texts = (
            _literal_list(row[column], file, line, column) if row.get(column) else []
        )
        try:
            answers[model] = (texts[0] if texts else None, float(score), float(cost))
        except ValueError as exc:
            raise SourceFormatError(
                f"{file}, line {line}: {name} has a non-numeric score or cost ({exc})"
            ) from exc
    gold = tests.get(prompt.strip()) if kind == "mbpp" else _voted_gold(answers)
    item = Item(
        item_id=f"routerbench/{task}/{row['sample_id']}",
        source="routerbench",
        task=task,
        messages=(("user", prompt),),
        gold=gold,
        verifier=kind,
        meta={"source_split": file.stem.rsplit("_", 1)[-1]},
    )
    records = [
        prices.estimate(
            item,
            model,
            text,
            score,
            score_origin="source",
            extracted=_comparable(kind, text),
            recorded_cost=cost,
        )
        for model, (text, score, cost) in answers.items()
    ]
    return item, records


def _comparable(kind: str, text: str | None) -> str | None:
    """An answer two models can be compared on; code has none short of running it."""
    if text is None or kind == "mbpp":
        return None
    return verifiers.extract_answer(kind, text)


def _voted_gold(answers: dict[str, tuple[str | None, float, float]]) -> str | None:
    """The letter most responses the source scored correct agree on."""
    votes: Counter[str] = Counter()
    for text, score, _ in answers.values():
        letter = verifiers.extract_answer("choice", text) if text else None
        if score >= 1.0 and letter:
            votes[letter] += 1
    return votes.most_common(1)[0][0] if votes else None


def _mbpp_tests(root: Path) -> dict[str, str]:
    """MBPP prompt text -> its tests as a JSON list, from LLMRouter's copy of MBPP."""
    folder = root / _MBPP_FOLDER
    tests: dict[str, str] = {}
    for name in _MBPP_TESTS:
        file = folder / name
        if not file.is_file():
            continue
        for number, row in enumerate(read_jsonl(file), 1):
            if row.get("task_name") == "mbpp" and row.get("ground_truth"):
                asserts = literal(row["ground_truth"], file, number, "ground_truth")
                if not isinstance(asserts, list):
                    raise SourceFormatError(
                        f"{file}, line {number}: ground_truth is no list of asserts"
                    )
                tests[str(row.get("query", "")).strip()] = json.dumps(asserts)
    return tests
