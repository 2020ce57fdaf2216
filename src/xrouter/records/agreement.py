"""How far xrouter's verifiers agree with each source's own verdicts.

For ZeroEval the comparison is with its published accuracy per task and model. For
sources that recorded a verdict per response (RouterBench, RouteLLM's GSM8K), the
verifier re-judges every response that can be judged and the accuracy it finds is set
beside the source's accuracy on the same responses, with the share of responses on
which the two verdicts agree.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from xrouter.core.catalog import Catalog
from xrouter.core.errors import CatalogError, SourceFormatError
from xrouter.core.progress import Reporter, Silent
from xrouter.records import verifiers
from xrouter.records.store import Store

__all__ = ["AgreementRow", "agreement_rows"]


@dataclass(frozen=True)
class AgreementRow:
    """One task and model: our accuracy beside the source's, in percent."""

    source: str
    task: str
    model: str
    ours: float
    official: float | None
    n: int
    agreement: float | None = None

    @property
    def diff(self) -> float | None:
        return None if self.official is None else self.ours - self.official

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "diff": self.diff}


def _official(root: Path) -> dict[str, dict[str, float]]:
    file = root / "zeroeval" / "official_accuracy.json"
    if not file.is_file():
        return {}
    try:
        raw: dict[str, dict[str, float]] = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SourceFormatError(
            f"{file}: malformed JSON at line {exc.lineno} ({exc.msg})"
        ) from exc
    return raw


_ZEROEVAL_TASKS = {"gsm": "gsm8k", "math-l5": "math-l5", "crux": "cruxeval"}


def _zeroeval(store: Store, root: Path, catalog: Catalog) -> Iterator[AgreementRow]:
    official = _official(root)
    items = store.items(["zeroeval"], columns=["item_id", "task"]).to_pydict()
    task_of = dict(zip(items["item_id"], items["task"], strict=True))
    records = store.records(["zeroeval"], columns=["item_id", "model", "score"])
    totals: dict[tuple[str, str], list[float]] = defaultdict(list)
    for item_id, model, score in zip(*records.to_pydict().values(), strict=True):
        totals[(task_of[item_id], model)].append(score)
    published: dict[tuple[str, str], float] = {}
    for folder, task in _ZEROEVAL_TASKS.items():
        for name, acc in official.get(folder, {}).items():
            try:
                published[(task, catalog.resolve(name))] = acc
            except CatalogError:
                continue  # a published model with no records here
    for (task, model), scores in sorted(totals.items()):
        ours = 100.0 * sum(scores) / len(scores)
        yield AgreementRow(
            "zeroeval", task, model, ours, published.get((task, model)), len(scores)
        )


def _judge(kind: str, response: str, gold: str) -> bool:
    if kind == "mbpp":
        return verifiers.verify_code(response, json.loads(gold))
    return verifiers.verify(kind, response, gold)


def _rejudged(store: Store, source: str, reporter: Reporter) -> Iterator[AgreementRow]:
    items = store.items([source], columns=["item_id", "task", "verifier", "gold"])
    items = items.filter(pc.invert(pc.is_null(items["gold"])))
    info = {
        row["item_id"]: (row["task"], row["verifier"], row["gold"])
        for row in items.to_pylist()
        if row["verifier"]
    }
    cols = ["item_id", "model", "response", "score"]
    records = store.records([source], columns=cols).to_pylist()
    todo = [r for r in records if r["item_id"] in info and r["response"] is not None]
    reporter.start(f"re-judging {source}", len(todo))

    def judge(record: dict[str, Any]) -> bool:
        _, kind, gold = info[record["item_id"]]
        verdict = _judge(kind, record["response"], gold)
        reporter.advance()
        return verdict

    # Code runs in subprocesses, so two threads keep both cores busy.
    with ThreadPoolExecutor(max_workers=2) as pool:
        verdicts = list(pool.map(judge, todo))
    groups: dict[tuple[str, str], list[tuple[bool, float]]] = defaultdict(list)
    for record, verdict in zip(todo, verdicts, strict=True):
        task = info[record["item_id"]][0]
        groups[(task, record["model"])].append((verdict, record["score"]))
    for (task, model), pairs in sorted(groups.items()):
        n = len(pairs)
        ours = 100.0 * sum(v for v, _ in pairs) / n
        theirs = 100.0 * sum(s >= 1.0 for _, s in pairs) / n
        agree = 100.0 * sum(v == (s >= 1.0) for v, s in pairs) / n
        yield AgreementRow(source, task, model, ours, theirs, n, agree)


def agreement_rows(
    store: Store, root: Path, catalog: Catalog, reporter: Reporter | None = None
) -> list[AgreementRow]:
    """Our accuracy beside each source's, for every task and model we can judge."""
    reporter = reporter or Silent()
    sources = store.sources()
    rows: list[AgreementRow] = []
    if "zeroeval" in sources:
        rows += _zeroeval(store, root, catalog)
    for source in ("routerbench", "routellm"):
        if source in sources:
            rows += _rejudged(store, source, reporter)
    return rows
