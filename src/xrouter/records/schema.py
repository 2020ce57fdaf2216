"""Columnar schemas of the records store: benchmark items and model records.

An *item* is one benchmark prompt with its gold answer. A *record* is what one model
answered to one item: its response (where the source kept it), its score, its usage
and cost, and where each of those came from:

- ``score_origin``: ``source`` when the source recorded the verdict, ``verifier``
  when xrouter's own verifier judged the response;
- ``usage_origin``: ``recorded`` when the source logged token counts, ``counted``
  when xrouter counted the response text with a real tokenizer, ``estimated`` when
  there was no text to count and a fixed per-task length was assumed;
- ``cost_origin``: ``recorded`` when the source logged the USD charged, otherwise
  ``estimated`` (usage times the model card's price).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import pyarrow as pa

from xrouter.core.types import Message, Role

__all__ = [
    "ITEM_SCHEMA",
    "RECORD_SCHEMA",
    "CostOrigin",
    "Item",
    "Record",
    "ScoreOrigin",
    "UsageOrigin",
    "items_to_table",
    "records_to_table",
]

ScoreOrigin = Literal["source", "verifier"]
UsageOrigin = Literal["recorded", "counted", "estimated"]
CostOrigin = Literal["recorded", "estimated"]

ITEM_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("verifier", pa.string()),
        pa.field("messages", pa.string(), nullable=False),
        pa.field("gold", pa.string()),
        pa.field("meta", pa.string()),
    ]
)

_RECORD_FIELDS: list[pa.Field[Any]] = [
    pa.field("item_id", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("response", pa.string()),
    pa.field("extracted", pa.string()),
    pa.field("score", pa.float64(), nullable=False),
    pa.field("score_origin", pa.string(), nullable=False),
    pa.field("input_tokens", pa.int64(), nullable=False),
    pa.field("output_tokens", pa.int64(), nullable=False),
    pa.field("usage_origin", pa.string(), nullable=False),
    pa.field("cost_usd", pa.float64(), nullable=False),
    pa.field("cost_origin", pa.string(), nullable=False),
]
RECORD_SCHEMA = pa.schema(_RECORD_FIELDS)


@dataclass(frozen=True)
class Item:
    """One benchmark prompt with its gold answer.

    ``messages`` is the prompt as sent (OpenAI chat format); ``verifier`` names the
    answer checker for the task, None when the source's own scores are the only
    verdicts available.
    """

    item_id: str
    source: str
    task: str
    messages: tuple[tuple[str, str], ...]
    gold: str | None = None
    verifier: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def chat(self) -> tuple[Message, ...]:
        """The prompt as the chat messages a model is sent."""
        return tuple(Message(cast(Role, role), text) for role, text in self.messages)

    @property
    def prompt(self) -> str:
        """The last user message: what routing embeds and shows."""
        for role, content in reversed(self.messages):
            if role == "user":
                return content
        return self.messages[-1][1]


@dataclass(frozen=True)
class Record:
    """What one model answered to one item, and what it cost."""

    item_id: str
    model: str
    score: float
    score_origin: ScoreOrigin
    input_tokens: int
    output_tokens: int
    usage_origin: UsageOrigin
    cost_usd: float
    cost_origin: CostOrigin
    response: str | None = None
    extracted: str | None = None

    def __post_init__(self) -> None:
        """Refuse figures no real record can have (a reader turns the ValueError
        into an error naming the source file)."""
        where = f"the record of {self.model} on {self.item_id}"
        if not 0 <= self.score <= 1:  # NaN fails too
            raise ValueError(f"{where} has score {self.score!r}, not in [0, 1]")
        if not 0 <= self.cost_usd < math.inf:
            raise ValueError(
                f"{where} has cost {self.cost_usd!r} USD, not a finite number >= 0"
            )
        if min(self.input_tokens, self.output_tokens) < 0:
            raise ValueError(
                f"{where} has negative token counts ({self.input_tokens} in, "
                f"{self.output_tokens} out)"
            )


def items_to_table(items: list[Item]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "item_id": it.item_id,
                "source": it.source,
                "task": it.task,
                "verifier": it.verifier,
                "messages": json.dumps([[r, text(c)] for r, c in it.messages]),
                "gold": it.gold,
                "meta": json.dumps(it.meta) if it.meta else None,
            }
            for it in items
        ],
        schema=ITEM_SCHEMA,
    )


def records_to_table(records: list[Record]) -> pa.Table:
    names = RECORD_SCHEMA.names
    rows = [{name: getattr(rec, name) for name in names} for rec in records]
    for row in rows:
        for key in ("response", "extracted"):
            if row[key] is not None:
                row[key] = text(row[key])
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


def text(value: str) -> str:
    """``value`` with any lone surrogate (half of a UTF-16 pair, which no UTF-8
    text can hold; some sources escape one in their JSON) made U+FFFD."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def item_from_row(row: dict[str, Any]) -> Item:
    """Rebuild an ``Item`` from one row of the items table."""
    return Item(
        item_id=row["item_id"],
        source=row["source"],
        task=row["task"],
        messages=tuple((m[0], m[1]) for m in json.loads(row["messages"])),
        gold=row["gold"],
        verifier=row["verifier"],
        meta=json.loads(row["meta"]) if row["meta"] else {},
    )
