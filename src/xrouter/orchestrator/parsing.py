"""Reading tool calls out of a router's free text.

Small routers have no native tool calling, so they write calls into the message in
whatever form their training used. :func:`parse_tool_calls` returns the calls, an
error for each fragment meant as a call that cannot be read (to show the router), and
the rest of the text; it never raises. Calls are read, any number in any mix, from
``<tool_call>`` tags (the closing tag may be missing), fenced blocks (a fence with no
call stays in the text: code in an answer is safe), bare JSON objects and arrays, and
pythonic calls on a line of their own or in a list anywhere.

A call is ``{"name": N, "arguments": {...}}`` (or any of ``_NAME_KEYS`` and
``_ARGUMENT_KEYS``), bare or wrapped as OpenAI does; arguments may be a JSON string
or, when N is a tool name (``call_...``, ``select_response``), the other keys. Any
spelling of ``select_response`` comes back exact. JSON that is no call is text.

Leniency, cheap and executing nothing: raw newlines in JSON strings; a fragment that
fails as JSON but looks like a call (a ``_MARKER`` directly inside) is read as a
Python literal with ``ast`` (single quotes, trailing commas, ``None``); a call lacking
only closing brackets at the end of the text is closed. Such a fragment that still
fails is an error; other unreadable brackets are text. One pass matches every bracket
and only fragments within ``_MAX_DEPTH`` levels are decoded: the work is linear.
"""

from __future__ import annotations

import ast
import json
import re
from bisect import bisect_left
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Final

from xrouter.orchestrator.tools import SELECT_TOOL, is_select

__all__ = ["ParsedTurn", "ToolCall", "parse_tool_calls"]

_MAX_DEPTH: Final = 32
_MAX_LEVEL: Final = 3  # tags and fences inside each other, at most
_DECODER: Final = json.JSONDecoder(strict=False)
_TAG_OPEN: Final = re.compile(r"(?i)<\s*tool_calls?\s*>")
_TAG_CLOSE: Final = re.compile(r"(?i)<\s*/\s*tool_calls?\s*>")
_STRAY: Final = re.compile(
    r"(?i)<\s*/\s*tool_calls?\s*>|\[TOOL_CALLS]|<\|python_tag\|>"
)
_FENCE_OPEN: Final = re.compile(r"```[ \t]*([\w.+-]*)[ \t]*\n?")
_TOOL_FENCES: Final = frozenset({"", "json", "tool_call", "tool_calls", "tool_code"})
_PY_CALL: Final = re.compile(r"(?im)^[ \t]*((?:call_\w+|select_response)[ \t]*)\(")
_MARKER: Final = re.compile(  # a tool name or a key only tool calls have
    r"(?i)(?<!\w)(?:call_\w+|select_response)(?!\w)"
    r"|[\"'](?:arguments|parameters|function|tool_calls)[\"']\s*:"
)
_SPACE: Final = re.compile(r"\s*")
_CLOSER: Final = {"{": "}", "[": "]", "(": ")"}
_OPENER: Final = {"}": "{", "]": "[", ")": "("}
_NAME_KEYS: Final = ("name", "function", "tool", "tool_name")
_ARGUMENT_KEYS: Final = ("arguments", "parameters", "args", "input")
_JSON_NAMES: Final[dict[str, Any]] = {"true": True, "false": False, "null": None}


@dataclass(frozen=True)
class ToolCall:
    """One call as the router wrote it; ``raw`` is the text it was cut from."""

    name: str
    arguments: dict[str, Any] = field(hash=False)
    raw: str


@dataclass(frozen=True)
class ParsedTurn:
    """The calls of one router message, the unreadable would-be calls, the rest."""

    calls: tuple[ToolCall, ...]
    errors: tuple[str, ...]
    text: str


class _UnreadableError(Exception):
    """Why a fragment meant as a call cannot be read (the message is the reason)."""


_Item = tuple[str, dict[str, Any]] | str  # a call (name, arguments), or why not


def _snippet(raw: str) -> str:
    flat = " ".join(raw[:200].split())
    return flat if len(flat) <= 60 else flat[:57] + "..."


def _decode(fragment: str) -> tuple[Any, int]:
    """The JSON value a fragment starts with, and where it ends.

    Decoding a slice rather than the whole text at an offset keeps a failure cheap:
    the decoder's error counts the lines before the failing position.
    """
    return _DECODER.raw_decode(fragment)


def _skip_space(text: str, k: int, stop: int) -> int:
    found = _SPACE.match(text, k, stop)
    return found.end() if found else k


class _Brackets:
    """Where each bracket of a text closes, and the markers directly inside it.

    Quotes open strings only inside brackets where a value can start (after one of
    ``{[(,:=``), so prose apostrophes do not; an open ``'`` ends at a newline. A
    closer also cuts off the openers above its match; one with no match is text.
    """

    def __init__(self, text: str, call_parens: set[int]) -> None:
        self.end: dict[int, int] = {}  # opener -> after its closer, or where cut off
        self.closed: set[int] = set()
        self.depth: dict[int, int] = {}  # opener -> brackets around it
        self.height: dict[int, int] = {}  # opener -> levels of brackets inside it
        self.markers: dict[int, list[int]] = {}  # depth -> positions of markers
        marks = [m.start() for m in _MARKER.finditer(text)]
        stack: list[int] = []
        quote, prev, next_mark, i, n = "", "", 0, 0, len(text)
        while i < n:
            while next_mark < len(marks) and marks[next_mark] <= i:
                self.markers.setdefault(len(stack), []).append(marks[next_mark])
                next_mark += 1
            char = text[i]
            if quote and char == "\\":
                i += 2
                continue
            if quote:
                if char == quote or (quote == "'" and char == "\n"):
                    quote = ""
            elif char in "{[" or (char == "(" and (stack or i in call_parens)):
                self.depth[i], self.height[i] = len(stack), 0
                stack.append(i)
            elif char in _OPENER and stack:
                self._close(text, stack, i)
            elif char in "\"'" and stack and prev in "{[(,:=":
                quote = char
            prev = prev if char.isspace() else char
            i += 1
        self.open_at_end = stack[:]  # a cut-off end is repairable when it ends a value
        self.repairable = not quote and text.rstrip()[-1:] in ("}", "]", '"', "'")
        while stack:
            self._finish(stack, stack.pop(), n)

    def _finish(self, stack: list[int], opener: int, end: int) -> None:
        self.end[opener] = end
        if stack:
            parent = stack[-1]
            self.height[parent] = max(self.height[parent], self.height[opener] + 1)

    def _close(self, text: str, stack: list[int], at: int) -> None:
        match = len(stack) - 1
        while match >= 0 and text[stack[match]] != _OPENER[text[at]]:
            match -= 1
        if match >= 0:
            while len(stack) > match + 1:
                self._finish(stack, stack.pop(), at)
            self.closed.add(stack[-1])
            self._finish(stack, stack.pop(), at + 1)

    def looks_like_call(self, opener: int, text: str) -> bool:
        """Whether a marker lies directly inside (for a list, one level further)."""
        depth = self.depth[opener] + 1
        for level in (depth, depth + 1) if text[opener] == "[" else (depth,):
            marks = self.markers.get(level, [])
            k = bisect_left(marks, opener + 1)
            if k < len(marks) and marks[k] < self.end[opener]:
                return True
        return False

    def repair(self, opener: int, text: str, end: int) -> str | None:
        """The closers a fragment cut off by the end of the text lacks, if safe."""
        if end < len(text) or not self.repairable:
            return None
        inside = self.open_at_end[self.open_at_end.index(opener) :]
        return "".join(_CLOSER[text[k]] for k in reversed(inside))


class _JsonNames(ast.NodeTransformer):
    """Reads JSON's ``true``, ``false`` and ``null`` as Python's constants."""

    def visit_Name(self, node: ast.Name) -> ast.expr:
        return ast.Constant(_JSON_NAMES[node.id]) if node.id in _JSON_NAMES else node


def _pythonic(node: ast.expr) -> Any:
    """A literal's value; a call ``f(k=v)`` becomes its JSON form."""
    if not isinstance(node, ast.Call):
        return ast.literal_eval(node)
    named = {keyword.arg: keyword.value for keyword in node.keywords}
    if not isinstance(node.func, ast.Name) or node.args or None in named:
        raise _UnreadableError("write a call as name(argument=value, ...)")
    given = {str(k): ast.literal_eval(v) for k, v in named.items()}
    return {"name": node.func.id, "arguments": given}


def _read_literal(source: str) -> Any:
    """A Python literal (calls at the top or in a top list allowed), never run."""
    try:
        body = _JsonNames().visit(ast.parse(source.strip(), mode="eval").body)
        if isinstance(body, ast.List | ast.Tuple):
            return [_pythonic(item) for item in body.elts]
        return _pythonic(body)
    except SyntaxError as exc:
        raise _UnreadableError(f"invalid syntax ({exc.msg})") from None
    except (ValueError, TypeError, RecursionError, MemoryError):
        raise _UnreadableError("it holds a value that is not a literal") from None


def _call_of(obj: dict[Any, Any]) -> _Item | None:
    """The call an object means, why it cannot be one, or None if it means none."""
    function = obj.get("function")
    if isinstance(function, dict):
        inner = _call_of(function)
        return "'function' holds no 'name'" if inner is None else inner
    key = next((k for k in _NAME_KEYS if k in obj), "name")
    name = obj.get(key)
    if not isinstance(name, str):
        return None
    name = SELECT_TOOL if is_select(name) else name.strip()
    folded = name.casefold().removeprefix("functions.")
    tool_like = name == SELECT_TOOL or folded.startswith("call_")
    arguments_key = next((k for k in _ARGUMENT_KEYS if k in obj), None)
    if arguments_key is None:
        flat = {k: v for k, v in obj.items() if k not in (key, "type", "id")}
        return (name, flat) if tool_like else None

    arguments = obj[arguments_key]
    if isinstance(arguments, str):
        try:
            arguments = _DECODER.decode(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            return f"'{arguments_key}' is a string but not JSON" if tool_like else None
    arguments = {} if arguments is None else arguments
    if not isinstance(arguments, dict):
        kind = "array" if isinstance(arguments, list) else type(arguments).__name__
        return f"'{arguments_key}' must be an object, got {kind}" if tool_like else None
    return (name, arguments) if name else "the tool name is empty"


def _calls_of(value: object) -> list[_Item] | None:
    """The calls a decoded value holds, or None when it is not meant as a call."""
    if isinstance(value, dict):
        listed = value.get("tool_calls")
        if isinstance(listed, list):
            return _calls_of(listed)
        item = _call_of(value)
        return None if item is None else [item]
    found = [_calls_of(item) for item in value] if isinstance(value, list) else []
    if all(items is None for items in found):
        return None
    out: list[_Item] = []
    for k, items in enumerate(found, 1):
        out += [f"item {k} of the list is not a tool call"] if items is None else items
    return out


class _Reader:
    """Handles a text's events (tags, fences, stray marks, brackets) in order."""

    def __init__(self, text: str, level: int) -> None:
        self.text, self.level = text, level
        self.calls: list[ToolCall] = []
        self.errors: list[str] = []
        self.cuts: list[tuple[int, int]] = []
        py_calls = {m.end() - 1: m.start(1) for m in _PY_CALL.finditer(text)}
        self.newlines = [m.start() for m in re.finditer("\n", text)] if py_calls else []
        self.brackets = _Brackets(text, set(py_calls))
        self.tag_opens = [m.span() for m in _TAG_OPEN.finditer(text)]
        self.tag_closes = [m.span() for m in _TAG_CLOSE.finditer(text)]
        self.fence_spans = [m.span() for m in re.finditer("```", text)]
        events = [(m.start(), 2, "stray", m.end()) for m in _STRAY.finditer(text)]
        if level < _MAX_LEVEL:
            events += [(start, 0, "tag", end) for start, end in self.tag_opens]
            fences = (_FENCE_OPEN.match(text, k) for k, _ in self.fence_spans)
            events += [(m.start(), 1, "fence", m.end()) for m in fences if m]
        for opener in self.brackets.depth:
            if text[opener] != "(":
                events.append((opener, 3, "bracket", opener))
            elif opener in py_calls:
                events.append((py_calls[opener], 3, "bracket", opener))
        self.events = sorted(events)

    def run(self) -> _Reader:
        pos = 0  # each handler returns where the next event may start
        for start, _, kind, data in self.events:
            if start < pos:
                continue
            if kind in ("tag", "fence"):
                pos = self._wrapped(start, data, kind == "tag")
            elif kind == "stray":
                pos = self._take(start, data, [])
            else:
                pos = self._bracket(start, data)
        return self

    def _take(self, start: int, end: int, items: list[_Item]) -> int:
        raw = self.text[start:end]
        for item in items:
            if isinstance(item, str):
                self.errors.append(f"unreadable tool call {_snippet(raw)}: {item}")
            else:
                self.calls.append(ToolCall(item[0], item[1], raw))
        self.cuts.append((start, end))
        return end

    def _wrapped(self, start: int, open_end: int, tag: bool) -> int:
        """A tag or fence: up to its closing mark right after its JSON, else (a tag:
        after its JSON, or) up to its next closing mark, or the end."""
        text, stop, closes = self.text, len(self.text), self.fence_spans
        if tag:
            k = bisect_left(self.tag_opens, (open_end, 0))
            stop = self.tag_opens[k][0] if k < len(self.tag_opens) else stop
            closes = self.tag_closes
        k = bisect_left(closes, (open_end, 0))
        inner_end, end = (
            closes[k] if k < len(closes) and closes[k][0] < stop else (stop, stop)
        )

        first, json_end = _skip_space(text, open_end, stop), stop + 1
        if text[first : first + 1] in ("{", "["):
            with suppress(ValueError, RecursionError):
                json_end = first + _decode(text[first:stop])[1]
        if json_end <= stop:
            after = _skip_space(text, json_end, stop)
            k = bisect_left(closes, (after, 0))
            if k < len(closes) and closes[k][0] == after:
                inner_end, end = json_end, closes[k][1]
            elif tag:
                inner_end = end = json_end
        return self._inner(start, slice(open_end, inner_end), end, tag)

    def _inner(self, start: int, inside: slice, end: int, tag: bool) -> int:
        """Read a tag's or fence's inside; cut the whole when it holds a call."""
        text = self.text[inside]
        found = _Reader(text, self.level + 1).run()
        closed_or_blank = end > inside.stop or not text.strip()  # else a mention
        if tag and closed_or_blank and not found.calls and not found.errors:
            raw = _snippet(self.text[start:end])
            found.errors = [f"unreadable tool call {raw}: no call inside the tags"]
        fence = _FENCE_OPEN.match(self.text, start)
        meant = tag or (fence is not None and fence[1].casefold() in _TOOL_FENCES)
        meant = meant or text.lstrip()[:1] in ("{", "[")
        if not found.calls and not (found.errors and meant):
            return end  # a fence of something else (code, data) stays in the text
        self.errors += found.errors
        return self._take(start, end, [(c.name, c.arguments) for c in found.calls])

    def _bracket(self, start: int, opener: int) -> int:
        text, brackets = self.text, self.brackets
        end, closed = brackets.end[opener], opener in brackets.closed
        pythonic, shallow = start != opener, brackets.height[opener] <= _MAX_DEPTH
        if pythonic:
            k = bisect_left(self.newlines, end)
            line_end = self.newlines[k] if k < len(self.newlines) else len(text)
            if _skip_space(text, end, line_end) < line_end:
                return start + 1  # a call inside a sentence is prose

        json_error = None
        if closed and not pythonic and shallow:
            try:
                value, length = _decode(text[opener:end])
            except json.JSONDecodeError as exc:
                json_error = f"invalid JSON ({exc.msg} at character {exc.pos})"
            except RecursionError:
                json_error = "it is nested too deeply"
            else:
                items, json_end = _calls_of(value), opener + length
                return json_end if items is None else self._take(start, json_end, items)

        if not (pythonic or brackets.looks_like_call(opener, text)):
            return start + 1
        if not shallow:
            return self._take(start, end, ["it is nested too deeply"])
        suffix = "" if closed else brackets.repair(opener, text, end)
        if suffix is None:
            reason = f"it is cut off before its closing {_CLOSER[text[opener]]!r}"
            return self._take(start, end, [reason])
        try:
            items = _calls_of(_read_literal(text[start:end] + suffix))
        except _UnreadableError as exc:
            items = [json_error or str(exc)]
        return end if items is None else self._take(start, end, items)


def _remaining(text: str, cuts: list[tuple[int, int]]) -> str:
    """The text less the cuts; whitespace meeting at a cut keeps its widest side."""
    edges = [0, *(k for cut in cuts for k in cut), len(text)]
    parts: list[str] = []
    gap: list[str] = []  # whitespace since the last text kept
    for piece in (text[edges[k] : edges[k + 1]] for k in range(0, len(edges), 2)):
        core = piece.strip()
        gap.append(piece[: len(piece) - len(piece.lstrip())] if core else piece)
        if core:
            newlines = max(space.count("\n") for space in gap)
            if parts:
                parts.append("\n" * min(newlines, 2) or " " * any(gap))
            parts.append(core)
            gap = [piece[len(piece.rstrip()) :]]
    return "".join(parts)


def parse_tool_calls(text: str) -> ParsedTurn:
    """The tool calls written in a router message, and what else it says."""
    reader = _Reader(text, 0).run()
    return ParsedTurn(
        tuple(reader.calls), tuple(reader.errors), _remaining(text, reader.cuts)
    )
