"""GSM8K: a single number as the answer.

The answer is located (JSON ``answer`` field, ``#### N``, ``\\boxed{N}``, "the
answer is N", else the last number of a free-text reply), reduced to one exact
number (``$1,000`` -> 1000, ``18.00`` -> 18, ``\\frac{1}{2}`` and ``1/2`` -> 1/2)
and compared exactly with the gold number.
"""

from __future__ import annotations

import re
from fractions import Fraction

from xrouter.records.verifiers._expr import MAX_CHARS, evaluate
from xrouter.records.verifiers._reply import (
    answer_phrase,
    boxed,
    json_answer,
    looks_like_json_reply,
    strip_wrappers,
)

__all__ = ["canonical_number", "extract_number", "parse_gold", "verify_gsm8k"]

_NUMBER = re.compile(r"(-?)(\d+(?:\.\d+)?)(?:\s*/\s*(\d+(?:\.\d+)?))?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.]+)\s*\}\s*\{\s*(-?[\d.]+)\s*\}")
_ARITHMETIC = re.compile(r"[\d\s.()]*\d[\d\s.()]*(?:[-+*/×÷^][\d\s.()]+)+")
_MARKER = re.compile(r"####\s*([^\n]+)")
_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}")
_LATEX_NOISE = re.compile(r"\\[$%,!;: ]|\\[a-zA-Z]+|\{,\}")
_MINUSES = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2014": "-"})


def parse_gold(gold: str) -> Fraction | None:
    """The gold number of ``18``, ``# 18``, or a worked solution ending in
    ``#### 1,000`` (GSM8K's own format) or ``\\boxed{18}``."""
    marker = _MARKER.findall(gold)
    inner = marker[-1] if marker else boxed(gold)
    text = _clean((inner if inner is not None else gold).replace("#", "")).strip()
    whole = _NUMBER.fullmatch(text)
    if whole:
        return _to_fraction(whole)
    return _first_number(text) if inner is not None else _last_number(text)


def extract_number(response: str) -> Fraction | None:
    """The number a reply gives as its final answer, or None if it gives none."""
    field = json_answer(response)
    if field is not None:
        return _answer_number(field)
    if looks_like_json_reply(response):
        return None  # the JSON reply was cut off before its answer
    marker = _MARKER.findall(response)
    if marker:
        return _answer_number(marker[-1])
    for found in (boxed(response), answer_phrase(response)):
        if found is not None:
            number = _answer_number(found)
            if number is not None:
                return number
    return _last_number(_clean(response))


def verify_gsm8k(response: str, gold: str) -> bool:
    """True if the reply's final number equals the gold number exactly."""
    expected = parse_gold(gold)
    return expected is not None and extract_number(response) == expected


def canonical_number(value: Fraction) -> str:
    """``18``, ``0.5``, ``-2.25`` or ``1/3``: one spelling per number."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    while den % 2 == 0:
        den //= 2
    while den % 5 == 0:
        den //= 5
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    text = f"{float(value):.12f}".rstrip("0")
    return text if Fraction(text) == value else f"{value.numerator}/{value.denominator}"


def _answer_number(answer: str) -> Fraction | None:
    """The number in an answer field: the whole text, the value after the last
    ``=`` of a worked sum, the value of a bare sum, else its first number."""
    text = _clean(strip_wrappers(answer)).strip()
    whole = _NUMBER.fullmatch(text)
    if whole:
        return _to_fraction(whole)
    if "=" in text:
        after = _first_number(text.rsplit("=", 1)[1])
        if after is not None:
            return after
    if len(text) <= MAX_CHARS and _ARITHMETIC.fullmatch(text):
        value = evaluate(text.replace("×", "*").replace("÷", "/"))
        if isinstance(value, Fraction):
            return value
    return _first_number(text)


def _clean(text: str) -> str:
    text = text.translate(_MINUSES)
    text = _FRAC.sub(r"\1/\2", text)
    text = _TEXT.sub(r"\1", text)
    text = _LATEX_NOISE.sub(lambda m: "" if m.group() == "{,}" else " ", text)
    text = text.replace("$", "")
    return _THOUSANDS.sub("", text)


def _first_number(text: str) -> Fraction | None:
    for match in _NUMBER.finditer(text):
        return _to_fraction(match, text)
    return None


def _last_number(text: str) -> Fraction | None:
    found: Fraction | None = None
    for match in _NUMBER.finditer(text):
        found = _to_fraction(match, text)
    return found


def _to_fraction(match: re.Match[str], text: str = "") -> Fraction | None:
    start = match.start()
    # a hyphen glued to a word or number ("5-10", "x-3") is not a minus sign
    negative = bool(match.group(1)) and (start == 0 or not text[start - 1].isalnum())
    value = Fraction(match.group(2))
    if match.group(3) is not None:
        denominator = Fraction(match.group(3))
        if denominator == 0:
            return None
        value /= denominator
    return -value if negative else value
