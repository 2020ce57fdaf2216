"""ZeroEval's scoring protocol beside xrouter's own reading, on real replies."""

from __future__ import annotations

from xrouter.records import verifiers
from xrouter.records.verifiers.published import zeroeval_answer, zeroeval_verdict

# Yi-1.5-34B-Chat on GSM8K test #522 (gold 29): the answer field shows its working.
YI_522 = (
    '``` json\n{\n     "reasoning": "Tony picks 6, Bobby 5, Kathy 10, Ricky 8.",\n'
    '     "answer": "6 + 5 + 10 + 8 = 29"\n }\n```'
)
# Llama-3.1-70B on MATH-L5 #0 (gold -15), served by Hyperbolic: no JSON, a box.
LLAMA_MATH_0 = (
    "## Step 7: Calculate the sum of the integers\n"
    "The sum of $-8$ and $-7$ is $-15$.\n\nThe final answer is: $\\boxed{-15}$"
)
# Phi-3.5-mini on GSM8K test #24 (gold 26): a first answer, then a correction.
PHI_24 = (
    '```json\n{"reasoning": "25% off", "answer": "42"}\n```\n'
    'The correct answer should be "$26.00". Here\'s the corrected JSON format:\n\n'
    '```json\n{\n    "reasoning": "75% of P = $19.50",\n    "answer": "26"\n}\n```'
)
# gpt-4o-mini on GSM8K test #0 (gold 18): both readings agree.
MINI_0 = (
    '```json\n{\n    "reasoning": "16 - 7 = 9 eggs, 9 * $2 = $18.",\n'
    '    "answer": "18"\n}\n```'
)


def test_both_readings_agree_on_a_well_formed_reply() -> None:
    assert zeroeval_verdict("gsm8k", MINI_0, "18")
    assert verifiers.verify("gsm8k", MINI_0, "18")


def test_protocol_reads_the_first_number_of_a_worked_answer() -> None:
    assert zeroeval_answer(YI_522) == "6 + 5 + 10 + 8 = 29"
    assert not zeroeval_verdict("gsm8k", YI_522, "29")  # ZeroEval read 6
    assert verifiers.verify("gsm8k", YI_522, "29")  # the model answered 29


def test_protocol_loses_the_sign_of_a_boxed_answer() -> None:
    model = "Meta-Llama-3.1-70B-Instruct@hyperbolic"
    assert zeroeval_answer(LLAMA_MATH_0, model) is None
    assert not zeroeval_verdict("math-l5", LLAMA_MATH_0, "-15", model)
    assert verifiers.verify("math", LLAMA_MATH_0, "-15")


def test_protocol_scores_the_first_answer_of_a_self_corrected_reply() -> None:
    assert not zeroeval_verdict("gsm8k", PHI_24, "26")
    assert verifiers.verify("gsm8k", PHI_24, "26")


def test_crux_protocol_compares_text_with_quotes_stripped() -> None:
    reply = '{"reasoning": "sorted by count", "answer": "[(4, 1), (4, 1), (2, 3)]"}'
    assert zeroeval_verdict("cruxeval", reply, "[(4, 1), (4, 1), (2, 3)]")
    assert not zeroeval_verdict("cruxeval", reply, "[(4,1), (4,1), (2,3)]")
    assert verifiers.verify("cruxeval", reply, "[(4,1), (4,1), (2,3)]")
