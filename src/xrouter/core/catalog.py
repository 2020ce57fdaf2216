"""Model cards and the catalog that names and prices every model xrouter can route to.

A :class:`ModelCard` says how to call one model (provider, route) and what it costs (USD
per 1M input and output tokens, with where and when that price was published). Cards
ship as YAML lists of mappings in ``core/cards/``; user YAML files passed to
:func:`load_catalog` add cards, or replace a card of the same id as a whole (a later
file wins). Nothing is read at import time; shipped cards are parsed once, on first use.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from xrouter.core.errors import CatalogError

__all__ = [
    "CAPABILITIES",
    "SHIPPED_CARDS_DIR",
    "TIERS",
    "Capability",
    "Catalog",
    "ModelCard",
    "Tier",
    "load_catalog",
    "read_cards",
]

Tier = Literal["budget", "standard", "premium", "specialized", "local"]
Capability = Literal[
    "chat", "reasoning", "code", "math", "tools", "vision", "long-context"
]
TIERS: Final[tuple[str, ...]] = get_args(Tier)
CAPABILITIES: Final[tuple[str, ...]] = get_args(Capability)
SHIPPED_CARDS_DIR: Final[Path] = Path(__file__).with_name("cards")

_LONG_CONTEXT: Final = 128_000
_HOW_TO_ADD: Final = (
    "To use a model the catalog lacks, write a card for it in a YAML file of your "
    f"own (a list of cards with the fields of the shipped {SHIPPED_CARDS_DIR}/*.yaml) "
    "and pass the file with --catalog PATH (CLI), list it under catalog: in the "
    "gateway's pool file, or call load_catalog(extra=[path])."
)

# USD per 1M tokens; the dearest published price is a few hundred, so a price
# above this is a slip (a price per token, a misplaced exponent).
_MAX_PRICE = 10_000.0
_Price = Annotated[float, Field(ge=0, le=_MAX_PRICE, strict=True, allow_inf_nan=False)]
_Url = Annotated[str, Field(pattern=r"^https?://\S+$")]
_EnvVar = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")]
_Text = Annotated[str, Field(min_length=1, pattern=r"^[^\n]*$")]


class ModelCard(BaseModel):
    """One callable model: how to reach it and what a token of it costs."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    id: str = Field(
        pattern=r"^\S+$",
        description="Canonical id, unique in a catalog, e.g. 'gpt-4o-mini-2024-07-18'.",
    )
    aliases: tuple[str, ...] = Field(
        default=(),
        description="Other names of this model in data sources or APIs, e.g. "
        "RouterBench's 'mistralai/mixtral-8x7b-chat'; each resolves to this card.",
    )
    provider: str = Field(
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
        description="Who serves it: 'openai', 'anthropic', a host of open models such "
        "as 'together', 'self-hosted' (no public host) or 'local' (in-process).",
    )
    route: _Text = Field(description="Model name the provider's API expects.")
    input_per_mtok: _Price = Field(description="USD per 1M input (prompt) tokens.")
    output_per_mtok: _Price = Field(description="USD per 1M output tokens.")
    context_window: int = Field(
        gt=0, strict=True, description="Most tokens (prompt plus output) per call."
    )
    tier: Tier = Field(description=f"Price and strength class, one of {TIERS}.")
    capabilities: tuple[Capability, ...] = Field(
        default=("chat",), description=f"What it is good for, from {CAPABILITIES}."
    )
    description: _Text = Field(description="One line about the model.")
    price_source: _Text = Field(description="Where the price was published.")
    price_date: dt.date = Field(description="ISO date the price was published/seen.")
    base_url: _Url | None = Field(None, description="OpenAI-compatible endpoint URL.")
    api_key_env: _EnvVar | None = Field(
        None, description="Environment variable holding the key for base_url."
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelCard:
        lists: dict[str, tuple[str, ...]] = {
            "aliases": self.names,
            "capabilities": self.capabilities,
        }
        for field, items in lists.items():
            repeated = sorted({item for item in items if items.count(item) > 1})
            if repeated:
                raise ValueError(f"{field} repeat {', '.join(map(repr, repeated))}")
        if "long-context" in self.capabilities and self.context_window < _LONG_CONTEXT:
            raise ValueError(f"'long-context' needs context_window >= {_LONG_CONTEXT}")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """The id followed by the aliases."""
        return (self.id, *self.aliases)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD charged for one call with these token counts."""
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError(
                f"token counts must be >= 0, got {input_tokens} and {output_tokens}"
            )
        return (
            input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok
        ) / 1_000_000


_Entry = tuple[ModelCard, str]  # a card and where it was defined ("file:line")


class Catalog:
    """An immutable set of model cards, looked up by id or alias."""

    __slots__ = ("_cards", "_index", "_origins")

    def __init__(self, cards: Iterable[ModelCard] = ()) -> None:
        self._cards: dict[str, ModelCard] = {}
        self._origins: dict[str, str] = {}  # id -> "file:line" (or "<code>")
        self._index: dict[str, str] = {}  # id or alias -> id
        for card in cards:
            self._add(card, "<code>")

    @classmethod
    def _of(cls, entries: Iterable[_Entry]) -> Catalog:
        catalog = cls()
        for card, origin in entries:
            catalog._add(card, origin)
        return catalog

    def _add(self, card: ModelCard, origin: str) -> None:
        if card.id in self._cards:
            raise CatalogError(
                f"{origin}: duplicate card id {card.id!r} (first defined at "
                f"{self._origins[card.id]}). An id may appear once per file; to "
                "override a card, put the new version in a user YAML file passed "
                "with --catalog FILE."
            )
        for name in card.names:
            owner = self._index.get(name)
            if owner is not None:
                raise CatalogError(
                    f"{origin}: card {card.id!r} uses the name {name!r}, which already "
                    f"names card {owner!r} ({self._origins[owner]}). A name may point "
                    "to one card only: remove it from one of the two cards, or "
                    f"override card {owner!r} (same id) in your file."
                )
        for name in card.names:
            self._index[name] = card.id
        self._cards[card.id] = card
        self._origins[card.id] = origin

    def resolve(self, name: str) -> str:
        """The canonical id of the card that ``name`` (an id or alias) names."""
        card_id = self._index.get(name)
        if card_id is None:
            raise CatalogError(self._unknown(name))
        return card_id

    def get(self, name: str) -> ModelCard:
        """The card named ``name`` (an id or alias); CatalogError if none is."""
        return self._cards[self.resolve(name)]

    def origin(self, name: str) -> str:
        """Where the card named ``name`` was defined, as 'file:line'."""
        return self._origins[self.resolve(name)]

    def ids(self) -> tuple[str, ...]:
        """Canonical ids, in the order the cards were loaded."""
        return tuple(self._cards)

    def merged(self, other: Catalog) -> Catalog:
        """This catalog with ``other``'s cards added, replacing cards of equal id."""
        kept = [(c, self._origins[c.id]) for c in self if c.id not in other._cards]
        return Catalog._of([*kept, *((c, other._origins[c.id]) for c in other)])

    def _unknown(self, name: str) -> str:
        by_folded: dict[str, str] = {}
        for known in self._index:
            by_folded.setdefault(known.casefold(), known)
        close = difflib.get_close_matches(name.casefold(), list(by_folded), n=3)
        hint = (
            "Did you mean " + ", ".join(repr(by_folded[c]) for c in close) + "?"
            if close
            else "No similar name is known."
        )
        return f"unknown model {name!r}. {hint} {_HOW_TO_ADD}"

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._index

    def __iter__(self) -> Iterator[ModelCard]:
        return iter(self._cards.values())

    def __len__(self) -> int:
        return len(self._cards)

    def __repr__(self) -> str:
        return f"<Catalog of {len(self._cards)} model cards>"


def _compose(path: Path) -> tuple[yaml.Node | None, Any]:
    """The YAML node tree of ``path`` (for line numbers) and its Python value."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(
            f"{path}: cannot read this card file ({exc}). Check the path given to "
            "--catalog or under catalog: in a pool file; card files are UTF-8 YAML."
        ) from exc
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_repeated_fields(path, node)
        return node, loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise CatalogError(
            f"{where}: invalid YAML ({problem}). Fix the syntax: a card file is a "
            "YAML list of mappings, one '- id: ...' entry per card."
        ) from exc
    finally:
        loader.dispose()


def _check_repeated_fields(path: Path, root: yaml.Node) -> None:
    """Refuse a card that gives a field twice (YAML would keep the last silently)."""
    cards = root.value if isinstance(root, yaml.SequenceNode) else []
    for card in cards:
        if not isinstance(card, yaml.MappingNode):
            continue
        seen: set[object] = set()
        for key, _ in card.value:
            if key.value in seen and key.value != "<<":
                raise CatalogError(
                    f"{path}:{key.start_mark.line + 1}: field {key.value!r} is given "
                    "twice in one card. Keep one of the two lines."
                )
            seen.add(key.value)


def _describe(error: ErrorDetails) -> str:
    field = ".".join(str(part) for part in error["loc"])
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "missing":
        return f"missing field {field!r}"
    if kind == "extra_forbidden":
        return f"unknown field {field!r}"
    if kind == "value_error" and not field:
        return str(ctx.get("error", error["msg"]))
    if kind == "greater_than_equal":
        return f"{field} must be >= {ctx['ge']:g}, got {error['input']!r}"
    if kind == "less_than_equal":
        return f"{field} must be <= {ctx['le']:g}, got {error['input']!r}"
    found = error["input"]
    if isinstance(found, str) and _is_number(found):
        # YAML takes 1e300 (no dot, no sign in the exponent) for text.
        return (
            f"{field}: a number written as text, got {found!r}; write it with a "
            "decimal point and a signed exponent (1.5e-3 as 1.5e-03, 1e3 as 1.0e+3)"
        )
    return f"{field}: {error['msg']}, got {found!r}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _required_fields() -> list[str]:
    return [name for name, info in ModelCard.model_fields.items() if info.is_required()]


def _card(
    path: Path, line: int, node: yaml.Node, value: object, base: Catalog | None
) -> ModelCard:
    where = f"{path}:{line}"
    if not isinstance(value, dict) or not isinstance(node, yaml.MappingNode):
        raise CatalogError(
            f"{where}: expected a card (a mapping of fields), got "
            f"{type(value).__name__}. Each list entry must look like '- id: ...'."
        )
    card_id = value.get("id")
    partial = not set(_required_fields()) <= set(value)
    if partial and base is not None and isinstance(card_id, str) and card_id in base:
        value = _over(base.get(card_id), value, where)
        card_id = value["id"]
    label = f"card {card_id!r}" if isinstance(card_id, str) else "card without an id"
    try:
        return ModelCard.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise CatalogError(
            f"{where}: {label} is invalid: {problems}. Every card needs "
            f"{', '.join(_required_fields())}; prices are USD per 1M tokens, from "
            f"0 to {_MAX_PRICE:,.0f}."
        ) from exc


def _over(card: ModelCard, fields: dict[str, Any], where: str) -> dict[str, Any]:
    """The fields of ``card`` with ``fields`` laid over them: an entry naming a
    known card (by id or alias) need give only what it changes (a whole card
    replaces it). New prices without a source of their own are sourced to the
    entry."""
    merged = card.model_dump(mode="json") | fields | {"id": card.id}
    repriced = {"input_per_mtok", "output_per_mtok"} & set(fields)
    if repriced and "price_source" not in fields:
        merged["price_source"] = f"override at {where}"
    if repriced and "price_date" not in fields:
        merged["price_date"] = dt.date.today().isoformat()
    return merged


def _read_entries(path: Path, base: Catalog | None = None) -> list[_Entry]:
    node, data = _compose(path)
    if data is None:
        return []
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        raise CatalogError(
            f"{path}: expected a YAML list of model cards, got {type(data).__name__}. "
            f"Start each card with '- id: ...'; see {SHIPPED_CARDS_DIR} for examples."
        )
    entries: list[_Entry] = []
    for item_node, value in zip(node.value, data, strict=True):
        line = item_node.start_mark.line + 1
        card = _card(path, line, item_node, value, base)
        entries.append((card, f"{path}:{line}"))
    return entries


def read_cards(path: Path) -> tuple[ModelCard, ...]:
    """The cards of one YAML file, checked (ids and names unique within it)."""
    return tuple(Catalog._of(_read_entries(path)))


@functools.cache
def _shipped_catalog() -> Catalog:
    files = sorted(SHIPPED_CARDS_DIR.glob("*.yaml"))
    if not files:
        raise CatalogError(
            f"no model cards found in {SHIPPED_CARDS_DIR}: this xrouter installation "
            "is incomplete. Reinstall the package."
        )
    return Catalog._of(entry for path in files for entry in _read_entries(path))


def load_catalog(extra: Sequence[Path] = ()) -> Catalog:
    """The shipped cards, then each file of ``extra`` adding cards or replacing
    them by id; an entry that names a card already loaded (by id or alias) but
    lacks fields a card needs gives only what it changes, such as its prices."""
    if isinstance(extra, str | Path):
        extra = (Path(extra),)
    catalog = _shipped_catalog()
    for path in extra:
        catalog = catalog.merged(Catalog._of(_read_entries(Path(path), catalog)))
    return catalog
