"""Malformed requests against the gateway app: never a 5xx, always an OpenAI error.

First the refusals a client meets most, with their exact texts; then hypothesis
sends arbitrary JSON and near-valid chat requests (fields of the wrong type or
range, unknown roles, content parts, tools, stop lists, huge numbers, any Unicode,
nested junk, raw bytes). The app runs in-process under starlette's ``TestClient``
(its start-up included) in front of a real upstream echo server on loopback, so a
request that passes the checks is routed and answered for real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from gateway_server import GPT, MODELS, train_checkpoint, write_config
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from upstream import UpstreamServer

from xrouter.serve.app import create_app
from xrouter.serve.config import load_gateway_config

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hello"}]
FUZZ = settings(
    max_examples=150,
    deadline=5000,  # ms; a routed example takes ~30 ms, a slow CI box far more
    derandomize=True,  # the same examples on every run: no flaky failures
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def app_client(
    zeroeval_store: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("fuzz-home")
    policy = tmp_path_factory.getbasetemp() / "gateway-policy"
    checkpoint = train_checkpoint(zeroeval_store, policy)
    with (
        pytest.MonkeyPatch.context() as patch,
        UpstreamServer() as upstream,
    ):
        patch.setenv("XROUTER_HOME", str(home))
        path = write_config(home / "gateway.yaml", upstream.base_url, checkpoint)
        app = create_app(load_gateway_config(path))
        with TestClient(app) as client:
            yield client


def post(client: TestClient, body: Any, **headers: str) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(CHAT, content=content, headers=headers)


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "xrouter", "messages": USER, **fields}


def invalid(message: str, param: str | None = None) -> dict[str, Any]:
    error = {"message": message, "type": "invalid_request_error"}
    return {"error": error | {"param": param, "code": None}}


REFUSALS: list[tuple[str, Any, int, dict[str, Any]]] = [
    (
        "bad JSON",
        b'{"model": "xrouter",',
        400,
        invalid(
            "the request body is not valid JSON: Expecting property name enclosed "
            "in double quotes: line 1 column 21 (char 20)"
        ),
    ),
    ("array", [chat()], 400, invalid("the request body must be a JSON object")),
    (
        "not UTF-8",
        b'{"model": "\xff"}',
        400,
        invalid("the request body is not UTF-8 (invalid start byte at byte 11)"),
    ),
    (
        "messages a string",
        chat(messages="hi"),
        400,
        invalid("messages: Input should be a valid list", "messages"),
    ),
    (
        "max_tokens a string",
        chat(max_tokens="x"),
        400,
        invalid("max_tokens: Input should be a valid integer", "max_tokens"),
    ),
    (
        "max_tokens huge",
        chat(max_tokens=10**30),
        400,
        invalid(
            "max_tokens: Input should be less than or equal to 1000000", "max_tokens"
        ),
    ),
    (
        "temperature over 2",
        chat(temperature=5),
        400,
        invalid("temperature: Input should be less than or equal to 2", "temperature"),
    ),
    (
        "unknown role",
        chat(messages=[{"role": "wizard", "content": "hi"}]),
        400,
        invalid(
            "messages.0.role: Input should be 'system', 'developer', 'user', "
            "'assistant' or 'tool'",
            "messages.0.role",
        ),
    ),
    (
        "no messages",
        chat(messages=[]),
        400,
        invalid(
            "messages: List should have at least 1 item after validation, not 0",
            "messages",
        ),
    ),
    (
        "only a system message",
        chat(messages=[{"role": "system", "content": "be brief"}]),
        400,
        invalid("messages: there must be at least one user message", "messages"),
    ),
    (
        "an image part",
        chat(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
                    ],
                }
            ]
        ),
        400,
        invalid(
            "messages.0: content part 0 is of type 'image_url'; the gateway takes "
            "text parts only ({'type': 'text', 'text': ...})",
            "messages.0",
        ),
    ),
    (
        "n of 2",
        chat(n=2),
        400,
        invalid("n: the gateway returns one choice; n must be 1, got 2", "n"),
    ),
    (
        "five stop strings",
        chat(stop=list("abcde")),
        400,
        invalid(
            "stop: Input should be a valid string or List should have at most 4 "
            "items after validation, not 5",
            "stop",
        ),
    ),
    (
        "a tool choice naming no tool",
        chat(tool_choice={"type": "function", "function": {"name": "f"}}),
        400,
        invalid(
            "tool_choice: names the function 'f', which is not one of the tools "
            "(none given)",
            "tool_choice",
        ),
    ),
    (
        "NaN",
        b'{"model": "xrouter", "temperature": NaN}',
        400,
        invalid("the request body is not valid JSON: NaN is not a JSON number"),
    ),
    (
        "an integer of 5,000 digits",
        b'{"model": "xrouter", "max_tokens": ' + b"9" * 5000 + b"}",
        400,
        invalid(
            "the request body is not valid JSON: an integer of 5,000 digits is too long"
        ),
    ),
    (
        "a lone surrogate",
        b'{"model": "xrouter", "messages": [{"role": "user", "content": "\\ud800"}]}',
        400,
        invalid(
            "the request body has a lone UTF-16 surrogate escape (\\ud800 to "
            "\\udfff without its pair), which is not text"
        ),
    ),
    (
        "nested too deep",
        chat(tools=[{"type": "function", "function": {"name": "f"}, "x": [[[[[]]]]]}])
        | {"junk": json.loads("[" * 70 + "]" * 70)},
        400,
        invalid("the request body nests arrays or objects over 64 deep"),
    ),
    (
        "unknown model",
        chat(model="gpt-5-ultra"),
        404,
        {
            "error": {
                "message": "model 'gpt-5-ultra' is not served here; use 'xrouter', "
                "'xrouter:lambda=<number>' or one of the pool's models: "
                + ", ".join(MODELS),
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        },
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_a_malformed_request_is_refused_with_its_field_named(
    app_client: TestClient, body: Any, status: int, error: dict[str, Any]
) -> None:
    reply = post(app_client, body)
    assert (reply.status_code, reply.json()) == (status, error)


def test_refusals_outside_the_body(app_client: TestClient) -> None:
    big = post(app_client, chat(junk="x" * 1_000_001))
    assert big.status_code == 413
    assert big.json() == invalid("the request body is over 1,000,000 bytes")

    header = "x-xrouter-max-cost"
    capped = post(app_client, chat(), **{header: "lots"})
    assert capped.json() == invalid(
        f"header {header} must be a number of USD >= 0, got 'lots'", header
    )
    # Two ceilings: neither is taken for the other.
    twice = app_client.post(
        CHAT,
        content=json.dumps(chat()).encode(),
        headers=[(header, "1"), (header, "0.0000001")],
    )
    assert twice.json() == invalid(
        f"header {header} is given 2 times; give one cost ceiling", header
    )
    nowhere = app_client.get("/v1/nothing")
    assert (nowhere.status_code, nowhere.json()["error"]["type"]) == (
        404,
        "not_found_error",
    )
    wrong = app_client.get(CHAT)
    assert wrong.status_code == 405
    assert wrong.json() == invalid(f"GET {CHAT}: Method Not Allowed")


# -- generated requests -------------------------------------------------------------

# Any Unicode, lone surrogates included.
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2, 10**6, 10**6 + 1, 2**63, -1]),
)
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4)
    ),
    max_leaves=20,
)
# A valid request, then zero to three of its fields (top-level, of a message or of
# a tool) replaced with junk; about half stay valid and are answered for real.
WORDS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)  # no Cs
NAME = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
PARTS = st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": WORDS}),
    min_size=1,
    max_size=3,
)
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "system", "assistant", "developer"]),
            "content": WORDS | PARTS,
        }
    ),
    max_size=3,
).map(lambda earlier: [*earlier, {"role": "user", "content": "and now?"}])
TOOLS = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": NAME},
                optional={
                    "description": WORDS,
                    "parameters": st.dictionaries(WORDS, JSON, max_size=3),
                },
            ),
        }
    ),
    min_size=1,
    max_size=2,
)
VALID = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["xrouter", "xrouter:lambda=3", GPT, "gpt-4o-mini"]),
        "messages": MESSAGES,
    },
    optional={
        "max_tokens": st.integers(1, 64),
        "temperature": st.floats(0, 2),
        "stop": WORDS | st.lists(WORDS, max_size=4),
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "tools": TOOLS,
        "tool_choice": st.sampled_from(["none", "auto"]),
        "user": WORDS,
        "n": st.just(1),
        "seed": st.integers(),
    },
)
FIELDS = ["model", "messages", "max_tokens", "max_completion_tokens", "temperature"]
FIELDS += ["stop", "stream", "stream_options", "tools", "tool_choice", "n", "user"]
FIELDS += ["top_p", "seed", "logit_bias", "response_format", "logprobs"]
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id"]
JUNK = JSON | st.sampled_from([[], {}, "", 0, -1, 10**6 + 1, 2**64, "required"])


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = draw(VALID)
    for _ in range(draw(st.integers(0, 3))):
        target, fields = body, FIELDS
        where = draw(st.sampled_from(["request", "message", "tool"]))
        messages = body.get("messages")
        if where == "message" and isinstance(messages, list) and messages:
            # (An earlier mutation may have made the messages junk already.)
            message = draw(st.sampled_from(messages))
            if isinstance(message, dict):
                target, fields = message, MESSAGE_FIELDS
        elif where == "tool" and body.get("tools"):
            target, fields = body["tools"][0]["function"], ["name", "parameters"]
        target[draw(st.sampled_from(fields))] = draw(JUNK)
    return body


def check(reply: Any) -> None:
    """Not a 5xx; an error is an OpenAI error body."""
    assert reply.status_code < 500, reply.text
    event(f"HTTP {reply.status_code}")
    if reply.status_code != 200:
        error = reply.json()["error"]
        assert isinstance(error["message"], str) and isinstance(error["type"], str)


@settings(FUZZ, max_examples=300)
@given(body=near_valid(), ascii_only=st.booleans())
def test_near_valid_requests_never_crash_the_gateway(
    app_client: TestClient, body: dict[str, Any], ascii_only: bool
) -> None:
    try:
        content = json.dumps(body, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:  # a lone surrogate: send it escaped
        content = json.dumps(body).encode()
    check(post(app_client, content))


@FUZZ
@given(body=JSON)
def test_any_json_body_is_refused_cleanly(app_client: TestClient, body: Any) -> None:
    check(post(app_client, json.dumps(body).encode()))


@FUZZ
@given(body=st.binary(max_size=200))
def test_any_bytes_are_refused_cleanly(app_client: TestClient, body: bytes) -> None:
    check(post(app_client, body))
