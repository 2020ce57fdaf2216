"""Tests of the router's tools: names, schemas, argument checks and system prompt."""

from __future__ import annotations

import re

import pytest

from xrouter.core.catalog import ModelCard, load_catalog
from xrouter.core.errors import ConfigError
from xrouter.evaluate.suites import DEFAULT_SUITES
from xrouter.orchestrator.parsing import parse_tool_calls
from xrouter.orchestrator.tools import (
    SELECT_TOOL,
    CallArguments,
    SelectArguments,
    ToolNames,
    is_select,
    router_system_prompt,
    tool_name,
    tool_schemas,
    validate_arguments,
    validate_select,
)
from xrouter.records.tokens import count_tokens

OPENAI_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ZEROEVAL = next(suite for suite in DEFAULT_SUITES if suite.name == "zeroeval")


@pytest.fixture(scope="module")
def pool() -> list[ModelCard]:
    """The 14 model cards of the zeroeval suite, from the shipped catalog."""
    catalog = load_catalog()
    return [catalog.get(model) for model in ZEROEVAL.pool]


def _card(model_id: str) -> ModelCard:
    return (
        load_catalog()
        .get("gpt-4o-mini-2024-07-18")
        .model_copy(update={"id": model_id, "aliases": ()})
    )


# -- tool names ---------------------------------------------------------------


def test_tool_names_of_real_cards() -> None:
    assert tool_name("gpt-4o-mini-2024-07-18") == "call_gpt_4o_mini_2024_07_18"
    assert (
        tool_name("meta-llama-3.1-8b-instruct@bedrock")
        == "call_meta_llama_3_1_8b_instruct_bedrock"
    )
    assert tool_name("meta.llama3-1-8b-instruct-v1:0") == (
        "call_meta_llama3_1_8b_instruct_v1_0"
    )
    assert (
        tool_name("mistralai/mixtral-8x7b-chat") == "call_mistralai_mixtral_8x7b_chat"
    )


def test_every_pool_name_is_a_valid_openai_name_and_maps_back(
    pool: list[ModelCard],
) -> None:
    names = ToolNames(card.id for card in pool)
    assert len(names) == 14
    assert names.models == tuple(card.id for card in pool)
    for card, name in zip(pool, names.names, strict=True):
        assert OPENAI_NAME.match(name), name
        assert names.name_of(card.id) == name == tool_name(card.id)
        assert names.model_of(name) == card.id


def test_a_name_over_64_characters_is_refused() -> None:
    assert len(tool_name("x" * 59)) == 64
    with pytest.raises(ConfigError) as caught:
        tool_name("x" * 60)
    assert str(caught.value) == (
        f"model id {'x' * 60!r} gives the tool name {'call_' + 'x' * 60!r} of 65 "
        "characters; OpenAI allows at most 64. Give the model a card of your own "
        "with an id of at most 59 characters."
    )


def test_two_ids_with_one_tool_name_are_refused_naming_both() -> None:
    with pytest.raises(ConfigError) as caught:
        ToolNames(["gpt-4o.mini", "gpt-4o-mini"])
    assert str(caught.value) == (
        "models 'gpt-4o.mini' and 'gpt-4o-mini' both get the tool name "
        "'call_gpt_4o_mini' (characters outside A-Z, a-z, 0-9 and _ become _), so a "
        "router could not tell them apart. Drop one of them from the pool or give "
        "one a card of your own with another id."
    )


def test_a_model_twice_in_a_pool_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        ToolNames(["gemma-2-2b-it", "gemma-2-2b-it"])
    assert str(caught.value) == (
        "model 'gemma-2-2b-it' is in the pool twice; list each model once."
    )


def test_name_of_a_model_outside_the_pool() -> None:
    with pytest.raises(ConfigError) as caught:
        ToolNames(["gemma-2-2b-it", "gpt-4o-2024-08-06"]).name_of("o1-mini")
    assert str(caught.value) == (
        "model 'o1-mini' is not in this pool; its models are gemma-2-2b-it, "
        "gpt-4o-2024-08-06."
    )


def test_model_of_tolerates_what_small_routers_write(pool: list[ModelCard]) -> None:
    names = ToolNames(card.id for card in pool)
    mini = "gpt-4o-mini-2024-07-18"
    for written in (
        "call_gpt_4o_mini_2024_07_18",
        " call_gpt_4o_mini_2024_07_18\n",
        "gpt-4o-mini-2024-07-18",
        "CALL_GPT_4O_MINI_2024_07_18",
        "functions.call_gpt_4o_mini_2024_07_18",
        "call_gpt-4o-mini-2024-07-18",
        "gpt_4o_mini_2024_07_18",
        "GPT-4o-mini-2024-07-18",
    ):
        assert names.model_of(written) == mini, written
    for unknown in ("call_gpt_4o_mini", "gpt-4o-mini", "select_response", "", "call_"):
        assert names.model_of(unknown) is None, unknown


def test_model_of_never_guesses_between_two_models() -> None:
    names = ToolNames(["GPT-4", "gpt-4"])
    assert names.names == ("call_GPT_4", "call_gpt_4")
    assert names.model_of("call_GPT_4") == "GPT-4"
    assert names.model_of("gpt-4") == "gpt-4"
    assert names.model_of("Call_Gpt_4") is None
    assert names.model_of("GpT-4") is None


def test_is_select() -> None:
    assert is_select("select_response")
    assert is_select(" Select_Response ")
    assert is_select("functions.select_response")
    assert not is_select("select")
    assert not is_select("call_select_response")


# -- schemas ------------------------------------------------------------------


def test_schemas_of_the_zeroeval_pool(pool: list[ModelCard]) -> None:
    schemas = tool_schemas(pool)
    assert [s["function"]["name"] for s in schemas] == [
        *ToolNames(card.id for card in pool).names,
        SELECT_TOOL,
    ]
    assert all(s["type"] == "function" for s in schemas)

    mini = schemas[ZEROEVAL.pool.index("gpt-4o-mini-2024-07-18")]["function"]
    assert mini["name"] == "call_gpt_4o_mini_2024_07_18"
    assert mini["description"] == (
        "Send the task to gpt-4o-mini-2024-07-18: OpenAI GPT-4o mini; budget tier of "
        "the xRouter pool, also in ZeroEval. Price: $0.15 per 1M input tokens, $0.60 "
        "per 1M output tokens. Context window: 128,000 tokens. Tier: budget. "
        "Capabilities: chat, code, math, tools, vision, long-context."
    )
    flash = schemas[ZEROEVAL.pool.index("gemini-1.5-flash")]["function"]
    assert (
        "Price: $0.075 per 1M input tokens, $0.30 per 1M output tokens"
        in (flash["description"])
    )

    parameters = mini["parameters"]
    assert parameters["required"] == ["system_prompt"]
    assert parameters["additionalProperties"] is False
    properties = parameters["properties"]
    assert list(properties) == ["system_prompt", "temperature", "max_tokens"]
    assert properties["system_prompt"]["type"] == "string"
    assert (
        properties["temperature"]["minimum"],
        properties["temperature"]["maximum"],
    ) == (0, 2)
    assert properties["max_tokens"] == {
        "type": "integer",
        "minimum": 1,
        "description": "Most output tokens; the model's own limit if left out.",
    }


def test_select_schema_and_independent_copies() -> None:
    first, second, select = tool_schemas([_card("a"), _card("b")])
    assert select["function"]["name"] == "select_response"
    assert select["function"]["parameters"]["required"] == ["call_id"]
    assert select["function"]["parameters"]["properties"]["call_id"]["type"] == "string"

    first["function"]["parameters"]["properties"].clear()
    select["function"]["parameters"].clear()
    assert len(second["function"]["parameters"]["properties"]) == 3
    assert tool_schemas([_card("a")])[-1] == tool_schemas([_card("b")])[-1]
    assert (
        "call_id"
        in tool_schemas([_card("a")])[-1]["function"]["parameters"]["required"]
    )


def test_schemas_refuse_a_pool_with_colliding_names() -> None:
    with pytest.raises(ConfigError, match="both get the tool name 'call_my_model'"):
        tool_schemas([_card("my-model"), _card("my.model")])


# -- arguments ----------------------------------------------------------------


def test_valid_call_arguments() -> None:
    assert validate_arguments(
        "call_gpt_4o",
        {"system_prompt": "Be brief.", "temperature": 0.2, "max_tokens": 200},
    ) == CallArguments("Be brief.", 0.2, 200)
    assert validate_arguments("call_gpt_4o", {"system_prompt": "x"}) == CallArguments(
        "x"
    )
    assert validate_arguments(
        "call_gpt_4o",
        {"system_prompt": "x", "temperature": 0, "max_tokens": None, "stop": ["\n"]},
    ) == CallArguments("x", 0.0, None)


def test_lenient_call_arguments() -> None:
    assert validate_arguments(
        "call_x", {"system_prompt": "x", "temperature": "0.7", "max_tokens": "256"}
    ) == CallArguments("x", 0.7, 256)
    assert validate_arguments(
        "call_x", {"system_prompt": "x", "temperature": 2, "max_tokens": 200.0}
    ) == CallArguments("x", 2.0, 200)


def test_system_and_prompt_are_aliases_in_that_order() -> None:
    assert validate_arguments("call_x", {"system": "a"}) == CallArguments("a")
    assert validate_arguments("call_x", {"prompt": "b"}) == CallArguments("b")
    assert validate_arguments(
        "call_x", {"prompt": "b", "system": "a", "system_prompt": "c"}
    ) == CallArguments("c")
    assert validate_arguments("call_x", {"prompt": "b", "system": "a"}) == (
        CallArguments("a")
    )
    assert validate_arguments(
        "call_x", {"system_prompt": None, "prompt": "b"}
    ) == CallArguments("b")


TEMPERATURE = "temperature must be a number from 0 to 2, got"
MAX_TOKENS = "max_tokens must be a whole number >= 1, got"


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"system_prompt": "x", "temperature": "hot"}, f"{TEMPERATURE} 'hot'"),
        ({"system_prompt": "x", "temperature": 2.5}, f"{TEMPERATURE} 2.5"),
        ({"system_prompt": "x", "temperature": float("nan")}, f"{TEMPERATURE} nan"),
        ({"system_prompt": "x", "max_tokens": 0}, f"{MAX_TOKENS} 0"),
        ({"system_prompt": "x", "max_tokens": "lots"}, f"{MAX_TOKENS} 'lots'"),
        ({}, "system_prompt is required: write the model's system prompt"),
        ({"system": 42}, "system must be a string, got 42"),
        (
            {"system_prompt": ["x"], "temperature": True, "max_tokens": 2.5},
            "system_prompt must be a string, got ['x']; "
            f"{TEMPERATURE} True; {MAX_TOKENS} 2.5",
        ),
        (
            {"system_prompt": "x", "temperature": [1] * 50},
            f"{TEMPERATURE} [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, ...",
        ),
    ],
)
def test_call_argument_errors(arguments: dict[str, object], problem: str) -> None:
    assert validate_arguments("call_gpt_4o", arguments) == f"call_gpt_4o: {problem}"


def test_arguments_that_are_not_an_object() -> None:
    assert validate_arguments("call_x", ["a"]) == (  # type: ignore[arg-type]
        "call_x: arguments must be a JSON object, got ['a']"
    )


def test_select_arguments() -> None:
    assert validate_select({"call_id": "c1"}) == SelectArguments("c1")
    assert validate_select({"call_id": " c2 ", "why": "best"}) == SelectArguments("c2")
    assert validate_select({"call_id": 3}) == SelectArguments("3")
    assert validate_select({}) == (
        "select_response: call_id is required: the id of an earlier call"
    )
    assert validate_select({"call_id": ""}) == (
        "select_response: call_id must be a non-empty string, got ''"
    )
    assert validate_select({"call_id": True}) == (
        "select_response: call_id must be a non-empty string, got True"
    )
    assert validate_select("c1") == (  # type: ignore[arg-type]
        "select_response: arguments must be a JSON object, got 'c1'"
    )


# -- the router's system prompt -------------------------------------------------


def test_system_prompt_of_the_zeroeval_pool_is_compact(pool: list[ModelCard]) -> None:
    prompt = router_system_prompt(pool)
    assert count_tokens(prompt) == 739
    assert count_tokens(router_system_prompt(pool, lam=2.0)) == 876
    assert count_tokens(router_system_prompt(pool, tools_text=False)) == 160

    lines = prompt.splitlines()
    assert len(lines) == 1 + 3 + 1 + 14 + 2
    assert lines[4] == "Tools ($ per 1M input/output tokens, context, tier):"
    assert (
        "call_gpt_4o_mini_2024_07_18 $0.15/$0.60 128K budget code,math: "
        "OpenAI GPT-4o mini"
    ) in lines
    assert (
        "call_gemma_2_2b_it $0.10/$0.10 8K budget: Google Gemma 2 2B instruction-tuned"
        in lines
    )
    assert (
        "call_o1_mini_2024_09_12 $3.00/$12.00 128K specialized reasoning,code,math: "
        "OpenAI o1-mini reasoning model"
    ) in lines
    assert (
        "call_gemini_1_5_pro $3.50/$10.50 2.1M premium code,math: Google Gemini 1.5 Pro"
        in lines
    )
    assert lines[-2:] == [
        "Each call_ tool takes system_prompt (string, required), temperature (0 to 2) "
        "and max_tokens (integer).",
        "select_response takes call_id (string, required).",
    ]


def test_system_prompt_states_the_rules(pool: list[ModelCard]) -> None:
    rules = router_system_prompt(pool).splitlines()[0]
    for rule in (
        "If the request is easy for you, answer it yourself.",
        "Otherwise call one or more pool models",
        "If two models would both do, call the cheaper one.",
        "either return one response verbatim with select_response, or write the "
        "final answer yourself from the responses.",
    ):
        assert rule in rules


def test_the_prompts_examples_parse_into_valid_calls(pool: list[ModelCard]) -> None:
    names = ToolNames(card.id for card in pool)
    parsed = parse_tool_calls(router_system_prompt(pool, tools_text=False))
    assert parsed.errors == ()
    assert [call.name for call in parsed.calls] == ["call_gemma_2_2b_it", SELECT_TOOL]
    example, select = parsed.calls
    assert names.model_of(example.name) == "gemma-2-2b-it"  # the cheapest model
    assert validate_arguments(example.name, example.arguments) == CallArguments(
        "Solve step by step. End with the answer."
    )
    assert validate_select(select.arguments) == SelectArguments("c1")


def test_system_prompt_says_how_much_cost_matters(pool: list[ModelCard]) -> None:
    # Last, after the tools, nearest where the router chooses.
    assert router_system_prompt(pool, lam=2.0).splitlines()[-1] == (
        "Cost weight lambda=2: each USD spent takes 2 off the score of a correct "
        "answer (1K tokens in and out of claude-3-opus-20240229 cost $0.0900, "
        "-0.1800)."
    )
    assert router_system_prompt(pool, lam=0.0).splitlines()[-1] == (
        "Cost does not matter here: only a correct answer counts."
    )
    assert "Cost" not in router_system_prompt(pool)


def test_with_a_cost_weight_each_tool_says_what_a_call_costs_in_score(
    pool: list[ModelCard],
) -> None:
    # o1-mini: 1K tokens in at $3 per 1M and 1K out at $12 per 1M are $0.015.
    lines = router_system_prompt(pool, lam=2.0).splitlines()
    assert lines[4] == (
        "Tools (score a call of 1K tokens in and out costs at this lambda, $ per 1M "
        "input/output tokens, context, tier):"
    )
    assert lines[5] == (
        "call_o1_mini_2024_09_12 -0.0300 $3.00/$12.00 128K specialized "
        "reasoning,code,math: OpenAI o1-mini reasoning model"
    )
    assert "call_gemma_2_2b_it -0.0004 $0.10/$0.10 8K budget" in lines[-4]
    at_100 = router_system_prompt(pool, lam=100.0).splitlines()
    assert at_100[5].startswith("call_o1_mini_2024_09_12 -1.5000 $3.00/$12.00")
    free = router_system_prompt(pool, lam=0.0).splitlines()
    assert free[4] == "Tools ($ per 1M input/output tokens, context, tier):"
    assert free[5].startswith("call_o1_mini_2024_09_12 $3.00/$12.00")


def test_system_prompt_without_the_tool_list(pool: list[ModelCard]) -> None:
    prompt = router_system_prompt(pool, tools_text=False)
    assert "call_o1_mini_2024_09_12" not in prompt
    assert prompt.splitlines()[-3] == "Call tools like this, one call per line:"


def test_system_prompt_refusals(pool: list[ModelCard]) -> None:
    with pytest.raises(ConfigError) as caught:
        router_system_prompt(pool, lam=-1.0)
    assert str(caught.value) == "lam (lambda, the cost weight) must be >= 0, got -1.0"
    with pytest.raises(ConfigError) as caught:
        router_system_prompt([])
    assert str(caught.value) == "a router needs a pool of at least one model card."
