"""HttpBackend against a real OpenAI-compatible server on loopback, faults included."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import Any, TypeVar

import openai
import pytest
from upstream import FAULTS, MODEL, UpstreamServer

from xrouter.backends.base import Backend, reported_usage
from xrouter.backends.http import HttpBackend
from xrouter.core.catalog import ModelCard
from xrouter.core.errors import (
    AccessDeniedError,
    BackendError,
    BackendTimeoutError,
    BadRequestError,
    ConfigError,
    RateLimitError,
    UpstreamError,
)
from xrouter.core.types import ChatRequest, Completion, Message, StreamDelta, Usage

T = TypeVar("T")
KEY_VAR = "XROUTER_TEST_UPSTREAM_KEY"
ROUTE = "acme/echo-7b-instruct"
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up.",
        "parameters": {"type": "object", "properties": {"input": {"type": "string"}}},
    },
}
ASK = ChatRequest(
    messages=(
        Message("system", "You answer briefly."),
        Message("user", "one two three four"),
    )
)


def _card(**fields: Any) -> ModelCard:
    base: dict[str, Any] = {
        "id": "echo-7b",
        "provider": "self-hosted",
        "route": ROUTE,
        "input_per_mtok": 0.1,
        "output_per_mtok": 0.2,
        "context_window": 8192,
        "tier": "local",
        "description": "A loopback echo server.",
        "price_source": "tests",
        "price_date": dt.date(2025, 1, 1),
    }
    return ModelCard(**{**base, **fields})


@pytest.fixture(scope="module")
def running() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture
def server(running: UpstreamServer) -> Iterator[UpstreamServer]:
    running.reset()
    yield running
    running.reset()


def _call(
    url: str,
    use: Callable[[HttpBackend], Awaitable[T]],
    *,
    card: ModelCard | None = None,
    **options: Any,
) -> T:
    """Run ``use`` with a fresh backend on ``url``, closing it after."""

    async def main() -> T:
        backend = HttpBackend(card or _card(), base_url=url, **options)
        try:
            return await use(backend)
        finally:
            await backend.aclose()

    return asyncio.run(main())


def _complete(
    server: UpstreamServer, request: ChatRequest = ASK, **options: Any
) -> Completion:
    return _call(server.base_url, lambda b: b.complete(request), **options)


def _stream(
    server: UpstreamServer,
    request: ChatRequest = ASK,
    got: list[StreamDelta] | None = None,
    **options: Any,
) -> list[StreamDelta]:
    deltas = [] if got is None else got

    async def use(backend: HttpBackend) -> list[StreamDelta]:
        async for delta in backend.stream(request):
            deltas.append(delta)
        return deltas

    return _call(server.base_url, use, **options)


def _fails(kind: type[BackendError], call: Callable[[], object]) -> BackendError:
    with pytest.raises(kind) as caught:
        call()
    assert caught.value.model == "echo-7b"
    return caught.value


# --- plain completions -------------------------------------------------------------


def test_complete_returns_text_usage_and_finish(server: UpstreamServer) -> None:
    done = _complete(server)
    assert done.text == "echo: one two three four"
    assert done.usage == Usage(input_tokens=7, output_tokens=5)  # words
    assert done.finish_reason == "stop"
    assert done.tool_calls == ()
    assert 0 < done.latency_s < 5


def test_complete_sends_route_messages_and_set_options(server: UpstreamServer) -> None:
    request = ChatRequest(
        messages=ASK.messages, max_tokens=3, temperature=0.0, stop=("\n\n",)
    )
    done = _complete(server, request)
    sent = server.requests[0]
    assert sent["model"] == ROUTE
    assert sent["messages"] == [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "one two three four"},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["stop"]) == (3, 0.0, ["\n\n"])
    assert (done.text, done.finish_reason) == ("echo: one two", "length")
    assert server.headers[0]["authorization"] == "Bearer not-needed"


def test_unset_options_are_not_sent(server: UpstreamServer) -> None:
    _complete(server)
    sent = server.requests[0]
    assert set(sent) == {"model", "messages"}


def test_tools_pass_through_and_tool_calls_come_back(server: UpstreamServer) -> None:
    choice = {"type": "function", "function": {"name": "lookup"}}
    request = ChatRequest(messages=ASK.messages, tools=(TOOL,), tool_choice=choice)
    done = _complete(server, request)
    assert server.requests[0]["tools"] == [TOOL]
    assert server.requests[0]["tool_choice"] == choice
    assert done.finish_reason == "tool_calls"
    (call,) = done.tool_calls
    assert call["id"] == "call_upstream_1"
    assert call["function"]["name"] == "lookup"
    assert json.loads(call["function"]["arguments"]) == {"input": "one two three four"}


def test_tool_messages_of_the_caller_are_sent(server: UpstreamServer) -> None:
    asked = {
        "id": "c1",
        "type": "function",
        "function": {"name": "lookup", "arguments": "{}"},
    }
    request = ChatRequest(
        messages=(
            *ASK.messages,
            Message("assistant", "", tool_calls=(asked,)),
            Message("tool", "found", tool_call_id="c1"),
        ),
        tools=(TOOL,),
        tool_choice="auto",
    )
    done = _complete(server, request)
    sent = server.requests[0]["messages"]
    assert sent[2]["tool_calls"] == [asked]
    assert sent[3] == {"role": "tool", "content": "found", "tool_call_id": "c1"}
    assert done.text == "echo: one two three four"  # tool_choice "auto": text


def test_missing_usage_is_counted_with_the_tokenizer(server: UpstreamServer) -> None:
    server.mode = "no_usage"
    done = _complete(server)
    assert done.text == "echo: one two three four"
    assert done.usage.input_tokens > 8  # two messages plus framing
    assert done.usage.output_tokens > 0
    last = _stream(server)[-1]
    assert last.usage == done.usage


def test_key_comes_from_the_card_variable(
    server: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VAR, "sk-from-env")
    card = _card(api_key_env=KEY_VAR)
    _complete(server, card=card, extra_headers={"X-Trace": "t1"})
    assert server.headers[0]["authorization"] == "Bearer sk-from-env"
    assert server.headers[0]["x-trace"] == "t1"
    _complete(server, card=card, api_key="sk-given")
    assert server.headers[1]["authorization"] == "Bearer sk-given"


def test_base_url_comes_from_the_card(server: UpstreamServer) -> None:
    card = _card(base_url=server.base_url)

    async def main() -> Completion:
        backend = HttpBackend(card)
        try:
            assert isinstance(backend, Backend)
            assert backend.card is card
            return await backend.complete(ASK)
        finally:
            await backend.aclose()

    assert asyncio.run(main()).text == "echo: one two three four"


# --- streaming ---------------------------------------------------------------------


def test_stream_relays_deltas_in_order_then_usage(server: UpstreamServer) -> None:
    deltas = _stream(server)
    assert [d.text for d in deltas[:-1]] == ["echo:", " one", " two", " three", " four"]
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1] == StreamDelta(finish_reason="stop", usage=Usage(7, 5))
    sent = server.requests[0]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == ROUTE


def test_stream_passes_tool_call_deltas_through(server: UpstreamServer) -> None:
    request = ChatRequest(messages=ASK.messages, tools=(TOOL,), tool_choice="required")
    deltas = _stream(server, request)
    calls = [call for d in deltas for call in d.tool_calls]
    assert [c["function"]["name"] for c in calls] == ["lookup"]
    assert calls[0]["index"] == 0
    assert deltas[-1].finish_reason == "tool_calls"


def test_stream_cut_midway_raises_after_the_first_deltas(
    server: UpstreamServer,
) -> None:
    server.mode = "cut"
    got: list[StreamDelta] = []
    error = _fails(UpstreamError, lambda: _stream(server, got=got))
    assert [d.text for d in got] == ["echo:", " one"]
    assert "model 'echo-7b' at http://127.0.0.1:" in str(error)
    assert "cut the stream midway" in str(error)


def test_stream_error_event_raises_after_the_first_delta(
    server: UpstreamServer,
) -> None:
    server.mode = "error_event"
    got: list[StreamDelta] = []
    error = _fails(UpstreamError, lambda: _stream(server, got=got))
    assert [d.text for d in got] == ["echo:"]
    assert "reported an error: upstream fault: overloaded" in str(error)


@pytest.mark.parametrize(
    ("fault", "kind", "says"),
    [
        ("500", UpstreamError, "failed with HTTP 500: upstream fault: internal error"),
        (
            "429",
            RateLimitError,
            "is rate limited (HTTP 429: upstream fault: rate limit",
        ),
        (
            "400",
            BadRequestError,
            "rejected the request (HTTP 400: upstream fault: bad req",
        ),
        ("drop", UpstreamError, "could not be reached or closed the connection"),
        ("garbage", UpstreamError, "(a stream with no events); check that the URL"),
        ("no_choices", UpstreamError, "(a stream with its usage and no answer)."),
    ],
)
def test_stream_fails_typed_before_the_first_delta(
    server: UpstreamServer, fault: str, kind: type[BackendError], says: str
) -> None:
    server.mode = fault
    got: list[StreamDelta] = []
    error = _fails(kind, lambda: _stream(server, got=got))
    assert got == []
    assert says in str(error)
    # Billed or not an API at all: asking again pays again, or gets the same.
    assert error.retryable is (fault not in ("400", "garbage", "no_choices"))
    assert error.billed == (Usage(7, 5) if fault == "no_choices" else None)


def test_stream_stall_times_out(server: UpstreamServer) -> None:
    server.mode = "stall"
    start = time.monotonic()
    error = _fails(BackendTimeoutError, lambda: _stream(server, timeout_s=0.5))
    assert time.monotonic() - start < 3
    assert "gave no answer within 0.5 s" in str(error)


# --- faults of plain completions ---------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "kind", "says"),
    [
        ("500", UpstreamError, "failed with HTTP 500: upstream fault: internal error."),
        ("429", RateLimitError, "rate limited (HTTP 429: upstream fault: rate limit "),
        (
            "400",
            BadRequestError,
            "rejected the request (HTTP 400: upstream fault: bad ",
        ),
        (
            "401",
            AccessDeniedError,
            "refused the API key (HTTP 401: upstream fault: invali",
        ),
        ("drop", UpstreamError, "could not be reached or closed the connection ("),
        ("cut", UpstreamError, "could not be reached or closed the connection ("),
        ("garbage", UpstreamError, "not a chat completion (a body that is not JSON"),
        ("error_event", UpstreamError, "(a reply with no choices, error {'message"),
    ],
)
def test_complete_fault_maps_to_typed_error(
    server: UpstreamServer, fault: str, kind: type[BackendError], says: str
) -> None:
    server.mode = fault
    error = _fails(kind, lambda: _complete(server))
    assert says in str(error)
    assert str(error).startswith(f"model 'echo-7b' at {server.base_url} ")
    # A body that is not JSON comes again if asked again, and may be billed.
    final = (BadRequestError, AccessDeniedError)
    assert error.retryable is (kind not in final and fault != "garbage")
    assert server.attempts == 1  # the backend never retries


def test_a_reply_without_choices_carries_the_usage_billed(
    server: UpstreamServer,
) -> None:
    server.mode = "no_choices"
    error = _fails(UpstreamError, lambda: _complete(server))
    assert str(error).endswith(
        "sent a reply that is not a chat completion (a reply with no choices)."
    )
    # The upstream billed it: the orchestrator books that usage and asks no more.
    assert error.billed == Usage(input_tokens=7, output_tokens=5)  # words
    assert error.retryable is False
    server.mode = "error_event"  # no usage reported: nothing known to be billed
    error = _fails(UpstreamError, lambda: _complete(server))
    assert (error.billed, error.retryable) == (None, True)


@pytest.mark.parametrize(
    ("prompt", "output", "read"),
    [
        (12, 30, Usage(12, 30)),
        (0, 0, Usage(0, 0)),
        (-1000, 5, None),  # counted instead, with a warning
        (10**400, 5, None),  # no price can be put on it
        (10**12 + 1, 5, None),
        (True, 5, None),  # JSON true is not a count
        ("12", 30, None),
        (None, 30, None),
    ],
)
def test_reported_usage_takes_only_counts_a_call_can_have(
    prompt: object, output: object, read: Usage | None
) -> None:
    reported = SimpleNamespace(prompt_tokens=prompt, completion_tokens=output)
    assert reported_usage(reported) == read


def test_a_billed_reply_whose_usage_cannot_be_taken_is_billed_as_counted(
    server: UpstreamServer,
) -> None:
    # 10**13 prompt tokens: no call has them, so the call's own are counted; but
    # the reply reported a usage, so it was billed, and is not asked for again.
    server.mode = "no_choices_huge"
    error = _fails(UpstreamError, lambda: _complete(server))
    assert error.billed == Usage(16, 0, counted=True)
    assert error.retryable is False


@pytest.mark.parametrize(
    ("fault", "got", "says", "billed"),
    [
        ("usage_cut", "", "closed the connection", Usage(7, 5)),
        ("text_usage", "echo: one two three four", "ended before", Usage(7, 5)),
        ("sse_garbage", "", "; check that the URL", None),
    ],
)
def test_a_stream_that_fails_after_its_usage_carries_it(
    server: UpstreamServer, fault: str, got: str, says: str, billed: Usage | None
) -> None:
    server.mode = fault
    deltas: list[StreamDelta] = []
    error = _fails(UpstreamError, lambda: _stream(server, got=deltas))
    assert "".join(d.text for d in deltas) == got
    assert says in str(error)
    assert error.billed == billed
    # Billed, or not readable: asking again would not do better.
    assert error.retryable is False


def test_rate_limit_carries_retry_after(server: UpstreamServer) -> None:
    server.mode = "429"
    error = _fails(RateLimitError, lambda: _complete(server))
    assert isinstance(error, RateLimitError)
    assert error.retry_after_s == 0.0
    server.retry_after = "2.5"
    error = _fails(RateLimitError, lambda: _complete(server))
    assert isinstance(error, RateLimitError)
    assert error.retry_after_s == 2.5
    assert "retry after 2.5 s." in str(error)


def test_refused_key_names_the_key_variable(
    server: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VAR, "sk-wrong")
    server.mode = "401"
    error = _fails(
        AccessDeniedError, lambda: _complete(server, card=_card(api_key_env=KEY_VAR))
    )
    assert error.retryable is False
    assert f"check the key in ${KEY_VAR}." in str(error)


def test_stall_times_out_quickly(server: UpstreamServer) -> None:
    server.mode = "stall"
    start = time.monotonic()
    error = _fails(BackendTimeoutError, lambda: _complete(server, timeout_s=0.5))
    assert time.monotonic() - start < 3
    assert "gave no answer within 0.5 s; check that the server is up" in str(error)


def test_script_is_consumed_one_fault_per_request(server: UpstreamServer) -> None:
    server.script(["500", "429", "ok"])

    async def use(backend: HttpBackend) -> list[str]:
        outcomes = []
        for _ in range(4):
            try:
                outcomes.append((await backend.complete(ASK)).text)
            except BackendError as error:
                outcomes.append(error.kind)
        return outcomes

    outcomes = _call(server.base_url, use)
    echo = "echo: one two three four"
    assert outcomes == ["upstream", "rate_limit", echo, echo]
    assert server.attempts == 4


def test_connection_refused_is_an_upstream_error() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(UpstreamError) as caught:
        _call(url, lambda b: b.complete(ASK), timeout_s=2)
    assert f"model 'echo-7b' at {url} could not be reached" in str(caught.value)
    assert "check that the server is running at that URL" in str(caught.value)


# --- configuration -----------------------------------------------------------------


def test_missing_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model 'echo-7b' has no base_url; set "):
        HttpBackend(_card())


def test_unset_key_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VAR, raising=False)
    card = _card(api_key_env=KEY_VAR, base_url="https://api.example.com/v1")
    with pytest.raises(ConfigError) as caught:
        HttpBackend(card)
    assert f"needs an API key in ${KEY_VAR}, which is not set" in str(caught.value)
    assert f"export {KEY_VAR}=..." in str(caught.value)


def test_bad_timeout_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="timeout_s must be > 0"):
        HttpBackend(_card(), base_url="http://127.0.0.1:9/v1", timeout_s=0)


# --- the test server itself --------------------------------------------------------


def test_server_lists_its_model(server: UpstreamServer) -> None:
    async def main() -> list[str]:
        async with openai.AsyncOpenAI(
            api_key="x", base_url=server.base_url, max_retries=0
        ) as client:
            return [model.id async for model in client.models.list()]

    assert asyncio.run(main()) == [MODEL]


def test_server_refuses_unknown_faults(server: UpstreamServer) -> None:
    with pytest.raises(ValueError, match="unknown fault 'teapot'"):
        server.script(["ok", "teapot"])
    with pytest.raises(ValueError, match="the faults are ok, 500, 429"):
        server.mode = "teapot"
    assert "stall" in FAULTS


def test_server_stops_without_leaving_threads() -> None:
    before = set(threading.enumerate())
    with UpstreamServer(mode="stall", stall_s=30) as server:
        url = server.base_url
        with pytest.raises(BackendTimeoutError):
            _call(url, lambda b: b.complete(ASK), timeout_s=0.2)
    assert set(threading.enumerate()) <= before
    with socket.socket() as sock:  # the port is free again
        assert sock.connect_ex(("127.0.0.1", int(url.split(":")[2][:-3]))) != 0


def test_a_url_without_the_api_path_says_where_to_look(server: UpstreamServer) -> None:
    bare = server.base_url.removesuffix("/v1")
    error = _fails(BadRequestError, lambda: _call(bare, lambda b: b.complete(ASK)))
    assert str(error) == (
        f"model 'echo-7b' at {bare} rejected the request (HTTP 404: "
        '{"detail":"Not Found"}); '
        "check that the URL is the server's OpenAI-compatible API (often .../v1) "
        "and that it serves this model."
    )
