"""The verifiers' public interface, and a check against ZeroEval's published figures."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from xrouter.core.errors import UnknownTaskError
from xrouter.records.verifiers import (
    VERIFIER_KINDS,
    extract_answer,
    verify,
    verify_many,
)


def test_kinds() -> None:
    assert VERIFIER_KINDS == ("gsm8k", "math", "cruxeval", "choice", "mbpp")


def test_unknown_kind_names_itself_and_the_known_ones() -> None:
    with pytest.raises(UnknownTaskError) as err:
        verify("trivia", "Paris", "Paris")
    message = str(err.value)
    assert "'trivia'" in message
    assert all(kind in message for kind in VERIFIER_KINDS)
    with pytest.raises(UnknownTaskError):
        extract_answer("trivia", "Paris")


def test_zeroeval_task_names_are_aliases() -> None:
    reply = '{"reasoning": "16 - 7 = 9 eggs, 9 * $2 = $18", "answer": "18"}'
    assert verify("gsm", reply, "# 18") and verify("gsm8k", reply, "# 18")
    assert extract_answer("math-l5", '{"answer": "\\\\frac{1}{2}"}') == "0.5"
    assert verify("crux", '{"answer": "[1, 2]"}', "[1,2]")


@pytest.mark.parametrize("kind", VERIFIER_KINDS)
def test_empty_reply_has_no_answer(kind: str) -> None:
    assert extract_answer(kind, "") is None
    assert verify(kind, "", "A" if kind == "choice" else "1") is False


def test_verify_many_keeps_order() -> None:
    pairs = [("The answer is 3.", "3"), ("The answer is 4.", "3"), ("#### 3", "3")]
    assert verify_many("gsm8k", pairs) == [True, False, True]
    code = "```python\ndef add(a, b):\n    return a + b\n```"
    tests = '["assert add(1, 2) == 3"]'
    assert verify_many("mbpp", [(code, tests), ("no code", tests)], workers=2) == [
        True,
        False,
    ]


def _accuracy(path: Path, kind: str) -> float:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = json.load(handle)
    right = sum(verify(kind, r["output"][0], str(r["answer"])) for r in rows)
    return 100 * right / len(rows)


@pytest.mark.parametrize(
    ("task", "kind", "model"),
    [
        ("gsm", "gsm8k", "gpt-4o-2024-08-06"),
        ("gsm", "gsm8k", "claude-3-haiku-20240307"),
        ("math-l5", "math", "gpt-4o-2024-08-06"),
        ("math-l5", "math", "Meta-Llama-3-70B-Instruct"),
    ],
)
def test_accuracy_reproduces_zeroeval(
    shared_data: Path, task: str, kind: str, model: str
) -> None:
    folder = shared_data / "zeroeval"
    official = json.loads((folder / "official_accuracy.json").read_text())[task]
    ours = _accuracy(folder / "raw_gz" / f"{task}__{model}.json.gz", kind)
    assert abs(ours - official[model]) < 1.0


def test_crux_accepts_everything_zeroeval_accepts_and_more(shared_data: Path) -> None:
    # ZeroEval compares text; equal text is equal value, and more besides
    folder = shared_data / "zeroeval"
    official = json.loads((folder / "official_accuracy.json").read_text())["crux"]
    path = folder / "raw_gz" / "crux__gpt-4o-2024-08-06.json.gz"
    ours = _accuracy(path, "cruxeval")
    assert official["gpt-4o-2024-08-06"] <= ours < official["gpt-4o-2024-08-06"] + 4


NONE = {kind: None for kind in VERIFIER_KINDS}


@pytest.mark.parametrize(
    ("reply", "answers", "right"),
    [
        ("\\boxed{" * 2000, NONE, set()),  # nested, never closed
        (
            "{" * 5000 + '"answer": 5',
            {**NONE, "gsm8k": "5", "math": "5", "cruxeval": "5"},
            # a gold that is no letter is option text, and the answer field says it
            {"gsm8k", "math", "cruxeval", "choice"},
        ),
        ('"answer": [' + "[" * 5000, NONE, set()),
        ('"answer": "' + "\\\\" * 5000, NONE, set()),
        ("1 " * 5000 + "x", {**NONE, "gsm8k": "1"}, set()),
        ("```python\n" + "x = (\n" * 3000, NONE, set()),
    ],
)
@pytest.mark.parametrize("kind", VERIFIER_KINDS)
def test_hostile_replies_give_an_answer_or_none(
    reply: str, answers: dict[str, str | None], right: set[str], kind: str
) -> None:
    # benchmarks/hostile_inputs.py measures how long they take
    assert extract_answer(kind, reply) == answers[kind]
    if kind != "mbpp":
        assert verify(kind, reply, "5") is (kind in right)
