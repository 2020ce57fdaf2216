"""The OpenAI chat-completions request, checked field by field, and error bodies.

Content may be a string or an array of text parts (joined in order); other part
kinds are refused by name. ``top_p``, ``seed``, the penalties, ``logit_bias`` and
``response_format`` are checked and passed to the model that answers (a model that
cannot follow a ``response_format``, replayed or run in-process, refuses the call);
``logprobs`` is refused, as the gateway returns none; ``n`` other than 1 is refused.
Other fields are accepted and ignored, as OpenAI-compatible servers commonly do.
A named ``tool_choice`` must name one of the request's ``tools``, and
``"required"`` needs some.

Every refusal names the field at fault: :func:`validation_message` turns the first
problem pydantic found into ``"<dotted path>: <reason>"`` and that path.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from xrouter.core.types import CallerOptions, Message

__all__ = [
    "MAX_TOKENS",
    "ChatRequestBody",
    "error_body",
    "validation_message",
]

# No model writes more than this in one answer; a larger max_tokens is a mistake,
# and would make a budget's worst case absurd.
MAX_TOKENS = 1_000_000
# A field name in an error's location; other parts name the member of a union
# that was tried ("str", "list[str]", "function-after[...]") and are left out.
_FIELD = re.compile(r"^[a-z_][a-z0-9_]*$")
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class FunctionCall(_Strict):
    name: str
    arguments: str


class ToolCallIn(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class MessageIn(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _check(self) -> MessageIn:
        if isinstance(self.content, list):
            for k, part in enumerate(self.content):
                kind = part.get("type")
                if kind != "text" or not isinstance(part.get("text"), str):
                    shown = kind if not isinstance(kind, str) else kind[:40]
                    raise ValueError(
                        f"content part {k} is of type {shown!r}; the gateway takes "
                        "text parts only ({'type': 'text', 'text': ...})"
                    )
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(
                "content is required (only an assistant message with "
                "tool_calls may leave it out)"
            )
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part["text"]) for part in self.content)

    def as_message(self) -> Message:
        role = "system" if self.role == "developer" else self.role
        calls = tuple(c.model_dump() for c in self.tool_calls or ())
        return Message(role, self.text(), self.name, calls, self.tool_call_id)


class FunctionDef(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDef(_Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Strict):
    include_usage: bool = False


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs its json_schema")
        return self


_Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
_Penalty = Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False)]
# Passed to the model that answers, as given.
_PASSED = ("top_p", "seed", "frequency_penalty", "presence_penalty", "logit_bias")


class ChatRequestBody(_Strict):
    """``POST /v1/chat/completions``."""

    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[MessageIn], Field(min_length=1)]
    max_tokens: _Tokens | None = None
    max_completion_tokens: _Tokens | None = None
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: Annotated[list[ToolDef], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    user: str | None = None
    n: int | None = None
    top_p: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    seed: int | None = None
    frequency_penalty: _Penalty | None = None
    presence_penalty: _Penalty | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @field_validator("messages")
    @classmethod
    def _conversation(cls, messages: list[MessageIn]) -> list[MessageIn]:
        if not any(m.role == "user" for m in messages):
            raise ValueError("there must be at least one user message")
        if not any(m.text().strip() for m in messages):
            raise ValueError("every message is empty")
        return messages

    @field_validator("tool_choice")
    @classmethod
    def _choice(
        cls, choice: str | NamedToolChoice | None, info: ValidationInfo
    ) -> str | NamedToolChoice | None:
        names = [t.function.name for t in info.data.get("tools") or ()]
        if choice == "required" and not names:
            raise ValueError("'required' needs tools to choose from; send tools too")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(
                f"names the function {choice.function.name[:64]!r}, which is not "
                f"one of the tools ({', '.join(names) or 'none given'})"
            )
        return choice

    @field_validator("n")
    @classmethod
    def _one(cls, n: int | None) -> int | None:
        if n is not None and n != 1:
            raise ValueError(f"the gateway returns one choice; n must be 1, got {n}")
        return n

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | int | None) -> bool | int | None:
        if value not in (None, False):
            raise ValueError(
                "the gateway returns no log-probabilities (the models it routes "
                "between give them differently or not at all); leave it out"
            )
        return value

    def conversation(self) -> list[Message]:
        return [m.as_message() for m in self.messages]

    def caller(self) -> CallerOptions:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        choice: str | dict[str, Any] | None = None
        if isinstance(self.tool_choice, NamedToolChoice):
            choice = self.tool_choice.model_dump()
        else:
            choice = self.tool_choice
        return CallerOptions(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            stop=stop,
            tools=tuple(t.model_dump(exclude_none=True) for t in self.tools or ()),
            tool_choice=choice,
            user=self.user,
            extra=self._passed(),
        )

    def _passed(self) -> dict[str, Any]:
        """The parameters the answering model is sent as given."""
        passed = {k: getattr(self, k) for k in _PASSED if getattr(self, k) is not None}
        if self.response_format is not None:
            passed["response_format"] = self.response_format.model_dump(
                exclude_none=True
            )
        return passed


def _path(loc: tuple[int | str, ...]) -> str:
    return ".".join(
        str(p)
        for p in loc
        if isinstance(p, int) or (_FIELD.match(p) and p not in _UNION_TAGS)
    )


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    """(a message naming the first bad field, that field's dotted path).

    When a field may take several forms (a string or a list), the reasons that
    each form was refused are joined with "or"."""
    errors = exc.errors(include_url=False, include_input=False)
    paths = [_path(e["loc"]) for e in errors]
    path = paths[0]
    reasons = [
        e["msg"].removeprefix("Value error, ")
        for e, p in zip(errors, paths, strict=True)
        if p == path
    ]
    text = " or ".join(dict.fromkeys(reasons))
    if path:
        text = f"{path}: {text}"
    more = len(errors) - len(reasons)
    if more:
        text += f" (and {more} more problem{'s' if more > 1 else ''})"
    return text, path or None


def error_body(
    message: str,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """An OpenAI-style error body."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
