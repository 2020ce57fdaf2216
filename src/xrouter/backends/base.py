"""What every backend offers: one model call, whole or streamed.

A backend serves one model (named by its card). ``complete`` returns the text, usage
and finish reason; ``stream`` yields the text as it arrives. Every failure is raised
as one of the typed errors of :mod:`xrouter.core.errors` (``BackendTimeoutError``,
``RateLimitError``, ``UpstreamError``, ``BadRequestError``), never as a library's own
exception, so the orchestrator can retry, fall back or give up by kind alone.
Backends do not retry: retries and fallbacks are the orchestrator's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from xrouter.core.catalog import ModelCard
from xrouter.core.types import ChatRequest, Completion, StreamDelta, Usage
from xrouter.records.tokens import count_request_tokens, count_tokens

__all__ = ["Backend", "counted_usage", "reported_usage", "stream_from_complete"]

_log = logging.getLogger(__name__)


@runtime_checkable
class Backend(Protocol):
    """One callable model."""

    @property
    def card(self) -> ModelCard:
        """The model card: id, route, prices."""
        ...

    async def complete(self, request: ChatRequest) -> Completion:
        """The whole answer to ``request``."""
        ...

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """The answer piece by piece; the last delta has the finish reason."""
        ...

    async def aclose(self) -> None:
        """Release connections or memory held by the backend."""
        ...


async def stream_from_complete(
    backend: Backend, request: ChatRequest
) -> AsyncIterator[StreamDelta]:
    """A stream of one delta: for backends that produce the whole answer at once."""
    done = await backend.complete(request)
    yield StreamDelta(text=done.text, tool_calls=done.tool_calls)
    yield StreamDelta(finish_reason=done.finish_reason, usage=done.usage or Usage(0, 0))


# More tokens than any call can hold: a count past it is a server's error.
_MOST_TOKENS = 10**12


def reported_usage(reported: object) -> Usage | None:
    """The usage an OpenAI-style reply reports (``prompt_tokens`` and
    ``completion_tokens``), or None when it reports none, or a count that is
    negative or past any real call's (counted instead, with a warning)."""
    prompt = getattr(reported, "prompt_tokens", None)
    output = getattr(reported, "completion_tokens", None)
    if not (isinstance(prompt, int) and isinstance(output, int)):
        return None
    if isinstance(prompt, bool) or isinstance(output, bool):
        return None  # JSON true or false is no count
    if 0 <= prompt <= _MOST_TOKENS and 0 <= output <= _MOST_TOKENS:
        return Usage(prompt, output)
    _log.warning(
        "an upstream reported a token usage no call can have (prompt_tokens %s, "
        "completion_tokens %s); the call's tokens are counted instead",
        _shown(prompt),
        _shown(output),
    )
    return None


def _shown(count: int) -> str:
    """A token count as a log line can hold it, however many digits it has."""
    if abs(count) <= _MOST_TOKENS:
        return str(count)
    return f"{'-' if count < 0 else ''}about 2**{abs(count).bit_length() - 1}"


def counted_usage(request: ChatRequest, text: str) -> Usage:
    """The usage of an answer whose server reported none, counted with the
    tokenizer: everything sent, and the text that came back."""
    return Usage(count_request_tokens(request), count_tokens(text), counted=True)
