"""Find the final answer inside a model's reply.

Replies come in three shapes: the ZeroEval JSON object (``{"reasoning": ...,
"answer": ...}``, often fenced, sometimes malformed or cut off), LaTeX with a
``\\boxed{}`` answer, and free text ending in "the answer is ...". The helpers here
only locate the answer text; each verifier normalises it.
"""

from __future__ import annotations

import json
import re

__all__ = [
    "answer_phrase",
    "boxed",
    "json_answer",
    "looks_like_json_reply",
    "strip_wrappers",
]

_KEY = re.compile(r'"answer"\s*:\s*', re.IGNORECASE)
_BARE_KEY = re.compile(r'(?<![\w"])answer\**\s*:\s*', re.IGNORECASE)
# The end of a JSON string value: a quote followed by the end of the object, the
# next key, a closing fence or the end of the reply. A quote followed by anything
# else is taken as an unescaped quote inside the value (common in CRUXEval replies).
_VALUE_END = re.compile(r'"\s*(?:\}|$|```|,\s*"[^"\n]{1,40}"\s*:)')
_FOLLOW_UP = re.compile(r"\n\s*(?:#+\s*)?(?:Question|Instruction)\s*:?\s*\n")
_PLAIN_STRING = re.compile(r'((?:[^"\\\n]|\\.){0,200})"')
# empty, or the template's blank: "___", "...", "…" (" " or "." can be real answers)
_PLACEHOLDER = re.compile(r"^(?:|\s*(?:_{2,}|\.{3}|…)\s*)$")
_UNCLOSED = re.compile(r'([^"\n]*)\n\s*\}')
_JSON_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_REPLY_START = re.compile(r'^\s*(?:```(?:json)?\s*)?\{\s*"(?:reasoning|answer)"')
_PHRASE = re.compile(
    r"\banswer\b\**\s*(?:is\b\s*:?|[:=])\s*(?P<ans>[^\n]{1,200})", re.IGNORECASE
)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")


def looks_like_json_reply(text: str) -> bool:
    """True when the reply opens the ``{"reasoning"/"answer": ...}`` format."""
    return bool(_REPLY_START.match(text[:200]))


def json_answer(text: str) -> str | None:
    """The value of the last usable ``"answer"`` field, decoded leniently.

    The last one wins because replies that give two JSON objects use the second to
    correct or finish the first ("to provide the numerical answer: ..."). A
    well-formed object is read with ``json``; otherwise the field is scanned for.
    String values keep their LaTeX (``"\\frac"`` stays ``\\frac``); other values
    come back as Python literal text (``true`` -> ``True``). Empty values and
    template placeholders (``"___"``) are skipped.
    """
    if "answer" not in text and "Answer" not in text:
        return None
    text = _own_reply(text)
    parsed = _parsed_answer(text)
    if parsed is not None:
        return parsed
    # a quoted key anywhere beats an unquoted one ("answer: 5" may be prose)
    for pattern in (_KEY, _BARE_KEY):
        for match in reversed(list(pattern.finditer(text))):
            value = _value_at(text, match.end())
            if value is not None and not _PLACEHOLDER.match(value):
                return value
    return None


def _own_reply(text: str) -> str:
    """The reply up to where it starts inventing a new question to answer."""
    first = _KEY.search(text)
    if first is None:
        return text
    follow_up = _FOLLOW_UP.search(text, first.end())
    return text[: follow_up.start()] if follow_up else text


_CONTROL = {"\f": "\\f", "\b": "\\b", "\t": "\\t", "\r": "\\r", "\n": "\\n"}
_CONTROL_BEFORE_LETTER = re.compile(r"[\f\b\t\r\n](?=[A-Za-z])")


def _parsed_answer(text: str) -> str | None:
    """The answer of the last top-level object that parses and has one."""
    for candidate in reversed(_objects(text, limit=8)):
        try:
            obj = json.loads(candidate, strict=False)
        except (ValueError, RecursionError):
            continue
        if not isinstance(obj, dict) or obj.get("answer") is None:
            continue
        value = obj["answer"]
        if isinstance(value, str):
            # json read "\frac" as form feed + "rac": give LaTeX its backslash back
            value = _CONTROL_BEFORE_LETTER.sub(lambda m: _CONTROL[m.group()], value)
        else:
            value = repr(value)
        if not _PLACEHOLDER.match(value):
            return value
    return None


def _objects(text: str, limit: int) -> list[str]:
    """Up to ``limit`` top-level ``{...}`` spans (braces counted, strings not)."""
    spans: list[str] = []
    depth, start = 0, -1
    for match in _BRACE.finditer(text):
        if match.group() == "{":
            if depth == 0:
                start = match.start()
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                spans.append(text[start : match.end()])
                if len(spans) == limit:
                    break
    return spans


def _value_at(text: str, pos: int) -> str | None:
    if pos >= len(text):
        return None
    if text[pos] == '"':
        return _string_at(text, pos + 1)
    return _bare_at(text, pos)


def _string_at(text: str, start: int) -> str | None:
    for end in _VALUE_END.finditer(text, start):
        raw = text[start : end.start()]
        if (len(raw) - len(raw.rstrip("\\"))) % 2 == 0:
            return _unescape(raw)  # an escaped quote (odd backslashes) goes on
    # no quote ends the object: a key quoted inside prose ('The answer is:
    # `"answer": "2014"`'), or a value missing its closing quote before "}"
    plain = _PLAIN_STRING.match(text, start) or _UNCLOSED.match(text, start)
    return _unescape(plain.group(1)) if plain else None


def _unescape(raw: str) -> str:
    """Decode JSON escapes, keeping backslashes that start a LaTeX command."""
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch != "\\" or i + 1 == n:
            out.append(ch)
            i += 1
            continue
        nxt = raw[i + 1]
        if nxt in '"\\/':
            out.append(nxt)
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", raw[i + 2 : i + 6]):
            out.append(chr(int(raw[i + 2 : i + 6], 16)))
            i += 6
        elif nxt in _JSON_ESCAPES and not raw[i + 2 : i + 3].isalpha():
            out.append(_JSON_ESCAPES[nxt])
            i += 2
        else:
            # "\frac", "\sqrt", "\n" before a letter: a LaTeX command, not an escape
            out.append("\\")
            i += 1
    return "".join(out)


_OPEN = {"[": "]", "(": ")", "{": "}"}


def _bare_at(text: str, pos: int) -> str | None:
    """An unquoted value: up to the end of its brackets, the line or the object."""
    depth, quote, i = 0, "", pos
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and (ch == "\n" or (ch == "," and _next_is_key(text, i))):
            break
        i += 1
    value = text[pos:i].strip().rstrip(",").strip()
    if not value or value == "null" or depth:
        return None  # empty, null, or cut off inside brackets
    return value


def _next_is_key(text: str, comma: int) -> bool:
    return bool(re.match(r',\s*"[^"\n]{1,40}"\s*:', text[comma : comma + 50]))


def boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces balanced), if any."""
    if "box" not in text:
        return None
    opens = [match.end() - 1 for match in _BOXED.finditer(text)]
    if not opens:
        return None
    closes = _closing_braces(text, opens[0])
    for start in reversed(opens):
        end = closes.get(start)
        if end is not None:
            return text[start + 1 : end]
    return None


def _closing_braces(text: str, start: int) -> dict[int, int]:
    """Position of each ``{`` from ``start`` on -> its matching ``}``, in one pass
    (nested or unclosed boxes cost linear time, not quadratic)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for match in _BRACE.finditer(text, start):
        if match.group() == "{":
            stack.append(match.start())
        elif stack:
            pairs[stack.pop()] = match.start()
    return pairs


def answer_phrase(text: str) -> str | None:
    """The text after the last "the answer is" / "Answer:" in free text."""
    found: str | None = None
    for match in _PHRASE.finditer(text):
        found = match.group("ans").strip()
    return found or None


def strip_wrappers(answer: str) -> str:
    """Drop Markdown/LaTeX decoration around an answer: ``**``, backticks, ``$``."""
    value = answer.strip()
    for _ in range(3):
        before = value
        value = value.strip().strip("*`").strip()
        if value.startswith("__") and value.endswith("__"):
            value = value.strip("_")  # a filled-in template blank: "___3___"
        if len(value) > 1 and value[0] == "$" and value[-1] == "$":
            value = value.strip("$").strip()
        for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
            if value.startswith(left) and value.endswith(right):
                value = value[len(left) : -len(right)].strip()
        inner = boxed(value)
        if inner is not None and re.fullmatch(
            r"\\(?:boxed|fbox)\s*\{.*\}", value, re.S
        ):
            value = inner.strip()
        if value == before:
            break
    return value
