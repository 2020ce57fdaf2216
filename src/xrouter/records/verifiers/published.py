"""ZeroEval's scoring protocol, so stored verdicts reproduce its published accuracy.

ZeroEval asks every model for one JSON object with an ``answer`` field and scores
the *first* such object: for GSM8K and MATH the first number in the answer must equal
the first number of the gold answer; for CRUXEval the answer, stripped of quotes, must
equal the gold text. An answer holding a ``/`` is evaluated as arithmetic first, and
for Llama 3.1 runs a trailing ``\\boxed{...}`` is accepted when no JSON was given.

The protocol misjudges some replies (``"6 + 5 + 10 + 8 = 29"`` is read as 6; a later
"corrected" answer is ignored; ``\\boxed{-15}`` loses its sign), which xrouter's own
verifiers (``verify``) judge right. Records of a source keep the source's protocol so
that accuracies stay comparable with what was published; ``xrouter data verify`` shows
both readings side by side.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction

from xrouter.records.verifiers._expr import evaluate

__all__ = ["zeroeval_answer", "zeroeval_verdict"]

_ANSWER_PATTERNS = tuple(
    re.compile(p, re.DOTALL)
    for p in (
        r'"answer"\s*:\s*"([^"]*?)"',
        r'"answer"\s*:\s*"(.*?)"',
        r'"answer"\s*:\s*([^,\s]*)',
        r"answer\s*:\s*([^,\s]*)",
    )
)
_BOXED = re.compile(r"\\boxed{([\w\d]+)}")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _first_object(text: str) -> object:
    """The first balanced ``{...}`` block parsed as JSON (None when it is not)."""
    depth, start = 0, -1
    for i, ch in enumerate(text):
        if ch == "{":
            start = i if depth == 0 else start
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                try:
                    return json.loads(text[start : i + 1].replace("\n", ""))
                except ValueError:
                    return None
    return None


def zeroeval_answer(response: str, model: str = "") -> str | None:
    """The answer ZeroEval reads from a reply: the first JSON object's ``answer``."""
    parsed = _first_object(response)
    if isinstance(parsed, dict) and "answer" in parsed:
        return str(parsed["answer"])
    for pattern in _ANSWER_PATTERNS:
        match = pattern.search(response)
        if match:
            return match.group(1)
    if "Llama-3.1" in model and "boxed" in response[-30:]:
        match = _BOXED.search(response)
        return match.group(1) if match else None
    return None


def _first_number(text: str) -> float | None:
    text = text.replace("$", "").strip().replace(",", "")
    if "/" in text:
        value = evaluate(text)
        if isinstance(value, Fraction):
            text = str(float(value))
    match = _NUMBER.search(text)
    return float(match.group()) if match else None


def zeroeval_verdict(task: str, response: str, gold: str, model: str = "") -> bool:
    """ZeroEval's verdict on one reply; ``task`` is gsm8k, math-l5 or cruxeval."""
    answer = zeroeval_answer(response, model)
    if answer is None:
        return False
    if task == "cruxeval":
        mine, theirs = answer.strip("'\""), gold.strip("'\"")
        return bool(mine) and mine == theirs
    found, expected = _first_number(answer), _first_number(gold.replace("#", ""))
    return found is not None and found == expected
