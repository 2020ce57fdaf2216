"""Replay: answer a call to (model, item) with what the model really answered.

``ReplayPool`` holds a pool's records as dense item x model matrices (score, cost,
tokens, extracted answer) for fast offline evaluation and training; its ``call``
returns one recorded call the way any backend would. A call for an item or model
with no record fails with ``ReplayMissError`` rather than inventing an answer.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from xrouter.core.catalog import ModelCard
from xrouter.core.errors import (
    BadRequestError,
    ReplayMissError,
    StoreError,
    UpstreamError,
)
from xrouter.core.types import (
    CallRecord,
    ChatRequest,
    Completion,
    Message,
    StreamDelta,
    Usage,
)
from xrouter.records.schema import Item, item_from_row
from xrouter.records.store import Store
from xrouter.records.tokens import count_tokens, first_tokens

__all__ = ["PromptIndex", "ReplayBackend", "ReplayPool"]

logger = logging.getLogger(__name__)


@dataclass
class ReplayPool:
    """Records of ``models`` on ``item_ids``, every pair present.

    Arrays are indexed ``[item, model]`` in the order of ``item_ids`` and ``models``.
    """

    store: Store
    sources: tuple[str, ...]
    item_ids: list[str]
    models: list[str]
    tasks: NDArray[np.str_]
    score: NDArray[np.float64]
    cost: NDArray[np.float64]
    input_tokens: NDArray[np.int64]
    output_tokens: NDArray[np.int64]
    extracted: NDArray[np.object_]
    dropped_items: int = 0

    @classmethod
    def load(
        cls,
        store: Store,
        sources: Sequence[str],
        models: Sequence[str],
        *,
        tasks: Sequence[str] | None = None,
        exclude_meta: Sequence[str] = (),
    ) -> ReplayPool:
        """Load the items of ``sources`` on which every one of ``models`` has a record.

        Items whose meta has a true value for any key in ``exclude_meta`` (such as
        ``contaminated``) are left out.
        """
        items = store.items(sources, tasks=tasks, columns=["item_id", "task", "meta"])
        if tasks is not None:
            found = set(items.column("task").unique().to_pylist())
            if missing := [t for t in tasks if t not in found]:
                known = store.items(sources, columns=["task"]).column("task").unique()
                raise StoreError(
                    f"source(s) {', '.join(sources)} have no items of task(s) "
                    f"{', '.join(missing)}; their tasks are "
                    f"{', '.join(sorted(str(t) for t in known.to_pylist()))}"
                )
        items = _drop_flagged(items, exclude_meta, sources)
        cols = [
            "item_id",
            "model",
            "score",
            "cost_usd",
            "input_tokens",
            "output_tokens",
            "extracted",
        ]
        records = store.records(sources, models=models, columns=cols)
        present = set(records.column("model").unique().to_pylist())
        lacking = [m for m in models if m not in present]
        if lacking:
            raise StoreError(
                f"no records of {', '.join(lacking)} in source(s) "
                f"{', '.join(sources)}; choose pool models that appear there "
                "(`xrouter data models` lists them)"
            )
        return cls._from_tables(store, tuple(sources), items, records, list(models))

    @classmethod
    def _from_tables(
        cls,
        store: Store,
        sources: tuple[str, ...],
        items: pa.Table,
        records: pa.Table,
        models: list[str],
    ) -> ReplayPool:
        ids = [str(i) for i in items.column("item_id").to_pylist()]
        row_of = {item_id: i for i, item_id in enumerate(ids)}
        col_of = {m: j for j, m in enumerate(models)}
        shape = (len(ids), len(models))
        score, cost = np.full(shape, np.nan), np.zeros(shape)
        tokens_in = np.zeros(shape, dtype=np.int64)
        tokens_out = np.zeros(shape, dtype=np.int64)
        extracted = np.full(shape, None, dtype=object)
        data = records.to_pydict()
        for k, item_id in enumerate(data["item_id"]):
            i = row_of.get(item_id)
            if i is None:
                continue
            j = col_of[data["model"][k]]
            score[i, j], cost[i, j] = data["score"][k], data["cost_usd"][k]
            tokens_in[i, j] = data["input_tokens"][k]
            tokens_out[i, j] = data["output_tokens"][k]
            extracted[i, j] = data["extracted"][k]
        complete = ~np.isnan(score).any(axis=1)
        keep = np.flatnonzero(complete)
        tasks = np.array(items.column("task").to_pylist(), dtype=str)
        return cls(
            store=store,
            sources=sources,
            item_ids=[ids[i] for i in keep],
            models=models,
            tasks=tasks[keep],
            score=score[keep],
            cost=cost[keep],
            input_tokens=tokens_in[keep],
            output_tokens=tokens_out[keep],
            extracted=extracted[keep],
            dropped_items=int((~complete).sum()),
        )

    # -- lookups ---------------------------------------------------------------

    def model_index(self, model: str) -> int:
        try:
            return self.models.index(model)
        except ValueError:
            raise ReplayMissError(
                f"model {model!r} is not in this replay pool (pool: "
                f"{', '.join(self.models)}); add it to the pool or call another model"
            ) from None

    def item_index(self, item_id: str) -> int:
        try:
            return self._row_of[item_id]
        except KeyError:
            raise ReplayMissError(
                f"item {item_id!r} has no record for every model of this pool; "
                "replay can only answer recorded items"
            ) from None

    @property
    def _row_of(self) -> dict[str, int]:
        cached: dict[str, int] | None = self.__dict__.get("_rows")
        if cached is None:
            cached = {item_id: i for i, item_id in enumerate(self.item_ids)}
            self.__dict__["_rows"] = cached
        return cached

    def items(self, indices: Sequence[int] | None = None) -> list[Item]:
        """The full items (prompt, gold) at ``indices``, read from the store."""
        wanted = (
            self.item_ids if indices is None else [self.item_ids[i] for i in indices]
        )
        table = self.store.items(self.sources)
        table = table.filter(pc.is_in(table["item_id"], pa.array(wanted)))
        by_id = {row["item_id"]: item_from_row(row) for row in table.to_pylist()}
        return [by_id[i] for i in wanted]

    # -- the backend call ------------------------------------------------------

    def _responses(self, model: str) -> dict[str, str | None]:
        """One model's responses by item, read from the store once per pool."""
        cache: dict[str, dict[str, str | None]] = self.__dict__.setdefault(
            "_response_cache", {}
        )
        if model not in cache:
            table = self.store.records(
                self.sources, models=[model], columns=["item_id", "model", "response"]
            )
            ids = [str(i) for i in table.column("item_id").to_pylist()]
            texts = table.column("response").to_pylist()
            cache[model] = dict(zip(ids, texts, strict=True))
        return cache[model]

    def call(self, model: str, item_id: str) -> CallRecord:
        """The recorded answer of ``model`` to ``item_id``, with usage and cost."""
        j = self.model_index(model)
        i = self.item_index(item_id)
        return CallRecord(
            model=model,
            response=self._responses(model).get(item_id),
            usage=Usage(int(self.input_tokens[i, j]), int(self.output_tokens[i, j])),
            cost_usd=float(self.cost[i, j]),
        )


def _drop_flagged(
    items: pa.Table, keys: Sequence[str], sources: Sequence[str]
) -> pa.Table:
    """``items`` less those whose meta flags any of ``keys``; a key that flags no
    item is warned of (misspelt, it would leave every item in)."""
    if not keys:
        return items
    metas = [
        json.loads(meta) if meta else {} for meta in items.column("meta").to_pylist()
    ]
    flagged = {key for meta in metas for key, value in meta.items() if value}
    for key in keys:
        if key not in flagged:
            logger.warning(
                "exclude_meta key %r flags no item of %s, so it leaves none out; "
                "the keys their items' meta has: %s",
                key,
                ", ".join(sources),
                ", ".join(sorted({k for meta in metas for k in meta})) or "none",
            )
    keep = [not any(meta.get(k) for k in keys) for meta in metas]
    return items.filter(pa.array(keep))


# -- replay as a backend -------------------------------------------------------


def _normal(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    return " ".join(text.split()).casefold()


_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
# A conversation shorter than this is never matched by containment alone.
_MIN_CONTAINED = 40


class PromptIndex:
    """Finds the recorded item a conversation asks, by the text of its question.

    A conversation matches an item when its last user message equals the item's
    prompt or its bare question (quotes, case and spacing aside), or, failing that,
    when exactly one item's question is contained in the message.
    """

    def __init__(self, items: Sequence[Item]) -> None:
        self._exact: dict[str, str] = {}
        self._questions: list[tuple[str, str]] = []
        for item in items:
            self._exact.setdefault(_normal(item.prompt), item.item_id)
            question = item.meta.get("question")
            if isinstance(question, str) and question.strip():
                norm = _normal(question)
                self._exact.setdefault(norm, item.item_id)
                self._questions.append((norm, item.item_id))

    def find(self, messages: Sequence[Message]) -> str | None:
        users = [m.content for m in messages if m.role == "user"]
        if not users:
            return None
        asked = _normal(users[-1])
        if asked in self._exact:
            return self._exact[asked]
        if len(asked) < _MIN_CONTAINED:
            return None
        found = {item_id for q, item_id in self._questions if q and q in asked}
        return found.pop() if len(found) == 1 else None


class ReplayBackend:
    """One pool model answered from its records: offline, deterministic, free.

    The item is the request's ``item_id`` when given (evaluation, training), else
    the recorded item whose question the conversation asks. Usage and cost are the
    record's. Sampling settings cannot change a recorded answer; ``max_tokens``
    cuts a live request's answer as an API would (its first ``max_tokens`` tokens,
    finish reason ``length``, the output billed pro rata), while an evaluation's
    request, which names its item, gets the record whole, as it was scored.
    """

    def __init__(self, card: ModelCard, pool: ReplayPool, index: PromptIndex) -> None:
        self._card = card
        self._pool = pool
        self._index = index
        self._model = pool.models[pool.model_index(card.id)]

    @property
    def card(self) -> ModelCard:
        return self._card

    def _item(self, request: ChatRequest) -> str:
        item_id = request.item_id or self._index.find(request.messages)
        if item_id is None:
            raise UpstreamError(
                f"replay has no recorded answer of {self._card.id} to this prompt: "
                f"it answers only the {len(self._pool.item_ids):,} benchmark items of "
                f"source(s) {', '.join(self._pool.sources)}; ask one of those or "
                "give the model a live backend in a pool file",
                model=self._card.id,
                retryable=False,
            )
        return item_id

    def quote(self, request: ChatRequest) -> float | None:
        """What the call will cost: the record's cost, known before it runs."""
        try:
            i = self._pool.item_index(self._item(request))
        except (UpstreamError, ReplayMissError):
            return None
        return float(self._pool.cost[i, self._pool.model_index(self._model)])

    async def complete(self, request: ChatRequest) -> Completion:
        if request.output_format() != "text":
            raise BadRequestError(
                f"{self._card.id} is replayed from recorded answers, which were not "
                f"written to the response_format asked for "
                f"({request.output_format()}); give the model a live backend in a "
                "pool file",
                model=self._card.id,
            )
        if request.tool_choice not in (None, "auto", "none"):
            raise BadRequestError(
                f"{self._card.id} is replayed from recorded answers, which hold no "
                f"tool calls, so tool_choice {_shown(request.tool_choice)} cannot be "
                "met; give the model a live backend in a pool file",
                model=self._card.id,
            )
        item_id = self._item(request)
        try:
            record = self._pool.call(self._model, item_id)
        except ReplayMissError as exc:
            raise UpstreamError(str(exc), model=self._card.id, retryable=False) from exc
        if record.response is None:
            raise UpstreamError(
                f"the record of {self._card.id} on {item_id} keeps its verdict but "
                "not its response text, so replay cannot return it",
                model=self._card.id,
                retryable=False,
            )
        if request.item_id is not None:  # an evaluation: the record as it is
            return Completion(record.response, record.usage, cost_usd=record.cost_usd)
        text, usage, cost = record.response, record.usage, record.cost_usd
        stopped = _at_stop(text, request.stop)
        if stopped is not None:
            # The answer ends before the first stop string, as a model's would; its
            # reply is billed for the tokens kept.
            kept = min(count_tokens(stopped), usage.output_tokens)
            text, (usage, cost) = stopped, _billed(usage, cost, kept, self._card)
        cap = request.max_tokens
        if cap is not None and usage.output_tokens > cap:
            usage, cost = _billed(usage, cost, cap, self._card)
            return Completion(
                first_tokens(text, cap), usage, cost_usd=cost, finish_reason="length"
            )
        return Completion(text, usage, cost_usd=cost)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        done = await self.complete(request)
        words = done.text.split(" ")
        for start in range(0, len(words), _WORDS_PER_DELTA):
            piece = " ".join(words[start : start + _WORDS_PER_DELTA])
            yield StreamDelta(text=piece if start == 0 else " " + piece)
        yield StreamDelta(finish_reason=done.finish_reason, usage=done.usage)

    async def aclose(self) -> None:
        return None


_WORDS_PER_DELTA = 4


def _at_stop(text: str, stops: Sequence[str]) -> str | None:
    """``text`` up to its first stop string, or None when it holds none."""
    ends = [i for i in (text.find(stop) for stop in stops if stop) if i >= 0]
    return text[: min(ends)] if ends else None


def _shown(value: object) -> str:
    return json.dumps(value) if isinstance(value, dict) else repr(value)


def _billed(
    usage: Usage, cost_usd: float, kept: int, card: ModelCard
) -> tuple[Usage, float]:
    """The usage and cost of a recorded answer of which ``kept`` output tokens
    are returned: its prompt in full, its reply pro rata."""
    if usage.output_tokens <= kept:
        return usage, cost_usd
    prompt_usd = min(card.cost(usage.input_tokens, 0), cost_usd)
    reply_usd = (cost_usd - prompt_usd) * kept / usage.output_tokens
    return Usage(usage.input_tokens, kept), prompt_usd + reply_usd
