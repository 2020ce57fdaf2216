"""LiteLLM as a backend, for the providers it speaks to natively (optional extra).

Install with ``pip install 'xrouter-rl[litellm]'``. The card's ``route`` is passed
as LiteLLM's model string (for example ``anthropic/claude-3-5-sonnet-20240620``);
``base_url`` and the key in ``api_key_env``, when the card has them, go with it.
LiteLLM's price map is read from the installed package, never downloaded.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

from xrouter.backends.base import counted_usage, reported_usage, stream_from_complete
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
from xrouter.core.types import ChatRequest, Completion, StreamDelta, Usage

__all__ = ["LiteLLMBackend", "map_litellm_error"]

_BAD_REQUEST = {
    "BadRequestError",
    "ContextWindowExceededError",
    "NotFoundError",
    "UnprocessableEntityError",
}
_ACCESS_DENIED = {"AuthenticationError", "PermissionDeniedError"}
_NOT_AN_API = "invalid response from LLM endpoint"


def map_litellm_error(exc: Exception, model: str) -> BackendError:
    """The typed error for a LiteLLM (or openai) exception, judged by its class."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = f"{model} via LiteLLM: {type(exc).__name__}: {exc}"
    if names & {"Timeout", "APITimeoutError", "TimeoutError"}:
        return BackendTimeoutError(text, model=model)
    if "RateLimitError" in names:
        return RateLimitError(text, model=model)
    if names & _ACCESS_DENIED:
        return AccessDeniedError(text, model=model)
    if names & _BAD_REQUEST:
        return BadRequestError(text, model=model)
    if _NOT_AN_API in str(exc):
        # LiteLLM reports a 200 whose body is no completion (a proxy's page, a
        # wrong URL) as a 500 of its own, told apart only by this message. Asked
        # again, the endpoint would answer the same, and may bill again.
        return UpstreamError(text, model=model, retryable=False)
    return UpstreamError(text, model=model)


class LiteLLMBackend:
    """One model called through ``litellm.acompletion``."""

    def __init__(self, card: ModelCard, *, timeout_s: float = 60.0) -> None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        try:
            import litellm
        except ImportError:
            raise ConfigError(
                f"model {card.id} uses the litellm backend, which is not installed; "
                "run `pip install 'xrouter-rl[litellm]'` or use backend: http"
            ) from None
        litellm.suppress_debug_info = True  # its errors are ours to report
        self._litellm: Any = litellm
        self._card = card
        self._timeout_s = timeout_s

    @property
    def card(self) -> ModelCard:
        return self._card

    async def complete(self, request: ChatRequest) -> Completion:
        card = self._card
        # Retries are the orchestrator's: LiteLLM and the client under it make none.
        options: dict[str, Any] = {
            "timeout": self._timeout_s,
            "num_retries": 0,
            "max_retries": 0,
        }
        if card.base_url:
            options["api_base"] = card.base_url
        key = os.environ.get(card.api_key_env) if card.api_key_env else None
        if card.api_key_env and not key:
            raise ConfigError(
                f"model {card.id} needs its API key in ${card.api_key_env}, which is "
                "not set"
            )
        # A server of your own (base_url, no key variable) is sent a placeholder.
        options["api_key"] = key or ("not-needed" if card.base_url else None)
        for key in ("max_tokens", "temperature", "tool_choice"):
            value = getattr(request, key)
            if value is not None:
                options[key] = value
        if request.stop:
            options["stop"] = list(request.stop)
        if request.tools:
            options["tools"] = list(request.tools)
        options.update(request.extra)
        started = time.monotonic()
        try:
            reply = await self._litellm.acompletion(
                model=card.route,
                messages=[m.as_dict() for m in request.messages],
                **options,
            )
        except Exception as exc:
            raise map_litellm_error(exc, card.id) from exc
        usage = reported_usage(getattr(reply, "usage", None))
        if usage == Usage(0, 0):
            usage = None  # LiteLLM fills in zeros where the server reported none
        if not reply.choices:
            # A reply that reports usage was billed: asking again pays again.
            raise UpstreamError(
                f"{card.id} via LiteLLM: a reply with no choices",
                model=card.id,
                retryable=usage is None,
                billed=usage,
            )
        choice = reply.choices[0]
        text = choice.message.content or ""
        calls = tuple(call.model_dump() for call in (choice.message.tool_calls or ()))
        return Completion(
            text=text,
            usage=usage or counted_usage(request, text),
            finish_reason=choice.finish_reason or "stop",
            latency_s=time.monotonic() - started,
            tool_calls=calls,
        )

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        return stream_from_complete(self, request)

    async def aclose(self) -> None:
        return None
