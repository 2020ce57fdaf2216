"""MATH: a LaTeX answer compared with a LaTeX gold answer.

Both sides are normalised as strings first (wrappers, spacing, units, degree signs,
``\\dfrac``, thousands commas, ``x =`` prefixes, subscripted bases); if the strings
differ they are compared as values: exactly for rationals (``\\frac{1}{2}`` equals
``0.5``), to 1e-9 for irrational values (``\\sqrt{12}`` equals ``2\\sqrt{3}``), at a
few fixed points when both contain variables, and element by element for tuples,
intervals and comma-separated lists. No sympy: the evaluator in ``_expr`` is fast
and cannot hang.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

from xrouter.records.verifiers._expr import MAX_CHARS, Value, close, evaluate
from xrouter.records.verifiers._reply import (
    answer_phrase,
    boxed,
    json_answer,
    looks_like_json_reply,
    strip_wrappers,
)
from xrouter.records.verifiers.numeric import canonical_number

__all__ = ["canonical_math", "equivalent", "extract_math", "normalize", "verify_math"]

_UNICODE = str.maketrans(
    {
        "\u2212": "-",
        "\u221a": "\\sqrt",
        "\u03c0": "\\pi ",
        "\u221e": "\\infty ",
        "\u00d7": "\\times ",
        "\u00b7": "\\cdot ",
        "\u00b0": "",
        "\u00b2": "^2",
        "\u00b3": "^3",
        **{chr(0x2080 + d): f"_{d}" for d in range(10)},
    }
)
_NOISE = re.compile(
    r"\\(?:left|right|displaystyle|[!,;: ]|%|\$)|\^\s*\{?\s*\\circ\s*\}?|\\circ|[~$%]"
)
_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|mathbf)\s*\{([^{}]*)\}")
_UNITS = re.compile(
    r"^(?P<value>.*[\d}])\s+[a-zA-Z]{2,}(?:\s+[a-zA-Z]{2,})*(?:\^?[23])?\.?$"
)
_VARIABLE_PREFIX = re.compile(r"^\s*[a-zA-Z](?:_\{?\w+\}?)?\s*=(?!=)\s*")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_BASE = re.compile(r"_\{\s*(\w+)\s*\}")
_BASED = re.compile(r"^(-?[0-9A-Za-z]+)_(\w+)$")
_NUMBER_TOKEN = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
_PAIRS = {"(": ")", "[": "]", "\\{": "\\}"}
_POINTS = ({"x": 0.37, "y": 1.41}, {"x": 2.23, "y": -0.61}, {"x": -1.7, "y": 0.83})


def extract_math(response: str) -> str | None:
    """The final answer of a reply as a raw LaTeX string, or None."""
    field = json_answer(response)
    if field is not None:
        inner = boxed(field)
        return strip_wrappers(inner if inner is not None else field)
    found = boxed(response)
    if found is not None:
        return strip_wrappers(found)
    if looks_like_json_reply(response):
        return None  # a JSON reply cut off before its answer
    phrase = answer_phrase(response)
    return strip_wrappers(phrase) if phrase is not None else None


def verify_math(response: str, gold: str) -> bool:
    """True if the reply's final answer is equivalent to the gold answer."""
    answer = extract_math(response)
    return answer is not None and equivalent(answer, gold)


@lru_cache(maxsize=65536)
def normalize(answer: str) -> str:
    """One spelling of an answer: ``\\dfrac{1}{2}\\text{ cm}`` -> ``\\frac{1}{2}``."""
    text = strip_wrappers(answer).translate(_UNICODE)
    text = _TEXT.sub(r"\1", text)
    text = (
        _NOISE.sub(" ", text).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    )
    exact = [part for part in re.split(r"\\approx|≈", text) if part.strip()]
    text = exact[0] if exact else text  # "5\sqrt{3} \approx 8.66": the exact part
    text = text.strip().rstrip(".").strip()
    phrase = answer_phrase(text) if len(text) > 40 else None
    if phrase:
        text = phrase.rstrip(".").strip()
    units = _UNITS.match(text)
    if units and not re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", units["value"])):
        text = units.group("value")
    parts = [_VARIABLE_PREFIX.sub("", p, count=1) for p in _split_top(text, ",")]
    text = ",".join(parts)
    if "=" in text and not re.search(r"[<>]|\\[lg]e", text):
        text = text.rsplit("=", 1)[1]
    text = re.sub(r"\s+", "", text).replace("{,}", ",")
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    return _BASE.sub(r"_\1", text)


def equivalent(answer: str, gold: str) -> bool:
    """True if ``answer`` and ``gold`` denote the same mathematical answer.

    ``gold`` may be a bare answer or a worked solution ending in ``\\boxed{...}``
    (MATH's own format), whose boxed part is then the answer.
    """
    return _equivalent(normalize(answer), normalize(_gold_answer(gold)))


@lru_cache(maxsize=4096)
def _gold_answer(gold: str) -> str:
    inner = boxed(gold) if "box" in gold else None
    return inner if inner is not None else gold


@lru_cache(maxsize=65536)
def _equivalent(a: str, g: str) -> bool:
    if a == g:
        return True
    if not a or not g:
        return False
    if _same_based_digits(a, g):
        return True
    a_items, g_items = _items(a), _items(g)
    if a_items is not None or g_items is not None:
        return _items_equal(a_items, g_items)
    return _values_equal(a, g)


def _same_based_digits(a: str, g: str) -> bool:
    """``1112112_3`` and ``1112112``: the same digits, the base said once."""
    based_a, based_g = _BASED.match(a), _BASED.match(g)
    if based_a is not None and based_g is not None:
        return based_a.groups() == based_g.groups()
    if based_a is not None:
        return based_a.group(1) == g
    return based_g is not None and based_g.group(1) == a


def _items(text: str) -> tuple[str, list[str]] | None:
    """``(1,2)`` -> ("()", ["1", "2"]); a bare ``1,2`` -> ("", ...); else None."""
    brackets = ""
    for left, right in _PAIRS.items():
        if text.startswith(left) and text.endswith(right) and len(text) > 2:
            inner = text[len(left) : -len(right)]
            if len(_split_top(inner, ",")) > 1:
                return left + right, _split_top(inner, ",")
            brackets = left
    parts = _split_top(text, ",")
    if len(parts) > 1 and not brackets:
        return "", parts
    return None


def _items_equal(
    a: tuple[str, list[str]] | None, g: tuple[str, list[str]] | None
) -> bool:
    if a is None or g is None or a[0] != g[0] or len(a[1]) != len(g[1]):
        return False
    if a[0]:  # a tuple or interval: order matters
        return all(_equivalent(x, y) for x, y in zip(a[1], g[1], strict=True))
    left = list(g[1])  # a bare list of solutions: any order
    for item in a[1]:
        match = next((k for k, y in enumerate(left) if _equivalent(item, y)), None)
        if match is None:
            return False
        left.pop(match)
    return True


def _values_equal(a: str, g: str) -> bool:
    a_value, g_value = _value(a), _value(g)
    if a_value is not None and g_value is not None:
        return close(a_value, g_value)
    if a_value is None and g_value is None and _has_variables(a, g):
        for point in _POINTS:
            va, vg = evaluate(a, point), evaluate(g, point)
            if va is None or vg is None or not close(va, vg):
                return False
        return True
    return False


def _has_variables(a: str, g: str) -> bool:
    return bool(re.search(r"[xy]", a)) and bool(re.search(r"[xy]", g))


@lru_cache(maxsize=65536)
def _value(text: str) -> Value | None:
    if len(text) > MAX_CHARS:
        return None
    value = evaluate(text)
    if value is None and re.search(r"[a-zA-Z]{3,}", text.replace("\\", " ")):
        # prose with exactly one number in it: "There are 5 polynomials"
        numbers = _NUMBER_TOKEN.findall(text)
        if len(numbers) == 1 and "\\" not in text:
            value = evaluate(numbers[0])
    return value


def canonical_math(answer: str) -> str:
    """The answer's agreement key: its exact or 12-digit value, else its spelling."""
    text = normalize(answer)
    value = _value(text)
    if isinstance(value, Fraction):
        return canonical_number(value)
    if value is not None:
        if abs(value.imag) < 1e-12:
            return f"{value.real:.12g}"
        return f"{value.real:.12g}{value.imag:+.12g}i"
    return text


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside brackets and braces."""
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts
