"""LLMRouter's DC-Router data: 6,108 questions over 14 tasks, 0/1 scores of 9 models.

The source keeps verdicts but no responses: output lengths are estimated per task and
costs priced from the catalog (LLMRouter's own NVIDIA NIM list prices). Task names
and gold answers come from its query files, joined on the question text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from xrouter.core.errors import SourceFormatError
from xrouter.records.schema import Item
from xrouter.records.sources.base import (
    Origin,
    PriceBook,
    Source,
    SourceBatch,
    read_jsonl,
    reading,
)

__all__ = ["LLMRouter"]

_SCORES = ("dcrouter_preprocessed/train.json", "dcrouter_preprocessed/test.json")
_QUERIES = (
    "example_data/query_data/default_query_train.jsonl",
    "example_data/query_data/default_query_test.jsonl",
)
_VERIFIERS = {
    "gsm8k": "gsm8k",
    "agentverse-mgsm": "gsm8k",
    "math": "math",
    "mmlu": "choice",
    "gpqa": "choice",
    "arc_challenge": "choice",
    "commonsense_qa": "choice",
    "openbook_qa": "choice",
    "mbpp": "mbpp",
    "human_eval": "mbpp",
}


class LLMRouter(Source):
    name = "llmrouter"
    folder = "llmrouter"
    origins = (
        Origin(
            repo="ulab-uiuc/LLMRouter",
            commit="4e7a796942ce26e9d5f2b93191c7c2585c99c2e3",
            patterns=(
                *(f"data/{p}" for p in (*_SCORES, *_QUERIES)),
                "data/example_data/llm_candidates/default_llm.json",
            ),
        ),
    )

    def files(self, root: Path) -> list[Path]:
        return [self.require(root, name) for name in (*_QUERIES, *_SCORES)]

    def read(
        self, root: Path, prices: PriceBook, advance: Callable[[], None]
    ) -> Iterator[SourceBatch]:
        queries: dict[str, dict[str, Any]] = {}
        for name in _QUERIES:
            file = self.require(root, name)
            with reading(file):
                queries.update(_queries(file))
            advance()
        seen: set[str] = set()
        for name in _SCORES:
            file = self.require(root, name)
            with reading(file):
                batch = _scores(file, queries, prices, seen)
            yield batch
            advance()


def _queries(file: Path) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for line_no, row in enumerate(read_jsonl(file), 1):
        if "query" not in row:
            raise SourceFormatError(
                f"{file}: object {line_no} has no 'query' field; fetch the file again"
            )
        rows[str(row["query"]).strip()] = row
    return rows


def _scores(
    file: Path, queries: dict[str, dict[str, Any]], prices: PriceBook, seen: set[str]
) -> SourceBatch:
    try:
        rows = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SourceFormatError(
            f"{file}: malformed JSON at line {exc.lineno} ({exc.msg}); fetch the file "
            "again"
        ) from exc
    if not isinstance(rows, list) or not rows:
        raise SourceFormatError(
            f"{file} must be a non-empty JSON list of scored questions; fetch it again"
        )
    batch = SourceBatch()
    split = file.stem
    for index, row in enumerate(rows):
        try:
            question, scores = str(row["question"]), dict(row["scores"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceFormatError(
                f"{file}: entry {index} lacks question or scores ({exc})"
            ) from exc
        query = queries.get(question.strip())
        if query is None:
            raise SourceFormatError(
                f"{file}: entry {index}'s question is in no query file, so its task "
                "is unknown; fetch example_data/query_data again"
            )
        task = str(query["task_name"])
        digest = hashlib.sha1(question.encode()).hexdigest()[:12]
        item_id = f"llmrouter/{task}/{digest}"
        if item_id in seen:
            continue
        seen.add(item_id)
        item = Item(
            item_id=item_id,
            source="llmrouter",
            task=task,
            messages=(("user", question),),
            gold=str(query.get("ground_truth")) if query.get("ground_truth") else None,
            verifier=_VERIFIERS.get(task),
            meta={"source_split": split, "metric": str(query.get("metric", ""))},
        )
        batch.items.append(item)
        for name, score in scores.items():
            model = prices.model_id(name, file)
            batch.records.append(
                prices.estimate(item, model, None, float(score), score_origin="source")
            )
    return batch
