"""LiteLLM as a backend, against a real OpenAI-compatible server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from upstream import UpstreamServer

from xrouter.backends.litellm import LiteLLMBackend
from xrouter.core.catalog import ModelCard, load_catalog
from xrouter.core.errors import (
    AccessDeniedError,
    BackendError,
    BackendTimeoutError,
    BadRequestError,
    ConfigError,
    RateLimitError,
    UpstreamError,
)
from xrouter.core.types import ChatRequest, Completion, Message, Usage

HELLO = ChatRequest((Message("user", "hello there"),), max_tokens=5)


@pytest.fixture(scope="module")
def server() -> Iterator[UpstreamServer]:
    with UpstreamServer() as running:
        yield running


def card(server: UpstreamServer, **update: object) -> ModelCard:
    base = {"base_url": server.base_url, "route": "openai/mini", "api_key_env": None}
    return (
        load_catalog()
        .get("gpt-4o-mini-2024-07-18")
        .model_copy(update={**base, **update})
    )


def complete(backend: LiteLLMBackend) -> Completion:
    return asyncio.run(backend.complete(HELLO))


def test_a_call_returns_text_usage_and_the_route(server: UpstreamServer) -> None:
    server.reset()
    done = complete(LiteLLMBackend(card(server)))
    assert done.text == "echo: hello there"
    assert (done.usage.input_tokens, done.usage.output_tokens) == (2, 3)
    assert server.requests[-1]["model"] == "mini"
    assert server.requests[-1]["max_tokens"] == 5


@pytest.mark.parametrize(
    ("fault", "kind", "retryable"),
    [
        ("400", BadRequestError, False),
        ("401", AccessDeniedError, False),
        ("429", RateLimitError, True),
        ("500", UpstreamError, True),
    ],
)
def test_failures_map_to_typed_errors_without_retries_of_its_own(
    server: UpstreamServer, fault: str, kind: type[BackendError], retryable: bool
) -> None:
    server.reset()
    server.mode = fault
    with pytest.raises(kind) as caught:
        complete(LiteLLMBackend(card(server)))
    assert caught.value.retryable is retryable
    assert str(caught.value).startswith("gpt-4o-mini-2024-07-18 via LiteLLM: ")
    assert server.attempts == 1


def test_a_body_that_is_no_completion_is_not_asked_for_again(
    server: UpstreamServer,
) -> None:
    # The upstream answers 200 with an HTML page; LiteLLM calls it a 500.
    server.reset()
    server.mode = "garbage"
    with pytest.raises(UpstreamError) as caught:
        complete(LiteLLMBackend(card(server)))
    assert caught.value.retryable is False
    assert "Received: '<html><body>upstream fault: not an API</body></html>'" in str(
        caught.value
    )
    assert server.attempts == 1


def test_a_reply_without_choices_is_an_upstream_error_carrying_its_usage(
    server: UpstreamServer,
) -> None:
    server.reset()
    server.mode = "no_choices"
    with pytest.raises(UpstreamError) as caught:
        complete(LiteLLMBackend(card(server)))
    assert str(caught.value) == (
        "gpt-4o-mini-2024-07-18 via LiteLLM: a reply with no choices"
    )
    # Billed, so the orchestrator books it and does not ask again.
    assert caught.value.billed == Usage(2, 3)
    assert caught.value.retryable is False


@pytest.mark.parametrize("fault", ["negative_usage", "no_usage"])
def test_a_usage_not_reported_or_negative_is_counted(
    server: UpstreamServer, fault: str
) -> None:
    # LiteLLM reports zeros where the server sent no usage: they are not taken.
    server.reset()
    server.mode = fault
    done = complete(LiteLLMBackend(card(server)))
    assert done.usage == Usage(6, 4, counted=True)


def test_a_stalled_server_is_a_timeout(server: UpstreamServer) -> None:
    server.reset()
    server.mode = "stall"
    with pytest.raises(BackendTimeoutError):
        complete(LiteLLMBackend(card(server), timeout_s=0.5))


def test_an_unset_key_variable_is_refused(
    server: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XR_TEST_LITELLM_KEY", raising=False)
    backend = LiteLLMBackend(card(server, api_key_env="XR_TEST_LITELLM_KEY"))
    with pytest.raises(ConfigError) as caught:
        complete(backend)
    assert str(caught.value) == (
        "model gpt-4o-mini-2024-07-18 needs its API key in $XR_TEST_LITELLM_KEY, "
        "which is not set"
    )
