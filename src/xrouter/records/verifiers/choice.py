"""Multiple choice: which option letter (A-E) a reply chose.

Accepted spellings: a bare letter (``B``, ``(B)``, ``B)``, ``B. text``), a JSON
``answer`` field, and phrases such as "the answer is B", "Answer: (C)", "option D".
A reply that mentions several letters without committing to one has no answer.
When the gold is option text rather than a letter, the reply's answer text is
compared with it, ignoring case and punctuation.
"""

from __future__ import annotations

import re

from xrouter.records.verifiers._reply import json_answer, strip_wrappers

__all__ = ["extract_choice", "verify_choice"]

_LEADING = re.compile(r"^\(?([A-E])(?:\s*$|\s*[).:\]]|\s*\n)")
# keywords in any case, the letter itself in capitals ("the answer is a" is prose)
_PHRASE = re.compile(
    r"(?i:answer|choice|option)\s*(?i:is|would be|:)?\s*:?\s*\**\(?([A-E])\b(?![-'])"
)
_MARKED = re.compile(r"(?:^|\s)\(?([A-E])\)")
_WORDS = re.compile(r"[^a-z0-9]+")


def extract_choice(response: str) -> str | None:
    """The chosen letter, or None if the reply commits to none."""
    field = json_answer(response)
    text = strip_wrappers(field if field is not None else response)
    lead = _LEADING.match(text)
    if lead:
        return lead.group(1)
    phrases = [m.group(1) for m in _PHRASE.finditer(text)]
    if phrases:
        return phrases[-1]
    marked = {m.group(1) for m in _MARKED.finditer(text)}
    return marked.pop() if len(marked) == 1 else None


def verify_choice(response: str, gold: str) -> bool:
    """True if the reply chose the gold letter (or states the gold option text)."""
    letter = _gold_letter(gold)
    if letter is not None:
        return extract_choice(response) == letter
    expected = _words(gold)
    if not expected:
        return False
    field = json_answer(response)
    text = strip_wrappers(field if field is not None else response)
    text = re.sub(r"^\(?[A-E]\s*[).:]\s*", "", text.split("\n", 1)[0])
    return _words(text) == expected


def _gold_letter(gold: str) -> str | None:
    match = re.fullmatch(r"\s*\(?([A-Ea-e])\)?\s*", gold)
    return match.group(1).upper() if match else None


def _words(text: str) -> str:
    return _WORDS.sub(" ", text.lower()).strip()
