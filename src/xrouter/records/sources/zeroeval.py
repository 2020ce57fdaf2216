"""ZeroEval: zero-shot chain-of-thought runs of ~60 models on GSM8K, MATH-L5, CRUXEval.

The source keeps every response but no per-item verdict, token count or cost. Each
response is judged by ZeroEval's own protocol (``verifiers.published``), so stored
accuracies reproduce the published ones; the answer xrouter's verifier extracts is
stored beside it for comparing models' answers. The tokenizer counts the text and the
catalog prices it.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from xrouter.core.errors import SourceFormatError
from xrouter.records import verifiers
from xrouter.records.schema import Item
from xrouter.records.sources.base import (
    Origin,
    PriceBook,
    Source,
    SourceBatch,
    reading,
)
from xrouter.records.verifiers.published import zeroeval_verdict

__all__ = ["PUBLISHED_AS", "TASKS", "ZeroEval"]

# ZeroEval's task folder -> (xrouter task, verifier kind)
TASKS: dict[str, tuple[str, str]] = {
    "gsm": ("gsm8k", "gsm8k"),
    "math-l5": ("math-l5", "math"),
    "crux": ("cruxeval", "cruxeval"),
}

# Runs whose file name differs from the name ZeroEval published their accuracy under.
PUBLISHED_AS: dict[str, str] = {
    "gemma-2-27b-it@together": "gemma-2-27b-it",
    "deepseek-chat": "deepseek-v2-chat-0628",
    "deepseek-coder": "deepseek-v2-coder-0614",
    "DeepSeek-Coder-V2-0724": "deepseek-v2-coder-0724",
    "Llama-3.1-405B-Inst-fp8": "Llama-3.1-405B-Inst-fp8@together",
    "Llama-3.1-405B-Instruct-Turbo": "Llama-3.1-405B-Inst-fp8@together",
    "Meta-Llama-3.1-405B-Instruct@hyperbolic": "Llama-3.1-405B-Inst@hyperbolic",
}


class ZeroEval(Source):
    name = "zeroeval"
    folder = "zeroeval"
    origins = (
        Origin(
            repo="yuchenlin/ZeroEval",
            commit="570c6269a2e4930ee06a17e713fece1ba52cf1dd",
            patterns=(
                "result_dirs/gsm/*.json",
                "result_dirs/math-l5/*.json",
                "result_dirs/crux/*.json",
                "result_dirs/*.summary.json",
            ),
        ),
    )

    def files(self, root: Path) -> list[Path]:
        return self.glob(root, "raw_gz", "*__*.json.gz")

    def read(
        self, root: Path, prices: PriceBook, advance: Callable[[], None]
    ) -> Iterator[SourceBatch]:
        seen: dict[str, tuple[str | None, Path]] = {}  # item id: gold, first file
        for file in self.files(root):
            with reading(file):
                batch = self._read_file(file, prices, seen)
            yield batch
            advance()

    def _read_file(
        self, file: Path, prices: PriceBook, seen: dict[str, tuple[str | None, Path]]
    ) -> SourceBatch:
        task_dir, _, model_name = file.name.removesuffix(".json.gz").partition("__")
        if task_dir not in TASKS:
            raise SourceFormatError(
                f"{file}: unknown ZeroEval task {task_dir!r} (known: "
                f"{', '.join(TASKS)}); remove the file or rename it"
            )
        task, kind = TASKS[task_dir]
        model = prices.model_id(model_name, file)
        batch = SourceBatch()
        done: set[str] = set()
        for index, row in enumerate(_load(file)):
            item = _item(row, task, kind, file, index)
            if item.item_id in done:
                continue  # a few files repeat ids: the first answer counts
            done.add(item.item_id)
            if item.item_id not in seen:
                seen[item.item_id] = (item.gold, file)
                batch.items.append(item)
            elif seen[item.item_id][0] != item.gold:
                gold, first = seen[item.item_id]
                raise SourceFormatError(
                    f"{file}: item {index} ({item.item_id}) has the gold answer "
                    f"{item.gold!r}, but {first} gives it {gold!r}; every model is "
                    "judged against one gold, so fetch the files again"
                )
            response = _response(row, file, index)
            verdict = zeroeval_verdict(task, response, item.gold or "", model_name)
            batch.records.append(
                prices.estimate(
                    item,
                    model,
                    response,
                    float(verdict),
                    score_origin="verifier",
                    extracted=verifiers.extract_answer(kind, response),
                )
            )
        return batch


def _load(file: Path) -> list[dict[str, Any]]:
    try:
        with gzip.open(file, "rt", encoding="utf-8") as handle:
            rows = json.load(handle)
    except (OSError, EOFError) as exc:
        raise SourceFormatError(
            f"{file} is not a readable gzip file ({exc}); fetch it again"
        ) from exc
    except json.JSONDecodeError as exc:
        raise SourceFormatError(
            f"{file}: malformed JSON at line {exc.lineno} column {exc.colno} "
            f"({exc.msg}); fetch the file again"
        ) from exc
    if not isinstance(rows, list):
        raise SourceFormatError(f"{file}: expected a JSON list of items")
    if not rows:
        raise SourceFormatError(
            f"{file} holds an empty list: no answers of its model; fetch it again "
            "or remove it"
        )
    return rows


def _item(row: Any, task: str, kind: str, file: Path, index: int) -> Item:
    try:
        native_id, history, answer = row["id"], row["chat_history"], row["answer"]
    except (KeyError, TypeError) as exc:
        raise SourceFormatError(
            f"{file}: item {index} lacks the field {exc}; fetch the file again"
        ) from exc
    for field, value in (("id", native_id), ("answer", answer)):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise SourceFormatError(
                f"{file}: item {index} has {field} {value!r:.60}, not a string or a "
                "number; fetch the file again"
            )
    gold = str(answer)
    if task == "gsm8k":
        gold = gold.lstrip("#").strip()
    roles = ("user", "assistant")
    messages = tuple((roles[i % 2], str(text)) for i, text in enumerate(history))
    question = row.get("question") or row.get("problem")
    return Item(
        item_id=f"zeroeval/{task}/{native_id}",
        source="zeroeval",
        task=task,
        messages=messages,
        gold=gold,
        verifier=kind,
        meta={"question": question} if question else {},
    )


def _response(row: dict[str, Any], file: Path, index: int) -> str:
    output = row.get("output")
    if isinstance(output, list):
        return str(output[0]) if output else ""  # an empty reply is a wrong answer
    if isinstance(output, str):
        return output
    raise SourceFormatError(f"{file}: item {index} has no output; fetch it again")
