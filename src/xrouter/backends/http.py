"""A backend for any OpenAI-compatible chat endpoint: vLLM, llama.cpp, Ollama, APIs.

``HttpBackend`` calls ``POST {base_url}/chat/completions`` through the official
``openai`` client with its own retries off (retrying is the orchestrator's job).
``timeout_s`` bounds a whole ``complete`` call, and each wait for the next piece of
a ``stream``. Every failure comes out as a typed :mod:`xrouter.core.errors` error
naming the model, the URL and what went wrong: a timeout as ``BackendTimeoutError``, a
429 as ``RateLimitError`` (with ``Retry-After``), a 5xx, refused or cut connection or
malformed reply as ``UpstreamError``, and any other 4xx as ``BadRequestError``. When the
server reports no token usage, or a negative one, it is counted with the o200k
tokenizer.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
import httpx
import httpx2
import openai
from openai.types.chat import ChatCompletion

from xrouter.backends.base import counted_usage, reported_usage
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

__all__ = ["HttpBackend"]


NO_KEY: Final = "not-needed"  # sent when the card names no key variable
# What a call may raise: the client's errors, the transport's, and for a reply that
# is not a chat completion, the errors of reading it (bad JSON or UTF-8, fields
# missing or of the wrong type: the client does not validate replies).
_TIMEOUTS: Final = (
    TimeoutError,
    openai.APITimeoutError,
    httpx.TimeoutException,
    httpx2.TimeoutException,
)
_CONNECTION: Final = (
    openai.APIConnectionError,
    httpx.HTTPError,
    httpx2.HTTPError,
    anyio.EndOfStream,
    OSError,
)
_MALFORMED: Final = (ValueError, TypeError, AttributeError, IndexError, KeyError)
_FAILURES: Final = (*_TIMEOUTS, *_CONNECTION, openai.OpenAIError, *_MALFORMED)


class _MalformedError(ValueError):
    """A reply that parsed but is not a chat completion (the message says why).
    Not ``retryable`` when the server would answer the same again: asking once
    more would pay again for a reply no one can read. ``wrong_url`` when the
    likeliest cause is a URL that is not the server's API."""

    def __init__(
        self, message: str, *, retryable: bool = True, wrong_url: bool = False
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.wrong_url = wrong_url


class HttpBackend:
    """One model served by an OpenAI-compatible HTTP endpoint."""

    def __init__(
        self,
        card: ModelCard,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        url = base_url or card.base_url
        if not url:
            raise ConfigError(
                f"model {card.id!r} has no base_url; set base_url in its card or "
                "pool entry to the server's OpenAI-compatible URL (such as "
                "http://127.0.0.1:8000/v1)."
            )
        if timeout_s <= 0:
            raise ConfigError(f"timeout_s must be > 0 seconds, got {timeout_s}.")
        key = api_key or _key_from_env(card, url)
        self._card = card
        self._url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._where = f"model {card.id!r} at {self._url}"
        self._client = openai.AsyncOpenAI(
            api_key=key,
            base_url=self._url,
            timeout=timeout_s,
            max_retries=0,
            default_headers=extra_headers,
        )

    @property
    def card(self) -> ModelCard:
        return self._card

    async def complete(self, request: ChatRequest) -> Completion:
        """The whole answer; BackendTimeoutError past ``timeout_s``."""
        start = time.perf_counter()
        usage: Usage | None = None
        reported = False
        try:
            async with asyncio.timeout(self._timeout_s):
                reply: object = await self._client.chat.completions.create(
                    **self._params(request)
                )
            if not isinstance(reply, ChatCompletion):
                raise _MalformedError(
                    f"a body that is not JSON: {reply!r:.120}",
                    retryable=False,
                    wrong_url=True,
                )
            reported, usage = reply.usage is not None, reported_usage(reply.usage)
            if not reply.choices:
                error = (reply.model_extra or {}).get("error")
                found = f", error {error!r:.200}" if error else ""
                raise _MalformedError(f"a reply with no choices{found}")
            message, finish = reply.choices[0].message, reply.choices[0].finish_reason
            text = _text(message.content)
            calls = tuple(
                c.model_dump(exclude_none=True) for c in message.tool_calls or ()
            )
        except _FAILURES as exc:
            raise _with_billing(self._typed(exc), request, [], reported, usage) from exc
        return Completion(
            text=text,
            usage=usage or counted_usage(request, text),
            finish_reason=finish or "stop",
            latency_s=time.perf_counter() - start,
            tool_calls=calls,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """Text deltas as they arrive, then one delta with finish reason and usage."""
        parts: list[str] = []
        finish: str | None = None
        usage: Usage | None = None
        events, reported = 0, False
        try:
            chunks = await self._client.chat.completions.create(
                **self._params(request),
                stream=True,
                stream_options={"include_usage": True},
            )
        except _FAILURES as exc:
            raise self._typed(exc) from exc
        try:
            async for chunk in chunks:
                events += 1
                reported = reported or chunk.usage is not None
                usage = reported_usage(chunk.usage) or usage
                for choice in chunk.choices[:1]:
                    finish = choice.finish_reason or finish
                    text = _text(choice.delta.content)
                    calls = tuple(
                        c.model_dump(exclude_none=True)
                        for c in choice.delta.tool_calls or ()
                    )
                    if text or calls:
                        parts.append(text)
                        yield StreamDelta(text=text, tool_calls=calls)
        except _FAILURES as exc:
            failure = self._typed(exc, mid_stream=bool(parts))
            raise _with_billing(failure, request, parts, reported, usage) from exc
        finally:
            await chunks.close()
        if finish is None:
            if not events:
                wrong = _MalformedError(
                    "a stream with no events", retryable=False, wrong_url=True
                )
                raise self._typed(wrong)
            why = (
                "a stream with its usage and no answer"
                if reported and not parts
                else "a stream that ended before the model finished"
            )
            failure = self._typed(_MalformedError(why))
            raise _with_billing(failure, request, parts, reported, usage)
        yield StreamDelta(
            finish_reason=finish, usage=usage or counted_usage(request, "".join(parts))
        )

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self._card.route,
            "messages": [message.as_dict() for message in request.messages],
        }
        optional = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stop": list(request.stop) or None,
            "tools": list(request.tools) or None,
            "tool_choice": request.tool_choice,
            "user": request.user,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        params.update(request.extra)
        return params

    def _typed(self, exc: BaseException, *, mid_stream: bool = False) -> BackendError:
        """The typed error for a failed call, with a message naming what happened."""
        where, model = self._where, self._card.id
        if isinstance(exc, _TIMEOUTS) or isinstance(exc.__cause__, _TIMEOUTS):
            return BackendTimeoutError(
                f"{where} gave no answer within {self._timeout_s:g} s; check that the "
                "server is up and not overloaded, or raise timeout_s.",
                model=model,
            )
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc)
        if isinstance(exc, _CONNECTION):
            what = _describe(exc.__cause__ or exc)
            if mid_stream:
                text = f"{where} cut the stream midway ({what})."
                return UpstreamError(text, model=model)
            return UpstreamError(
                f"{where} could not be reached or closed the connection ({what}); "
                "check that the server is running at that URL.",
                model=model,
            )
        if isinstance(exc, openai.APIError):
            text = f"{where} reported an error: {exc.message}"
            return UpstreamError(text, model=model)
        check = (
            "; check that the URL is the server's OpenAI-compatible API (often .../v1)"
            if getattr(exc, "wrong_url", True)
            else ""
        )
        # A server that sends what cannot be read would send it again.
        return UpstreamError(
            f"{where} sent a reply that is not a chat completion "
            f"({_describe(exc)}){check}.",
            model=model,
            retryable=getattr(exc, "retryable", False),
        )

    def _status_error(self, exc: openai.APIStatusError) -> BackendError:
        where, model = self._where, self._card.id
        status, detail = exc.status_code, _detail(exc)
        if status == 429:
            after = _retry_after(exc.response.headers.get("retry-after"))
            wait = f"; retry after {after:g} s" if after is not None else ""
            return RateLimitError(
                f"{where} is rate limited (HTTP 429: {detail}){wait}.",
                model=model,
                retry_after_s=after,
            )
        if status in (401, 403):
            var = self._card.api_key_env
            fix = f"check the key in ${var}" if var else "set api_key_env in its card"
            return AccessDeniedError(
                f"{where} refused the API key (HTTP {status}: {detail}); {fix}.",
                model=model,
            )
        if 400 <= status < 500:
            text = f"{where} rejected the request (HTTP {status}: {detail})."
            if status in (404, 405):  # a path the server does not serve
                text = text[:-1] + (
                    "; check that the URL is the server's OpenAI-compatible API "
                    "(often .../v1) and that it serves this model."
                )
            return BadRequestError(text, model=model)
        text = f"{where} failed with HTTP {status}: {detail}."
        return UpstreamError(text, model=model)


def _key_from_env(card: ModelCard, url: str) -> str:
    if card.api_key_env is None:
        return NO_KEY
    key = os.environ.get(card.api_key_env)
    if not key:
        raise ConfigError(
            f"model {card.id!r} at {url} needs an API key in ${card.api_key_env}, "
            f"which is not set; export {card.api_key_env}=... before starting."
        )
    return key


def _with_billing(
    failure: BackendError,
    request: ChatRequest,
    parts: list[str],
    reported: bool,
    usage: Usage | None,
) -> BackendError:
    """``failure``, carrying the usage its reply (or stream, with the text
    ``parts`` it sent) reported before it failed, counted where that usage could
    not be taken: it was billed, and is not asked for again."""
    if reported:
        failure.billed = usage or counted_usage(request, "".join(parts))
        failure.retryable = False
    return failure


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _MalformedError) or not str(exc):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def _text(content: object) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    raise _MalformedError(f"content that is not text: {content!r:.100}")


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    text = exc.response.text if exc.response.is_closed else ""
    return (text or exc.message).strip()[:300] or exc.response.reason_phrase


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value or "")
    except ValueError:
        return None
    return seconds if 0 <= seconds < math.inf else None
