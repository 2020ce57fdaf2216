"""The router's tools: their names, their OpenAI schemas, its system prompt, and
how the calls' outcomes read back to it (:func:`tool_results`).

A router (a language model) reaches pool model ``m`` through a tool named
``call_<m>`` and ends an episode early with ``select_response``, which returns an
earlier call's response verbatim. Tool names must match OpenAI's
``^[a-zA-Z0-9_-]{1,64}$``, so every character of a model id outside ``[A-Za-z0-9_]``
becomes ``_``; :class:`ToolNames` checks that no two models of a pool end up with one
name and maps names back to models, tolerating the small mistakes small routers make.

Arguments are checked by :func:`validate_arguments` (``call_<model>``) and
:func:`validate_select`, which return typed arguments or a one-line message for the
router to read and correct itself from. They are lenient where a router's meaning is
unambiguous: ``system`` and ``prompt`` stand for ``system_prompt`` (precedence
``system_prompt``, ``system``, ``prompt``; the others are then ignored), numbers may
arrive as numeric strings, ``max_tokens`` may be a whole float such as ``200.0``,
``call_id`` may be an integer, ``null`` means "not given", unknown keys are ignored.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from xrouter.core.catalog import ModelCard
from xrouter.core.errors import ConfigError
from xrouter.core.types import CallRecord

__all__ = [
    "CALL_PREFIX",
    "MAX_TOOL_NAME_LENGTH",
    "SELECT_TOOL",
    "CallArguments",
    "SelectArguments",
    "ToolNames",
    "is_select",
    "router_system_prompt",
    "tool_name",
    "tool_results",
    "tool_schemas",
    "validate_arguments",
    "validate_select",
]

CALL_PREFIX: Final = "call_"
SELECT_TOOL: Final = "select_response"
MAX_TOOL_NAME_LENGTH: Final = 64
SYSTEM_PROMPT_ALIASES: Final = ("system_prompt", "system", "prompt")
MAX_TEMPERATURE: Final = 2.0

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
# OpenAI's own namespace for functions; routers trained on its traces write it.
_NAMESPACE = "functions."


def tool_name(model_id: str) -> str:
    """``call_`` plus ``model_id`` with each character outside [A-Za-z0-9_] as ``_``."""
    if not model_id:
        raise ConfigError("a model id must not be empty; give the card an id.")
    name = CALL_PREFIX + _UNSAFE.sub("_", model_id)
    if len(name) > MAX_TOOL_NAME_LENGTH:
        limit = MAX_TOOL_NAME_LENGTH - len(CALL_PREFIX)
        raise ConfigError(
            f"model id {model_id!r} gives the tool name {name!r} of {len(name)} "
            f"characters; OpenAI allows at most {MAX_TOOL_NAME_LENGTH}. Give the "
            f"model a card of your own with an id of at most {limit} characters."
        )
    return name


class ToolNames:
    """The tool name of each model of a pool, and the model behind each name.

    Reading a name the router wrote (:meth:`model_of`) accepts, in this order: the
    exact tool name; the exact model id; then, ignoring case and an OpenAI-style
    ``functions.`` prefix, the tool name, the model id, ``call_`` plus the id, or the
    tool name without ``call_``. A loose match that fits two models matches none.
    """

    __slots__ = ("_by_model", "_by_name", "_loose")

    def __init__(self, model_ids: Iterable[str]) -> None:
        self._by_model: dict[str, str] = {}
        self._by_name: dict[str, str] = {}
        for model in model_ids:
            if model in self._by_model:
                raise ConfigError(
                    f"model {model!r} is in the pool twice; list each model once."
                )
            name = tool_name(model)
            other = self._by_name.get(name)
            if other is not None:
                raise ConfigError(
                    f"models {other!r} and {model!r} both get the tool name {name!r} "
                    "(characters outside A-Z, a-z, 0-9 and _ become _), so a router "
                    "could not tell them apart. Drop one of them from the pool or "
                    "give one a card of your own with another id."
                )
            self._by_model[model] = name
            self._by_name[name] = model

        self._loose: dict[str, set[str]] = {}
        for model, name in self._by_model.items():
            for key in (name, model, CALL_PREFIX + model, name[len(CALL_PREFIX) :]):
                self._loose.setdefault(key.casefold(), set()).add(model)

    @property
    def models(self) -> tuple[str, ...]:
        """The pool's model ids, in the order given."""
        return tuple(self._by_model)

    @property
    def names(self) -> tuple[str, ...]:
        """The tool names, in the order of :attr:`models`."""
        return tuple(self._by_model.values())

    def name_of(self, model_id: str) -> str:
        """The tool name of a pool model; ConfigError for a model outside the pool."""
        name = self._by_model.get(model_id)
        if name is None:
            raise ConfigError(
                f"model {model_id!r} is not in this pool; its models are "
                f"{', '.join(self._by_model)}."
            )
        return name

    def model_of(self, name: str) -> str | None:
        """The pool model a router-written tool name means, or None if unclear."""
        key = name.strip()
        if key in self._by_name:
            return self._by_name[key]
        if key in self._by_model:
            return key
        folded = key.casefold().removeprefix(_NAMESPACE)
        found = self._loose.get(folded, set())
        return next(iter(found)) if len(found) == 1 else None

    def __len__(self) -> int:
        return len(self._by_model)

    def __repr__(self) -> str:
        return f"<ToolNames of {len(self)} models>"


@dataclass(frozen=True)
class CallArguments:
    """Checked arguments of a ``call_<model>`` tool."""

    system_prompt: str
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class SelectArguments:
    """Checked arguments of ``select_response``."""

    call_id: str


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: object) -> float | None:
    """A finite number from a number or a numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def is_select(name: str) -> bool:
    """Whether a router-written tool name means ``select_response`` (any case)."""
    return name.strip().casefold().removeprefix(_NAMESPACE) == SELECT_TOOL


def validate_arguments(name: str, arguments: Mapping[str, Any]) -> CallArguments | str:
    """Checked arguments of the ``call_<model>`` tool ``name``, or what to fix.

    Which model ``name`` means is :meth:`ToolNames.model_of`'s job; ``name`` only
    heads the message. ``select_response`` is checked by :func:`validate_select`.
    """
    if not isinstance(arguments, Mapping):
        return f"{name}: arguments must be a JSON object, got {_shown(arguments)}"
    problems: list[str] = []
    given = [key for key in SYSTEM_PROMPT_ALIASES if arguments.get(key) is not None]
    system_prompt = arguments[given[0]] if given else None
    if system_prompt is None:
        problems.append("system_prompt is required: write the model's system prompt")
    elif not isinstance(system_prompt, str):
        # An empty string is allowed: the model then gets the conversation as is.
        shown = _shown(system_prompt)
        problems.append(f"{given[0]} must be a string, got {shown}")

    temperature = arguments.get("temperature")
    if temperature is not None:
        number = _number(temperature)
        if number is None or not 0 <= number <= MAX_TEMPERATURE:
            shown = _shown(temperature)
            problems.append(f"temperature must be a number from 0 to 2, got {shown}")
        temperature = number

    max_tokens = arguments.get("max_tokens")
    if max_tokens is not None:
        number = _number(max_tokens)
        if number is None or number < 1 or not number.is_integer():
            shown = _shown(max_tokens)
            problems.append(f"max_tokens must be a whole number >= 1, got {shown}")
        max_tokens = None if number is None else int(number)

    if problems:
        return f"{name}: {'; '.join(problems)}"
    return CallArguments(str(system_prompt), temperature, max_tokens)


def validate_select(arguments: Mapping[str, Any]) -> SelectArguments | str:
    """Checked arguments of ``select_response``, or what to fix."""
    call_id = arguments.get("call_id") if isinstance(arguments, Mapping) else None
    if isinstance(call_id, int) and not isinstance(call_id, bool):
        call_id = str(call_id)
    if not isinstance(arguments, Mapping):
        problem = f"arguments must be a JSON object, got {_shown(arguments)}"
    elif call_id is None:
        problem = "call_id is required: the id of an earlier call"
    elif not isinstance(call_id, str) or not call_id.strip():
        problem = f"call_id must be a non-empty string, got {_shown(call_id)}"
    else:
        return SelectArguments(call_id.strip())
    return f"{SELECT_TOOL}: {problem}"


def _usd(price: float) -> str:
    """A price with cents, and more digits only where the price has them."""
    return f"{price:.2f}" if round(price, 2) == price else f"{price:g}"


def _context(tokens: int) -> str:
    if tokens >= 1_000_000:
        return f"{round(tokens / 1e6, 1):g}M"
    return f"{round(tokens / 1e3):g}K"


_CALL_PARAMETERS: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "system_prompt": {
            "type": "string",
            "description": "The system prompt you write for this model: its role, "
            "how to approach the task and how to format the answer. The user's "
            "messages follow it.",
        },
        "temperature": {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_TEMPERATURE,
            "description": "Sampling temperature, 0 to 2; the model's default if "
            "left out.",
        },
        "max_tokens": {
            "type": "integer",
            "minimum": 1,
            "description": "Most output tokens; the model's own limit if left out.",
        },
    },
    "required": ["system_prompt"],
    "additionalProperties": False,
}

_SELECT_SCHEMA: Final[dict[str, Any]] = {
    "type": "function",
    "function": {
        "name": SELECT_TOOL,
        "description": "Return the response of an earlier call verbatim as the "
        "final answer. This ends the request.",
        "parameters": {
            "type": "object",
            "properties": {
                "call_id": {
                    "type": "string",
                    "description": "The id of the earlier call whose response to "
                    "return, as shown with that response.",
                }
            },
            "required": ["call_id"],
            "additionalProperties": False,
        },
    },
}


def _card_text(card: ModelCard) -> str:
    return (
        f"Send the task to {card.id}: {card.description} Price: "
        f"${_usd(card.input_per_mtok)} per 1M input tokens, "
        f"${_usd(card.output_per_mtok)} per 1M output tokens. Context window: "
        f"{card.context_window:,} tokens. Tier: {card.tier}. Capabilities: "
        f"{', '.join(card.capabilities)}."
    )


def tool_schemas(cards: Sequence[ModelCard]) -> list[dict[str, Any]]:
    """OpenAI function-tool schemas: one ``call_<model>`` per card, then select."""
    names = ToolNames(card.id for card in cards)
    schemas: list[dict[str, Any]] = [
        {
            "type": "function",
            "function": {
                "name": names.name_of(card.id),
                "description": _card_text(card),
                "parameters": copy.deepcopy(_CALL_PARAMETERS),
            },
        }
        for card in cards
    ]
    return [*schemas, copy.deepcopy(_SELECT_SCHEMA)]


def _cost_sentence(cards: Sequence[ModelCard], lam: float) -> str:
    if not math.isfinite(lam) or lam < 0:
        raise ConfigError(f"lam (lambda, the cost weight) must be >= 0, got {lam!r}")
    if lam == 0:
        return "Cost does not matter here: only a correct answer counts."
    priciest = max(cards, key=lambda card: card.cost(1000, 1000))
    usd = priciest.cost(1000, 1000)
    return (
        f"Cost weight lambda={lam:g}: each USD spent takes {lam:g} off the score of a "
        f"correct answer (1K tokens in and out of {priciest.id} cost "
        f"${usd:.4f}, -{lam * usd:.4f})."
    )


def _tool_line(name: str, card: ModelCard, lam: float | None) -> str:
    # Context is shown as a number and every model chats; tools and vision do not
    # bear on text tasks. The description is cut to its head, the model's name.
    # With a cost weight, what a call of 1K tokens in and out takes off the score
    # comes first: the trade-off the router weighs, read off rather than worked
    # out from the prices.
    strengths = [c for c in card.capabilities if c in ("reasoning", "code", "math")]
    about = re.split(r";|,| \(", card.description)[0].rstrip(".")
    penalty = f" -{lam * card.cost(1000, 1000):.4f}" if lam else ""
    return (
        f"{name}{penalty} ${_usd(card.input_per_mtok)}/${_usd(card.output_per_mtok)} "
        f"{_context(card.context_window)} {card.tier}"
        f"{' ' + ','.join(strengths) if strengths else ''}: {about}"
    )


def router_system_prompt(
    cards: Sequence[ModelCard], *, lam: float | None = None, tools_text: bool = True
) -> str:
    """The router's rules, how to call a tool and, with ``tools_text``, the tools.

    Small local routers have no native tool support and a slow prompt, so the tools
    are listed here one line each (name, $ per 1M input/output tokens, context
    window, tier, strengths, what the model is) rather than as JSON schemas.
    """
    if not cards:
        raise ConfigError("a router needs a pool of at least one model card.")
    names = ToolNames(card.id for card in cards)
    cheapest = min(cards, key=lambda card: card.cost(1000, 1000))
    lines = [
        "You route requests to language models. If the request is easy for you, "
        "answer it yourself. Otherwise call one or more pool models; calls cost "
        "money. If two models would both do, call the cheaper one. A call sends "
        "the user's messages after a system prompt you write. Each response comes "
        "back with its call id. Then either return one response verbatim with "
        "select_response, or write the final answer yourself from the responses.",
    ]
    lines += [
        "Call tools like this, one call per line:",
        f'<tool_call>{{"name": "{names.name_of(cheapest.id)}", "arguments": '
        '{"system_prompt": "Solve step by step. End with the answer."}}</tool_call>',
        f'<tool_call>{{"name": "{SELECT_TOOL}", "arguments": {{"call_id": "c1"}}}}'
        "</tool_call>",
    ]
    if tools_text:
        costs = "score a call of 1K tokens in and out costs at this lambda, "
        prices = "$ per 1M input/output tokens, context, tier"
        lines.append(f"Tools ({costs if lam else ''}{prices}):")
        lines += [_tool_line(names.name_of(card.id), card, lam) for card in cards]
        lines += [
            "Each call_ tool takes system_prompt (string, required), temperature "
            "(0 to 2) and max_tokens (integer).",
            f"{SELECT_TOOL} takes call_id (string, required).",
        ]
    if lam is not None:
        # Last, nearest the router's choice, which it should weigh most.
        lines.append(_cost_sentence(cards, lam))
    return "\n".join(lines)


# A response shown back to the router is cut to this many characters.
_SHOWN_CHARS = 6000


def tool_results(records: Sequence[CallRecord], feedback: Sequence[str]) -> str:
    """The calls' outcomes, and the tool errors of the turn, as the router reads
    them next turn."""
    parts = []
    for rec in records:
        head = f'<tool_response call_id="{rec.call_id}" model="{rec.model}"'
        if rec.error is None:
            body = (rec.response or "")[:_SHOWN_CHARS]
            head += f' cost_usd="{rec.cost_usd:.6f}"'
        else:
            body = f"error: {rec.error}"
        parts.append(f"{head}>\n{body}\n</tool_response>")
    parts.extend(f"<tool_error>{text}</tool_error>" for text in feedback)
    return "\n".join(parts)
