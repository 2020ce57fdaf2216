"""Token counting with a real tokenizer that works offline.

OpenAI's ``o200k_base`` encoding (from the ``bpe-openai`` package, which carries it)
counts every model's text. Other vendors' tokenizers differ by a few percent; usage
counted this way is flagged ``counted`` in the store, never ``recorded``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xrouter.core.types import ChatRequest

__all__ = [
    "ENCODING",
    "count_message_tokens",
    "count_request_tokens",
    "count_tokens",
    "first_tokens",
]

ENCODING = "o200k_base"
# Chat formats add a few tokens of framing per message (role markers, separators).
_PER_MESSAGE_OVERHEAD = 4


@functools.cache
def _encoder() -> Any:
    import bpe_openai

    return bpe_openai.get_encoding(ENCODING)


# The encoder refuses inputs of about a million characters; longer texts are
# encoded in pieces of this many (a token split at a cut counts twice, which is
# one token in 200,000 characters).
_PIECE_CHARS = 200_000


def _pieces(text: str) -> Iterator[str]:
    for start in range(0, len(text), _PIECE_CHARS):
        yield text[start : start + _PIECE_CHARS]


def count_tokens(text: str) -> int:
    """Number of ``o200k_base`` tokens in ``text``."""
    return sum(len(_encoder().encode_ordinary(piece)) for piece in _pieces(text))


def first_tokens(text: str, n: int) -> str:
    """The text of the first ``n`` ``o200k_base`` tokens of ``text``."""
    kept: list[str] = []
    for piece in _pieces(text):
        tokens = _encoder().encode_ordinary(piece)
        if len(tokens) >= n:
            kept.append(_encoder().decode(tokens[:n]))
            return "".join(kept)
        kept.append(piece)
        n -= len(tokens)
    return text


def count_message_tokens(messages: Sequence[tuple[str, str]]) -> int:
    """Input tokens of a chat prompt: the contents plus per-message framing."""
    return sum(count_tokens(content) + _PER_MESSAGE_OVERHEAD for _, content in messages)


def count_request_tokens(request: ChatRequest) -> int:
    """Input tokens of everything a chat request sends: its messages, the tool
    calls in them, and its tool definitions and tool choice (as JSON text)."""
    messages = [
        (m.role, m.content + _json_text(*m.tool_calls)) for m in request.messages
    ]
    tools = _json_text(*request.tools, request.tool_choice)
    return count_message_tokens(messages) + count_tokens(tools)


def _json_text(*parts: Any) -> str:
    return "".join(json.dumps(part) for part in parts if part)
