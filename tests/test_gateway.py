"""The gateway on loopback, called with the official openai client.

Three pool models on one upstream echo server (``tests/upstream.py``), a policy
trained on their real ZeroEval records, a request log in a temporary
``XROUTER_HOME``. Costs are checked against the models' card prices, written out
here so that a changed card shows up as a failure. Malformed requests are in
``test_gateway_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from itertools import groupby
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from _checkpoints import stamp_manifest
from gateway_server import (
    CLAUDE,
    FALLBACKS,
    GEMMA,
    GPT,
    MODELS,
    ROUTES,
    GatewayServer,
    flood,
    train_checkpoint,
    write_config,
)
from upstream import DRIP_S, UpstreamServer

from xrouter.policies.checkpoint import load_checkpoint
from xrouter.records.tokens import count_tokens
from xrouter.serve import requestlog
from xrouter.serve.config import GatewayConfig, load_gateway_config
from xrouter.serve.keys import hash_key
from xrouter.serve.requestlog import RequestEntry, RequestLog, default_log_path

# USD per million input and output tokens, from the model cards.
PRICES = {GPT: (0.15, 0.60), CLAUDE: (0.25, 1.25), "gemma-2-2b-it": (0.10, 0.10)}
ASK = "how many legs does a spider have"
ECHO = f"echo: {ASK}"
SYSTEM = "You answer in one short sentence."
USER: Any = [{"role": "user", "content": ASK}]
FACT = {"type": "object", "properties": {"input": {"type": "string"}}}
LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": FACT}}
LIMITS = {"call_timeout_s": 1.5, "episode_timeout_s": 3.0, "retries": 2}
MakeConfig = Callable[..., GatewayConfig]


def words(text: str) -> int:
    return len(text.split())


def price(model: str, tokens_in: int, tokens_out: int) -> float:
    per_in, per_out = PRICES[model]
    return (tokens_in * per_in + tokens_out * per_out) / 1e6


def last_logged() -> RequestEntry:
    """The newest entry of the request log in ``XROUTER_HOME``."""
    log = RequestLog(default_log_path())
    try:
        return log.recent(1)[0]
    finally:
        log.close()


def meta(reply: Any) -> dict[str, Any]:
    """The ``xrouter`` extension field of a completion or chunk."""
    extra: dict[str, Any] = reply.model_extra or {}
    return dict(extra["xrouter"])


def stream_until_error(client: openai.OpenAI, says: str) -> tuple[str, float]:
    """The text a direct stream to GPT sent before the error event that ends it
    (whose message must hold ``says``), and the seconds it took."""
    texts = []
    started = time.monotonic()
    with (
        pytest.raises(openai.APIError, match=re.escape(says)),
        client.chat.completions.create(model=GPT, messages=USER, stream=True) as stream,
    ):
        for chunk in stream:
            texts.append(chunk.choices[0].delta.content or "")
    return "".join(texts), time.monotonic() - started


@pytest.fixture(scope="module")
def running() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture
def upstream(running: UpstreamServer) -> UpstreamServer:
    running.reset()
    return running


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("xrouter-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XROUTER_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def make_config(
    home: Path,
    running: UpstreamServer,
    zeroeval_store: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> MakeConfig:
    policy = tmp_path_factory.getbasetemp() / "gateway-policy"
    checkpoint = train_checkpoint(zeroeval_store, policy)

    def make(name: str, **fields: Any) -> GatewayConfig:
        path = home / f"{name}.yaml"
        return load_gateway_config(
            write_config(path, running.base_url, checkpoint, **fields)
        )

    return make


@pytest.fixture(scope="module")
def gateway(make_config: MakeConfig) -> Iterator[GatewayServer]:
    with GatewayServer(make_config("gateway", limits=LIMITS)) as server:
        yield server


@pytest.fixture(scope="module")
def client(gateway: GatewayServer) -> Iterator[openai.OpenAI]:
    url = gateway.base_url
    with openai.OpenAI(base_url=url, api_key="-", max_retries=0) as made:
        yield made


@pytest.fixture(scope="module")
def http(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as made:
        yield made


pytestmark = pytest.mark.usefixtures("upstream")  # a clean upstream in every test

# -- answers and what they cost ---------------------------------------------------


def test_a_routed_answer_carries_its_cost_usage_and_headers(
    client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    messages = [{"role": "system", "content": SYSTEM}, *USER]
    raw = client.chat.completions.with_raw_response.create(
        model="xrouter", messages=messages
    )
    reply, info = raw.parse(), meta(raw.parse())

    assert reply.choices[0].message.content == ECHO
    (call,) = [c for c in info["calls"] if not c["by_router"]]
    model = call["model"]
    assert model in MODELS and info["models"] == [model] and reply.model == model
    assert (info["router"], info["lambda"]) == ("xrouter-policy", 2.0)
    assert upstream.requests[-1]["model"] == ROUTES[model]
    assert upstream.requests[-1]["messages"] == messages
    tokens = (words(SYSTEM) + words(ASK), words(ECHO))
    assert (call["input_tokens"], call["output_tokens"]) == tokens
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == tokens
    cost = price(model, *tokens)
    assert info["cost_usd"] == pytest.approx(cost, rel=1e-9)
    assert info["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in info["calls"]))
    assert raw.headers["x-xrouter-cost-usd"] == f"{info['cost_usd']:.10f}"
    assert raw.headers["x-xrouter-models"] == model
    assert raw.headers["x-xrouter-router"] == "xrouter-policy"
    assert raw.headers["x-xrouter-request-id"] == reply.id == info["request_id"]

    entry = last_logged()
    assert (entry.request_id, entry.status, entry.outcome) == (reply.id, 200, "ok")
    assert entry.cost_usd == pytest.approx(cost, rel=1e-9)
    assert entry.answered_by == (model,)
    assert [c.model for c in entry.calls if not c.by_router] == [model]


def test_a_tight_ceiling_routes_to_a_model_it_can_pay_for(
    http: httpx.Client,
) -> None:
    # At lambda 0.5 cost hardly counts and the policy picks a dearer model; a
    # ceiling that only gemma's worst case fits (200 tokens at $0.10 per 1M,
    # against gpt-4o-mini's $0.60 and claude-3-haiku's $1.25) offers it alone.
    chat = "/v1/chat/completions"
    ask = {"model": "xrouter:lambda=0.5", "messages": USER, "max_tokens": 200}
    free = http.post(chat, json=ask)
    assert free.status_code == 200 and free.headers["x-xrouter-models"] != GEMMA
    ceiling = {"x-xrouter-max-cost": "0.00006"}
    for stream in (False, True):
        capped = http.post(chat, json=ask | {"stream": stream}, headers=ceiling)
        assert capped.status_code == 200, capped.text
        assert last_logged().answered_by == (GEMMA,)
        assert last_logged().cost_usd <= 6e-5


def test_a_refused_request_is_logged_under_the_id_it_was_told(
    http: httpx.Client,
) -> None:
    chat = "/v1/chat/completions"
    bad = http.post(chat, json={"model": "xrouter", "messages": []})
    assert bad.status_code == 400
    entry = last_logged()
    assert entry.request_id == bad.headers["x-xrouter-request-id"]
    assert (entry.status, entry.outcome) == (400, "invalid_request_error")
    assert entry.error == bad.json()["error"]["message"]
    unknown = http.post(chat, json={"model": "no-such-model", "messages": USER})
    assert unknown.status_code == 404
    assert last_logged().request_id == unknown.headers["x-xrouter-request-id"]
    assert last_logged().requested_model == "no-such-model"
    ask = {"model": GPT, "messages": USER}
    over = http.post(chat, json=ask, headers={"x-xrouter-max-cost": "0"})
    assert over.status_code == 402
    assert over.json()["error"]["code"] == "cost_ceiling_exceeded"
    message = over.json()["error"]["message"]
    assert message.startswith(
        f"over the request's cost ceiling: a call to {GPT} may cost up to $"
    )
    assert message.endswith(
        "left of the request's cost ceiling (limit $0.000000); raise the "
        "x-xrouter-max-cost header or ask for less (a shorter prompt or a lower "
        "max_tokens)"
    )
    assert last_logged().request_id == over.headers["x-xrouter-request-id"]
    assert last_logged().status == 402


def test_the_official_client_does_not_retry_a_request_over_its_ceiling(
    gateway: GatewayServer,
) -> None:
    before = last_logged().request_id
    retrying = openai.OpenAI(base_url=gateway.base_url, api_key="-", max_retries=2)
    with retrying as made, pytest.raises(openai.APIStatusError) as info:
        made.chat.completions.create(
            model=GPT,
            messages=USER,  # type: ignore[arg-type]
            extra_headers={"x-xrouter-max-cost": "0"},
        )
    assert info.value.status_code == 402
    log = RequestLog(default_log_path())
    try:
        entries = log.recent(5)
    finally:
        log.close()
    ids = [e.request_id for e in entries]
    assert ids[1] == before  # one request logged: the client asked once


def test_sampling_settings_and_a_response_format_reach_the_model(
    client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    schema = {"name": "fact", "schema": FACT}
    passed = {
        "top_p": 0.5,
        "seed": 7,
        "frequency_penalty": 0.25,
        "presence_penalty": -0.5,
        "logit_bias": {"1734": -100.0},
        "response_format": {"type": "json_schema", "json_schema": schema},
    }
    for model in (GPT, "xrouter"):
        client.chat.completions.create(
            model=model,
            messages=USER,
            top_p=0.5,
            seed=7,
            frequency_penalty=0.25,
            presence_penalty=-0.5,
            logit_bias={"1734": -100},
            response_format={"type": "json_schema", "json_schema": schema},  # type: ignore[typeddict-item]
        )
        sent = upstream.requests[-1]
        assert {k: sent.get(k) for k in passed} == passed


def test_log_probabilities_are_refused_by_name(
    client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=GPT, messages=USER, logprobs=True)
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "logprobs"
    assert error["message"] == (
        "logprobs: the gateway returns no log-probabilities (the models it routes "
        "between give them differently or not at all); leave it out"
    )
    assert upstream.attempts == 0


@pytest.mark.parametrize("model", [GPT, "xrouter"])
def test_a_request_every_model_rejects_gets_400_and_no_retry(
    client: openai.OpenAI, upstream: UpstreamServer, model: str
) -> None:
    upstream.mode = "400"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=model, messages=USER)
    error = refused.value.body
    assert isinstance(error, dict)
    assert (error["type"], error["code"]) == (
        "invalid_request_error",
        "upstream_rejected_request",
    )
    assert error["message"].startswith("the model rejected the request: ")
    assert (
        "rejected the request (HTTP 400: upstream fault: bad request)"
        in (error["message"])
    )
    entry = last_logged()
    assert (entry.status, entry.outcome, entry.cost_usd) == (
        400,
        "upstream_rejected_request",
        0,
    )
    # No call is retried, as a rejected request would be rejected again; a direct
    # one goes to its fallback, once.
    tried = [c.model for c in entry.calls if not c.by_router]
    assert upstream.attempts == len(tried)
    if model == GPT:
        assert tried == [GPT, CLAUDE]
        # The message gives the reason of the model asked for, then its fallback's.
        url = upstream.base_url
        assert error["message"] == (
            "the model rejected the request: no model produced an answer: "
            f"bad_request: model '{GPT}' at {url} rejected the request (HTTP 400: "
            "upstream fault: bad request); then bad_request: model "
            f"'{CLAUDE}' at {url} rejected the request (HTTP 400: upstream fault: "
            "bad request)"
        )


def test_a_call_larger_than_a_whole_daily_limit_gets_402_not_429(
    make_config: MakeConfig, home: Path
) -> None:
    tight = make_config(
        "tight", daily_limit_usd=2e-5, log={"path": str(home / "tight.sqlite")}
    )
    chat = "/v1/chat/completions"
    with GatewayServer(tight) as gateway, httpx.Client(base_url=gateway.url) as http:
        large = http.post(
            chat, json={"model": GPT, "messages": USER, "max_tokens": 100}
        )
        assert large.status_code == 402, large.text
        error = large.json()["error"]
        assert (error["type"], error["code"]) == (
            "insufficient_quota",
            "request_over_limit",
        )
        day = time.strftime("%Y-%m-%d", time.gmtime())
        assert error["message"] == (
            f"over budget: a call to {GPT} may cost up to $0.000080, more than the "
            f"$0.000020 left of the gateway's daily limit on {day} UTC (limit "
            "$0.000020); that is more than the whole limit, so no retry can pass "
            "it: ask for less (a shorter prompt or a lower max_tokens)"
        )
        small = {"model": GPT, "messages": USER, "max_tokens": 5}
        served = 0
        while (reply := http.post(chat, json=small)).status_code == 200:
            served += 1
    # Small calls fit until the day's spend leaves too little: a call that would
    # fit an empty day waits for one, 429.
    assert served >= 1 and reply.status_code == 429
    assert reply.json()["error"]["code"] == "budget_exceeded"


def test_without_a_lambda_in_the_config_the_policy_routes_at_its_own_default(
    make_config: MakeConfig, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # make_config's policy, as if trained with a default lambda of 5 (the
    # config of the other tests says 2).
    trained = tmp_path_factory.getbasetemp() / "gateway-policy"
    checkpoint = home / "policy-lambda-5"
    shutil.copytree(trained, checkpoint, dirs_exist_ok=True)
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    stamp_manifest(checkpoint, {**manifest, "default_lambda": 5.0})
    assert load_checkpoint(checkpoint).default_lambda == 5.0
    own = make_config(
        "own-lambda",
        router={"checkpoint": str(checkpoint)},
        log={"path": str(home / "own.sqlite")},
    )
    with GatewayServer(own) as gateway, httpx.Client(base_url=gateway.url) as http:
        reply = http.post(
            "/v1/chat/completions", json={"model": "xrouter", "messages": USER}
        )
    assert reply.status_code == 200 and reply.json()["xrouter"]["lambda"] == 5.0


def test_a_ceiling_refusal_names_the_header_the_gateway_reads(
    make_config: MakeConfig, home: Path
) -> None:
    renamed = make_config(
        "renamed", request_limit_header="x-budget", log={"path": str(home / "r.sqlite")}
    )
    chat = "/v1/chat/completions"
    small = {"model": GPT, "messages": USER, "max_tokens": 5}
    with GatewayServer(renamed) as gateway, httpx.Client(base_url=gateway.url) as http:
        refused = http.post(chat, json=small, headers={"x-budget": "0.000001"})
        served = http.post(chat, json=small, headers={"x-xrouter-max-cost": "0"})
    assert refused.status_code == 402
    message = refused.json()["error"]["message"]
    assert message.startswith("over the request's cost ceiling: a call to ")
    assert message.endswith(
        "; raise the x-budget header or ask for less (a shorter prompt or a lower "
        "max_tokens)"
    )
    assert served.status_code == 200  # not this gateway's header


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("xrouter:lambda=50000", "lambda 50000 is outside the range"),
        ("xrouter:lambda=-1", "lambda -1 is outside the range"),
        ("xrouter:lambda=0", "lambda 0 is outside the range"),
        ("xrouter:lambda=abc", "lambda must be a finite number written in ASCII"),
        ("xrouter:lambda=1e999", "lambda must be a finite number written in ASCII"),
        ("xrouter:lambda=1_0", "lambda must be a finite number written in ASCII"),
        ("xrouter:lambda=+4", "lambda must be a finite number written in ASCII"),
        ("xrouter:lambda=\uff14", "lambda must be a finite number written in ASCII"),
        ("xrouter:temperature=2", "lambda must be a finite number written in ASCII"),
    ],
)
def test_a_lambda_the_policy_cannot_take_is_refused_by_name(
    client: openai.OpenAI, upstream: UpstreamServer, model: str, says: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=model, messages=USER)
    error = refused.value.body
    assert isinstance(error, dict) and says in error["message"]
    assert "/" not in error["message"]  # no path of the server's
    assert (error["param"], error["type"]) == ("model", "invalid_request_error")
    assert upstream.attempts == 0


def test_a_stream_sends_pieces_with_routing_data_and_the_final_cost(
    client: openai.OpenAI,
) -> None:
    with client.chat.completions.create(
        model="xrouter:lambda=4",  # the router at a lambda of the caller's
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)

    texts = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(texts) == ECHO and sum(map(bool, texts)) == words(ECHO)
    assert all(meta(c)["request_id"] == chunks[0].id for c in chunks)
    *pieces, last, usage = chunks
    assert all(p.choices[0].finish_reason is None for p in pieces)
    assert last.choices[0].finish_reason == "stop" and meta(last)["lambda"] == 4.0
    cost = price(meta(last)["models"][0], words(ASK), words(ECHO))
    assert meta(last)["cost_usd"] == pytest.approx(cost, rel=1e-9)
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.total_tokens == words(ASK) + words(ECHO)
    entry = last_logged()
    assert entry.stream and entry.request_id == chunks[0].id
    assert entry.cost_usd == pytest.approx(cost, rel=1e-9)

    with client.chat.completions.create(
        model=GPT, messages=USER, stream=True
    ) as stream:
        chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)  # not asked for


def test_a_stream_can_run_the_whole_episode_first(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    whole = client.chat.completions.create(model="xrouter:lambda=0.5", messages=USER)
    with client.chat.completions.create(
        model="xrouter:lambda=0.5",
        messages=USER,
        stream=True,
        extra_headers={"x-xrouter-stream": "episode"},
    ) as stream:
        chunks = list(stream)

    # The same episode as the answer that does not stream, sent in 64-character
    # pieces once it is over.
    texts = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(texts) == whole.choices[0].message.content == ECHO
    assert [len(t) for t in texts if t] == [64] * (len(ECHO) // 64) + (
        [len(ECHO) % 64] if len(ECHO) % 64 else []
    )
    last, first = meta(chunks[-1]), meta(whole)
    assert [c["model"] for c in last["calls"]] == [c["model"] for c in first["calls"]]
    assert (last["strategy"], last["models"]) == (first["strategy"], first["models"])
    assert last["cost_usd"] == pytest.approx(first["cost_usd"], rel=1e-9)

    refused = http.post(
        "/v1/chat/completions",
        json={"model": "xrouter", "messages": USER, "stream": True},
        headers={"x-xrouter-stream": "later"},
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "header x-xrouter-stream must be 'live' (the policy's first choice streams "
        "as it comes) or 'episode' (the whole episode runs, then its answer "
        "streams), got 'later'"
    )


# -- what reaches the model ---------------------------------------------------------


def test_a_pool_model_by_name_bypasses_routing_and_gets_the_request_as_sent(
    client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    messages = [{"role": "system", "content": SYSTEM}, *USER]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",  # an alias of the card
        messages=messages,
        max_tokens=3,
        temperature=0.3,
        stop=["zzz"],
    )
    reply = raw.parse()
    assert raw.headers["x-xrouter-router"] == "direct"
    assert meta(reply)["models"] == [GPT] and meta(reply)["lambda"] is None
    assert reply.choices[0].message.content == "echo: how many"
    assert reply.choices[0].finish_reason == "length"
    sent = upstream.requests[-1]
    assert sent["model"] == ROUTES[GPT] and sent["messages"] == messages
    assert (sent["max_tokens"], sent["temperature"], sent["stop"]) == (3, 0.3, ["zzz"])


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_that_ignores_max_tokens_is_cut_and_the_client_told(
    client: openai.OpenAI, upstream: UpstreamServer, stream: bool
) -> None:
    # 5 tokens asked for; the upstream answers its echo 50 times over. The client
    # gets what a worst case allows for 5 (5 x 1.15 + 8 = 13 tokens, counted)
    # and finish reason "length", streamed or not.
    upstream.mode = "unbounded"
    full = " ".join(ECHO.split() * 50)
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=GPT, messages=USER, max_tokens=5, stream=True
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        info = meta(chunks[-1])
    else:
        reply = client.chat.completions.create(model=GPT, messages=USER, max_tokens=5)
        text, finish = (
            reply.choices[0].message.content or "",
            reply.choices[0].finish_reason,
        )
        info = meta(reply)
    assert finish == "length" and full.startswith(text)
    assert text.startswith(ECHO) and count_tokens(text) == 13
    (call,) = last_logged().calls
    if stream:  # read no further: billed for the 13 tokens counted
        assert call.output_tokens == 13
        assert info["cost_usd"] == pytest.approx(
            price(GPT, call.input_tokens, 13), rel=1e-9
        )
    else:  # the reply came whole: billed for all of it, as reported
        assert info["cost_usd"] == pytest.approx(
            price(GPT, words(ASK), words(full)), rel=1e-9
        )


def test_a_prompt_too_long_for_the_model_named_goes_to_its_fallback_unsent(
    client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    # 130,000 words: past gpt-4o-mini's 128,000-token window, within claude-3
    # haiku's 200,000. Nothing is sent to gpt-4o-mini, and nothing paid for it.
    long = [{"role": "user", "content": "word " * 130_000}]
    reply = client.chat.completions.create(model=GPT, messages=long, max_tokens=5)
    info = meta(reply)
    assert [r["model"] for r in upstream.requests] == [ROUTES[CLAUDE]]
    assert reply.model == CLAUDE and reply.choices[0].message.content
    unsent, rescued = info["calls"]
    assert unsent["model"] == GPT and unsent["cost_usd"] == 0
    assert unsent["error"] == (
        "bad_request: the prompt's 130,008 tokens do not fit "
        f"{GPT}'s context window of 128,000; it was not sent"
    )
    assert rescued["model"] == CLAUDE and info["cost_usd"] == rescued["cost_usd"] > 0


def test_the_user_field_reaches_the_model(
    client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    client.chat.completions.create(model=GPT, messages=USER, user="user-7")
    assert upstream.requests[-1].get("user") == "user-7"


def test_content_given_as_text_parts_is_joined_in_order(
    client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    parts: Any = [
        {"type": "text", "text": "how many legs "},
        {"type": "text", "text": "does a spider have"},
    ]
    reply = client.chat.completions.create(
        model=GPT, messages=[{"role": "user", "content": parts}]
    )
    assert reply.choices[0].message.content == ECHO
    assert upstream.requests[-1]["messages"] == USER


def test_routing_passes_the_whole_conversation_to_the_chosen_model(
    client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    messages: Any = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "what is my name"},
    ]
    reply = client.chat.completions.create(model="xrouter", messages=messages)
    assert reply.choices[0].message.content == "echo: what is my name"
    assert upstream.requests[-1]["messages"] == messages


@pytest.mark.parametrize("model", ["xrouter", GPT])
def test_the_callers_tools_reach_the_model_and_its_tool_calls_come_back(
    client: openai.OpenAI, upstream: UpstreamServer, model: str
) -> None:
    tools: Any = {"tools": [LOOKUP], "tool_choice": "required"}
    reply = client.chat.completions.create(model=model, messages=USER, **tools)
    assert {k: upstream.requests[-1][k] for k in tools} == tools
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"input": ASK}

    with client.chat.completions.create(
        model=model, messages=USER, stream=True, **tools
    ) as stream:
        chunks = list(stream)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    called = [t.function for d in deltas for t in d.tool_calls or () if t.function]
    assert [(f.name, f.arguments) for f in called] == [
        ("lookup", call.function.arguments)
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# -- faults upstream ---------------------------------------------------------------


def test_a_failed_attempt_is_retried(
    client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    upstream.script(["500", "429", "ok"])
    reply = client.chat.completions.create(model=GPT, messages=USER)
    assert reply.choices[0].message.content == ECHO
    assert [r["model"] for r in upstream.requests] == [ROUTES[GPT]] * 3
    assert [c["error"] for c in meta(reply)["calls"]] == [None]


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_that_fails_for_good_hands_over_to_its_fallback(
    client: openai.OpenAI, upstream: UpstreamServer, stream: bool
) -> None:
    upstream.script(["500", "500", "500"])  # every attempt at the primary
    if stream:
        with client.chat.completions.create(
            model=GPT, messages=USER, stream=True
        ) as events:
            chunks = list(events)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        info, answered = meta(chunks[-1]), {c.model for c in chunks}
    else:
        reply = client.chat.completions.create(model=GPT, messages=USER)
        text, info = reply.choices[0].message.content or "", meta(reply)
        answered = {reply.model}

    assert text == ECHO and answered == {CLAUDE}
    tried = [r["model"] for r in upstream.requests]
    assert tried == [ROUTES[GPT]] * 3 + [ROUTES[CLAUDE]]
    failed, rescued = info["calls"]
    assert failed["model"] == GPT and failed["error"].startswith("upstream:")
    assert rescued["model"] == CLAUDE and rescued["error"] is None
    cost = price(CLAUDE, words(ASK), words(ECHO))
    assert info["cost_usd"] == pytest.approx(cost, rel=1e-9)
    assert [c.model for c in last_logged().calls] == [GPT, CLAUDE]


@pytest.mark.parametrize("stream", [False, True])
def test_a_fallback_the_ceiling_cannot_pay_for_is_named_in_the_failure(
    http: httpx.Client, upstream: UpstreamServer, stream: bool
) -> None:
    # 200 tokens of gpt-4o-mini's answer fit a $0.0002 ceiling ($0.60 per 1M);
    # those of its fallback, claude-3-haiku ($1.25 per 1M), do not. The primary
    # fails for good: the 502 is its failure, and says why no fallback was tried.
    upstream.script(["500", "500", "500"])
    body = {"model": GPT, "messages": USER, "max_tokens": 200, "stream": stream}
    reply = http.post(
        "/v1/chat/completions", json=body, headers={"x-xrouter-max-cost": "0.0002"}
    )
    assert reply.status_code == 502
    error = reply.json()["error"]
    assert error["code"] == "upstream_error"
    # Its worst case: the 238 tokens a stream of 200 is read to, x $1.25 / 1M,
    # and the prompt's tokens at $0.25 / 1M.
    unhelped = (
        f"failed with HTTP 500: upstream fault: internal error.; its fallback "
        f"{CLAUDE} was not called: it may cost up to $0.000307 and the request's "
        "cost ceiling has $0.000200 left"
    )
    assert error["message"].startswith("upstream failed: ")
    assert error["message"].endswith(unhelped)
    assert [r["model"] for r in upstream.requests] == [ROUTES[GPT]] * 3
    (failed,) = last_logged().calls
    assert failed.model == GPT and str(failed.error).endswith(unhelped)


def test_a_client_that_hangs_up_stops_the_retries_and_the_fallback(
    gateway: GatewayServer, upstream: UpstreamServer
) -> None:
    # The client gives up 0.45 s into the first attempt, which stalls until the
    # call's timeout (1.5 s): it is neither retried nor handed to its fallback,
    # and the request is logged as one its client left, with the call it made.
    upstream.script(["stall"] * 6)
    with (
        httpx.Client(base_url=gateway.url, timeout=0.45) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        impatient.post("/v1/chat/completions", json={"model": GPT, "messages": USER})
    deadline = time.monotonic() + 10
    while last_logged().status != 499 and time.monotonic() < deadline:
        time.sleep(0.05)
    entry = last_logged()
    assert (entry.status, entry.requested_model) == (499, GPT)
    assert entry.error == "the client hung up before its answer was ready"
    (call,) = entry.calls
    assert call.model == GPT
    assert str(call.error).endswith(
        f"; its fallback {CLAUDE} was not called: the client hung up before its "
        "answer was ready"
    )
    time.sleep(1.0)  # nothing is asked later either
    assert [r["model"] for r in upstream.requests] == [ROUTES[GPT]]


def test_a_routed_stream_passes_over_a_choice_that_fails_before_its_first_piece(
    client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    # The policy's first choice fails every attempt, and so does its fallback:
    # the policy chooses again, among the one model left, which streams the answer.
    upstream.script(["500"] * 6)
    with client.chat.completions.create(
        model="xrouter:lambda=4", messages=USER, stream=True
    ) as events:
        chunks = list(events)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    info = meta(chunks[-1])
    by_route = {route: model for model, route in ROUTES.items()}
    blocks = [
        by_route[route] for route, _ in groupby(r["model"] for r in upstream.requests)
    ]
    first, rescue, last = blocks
    assert rescue == FALLBACKS[first] and {first, rescue, last} == set(MODELS)
    assert text == ECHO and info["models"] == [last]
    calls = [(c["model"], c["error"] is None) for c in info["calls"]]
    assert calls == [(first, False), (rescue, False), (last, True)]
    assert info["cost_usd"] == pytest.approx(price(last, words(ASK), words(ECHO)))
    assert [c.model for c in last_logged().calls] == blocks


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_whose_models_bill_no_answer_fails_and_says_what_it_cost(
    http: httpx.Client, upstream: UpstreamServer, stream: bool
) -> None:
    # Each model replies with its usage and no answer: each is asked once (asking
    # again would pay again), booked, and the 502 carries the cost like an answer.
    upstream.script(["no_choices", "no_choices"])
    body = {"model": GPT, "messages": USER, "stream": stream}
    reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 502
    assert reply.json()["error"]["code"] == "upstream_error"
    assert [r["model"] for r in upstream.requests] == [ROUTES[GPT], ROUTES[CLAUDE]]
    cost = price(GPT, words(ASK), words(ECHO)) + price(CLAUDE, words(ASK), words(ECHO))
    info = reply.json()["xrouter"]
    assert info["cost_usd"] == pytest.approx(cost, rel=1e-9)
    assert [(c["model"], c["input_tokens"]) for c in info["calls"]] == [
        (GPT, words(ASK)),
        (CLAUDE, words(ASK)),
    ]
    assert float(reply.headers["x-xrouter-cost-usd"]) == pytest.approx(cost)
    entry = last_logged()
    assert (entry.status, entry.request_id) == (502, info["request_id"])
    assert entry.cost_usd == pytest.approx(cost, rel=1e-9)


def test_a_stalled_upstream_gives_a_504_within_the_time_limits(
    http: httpx.Client, upstream: UpstreamServer
) -> None:
    upstream.mode, upstream.stall_s = "stall", 5.0
    arrived, started = time.time(), time.monotonic()
    reply = http.post("/v1/chat/completions", json={"model": GPT, "messages": USER})
    took = time.monotonic() - started
    assert reply.status_code == 504
    error = reply.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "upstream_timeout")
    assert LIMITS["call_timeout_s"] < took < LIMITS["episode_timeout_s"] + 1.0
    entry = last_logged()
    assert (entry.status, entry.outcome, entry.cost_usd) == (504, "upstream_timeout", 0)
    # The log dates a request by its arrival (the day its limits were charged),
    # not by its end, 1.5 s or more later.
    assert arrived - 0.05 <= entry.ts < arrived + 0.5


def test_a_stream_cut_midway_ends_with_an_error_event(
    client: openai.OpenAI, http: httpx.Client, upstream: UpstreamServer
) -> None:
    upstream.script(["cut"])
    text, took = stream_until_error(client, "cut the stream midway")
    assert text == "echo: how"  # the two pieces sent before the cut
    assert took < 5
    assert upstream.attempts == 1  # no retry once the caller has seen text
    entry = last_logged()
    assert (entry.status, entry.outcome, entry.stream) == (200, "upstream_error", True)
    # The text sent is billed as counted, and the closing error event says so.
    (cut,) = entry.calls
    assert cut.output_tokens == count_tokens("echo: how")
    billed = price(GPT, cut.input_tokens, cut.output_tokens)
    assert entry.cost_usd == pytest.approx(billed, rel=1e-9) and billed > 0
    upstream.script(["cut"])
    body = {"model": GPT, "messages": USER, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        events = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])
    assert error["error"]["code"] == "upstream_error"
    assert error["xrouter"]["cost_usd"] == pytest.approx(entry.cost_usd, rel=1e-9)
    assert [c["model"] for c in error["xrouter"]["calls"]] == [GPT]


def test_a_stream_ends_at_the_episodes_time_limit(
    client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    # Each piece comes within the call's timeout (0.6 s < 1.5 s), but the whole
    # answer would take 4.8 s, past the episode's 3 s.
    upstream.script(["drip"])
    text, took = stream_until_error(client, "ran past the episode's time limit")
    assert LIMITS["episode_timeout_s"] <= took < 8 * DRIP_S  # before its end
    assert ECHO.startswith(text) and len(text) > 0
    entry = last_logged()
    assert (entry.status, entry.outcome, entry.stream) == (
        200,
        "upstream_timeout",
        True,
    )
    assert entry.output_tokens == count_tokens(text)


def test_a_client_that_leaves_a_stream_is_logged(gateway: GatewayServer) -> None:
    received = gateway.leave_stream({"model": GPT, "messages": USER, "stream": True})
    assert received[0].startswith(b"data: ")
    deadline = time.monotonic() + 5
    while (entry := last_logged()).status != 499 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (entry.status, entry.outcome, entry.stream) == (499, "client_closed", True)
    # the interrupted call is booked with the text it had streamed
    assert [c.model for c in entry.calls if not c.by_router] == [GPT]
    assert entry.calls[-1].error == "upstream: the reader left the stream"


def test_a_client_that_hangs_up_while_the_upstream_is_between_pieces_is_logged(
    http: httpx.Client, upstream: UpstreamServer
) -> None:
    # The upstream pauses before each piece, so the gateway is waiting on the
    # next one when the client closes its connection.
    upstream.script(["drip"])
    ask = {"model": GPT, "messages": USER, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=ask) as reply:
        request_id = reply.headers["x-xrouter-request-id"]
        for line in reply.iter_lines():
            if '"content": "echo:"' in line:
                # Read while the stream is open (leaving the loop closes it).
                running = last_logged()
                break
    # Until it ended, the request was logged as in flight.
    assert (running.request_id, running.status, running.outcome) == (
        request_id,
        0,
        "in_flight",
    )
    deadline = time.monotonic() + 5
    while (entry := last_logged()).request_id != request_id or entry.status == 0:
        assert time.monotonic() < deadline, "the request's end was never logged"
        time.sleep(0.02)
    assert (entry.request_id, entry.status, entry.outcome) == (
        request_id,
        499,
        "client_closed",
    )
    assert entry.calls[-1].error == "upstream: the reader left the stream"
    assert entry.output_tokens == count_tokens("echo:")


def test_an_upstreams_negative_usage_is_counted_not_billed(
    client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    for stream in (False, True):
        upstream.script(["negative_usage"])
        if stream:
            with client.chat.completions.create(
                model=GPT, messages=USER, stream=True
            ) as chunks:
                text = "".join(c.choices[0].delta.content or "" for c in chunks)
        else:
            reply = client.chat.completions.create(model=GPT, messages=USER)
            text = reply.choices[0].message.content or ""
        assert text == ECHO
        entry = last_logged()
        assert (entry.status, entry.answered_by) == (200, (GPT,))
        call = entry.calls[-1]
        assert (call.error, call.output_tokens) == (None, count_tokens(ECHO))
        assert call.input_tokens > 0
        prices = PRICES[GPT]
        expected = (
            call.input_tokens * prices[0] + call.output_tokens * prices[1]
        ) / 1e6
        assert entry.cost_usd == pytest.approx(expected)


def test_the_callers_tools_count_towards_a_calls_worst_case(
    http: httpx.Client, upstream: UpstreamServer
) -> None:
    # Eight tools of about 2,700 tokens each go upstream with the prompt and are
    # billed as its input: about $0.0032 at gpt-4o-mini's $0.15 per 1M.
    about = "Look up one fact in the company wiki and return it verbatim. " * 220
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"lookup_{k}",
                "description": about,
                "parameters": FACT,
            },
        }
        for k in range(8)
    ]
    ask = {"model": GPT, "messages": USER, "max_tokens": 10, "tools": tools}
    chat, ceiling = "/v1/chat/completions", {"x-xrouter-max-cost": "0.001"}
    assert http.post(chat, json=ask | {"tools": tools[:1]}, headers=ceiling).is_success
    over = http.post(chat, json=ask, headers=ceiling)
    assert over.status_code == 402, over.text
    message = over.json()["error"]["message"]
    worst = float(message.split("may cost up to $")[1].split(",")[0])
    assert 0.0032 < worst < 0.0045
    assert upstream.attempts == 1  # the refused request never went upstream


def test_a_client_that_leaves_midway_through_its_body_is_counted(
    gateway: GatewayServer, http: httpx.Client
) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99"
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(head + b"\r\n\r\n{")
    left = 'xrouter_requests_total{router="none",status="499"} 1.0'
    deadline = time.monotonic() + 5
    while left not in http.get("/metrics").text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert left in http.get("/metrics").text


# -- keys and budgets ---------------------------------------------------------------

KEY_A, KEY_B = "xr-test-key-of-team-a", "xr-test-key-of-ci"
LIMIT_A, LIMIT_ALL = 5e-5, 1.2e-4


def test_keys_and_daily_limits_hold_under_concurrency_and_restarts(
    make_config: MakeConfig, home: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("XROUTER_TEST_GATEWAY_KEY", KEY_B)
    keyed = make_config(
        "keyed",
        keys=[
            {"name": "team-a", "sha256": hash_key(KEY_A), "daily_limit_usd": LIMIT_A},
            {"name": "ci", "key_env": "XROUTER_TEST_GATEWAY_KEY"},
        ],
        daily_limit_usd=LIMIT_ALL,
        log={"path": str(home / "keyed.sqlite")},
    )
    # max_tokens: the worst case of the default, 1024, is over these limits.
    ask = {"model": GPT, "messages": USER, "max_tokens": 20}
    chat, b = "/v1/chat/completions", {"authorization": f"Bearer {KEY_B}"}
    with GatewayServer(keyed) as gateway, httpx.Client(base_url=gateway.url) as http:
        for given in ({}, {"authorization": "Bearer wrong-key"}):
            refused = http.post(chat, json=ask, headers=given)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "invalid_api_key"
        assert http.post(chat, json=ask, headers=b).status_code == 200
        capped = http.post(chat, json=ask, headers=b | {"x-xrouter-max-cost": "0"})
        assert capped.status_code == 402
        assert capped.json()["error"]["type"] == "insufficient_quota"

        floods = [flood(gateway.base_url, key, 60) for key in (KEY_A, KEY_B)]
        assert all(200 in statuses and 429 in statuses for statuses in floods)
        served = 0  # then up to the global limit, one request at a time
        while flood(gateway.base_url, KEY_B, 1) == [200]:
            served += 1
        key_a = gateway.service.keys.authenticate(KEY_A)
        everyone, team_a = gateway.service.ledgers(key_a)

    assert 0 < team_a.spent_usd <= LIMIT_A and team_a.held_usd == 0
    # Served until less than one worst case is left: 31 tokens of gpt-4o-mini's
    # answer (20 asked for, read up to 31) and its prompt's, under $0.00003.
    assert LIMIT_ALL - 3e-5 < everyone.spent_usd <= LIMIT_ALL
    log = RequestLog(home / "keyed.sqlite")
    try:
        entries = log.recent(1000)
        day = time.time() // 86_400 * 86_400
        assert log.spend(day, "team-a") == pytest.approx(team_a.spent_usd)
        assert log.spend(day) == pytest.approx(everyone.spent_usd)
    finally:
        log.close()
    outcomes = [(e.status, e.outcome) for e in entries]
    assert outcomes.count((401, "invalid_api_key")) == 2
    served += 1 + sum(statuses.count(200) for statuses in floods)
    assert outcomes.count((200, "ok")) == served
    assert outcomes.count((402, "cost_ceiling_exceeded")) == 1
    assert outcomes.count((429, "budget_exceeded")) == len(entries) - served - 3
    assert all(e.cost_usd == 0 for e in entries if e.status != 200)

    with GatewayServer(keyed) as again:  # the day's spend survives a restart
        assert again.service.ledgers(None)[0].spent_usd == everyone.spent_usd
        assert flood(again.base_url, KEY_B, 1) == [429]


# -- the other endpoints ------------------------------------------------------------


def test_health_models_and_metrics(client: openai.OpenAI, http: httpx.Client) -> None:
    models = ["xrouter", *MODELS]
    health = {"status": "ok", "router": "xrouter-policy", "models": models}
    assert http.get("/health").json() == health
    assert [m.id for m in client.models.list()] == models
    # One model by name, an alias or a lambda setting included, as a chat names it.
    assert client.models.retrieve("xrouter").id == "xrouter"
    assert client.models.retrieve("xrouter:lambda=3").id == "xrouter:lambda=3"
    assert client.models.retrieve("gpt-4o-mini").id == GPT
    with pytest.raises(openai.NotFoundError) as unknown:
        client.models.retrieve("gpt-5")
    assert unknown.value.body["code"] == "model_not_found"  # type: ignore[index]
    client.chat.completions.create(model=GPT, messages=USER)

    samples = {
        name: float(value)
        for line in http.get("/metrics").text.splitlines()
        if line and not line.startswith("#")
        for name, value in [line.rsplit(" ", 1)]
    }
    assert samples['xrouter_requests_total{router="direct",status="200"}'] >= 1
    log = RequestLog(default_log_path())
    try:
        by_model = {row["model"]: row["cost_usd"] for row in log.summary(0, "model")}
    finally:
        log.close()
    assert set(by_model) <= {*MODELS, "xrouter-policy"}
    for model, cost in by_model.items():
        assert samples[f'xrouter_cost_usd_total{{model="{model}"}}'] == pytest.approx(
            cost
        )


def test_serve_says_at_the_first_ctrl_c_that_requests_in_flight_finish_first(
    make_config: MakeConfig,
    running: UpstreamServer,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    checkpoint = tmp_path_factory.getbasetemp() / "gateway-policy"  # make_config's
    log = {"path": str(tmp_path / "requests.sqlite")}  # not the module gateway's
    config = write_config(tmp_path / "gw.yaml", running.base_url, checkpoint, log=log)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).with_name("xrouter")), "serve"]
    served = subprocess.Popen(
        [*command, "--config", str(config), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            time.sleep(0.5)
        served.send_signal(signal.SIGINT)
        _, stderr = served.communicate(timeout=60)
    finally:
        served.kill()
    assert served.returncode == 130, stderr  # as any command stopped by Ctrl-C
    assert (
        "stopping: requests in flight finish first (up to the episode time limit, "
        "120 s); press Ctrl-C again to stop at once" in " ".join(stderr.split())
    )


def test_answers_go_on_while_another_program_holds_the_log_locked(
    make_config: MakeConfig, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(requestlog, "_BUSY_TIMEOUT_S", 0.2)
    path = home / "locked.sqlite"
    config = make_config("locked", log={"path": str(path), "max_held": 2})
    ask = {"model": GPT, "messages": USER, "max_tokens": 5}
    chat = "/v1/chat/completions"
    with (
        GatewayServer(config) as gateway,
        httpx.Client(base_url=gateway.url, timeout=30) as http,
        contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other,
    ):
        other.execute("BEGIN EXCLUSIVE")  # as an sqlite3 shell or a backup may
        served = http.post(chat, json=ask)
        assert served.status_code == 200, served.text
        health = http.get("/health")
        # Full: the instance says so to its load balancer, and refuses requests.
        assert health.status_code == 503
        assert health.json()["status"] == "log_full"
        assert health.json()["request_log"] == {
            "waiting_rows": 2,  # the request's in-flight row and its answer
            "problem": f"cannot write to the request log {path} (database is "
            "locked); another program holds it locked (an sqlite3 shell, a "
            "backup): close it",
            "dropped_rows": 0,
        }
        refused = http.post(chat, json=ask)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert "x-xrouter-request-id" not in refused.headers  # it is not logged
        assert refused.json()["error"] == {
            "message": "the gateway cannot write its request log, and takes no new "
            "requests until it can; try again later",
            "type": "server_error",
            "param": None,
            "code": "log_unwritable",
        }
        scraped = http.get("/metrics").text
        assert "xrouter_request_log_waiting_rows 2.0" in scraped
        other.execute("ROLLBACK")
        for _ in range(100):
            if "request_log" not in (health := http.get("/health").json()):
                break
            time.sleep(0.1)
        assert health["status"] == "ok" and "request_log" not in health
        with contextlib.closing(RequestLog(path)) as log:
            logged = log.recent(5)
    # The answer's row, not the refusal's: a full log takes no more rows.
    assert [e.request_id for e in logged] == [served.headers["x-xrouter-request-id"]]
    assert logged[0].outcome == "ok" and logged[0].answered_by == (GPT,)
