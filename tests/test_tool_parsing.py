"""Tests of reading tool calls out of a router's free text."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xrouter.orchestrator.parsing import ParsedTurn, ToolCall, parse_tool_calls

MINI = "call_gpt_4o_mini_2024_07_18"
SOLVE = {"system_prompt": "Solve step by step."}
ARGS = '{"system_prompt": "Solve step by step."}'
CALL = f'{{"name": "{MINI}", "arguments": {ARGS}}}'


def calls_of(turn: ParsedTurn) -> list[tuple[str, dict[str, Any]]]:
    return [(call.name, call.arguments) for call in turn.calls]


# -- the forms, one by one ------------------------------------------------------


def test_hermes_tags() -> None:
    text = f"I will ask the small model.\n<tool_call>{CALL}</tool_call>"
    assert parse_tool_calls(text) == ParsedTurn(
        calls=(ToolCall(MINI, SOLVE, f"<tool_call>{CALL}</tool_call>"),),
        errors=(),
        text="I will ask the small model.",
    )


def test_a_tag_without_its_closing_tag() -> None:
    assert parse_tool_calls(f"<tool_call>{CALL}") == ParsedTurn(
        (ToolCall(MINI, SOLVE, f"<tool_call>{CALL}"),), (), ""
    )
    turn = parse_tool_calls(f"<tool_call>\n{CALL}\nThen I will compare.")
    assert calls_of(turn) == [(MINI, SOLVE)]
    assert turn.text == "Then I will compare."


def test_two_calls_in_one_message() -> None:
    text = (
        "Two opinions:\n"
        f"<tool_call>{CALL}</tool_call>\n"
        '<tool_call>{"name": "call_gemma_2_2b_it", "arguments": '
        '{"system_prompt": "Answer briefly.", "max_tokens": 64}}</tool_call>\n'
        "Then I compare."
    )
    turn = parse_tool_calls(text)
    assert calls_of(turn) == [
        (MINI, SOLVE),
        ("call_gemma_2_2b_it", {"system_prompt": "Answer briefly.", "max_tokens": 64}),
    ]
    assert turn.errors == ()
    assert turn.text == "Two opinions:\nThen I compare."


def test_bare_json_without_tags() -> None:
    assert parse_tool_calls(CALL) == ParsedTurn((ToolCall(MINI, SOLVE, CALL),), (), "")
    turn = parse_tool_calls(f"Sure. {CALL} Waiting for it.")
    assert calls_of(turn) == [(MINI, SOLVE)]
    assert turn.text == "Sure. Waiting for it."


def test_json_in_a_fence_followed_by_prose() -> None:
    text = f"```json\n{CALL}\n```\nThis asks GPT-4o mini to solve it."
    assert parse_tool_calls(text) == ParsedTurn(
        (ToolCall(MINI, SOLVE, f"```json\n{CALL}\n```"),),
        (),
        "This asks GPT-4o mini to solve it.",
    )


@pytest.mark.parametrize("tag", ["", "tool_call", "tool_code", "JSON"])
def test_fences_with_any_tag(tag: str) -> None:
    turn = parse_tool_calls(f"Asking.\n```{tag}\n{CALL}\n```")
    assert calls_of(turn) == [(MINI, SOLVE)]
    assert turn.text == "Asking."


def test_a_fence_inside_tags_and_tags_inside_a_fence() -> None:
    inner = f"<tool_call>\n```json\n{CALL}\n```\n</tool_call>"
    assert calls_of(parse_tool_calls(inner)) == [(MINI, SOLVE)]
    outer = f"```\n<tool_call>{CALL}</tool_call>\n```"
    assert parse_tool_calls(outer) == ParsedTurn(
        (ToolCall(MINI, SOLVE, outer),), (), ""
    )


@pytest.mark.parametrize(
    "form",
    [
        f'{{"name": "{MINI}", "parameters": {ARGS}}}',
        f'{{"name": "{MINI}", "arguments": {json.dumps(ARGS)}}}',
        f'{{"type": "function", "function": {{"name": "{MINI}", "arguments": '
        f"{json.dumps(ARGS)}}}}}",
        f'{{"id": "call_9f2", "type": "function", "function": {{"name": "{MINI}", '
        f'"arguments": {ARGS}}}}}',
        f'{{"function": "{MINI}", "arguments": {ARGS}}}',
        f'{{"tool": "{MINI}", "system_prompt": "Solve step by step."}}',
        f'{{"name": "{MINI}", "system_prompt": "Solve step by step."}}',
        f'{{"tool_name": "{MINI}", "args": {ARGS}}}',
        f'{{"name": "{MINI}", "input": {ARGS}}}',
        f'{{"tool_calls": [{CALL}]}}',
        f"[{CALL}]",
        f'{MINI}(system_prompt="Solve step by step.")',
        f"[{MINI}(system_prompt='Solve step by step.')]",
        f"{{'name': '{MINI}', 'arguments': "
        "{'system_prompt': 'Solve step by step.',},}",
    ],
)
def test_every_shape_reads_as_the_same_call(form: str) -> None:
    turn = parse_tool_calls(f"Asking.\n{form}\n")
    assert calls_of(turn) == [(MINI, SOLVE)], form
    assert turn.errors == ()
    assert turn.text == "Asking."


def test_pythonic_calls() -> None:
    text = (
        "call_gpt_4o_2024_08_06(system_prompt='Prove it.', temperature=0.2, "
        'max_tokens=500)\nselect_response(call_id="c1")'
    )
    assert calls_of(parse_tool_calls(text)) == [
        (
            "call_gpt_4o_2024_08_06",
            {"system_prompt": "Prove it.", "temperature": 0.2, "max_tokens": 500},
        ),
        ("select_response", {"call_id": "c1"}),
    ]
    listed = '[call_a(system_prompt="x"), select_response(call_id="c1")]'
    assert parse_tool_calls(f"Done: {listed}") == ParsedTurn(
        (
            ToolCall("call_a", {"system_prompt": "x"}, listed),
            ToolCall("select_response", {"call_id": "c1"}, listed),
        ),
        (),
        "Done:",
    )


def test_a_pythonic_call_inside_a_sentence_is_prose() -> None:
    text = 'You could write call_a(system_prompt="x") here.'
    assert parse_tool_calls(text) == ParsedTurn((), (), text)


def test_lenient_literals() -> None:
    text = (
        "{'name': 'call_a', 'arguments': {'system_prompt': 'x', "
        "'temperature': None, 'stream': True, 'stop': null, 'n': -1,},}"
    )
    expected = {"system_prompt": "x", "temperature": None, "stream": True, "n": -1}
    assert calls_of(parse_tool_calls(text)) == [("call_a", {**expected, "stop": None})]
    raw_newline = '{"name": "call_a", "arguments": {"system_prompt": "line\none"}}'
    assert calls_of(parse_tool_calls(raw_newline)) == [
        ("call_a", {"system_prompt": "line\none"})
    ]


def test_missing_closing_braces_at_the_end_are_added() -> None:
    text = f'Asking. {{"name": "{MINI}", "arguments": {{"system_prompt": "Go."}}'
    assert parse_tool_calls(text) == ParsedTurn(
        (ToolCall(MINI, {"system_prompt": "Go."}, text[8:]),), (), "Asking."
    )
    assert calls_of(parse_tool_calls('call_a(system_prompt="x"')) == [
        ("call_a", {"system_prompt": "x"})
    ]


def test_select_response_in_any_spelling_comes_back_exact() -> None:
    text = (
        '{"name": "Select_Response", "arguments": {"call_id": "c2"}}\n'
        '{"name": "functions.select_response", "arguments": {"call_id": "c3"}}\n'
        'SELECT_RESPONSE(call_id="c4")'
    )
    assert calls_of(parse_tool_calls(text)) == [
        ("select_response", {"call_id": "c2"}),
        ("select_response", {"call_id": "c3"}),
        ("select_response", {"call_id": "c4"}),
    ]


def test_stray_markers_are_removed() -> None:
    text = f"[TOOL_CALLS] [{CALL}]\n<|python_tag|>{CALL}</tool_call>"
    turn = parse_tool_calls(text)
    assert calls_of(turn) == [(MINI, SOLVE), (MINI, SOLVE)]
    assert turn.text == ""


# -- what is not a call -----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        'The answer is {"name": "Alice", "age": 3}.',
        'A JSON list: [1, 2, {"a": "b"}] and {"function": "sin", "args": [1]}.',
        "```python\ndef f(x):\n    return {'name': x, 'arguments': x.args}\n```",
        '```json\n{"name": "Alice"}\n```',
        "Use {braces} and [brackets] (and parentheses) freely, don't worry.",
        "Mention a <tool_call> tag in prose.",
        "The set {x | x > 0} is open; f(x) = {1, 2}.",
        "",
        "   ",
    ],
)
def test_text_without_calls_is_kept(text: str) -> None:
    assert parse_tool_calls(text) == ParsedTurn((), (), text.strip())


# -- what cannot be read ------------------------------------------------------------


def test_a_truncated_call_is_one_error() -> None:
    assert parse_tool_calls('<tool_call>{"name": "call_x", "argu') == ParsedTurn(
        (),
        (
            'unreadable tool call {"name": "call_x", "argu: it is cut off before '
            "its closing '}'",
        ),
        "",
    )


X = '{"name": "call_x", "arguments": '


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (X + "[1]}", "'arguments' must be an object, got array"),
        (X + '"{no"}', "'arguments' is a string but not JSON"),
        (X + '{"system_prompt": x}}', "invalid JSON (Expecting value at character 50)"),
        (
            'call_x(p="a", 3)',
            "invalid syntax (positional argument follows keyword argument)",
        ),
        ('call_x("a")', "write a call as name(argument=value, ...)"),
        ("call_x(p=open('f').read())", "it holds a value that is not a literal"),
        ("<tool_call>I will ask GPT-4o.</tool_call>", "no call inside the tags"),
        (f"[{X}{{}}}}, 7]", "item 2 of the list is not a tool call"),
        ('{"name": "", "arguments": {}}', "the tool name is empty"),
    ],
)
def test_unreadable_calls(text: str, reason: str) -> None:
    turn = parse_tool_calls(f"Before.\n{text}\nAfter.")
    assert turn.errors == (f"unreadable tool call {text}: {reason}",)
    assert turn.text == "Before.\nAfter."


def test_errors_and_calls_together() -> None:
    turn = parse_tool_calls(
        f'<tool_call>{CALL}</tool_call>\n<tool_call>{{"name": "call_b", "arg'
    )
    assert calls_of(turn) == [(MINI, SOLVE)]
    assert turn.errors == (
        'unreadable tool call {"name": "call_b", "arg: it is cut off before its '
        "closing '}'",
    )


# -- robustness -------------------------------------------------------------------


ADVERSARIAL = {
    "braces": "{" * 100_000,
    "brackets": "[" * 100_000,
    "nested": '{"a":' * 20_000,
    "nested-calls": f'{{"name": "{MINI}", "arguments": ' * 3_000,
    "tags": '<tool_call>{"' * 9_000,
    "fences": "```json\n{" * 10_000,
    "pythonic": "call_x(\n" * 12_000,
    "deep": "{" * 50_000 + "}" * 50_000,
}


DEEP = "it is nested too deeply"


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("braces", None),
        ("brackets", None),
        ("deep", None),
        ("fences", None),
        ("nested", None),
        ("tags", None),
        (
            "nested-calls",
            f'unreadable tool call {{"name": "{MINI}", "arguments": {{"na...: {DEEP}',
        ),
        ("pythonic", f"unreadable tool call {'call_x( ' * 7}c...: {DEEP}"),
    ],
)
def test_adversarial_input_is_read_as_text_or_one_short_error(
    kind: str, error: str | None
) -> None:
    # How long these take (linear in their length) is measured by
    # benchmarks/hostile_inputs.py; here, what they come back as.
    text = ADVERSARIAL[kind]
    turn = parse_tool_calls(text)
    assert turn.calls == ()
    if error is None:
        assert (turn.text, turn.errors) == (text, ())
    else:
        assert (turn.text, turn.errors) == ("", (error,))


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_any_text_parses_without_raising(text: str) -> None:
    turn = parse_tool_calls(text)
    assert isinstance(turn.text, str)


PIECES = st.sampled_from(
    [
        "{", "}", "[", "]", "(", ")", '"', "'", "\\", ":", ",", "=", "\n", " ",
        "```", "```json\n", "<tool_call>", "</tool_call>", '"name"', '"arguments"',
        "call_x", "call_x(", "select_response", "true", "null", "1e999", "-",
        '{"name": "call_x", "arguments": ', "[TOOL_CALLS]",
    ]
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(st.lists(PIECES | st.text(max_size=3), max_size=40).map("".join))
def test_call_like_debris_parses_without_raising(text: str) -> None:
    turn = parse_tool_calls(text)
    for call in turn.calls:
        assert isinstance(call.name, str)
        assert isinstance(call.arguments, dict)


# -- round trip: calls rendered in any form come back exactly ------------------------

NAMES = st.from_regex(r"call_[A-Za-z0-9_]{1,24}", fullmatch=True) | st.just(
    "select_response"
)
SCALARS = (
    st.text(max_size=30)
    | st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
)
VALUES = (
    SCALARS
    | st.lists(SCALARS, max_size=3)
    | st.dictionaries(st.text(max_size=5), SCALARS, max_size=2)
)
ARGUMENTS = st.dictionaries(
    st.sampled_from(["system_prompt", "temperature", "max_tokens", "call_id", "note"]),
    VALUES,
    max_size=4,
)


def _json(name: str, arguments: dict[str, Any], ascii_only: bool) -> str:
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=ascii_only)


def _pythonic(name: str, arguments: dict[str, Any]) -> str:
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"


Form = Callable[[str, dict[str, Any], bool], str]
FORMS: dict[str, Form] = {
    "tag": lambda n, a, x: f"<tool_call>{_json(n, a, x)}</tool_call>",
    "tag-lines": lambda n, a, x: f"<tool_call>\n{_json(n, a, x)}\n</tool_call>",
    "fence": lambda n, a, x: f"```json\n{_json(n, a, x)}\n```",
    "plain-fence": lambda n, a, x: f"```\n{_json(n, a, x)}\n```",
    "bare": _json,
    "array": lambda n, a, x: f"[{_json(n, a, x)}]",
    "parameters": lambda n, a, x: json.dumps(
        {"name": n, "parameters": a}, ensure_ascii=x
    ),
    "openai": lambda n, a, x: json.dumps(
        {"type": "function", "function": {"name": n, "arguments": json.dumps(a)}},
        ensure_ascii=x,
    ),
    "function-key": lambda n, a, x: json.dumps(
        {"function": n, "arguments": a}, ensure_ascii=x
    ),
    "flat": lambda n, a, x: json.dumps({"tool": n, **a}, ensure_ascii=x),
    "pythonic": lambda n, a, x: _pythonic(n, a),
    "pythonic-list": lambda n, a, x: f"[{_pythonic(n, a)}]",
}
PROSE = st.text(alphabet="abcdefgh ,.!?", max_size=20)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(NAMES, ARGUMENTS, st.sampled_from(sorted(FORMS)), st.booleans()),
        min_size=1,
        max_size=4,
    ),
    st.lists(PROSE, min_size=5, max_size=5),
    st.booleans(),
)
def test_rendered_calls_come_back_exactly(
    calls: list[tuple[str, dict[str, Any], str, bool]],
    prose: list[str],
    leave_last_tag_open: bool,
) -> None:
    pieces = [prose[0]]
    for k, (name, arguments, form, ascii_only) in enumerate(calls):
        pieces += [FORMS[form](name, arguments, ascii_only), prose[k + 1]]
    if leave_last_tag_open and calls[-1][2] == "tag":
        pieces[-2] = pieces[-2].removesuffix("</tool_call>")
    turn = parse_tool_calls("\n".join(pieces))
    assert calls_of(turn) == [(name, arguments) for name, arguments, _, _ in calls]
    assert turn.errors == ()
    assert turn.text.split() == " ".join(prose[: len(calls) + 1]).split()
