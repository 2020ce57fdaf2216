"""Multiple-choice verifier on real RouterBench replies (ARC-Challenge, Winogrande).

RouterBench asked for a single letter; the replies below are copied verbatim from
``routerbench/{arc_challenge,winograde}_*.csv`` with the score the source recorded.
"""

from __future__ import annotations

import pytest

from xrouter.records.verifiers import extract_answer, verify


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("D)", "D"),  # arc-challenge.test.1155, claude-instant-v1, recorded 1.0
        ("A)", "A"),  # arc-challenge.test.1100, gpt-3.5-turbo-1106, recorded 1.0
        ("I do", None),  # arc-challenge.test.874, claude-v2 (cut off), recorded 0.0
        ("Vict", None),  # winogrande, mixtral-8x7b-chat: an option's text, cut off
        ("B", "B"),
        ("(C)", "C"),
        ("B. cooling of flowing magma", "B"),
        ("The answer is B.", "B"),
        ("Answer: (C)", "C"),
        ("**B**", "B"),
        ('{"reasoning": "...", "answer": "C"}', "C"),
        ("Option D is correct.", "D"),
        ("A boat is acted on by a river current.", None),  # "A" the article
        ("the answer is a bit unclear", None),
        ("Between A) and B), I pick B) but A) is close", None),  # no commitment
    ],
)
def test_extract_choice(response: str, letter: str | None) -> None:
    assert extract_answer("choice", response) == letter


def test_verify_against_letter_gold() -> None:
    # winogrande.dev.866: claude-instant-v1 answered "A)" and the source scored 1.0
    assert verify("choice", "A)", "A")
    assert verify("choice", "A)", "(a)")
    assert not verify("choice", "A)", "B")
    assert not verify("choice", "I do", "A")


def test_verify_against_option_text_gold() -> None:
    # Winogrande options are names; a gold given as the option text
    assert verify("choice", "B) Dennis", "Dennis")
    assert verify("choice", "dennis.", "Dennis")
    assert not verify("choice", "A) Ian", "Dennis")
    assert not verify("choice", "Vict", "Victoria")
