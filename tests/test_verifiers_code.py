"""MBPP verifier: code extraction, name binding and the sandbox.

The two replies below are copied verbatim from ``routerbench/mbpp_*.csv``; their
tests come from LLMRouter's copy of MBPP (``default_query_*.jsonl``), joined on the
prompt text. RouterBench's prompts carry no signature, so the replies name their
function differently from the tests; the source scored both 0.0 although the code
is right once bound to the tested name.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from xrouter.core.errors import SandboxError
from xrouter.records.verifiers import extract_answer, verify, verify_code
from xrouter.records.verifiers.code import bind_tested_name, extract_code, parse_tests
from xrouter.records.verifiers.sandbox import run_tests

COUNT_LIST_TESTS = [
    "assert count_list([[1, 3], [5, 7], [9, 11], [13, 15, 17]]) == 4",
    "assert count_list([[1,2],[2,3],[4,5]]) == 3",
    "assert count_list([[1,0],[2,0]]) == 2",
]
FIND_VOLUME_TESTS = [
    "assert find_Volume(10,8,6) == 240",
    "assert find_Volume(3,2,2) == 6",
    "assert find_Volume(1,2,1) == 1",
]
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]

# RouterBench mbpp, mbpp.dev.410, claude-v2 (recorded score 0.0)
COUNT_LISTS = (
    "Here is a python function to count the number of lists in a given "
    "number of lists:\n\n```python\ndef count_lists(lists):\n    count = "
    "0\n    for element in lists:\n        if isinstance(element, "
    "list):\n            count += 1\n    return count\n"
    "```\n\nTo break this down:\n\n- The function accepts a parameter "
    "`lists` which will contain the element(s) we want to check. This could "
    "be a single list or a list of lists.\n\n"
    "- Initialize a counter `count` to 0 to keep track of the number of "
    "lists we find.\n\n- Loop through each `element` in `lists`\n\n"
    "- Use `isinstance(element, list)` to check if the element is a list. "
    "This will return True if it is.\n\n"
    "- If `element` is a list, increment `count` by 1.\n\n"
    "- After checking all elements, `count` will contain the total number of "
    "lists that were found.\n\n- Return the `count`.\n\n"
    "To use it:\n\n```python\nall_lists = [[1, 2], [3, 4], [5, 6]]\n"
    "num_lists = count_lists(all_lists)\n"
    "print(num_lists) # Prints 3\n```\n\n"
    "So this provides an easy way to get the number of lists that exist in a "
    "nested list structure."
)

# RouterBench mbpp, mbpp.dev.9, claude-instant-v1 (recorded score 0.0)
PRISM_VOLUME = (
    "Here is a Python function to calculate the volume of a triangular "
    "prism:\n\n```python\ndef triangular_prism_volume(base, height, "
    "length):\n    area_of_base = (base * height) / 2\n    return "
    "area_of_base * length\n```\n\nThe function takes in:\n\n"
    "- `base`: The length of the base triangle side \n"
    "- `height`: The height (perpendicular distance) of the triangle from "
    "the base\n- `length`: The length of the prism\n\n"
    "It then calculates the area of the triangular base using `base * height "
    "/ 2`. It multiplies this by the length to get the total volume.\n\n"
    "Example:\n```python\ntriangular_prism_volume(10, 8, 15)\n"
    "# Result: 600\n```"
)


def test_real_reply_passes_once_bound_to_the_tested_name() -> None:
    assert verify_code(COUNT_LISTS, COUNT_LIST_TESTS)
    assert not verify_code(COUNT_LISTS, COUNT_LIST_TESTS, rebind=False)
    assert verify_code(PRISM_VOLUME, FIND_VOLUME_TESTS)


def test_verify_takes_tests_as_gold_text() -> None:
    # RouterBench's ingest stores the tests as a JSON list
    gold = '["assert find_Volume(10,8,6) == 240", "assert find_Volume(3,2,2) == 6"]'
    assert verify("mbpp", PRISM_VOLUME, gold)
    assert parse_tests("assert f(1) == 1\nassert f(2) == 2") == [
        "assert f(1) == 1",
        "assert f(2) == 2",
    ]


def test_extraction_keeps_the_solution_and_drops_example_usage() -> None:
    code = extract_code(COUNT_LISTS)
    assert code is not None and "def count_lists(lists):" in code
    solution = extract_answer("mbpp", COUNT_LISTS)
    assert solution is not None
    assert "print(" not in solution and solution.startswith("def count_lists")


@pytest.mark.parametrize(
    "response",
    [
        "[PYTHON]\ndef add(a, b):\n    return a + b\n[/PYTHON]",
        "def add(a, b):\n    return a + b",
        "Sure:\n\ndef add(a, b):\n    return a + b\n\nThis adds the numbers.",
        # a reply cut off inside its fence: the complete lines still count
        "```python\ndef add(a, b):\n    return a + b\n\nprint(add(1, ",
        # example usage that would block on stdin is not run
        "```python\ndef add(a, b):\n    return a + b\n\nn = int(input())\n```",
    ],
)
def test_code_shapes(response: str) -> None:
    assert verify_code(response, ADD_TESTS)


def test_extra_trailing_argument_is_dropped() -> None:
    # MBPP passes the length too: get_Inv_Count(arr, n)
    response = (
        "```python\ndef count_inversions(arr):\n"
        "    return sum(a > b for i, a in enumerate(arr) for b in arr[i + 1:])\n```"
    )
    tests = ["assert get_Inv_Count([1,20,6,4,5],5) == 5"]
    assert verify_code(response, tests)
    bound = bind_tested_name("def count_inversions(arr):\n    return 0\n", tests)
    assert "return count_inversions(*args[:1], **kwargs)" in bound


def test_ambiguous_functions_are_not_bound() -> None:
    code = "def f(a):\n    return a\n\ndef g(a):\n    return a\n"
    assert bind_tested_name(code, ["assert h(1) == 1"]) == code


def test_humaneval_check_block() -> None:
    gold = (
        "\n\nMETADATA = {}\n\n\ndef check(candidate):\n"
        "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n"
        "    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.8) == False\n\n"
    )
    response = (
        "```python\ndef has_close_elements(numbers, threshold):\n"
        "    return any(abs(a - b) < threshold\n"
        "               for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```"
    )
    assert verify("mbpp", response, gold)


def test_sandbox_pass_and_fail() -> None:
    assert run_tests("def add(a, b):\n    return a + b\n", ADD_TESTS).status == "PASS"
    failed = run_tests("def add(a, b):\n    return a - b\n", ADD_TESTS)
    assert not failed.passed and failed.status == "FAIL"
    crashed = run_tests("def add(a, b):\n    return a / 0\n", ADD_TESTS)
    assert crashed.status == "ERROR ZeroDivisionError"


def test_sandbox_kills_an_infinite_loop() -> None:
    result = run_tests(
        "def add(a, b):\n    while True:\n        pass\n", ADD_TESTS, timeout_s=1.0
    )
    assert result.status == "TIMEOUT" and not result.passed


def test_sandbox_refuses_a_memory_hog() -> None:
    code = "def add(a, b):\n    hog = bytearray(2 * 1024**3)\n    return a + b\n"
    result = run_tests(code, ADD_TESTS, memory_mb=256)
    assert result.status == "ERROR MemoryError"


@pytest.mark.parametrize(
    "code",
    [
        "import socket\nsocket.socket()",
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)",
        "import urllib.request\nurllib.request.urlopen('http://1.1.1.1', timeout=1)",
    ],
)
def test_sandbox_blocks_the_network(code: str) -> None:
    result = run_tests(code, [], timeout_s=3.0)
    assert not result.passed and result.status.startswith("ERROR")


def test_sandbox_survives_a_flood_of_output() -> None:
    code = "for _ in range(200000):\n    print('x' * 100)\n"
    assert run_tests(code, [], timeout_s=5.0).passed


def test_sandbox_runs_outside_the_project() -> None:
    project = str(Path(__file__).resolve().parents[1])
    code = (
        f"import os\nassert not os.getcwd().startswith({project!r})\nimport xrouter\n"
    )
    assert run_tests(code, []).status == "ERROR ModuleNotFoundError"


def test_a_sandbox_that_cannot_start_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    with pytest.raises(SandboxError, match="cannot start"):
        run_tests("x = 1", [])
