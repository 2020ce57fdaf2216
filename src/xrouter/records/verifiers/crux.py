"""CRUXEval-O: the predicted output of a Python function, as a literal.

The gold is a Python literal. The answer is read as a Python literal too and the two
values compared with ``==``, which is exactly what CRUXEval's own harness does
(``assert f(input) == answer``): ``[1,2]`` equals ``[1, 2]``, ``"a"`` equals
``'a'``, and dict key order does not matter. Because the ZeroEval answer field is a
JSON string, an answer that is not a literal (``hello``) is also tried as the string
itself, as ZeroEval's own checker does. A dict literal that repeats a key is not
taken as a literal: ``{8: 5, 8: 2}`` only equals ``{8: 2}`` by Python's accident.
"""

from __future__ import annotations

import ast
import re
import warnings
from functools import lru_cache

from xrouter.records.verifiers._reply import boxed, json_answer, looks_like_json_reply

__all__ = ["canonical_crux", "crux_matches", "extract_crux", "verify_crux"]

_MAX_LITERAL = 20_000  # characters; longer text is not parsed
_ASSERT = re.compile(r"^\s*(?:assert\s+)?f\(.*?\)\s*==\s*", re.DOTALL)
_JSON_WORDS = {"true": "True", "false": "False", "null": "None"}
_NOT_LITERAL = object()


def extract_crux(response: str) -> str | None:
    """The predicted output as written in the reply (spaces kept), or None."""
    field = json_answer(response)
    if field is None:
        field = boxed(response)
    if field is None and not looks_like_json_reply(response):
        field = _asserted(response)
    if field is None:
        return None
    text = _ASSERT.sub("", field, count=1) if "==" in field else field
    if re.match(r"\s*(?:assert\b|f\()", text):
        return None  # an unevaluated call is not an output
    return text


def verify_crux(response: str, gold: str) -> bool:
    """True if the reply's predicted output equals the gold literal."""
    answer = extract_crux(response)
    return answer is not None and crux_matches(answer, gold)


def crux_matches(answer: str, gold: str) -> bool:
    """True if the answer text denotes the same value as the gold literal."""
    expected = _literal(gold)
    if not answer:
        return False  # an empty field is no answer, even for an empty-string gold
    if expected is _NOT_LITERAL:
        return answer.strip("'\" ") == gold.strip("'\" ") != ""
    for value in _readings(answer):
        if _same(value, expected):
            return True
    if not isinstance(expected, str):
        return False
    # the answer field holding the output string itself: "  rock  ", "t\\nZA"
    as_string = [
        answer,
        _unquote_once(answer.strip()),
        _literal(f"'{answer}'"),
        _literal(f'"{answer}"'),
    ]
    if expected in as_string:
        return True
    # sloppy quoting around the right text ("'148: b'148'"), as ZeroEval accepts
    bare = answer.strip("'\"")
    return bool(bare) and bare == expected.strip("'\"")


def canonical_crux(answer: str) -> str:
    """``repr`` of the value the answer denotes: ``[1,2]`` and ``[1, 2]`` agree,
    and a bare ``hello`` reads as the string ``'hello'``."""
    for value in _readings(answer):
        return repr(value)
    return repr(answer)


def _readings(answer: str) -> list[object]:
    """The literal values the answer can be read as: as written, without
    backticks, JSON's ``true``/``null``, or inside one pair of extra quotes."""
    core = answer.strip()
    texts = [core, core.strip("`").strip(), _JSON_WORDS.get(core)]
    values = [_literal(text) for text in texts if text]
    found = [value for value in values if value is not _NOT_LITERAL]
    unquoted = _unquote_once(core)
    if not found and unquoted:  # "'['xy', 'ab']'": a list in stray quotes
        value = _literal(unquoted)
        found = [] if value is _NOT_LITERAL else [value]
    return found


def _unquote_once(text: str) -> str | None:
    """``'148: b'148''`` -> ``148: b'148'``: drop one outer pair of quotes."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return None


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError, RecursionError):
        return False


@lru_cache(maxsize=16384)
def _literal(text: str) -> object:
    """The Python literal ``text`` denotes, or ``_NOT_LITERAL``."""
    text = text.strip()
    if not text or len(text) > _MAX_LITERAL:
        return _NOT_LITERAL
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "1st" raises SyntaxWarning on 3.12+
            tree = ast.parse(text, mode="eval")
        if _repeats_dict_key(tree):
            return _NOT_LITERAL
        return ast.literal_eval(tree)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL


def _repeats_dict_key(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = [ast.dump(k) for k in node.keys if k is not None]
            if len(keys) != len(set(keys)):
                return True
    return False


def _asserted(response: str) -> str | None:
    """Free text: the literal after the last ``==`` of an assertion, if any."""
    found = None
    for match in re.finditer(r"assert\s+f\(.*?\)\s*==\s*([^\n`]+)", response):
        found = match.group(1).strip()
    return found
