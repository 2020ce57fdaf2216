"""CRUXEval verifier on real recorded replies (ZeroEval CRUXEval-O files).

Each reply is copied verbatim from the shared data; the comment names the file,
model and item. ZeroEval's checker compares text with quotes stripped, so it calls
``["123", "23", "3"]`` wrong against ``['123', '23', '3']`` and never accepts an
empty-string output; CRUXEval's own harness compares values with ``==``, as we do.
"""

from __future__ import annotations

import pytest

from xrouter.records.verifiers import extract_answer, verify
from xrouter.records.verifiers.crux import crux_matches

# ZeroEval crux, Athene-70B, item 'crux-test-#48'
CRUX_EMPTY_STRING = (
    '{\n  "reasoning": "When `names` is an empty list `[]`, the function '
    'returns an empty string `""` directly, since the `if` condition '
    "`names == []` is true. Therefore, the correct output for `f([])` is an "
    'empty string.",\n  "answer": `""`\n'
    "}"
)

# ZeroEval crux, Athene-70B, item 'crux-test-#37'
CRUX_JSON_QUOTES = (
    '{\n  "reasoning": "The function `f` generates a list of suffixes of '
    "the input string. For input `'123'`, the suffixes are `'123'`, `'23'`, "
    "and `'3'`. Therefore, the correct output is a list containing these "
    'suffixes in order.",\n  "answer": "[\\"123\\", \\"23\\", '
    '\\"3\\"]"\n}'
)

# ZeroEval crux, reka-core-20240501, item 'crux-test-#415'
CRUX_REPEATED_KEY = (
    '```json\n{\n    "reasoning": "The function `f` takes a list of '
    "tuples as input, converts it into a dictionary where each tuple's first "
    "element is a key and the second element is a value. It then checks if "
    "all values in the dictionary are integers between 0 and 9 inclusive. If "
    "any value does not meet this criterion, it returns `None`. Otherwise, "
    "it returns the dictionary. For the input `((8, 5), (8, 2), (5, 3))`, "
    "the function converts it to `{8: 5, 8: 2, 5: 3}`. Since all values are "
    'within the allowed range, the function returns this dictionary.",\n    '
    '"answer": "{8: 5, 8: 2, 5: 3}"\n'
    "}\n```"
)

# ZeroEval crux, Athene-70B, item 'crux-test-#619'
CRUX_SPACES_QUOTED = (
    '{\n  "reasoning": "The function `f` takes a string `title` as input, '
    "removes no leading or trailing whitespace (since it only calls "
    "`lower()`), and returns the lowercase equivalent of the input. For the "
    "input `'   Rock   Paper   SCISSORS  '`, the correct output is the same "
    'string with all characters converted to lowercase.",\n  "answer": '
    "\"'   rock   paper   scissors  '\"\n"
    "}"
)

# ZeroEval crux, Llama-3.1-405B-Inst-fp8, item 'crux-test-#619'
CRUX_SPACES_BARE = (
    "The function `f(title)` takes a string input and returns the string in "
    "lowercase using the `lower()` method.\n\n"
    '```json\n{\n    "reasoning": "The function f(title) takes a string '
    "input and returns the string in lowercase using the lower() "
    'method.",\n    "answer": "   rock   paper   scissors  "\n'
    "}\n```"
)

# ZeroEval crux, Llama-3.1-405B-Inst-fp8, item 'crux-test-#27'
CRUX_BOXED = (
    "## Step 1: Understand the function f(w)\n"
    "The function f(w) takes a string w as input, converts it into a list of "
    "characters ls, and initializes an empty string omw. It then enters a "
    "while loop that continues until all characters have been removed from "
    "ls.\n\n## Step 2: Analyze the while loop\n"
    "Inside the loop, it removes the first character from ls and appends it "
    "to omw. If the length of ls multiplied by 2 is greater than the length "
    "of the original string w, it returns a boolean value indicating whether "
    "the substring of w starting from the current length of ls to the end is "
    "equal to omw.\n\n## Step 3: Determine the condition for returning\n"
    "The condition len(ls) * 2 > len(w) is crucial. This means that the "
    "function will return as soon as it has processed more than half of the "
    "input string.\n\n## Step 4: Apply the function to the input 'flak'\n"
    "Given the input 'flak', let's go through the function step by step. "
    "Initially, ls = ['f', 'l', 'a', 'k'] and omw = ''.\n\n"
    "## Step 5: First iteration of the while loop\n"
    "After the first iteration, ls = ['l', 'a', 'k'] and omw = 'f'. Since 3 "
    "* 2 > 4, the function will return the result of 'flak'[3:] == 'f', "
    "which simplifies to 'k' == 'f'.\n\n"
    "## Step 6: Conclusion\nSince 'k' is not equal to 'f', the function "
    "f('flak') will return False.\n\nThe final answer is: $\\boxed{False}$"
)

# ZeroEval crux, gpt-4o-2024-08-06, item 'crux-test-#0'
CRUX_PLAIN = (
    '```json\n{\n    "reasoning": "The function `f` takes a list of '
    "numbers `nums` and returns a list of tuples. Each tuple contains the "
    "count of occurrences of a number in `nums` and the number itself. The "
    "list of tuples is then sorted in descending order. For the input `[1, "
    "1, 3, 1, 3, 1]`, the function will process each number as follows: - "
    "The number `1` appears 4 times, so the tuple `(4, 1)` is created. - The "
    "number `3` appears 2 times, so the tuple `(2, 3)` is created. The "
    "function will append these tuples for each occurrence of the numbers in "
    "the list, resulting in `[(4, 1), (4, 1), (2, 3), (4, 1), (2, 3), (4, "
    "1)]`. After sorting in reverse order, the list remains the same because "
    "the tuples are already in descending order based on the first element "
    "of each tuple. Therefore, the output of the function for the given "
    'input is `[(4, 1), (4, 1), (2, 3), (4, 1), (2, 3), (4, 1)]`.",\n    '
    '"answer": "[(4, 1), (4, 1), (2, 3), (4, 1), (2, 3), (4, 1)]"\n'
    "}\n```"
)


@pytest.mark.parametrize(
    ("response", "gold", "answer", "right"),
    [
        (CRUX_PLAIN, "[(4, 1), (4, 1), (4, 1), (4, 1), (2, 3), (2, 3)]", None, False),
        # the bare value `""` (backticks, no JSON quotes) is the empty string
        (CRUX_EMPTY_STRING, "''", "''", True),
        (CRUX_JSON_QUOTES, "['123', '23', '3']", "['123', '23', '3']", True),
        # {8: 5, 8: 2, 5: 3} only equals {8: 2, 5: 3} because Python drops the
        # repeated key; the model did not predict the output
        (CRUX_REPEATED_KEY, "{8: 2, 5: 3}", None, False),
        (CRUX_SPACES_QUOTED, "'   rock   paper   scissors  '", None, True),
        # a JSON string holding the text itself, spaces included
        (CRUX_SPACES_BARE, "'   rock   paper   scissors  '", None, True),
        (CRUX_BOXED, "False", "False", True),  # "$\boxed{False}$", no JSON
    ],
)
def test_crux_real_replies(
    response: str, gold: str, answer: str | None, right: bool
) -> None:
    assert verify("cruxeval", response, gold) is right
    if answer is not None:
        assert extract_answer("cruxeval", response) == answer


def test_crux_spaces_matter() -> None:
    gold = "'   rock   paper   scissors  '"
    assert not verify("cruxeval", '{"answer": "rock paper scissors"}', gold)
    assert extract_answer("cruxeval", CRUX_SPACES_BARE) == extract_answer(
        "cruxeval", CRUX_SPACES_QUOTED
    )


@pytest.mark.parametrize(
    ("answer", "gold", "same"),
    [
        ("[1,2]", "[1, 2]", True),
        ('{"a": 1, "b": 2}', "{'b': 2, 'a': 1}", True),  # key order is not output
        ("true", "True", True),  # JSON's spelling of a bare value
        ("8.50", "8.5", True),
        ("(('a', 123), ('b', 456))", "(('a', 123), ('b', 456))", True),
        ("'abc'", "'abc'", True),
        ("abc", "'abc'", True),  # the JSON string is the output string
        ("'abc", "'abc'", True),  # sloppy quotes around the right text
        ("'123'", "123", False),  # a string is not the number
        ("123", "'123'", True),  # the JSON string "123" may be the string '123'
        ("t\\nZA\\nA", "'t\\nZA\\nA'", True),  # escaped newlines in the JSON
        ("'['xy', 'ab']'", "['xy', 'ab']", True),  # a list wrapped in quotes
        ("[1, 2, 3]", "[1, 2]", False),
        ("", "''", False),
    ],
)
def test_crux_literal_matching(answer: str, gold: str, same: bool) -> None:
    assert crux_matches(answer, gold) is same


def test_crux_call_is_not_an_answer() -> None:
    assert extract_answer("cruxeval", '{"answer": "f([1, 2])"}') is None
    assert extract_answer("cruxeval", '{"answer": "assert f(1) == 2"}') == "2"
