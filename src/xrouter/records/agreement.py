"""How far xrouter's verifiers agree with each source's own verdicts.

ZeroEval published an accuracy per task and model (``official``): beside it stand
the stored verdicts (``ours``: ZeroEval's protocol as xrouter implements it),
xrouter's own verifier's reading of the same responses (``independent``) and the
share of responses on which the two readings agree.

RouterBench and RouteLLM's GSM8K recorded a verdict per response but published no
accuracy of their own: xrouter's verifier re-judges every response it can (``ours``)
beside the accuracy of the source's verdicts on the same responses (``recorded``),
with the share on which the verdicts agree.
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
from xrouter.records.sources.zeroeval import PUBLISHED_AS, TASKS
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
    independent: float | None = None
    recorded: float | None = None

    @property
    def diff(self) -> float | None:
        """Ours less the published accuracy, or less the recorded verdicts'."""
        reference = self.official if self.official is not None else self.recorded
        return None if reference is None else self.ours - reference

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "diff": self.diff}


def _official(root: Path) -> dict[str, dict[str, float]]:
    file = root / "zeroeval" / "official_accuracy.json"
    if not file.is_file():
        return {}
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SourceFormatError(
            f"{file}: malformed JSON at line {exc.lineno} ({exc.msg})"
        ) from exc
    shaped = isinstance(raw, dict) and all(
        isinstance(models, dict)
        and all(
            isinstance(acc, int | float) and not isinstance(acc, bool)
            for acc in models.values()
        )
        for models in raw.values()
    )
    if not shaped:
        raise SourceFormatError(
            f"{file} must map each task to its models' accuracies (numbers), as "
            '{"gsm": {"gpt-4o-mini-2024-07-18": 94.24}}; fetch the file again'
        )
    return dict(raw)


def _published(root: Path, catalog: Catalog) -> dict[tuple[str, str], float]:
    """ZeroEval's published accuracy by (task, model-card id)."""
    renamed: dict[str, list[str]] = defaultdict(list)
    for file_name, published_name in PUBLISHED_AS.items():
        renamed[published_name].append(file_name)
    published: dict[tuple[str, str], float] = {}
    for folder, table in _official(root).items():
        if folder not in TASKS:
            continue
        task = TASKS[folder][0]
        for name, acc in table.items():
            for alias in [name, *renamed.get(name, [])]:
                try:
                    published[(task, catalog.resolve(alias))] = acc
                except CatalogError:
                    continue  # a published run with no records here
    return published


def _zeroeval(
    store: Store, root: Path, catalog: Catalog, reporter: Reporter
) -> Iterator[AgreementRow]:
    items = store.items(["zeroeval"], columns=["item_id", "task", "verifier", "gold"])
    info = {r["item_id"]: r for r in items.to_pylist()}
    cols = ["item_id", "model", "response", "score"]
    records = store.records(["zeroeval"], columns=cols).to_pylist()
    reporter.start("re-judging zeroeval", len(records))
    groups: dict[tuple[str, str], list[tuple[float, bool]]] = defaultdict(list)
    for record in records:
        item = info[record["item_id"]]
        own = verifiers.verify(item["verifier"], record["response"] or "", item["gold"])
        groups[(item["task"], record["model"])].append((record["score"], own))
        reporter.advance()
    published = _published(root, catalog)
    for (task, model), pairs in sorted(groups.items()):
        n = len(pairs)
        yield AgreementRow(
            source="zeroeval",
            task=task,
            model=model,
            ours=100.0 * sum(score for score, _ in pairs) / n,
            official=published.get((task, model)),
            n=n,
            agreement=100.0 * sum((s >= 1.0) == own for s, own in pairs) / n,
            independent=100.0 * sum(own for _, own in pairs) / n,
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
        return _judge(kind, record["response"], gold)

    # Code runs in subprocesses, so two threads keep both cores busy; progress is
    # counted here, in one thread, as the verdicts come back in order.
    verdicts = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for verdict in pool.map(judge, todo):
            verdicts.append(verdict)
            reporter.advance()
    groups: dict[tuple[str, str], list[tuple[bool, float]]] = defaultdict(list)
    for record, verdict in zip(todo, verdicts, strict=True):
        task = info[record["item_id"]][0]
        groups[(task, record["model"])].append((verdict, record["score"]))
    for (task, model), pairs in sorted(groups.items()):
        n = len(pairs)
        ours = 100.0 * sum(v for v, _ in pairs) / n
        theirs = 100.0 * sum(s >= 1.0 for _, s in pairs) / n
        agree = 100.0 * sum(v == (s >= 1.0) for v, s in pairs) / n
        yield AgreementRow(
            source, task, model, ours, None, n, agreement=agree, recorded=theirs
        )


def agreement_rows(
    store: Store,
    root: Path,
    catalog: Catalog,
    reporter: Reporter | None = None,
    sources: list[str] | None = None,
) -> list[AgreementRow]:
    """Our accuracy beside each source's, for every task and model we can judge."""
    reporter = reporter or Silent()
    sources = [s for s in store.sources() if sources is None or s in sources]
    rows: list[AgreementRow] = []
    if "zeroeval" in sources:
        rows += _zeroeval(store, root, catalog, reporter)
    for source in ("routerbench", "routellm"):
        if source in sources:
            rows += _rejudged(store, source, reporter)
    return rows
