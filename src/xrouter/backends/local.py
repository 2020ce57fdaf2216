"""In-process chat model on the CPU: SmolLM2-135M-Instruct by default, offline
(its directory is made once by :mod:`xrouter.backends.model_dir`); any other
transformers chat model directory can be given instead (``model_dir``).

:class:`LocalBackend` keeps one model in memory, loaded on the first call, and runs
one generation at a time in a worker thread so the event loop stays free. It does
not do function calling: a request with ``tools`` is refused with ``BadRequestError``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import torch
from transformers import (
    BatchEncoding,
    GenerationMixin,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from xrouter.backends.model_dir import MODEL_ID, load_chat_model, local_model_dir
from xrouter.core.catalog import ModelCard
from xrouter.core.errors import BadRequestError, ConfigError, UpstreamError
from xrouter.core.types import ChatRequest, Completion, Message, StreamDelta, Usage

__all__ = ["LocalBackend"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS: Final = 256


@dataclass(frozen=True)
class _Loaded:
    model: GenerationMixin
    tokenizer: PreTrainedTokenizerBase
    eos_ids: list[int]
    pad_id: int
    # A template that never mentions "tool" would print a role the model never saw;
    # tool results then go in as user turns wrapped in <tool_response> tags.
    tool_role: bool

    def decode(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text if isinstance(text, str) else "".join(text)


def _load(folder: Path) -> _Loaded:
    model, tokenizer = load_chat_model(
        folder,
        instead=f"give a directory with config.json, weights and a tokenizer, or "
        f"{MODEL_ID!r}.",
    )
    if not isinstance(template := tokenizer.chat_template, str):
        raise ConfigError(
            f"the tokenizer in {folder} has no single chat template; use an "
            "instruction-tuned model whose tokenizer defines one."
        )
    eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    pad = model.generation_config.pad_token_id or tokenizer.pad_token_id
    pad_id = pad if isinstance(pad, int) else eos_ids[0]
    return _Loaded(model, tokenizer, eos_ids, pad_id, "tool" in template)


def _chat(messages: Sequence[Message], tool_role: bool) -> list[dict[str, Any]]:
    chat: list[dict[str, Any]] = []
    for message in messages:
        if tool_role:
            chat.append(message.as_dict())
        elif message.role == "tool":
            wrapped = f"<tool_response>\n{message.content}\n</tool_response>"
            chat.append({"role": "user", "content": wrapped})
        else:
            calls = [
                f"<tool_call>\n{json.dumps(c)}\n</tool_call>"
                for c in message.tool_calls
            ]
            text = "\n".join(part for part in (message.content, *calls) if part)
            chat.append({"role": message.role, "content": text})
    return chat


def _stop_at(text: str, stops: Sequence[str]) -> int | None:
    found = [i for i in (text.find(stop) for stop in stops if stop) if i >= 0]
    return min(found, default=None)


def _releasable(text: str, stops: Sequence[str]) -> str:
    """The part of streamed ``text`` that no stop string can still cut."""
    if (cut := _stop_at(text, stops)) is not None:
        return text[:cut]
    held = [k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])]
    return text[: len(text) - max(held, default=0)]


class _StopCheck(StoppingCriteria):
    """Ends generation at a stop string, or once the caller has gone away."""

    def __init__(
        self, loaded: _Loaded, start: int, stops: Sequence[str], cancel: threading.Event
    ) -> None:
        self._loaded, self._start = loaded, start
        self._stops, self._cancel = stops, cancel

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **_: Any
    ) -> torch.BoolTensor:
        done = self._cancel.is_set()
        if self._stops and not done:
            text = self._loaded.decode(input_ids[0, self._start :].tolist())
            done = _stop_at(text, self._stops) is not None
        return cast(torch.BoolTensor, torch.full((1,), done, dtype=torch.bool))


class _SeededSampler(LogitsProcessor):
    """Samples at a temperature from its own seeded generator and leaves greedy
    search a single token to pick: reproducible, and blind to torch's global RNG."""

    def __init__(self, temperature: float, seed: int) -> None:
        self._temperature = temperature
        self._generator = torch.Generator().manual_seed(seed)

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor
    ) -> torch.FloatTensor:
        probs = torch.softmax(scores.float() / self._temperature, dim=-1)
        picked = torch.multinomial(probs, 1, generator=self._generator)
        only = torch.full_like(scores, float("-inf")).scatter_(1, picked, 0.0)
        return cast(torch.FloatTensor, only)


class LocalBackend:
    """A chat model run in this process, one generation at a time."""

    def __init__(
        self,
        card: ModelCard,
        *,
        model_dir: Path | None = None,
        threads: int | None = None,
        seed: int = 0,
    ) -> None:
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1 or None, got {threads}")
        self._card, self._model_dir = card, model_dir
        self._threads, self._seed = threads, seed
        self._lock = threading.RLock()  # one CPU model: one generation at a time
        self._loaded: _Loaded | None = None

    @property
    def card(self) -> ModelCard:
        return self._card

    async def complete(self, request: ChatRequest) -> Completion:
        started = time.perf_counter()
        cancel = threading.Event()
        try:
            text, usage, finish = await asyncio.to_thread(
                self._generate, request, None, cancel
            )
        finally:
            cancel.set()  # a caller that gave up stops the worker at the next token
        latency = time.perf_counter() - started
        return Completion(text, usage, finish_reason=finish, latency_s=latency)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        loaded = await asyncio.to_thread(self._ensure_loaded)
        streamer = TextIteratorStreamer(
            loaded.tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        cancel = threading.Event()
        worker = asyncio.ensure_future(
            asyncio.to_thread(self._generate, request, streamer, cancel)
        )
        try:
            seen = sent = ""
            while (piece := await asyncio.to_thread(next, streamer, None)) is not None:
                seen += piece
                ready = _releasable(seen, request.stop)
                if len(ready) > len(sent):
                    yield StreamDelta(text=ready[len(sent) :])
                    sent = ready
            text, usage, finish = await worker
        finally:
            cancel.set()
            # Collect an abandoned worker's outcome, so no failure goes unretrieved.
            worker.add_done_callback(lambda done: done.cancelled() or done.exception())
        # The answer as complete() gives it, decoded from all tokens at once, ends
        # with what the stream held back (the start of a possible stop string).
        if text.startswith(sent) and len(text) > len(sent):
            yield StreamDelta(text=text[len(sent) :])
        yield StreamDelta(finish_reason=finish, usage=usage)

    async def aclose(self) -> None:
        def unload() -> None:
            with self._lock:
                self._loaded = None

        await asyncio.to_thread(unload)

    def _ensure_loaded(self) -> _Loaded:
        with self._lock:
            if self._loaded is None:
                started = time.perf_counter()
                folder = self._model_dir or local_model_dir(self._card.id)
                if self._threads is not None:
                    torch.set_num_threads(self._threads)
                self._loaded = _load(folder)
                took = time.perf_counter() - started
                logger.info("loaded %s from %s in %.1f s", self._card.id, folder, took)
            return self._loaded

    def _generate(
        self,
        request: ChatRequest,
        streamer: TextIteratorStreamer | None,
        cancel: threading.Event,
    ) -> tuple[str, Usage, str]:
        """(text, usage, finish reason); the tokenizer too is used under the lock."""
        try:
            with self._lock:
                loaded = self._ensure_loaded()
                prompt = self._encode(loaded, request)
                start = prompt.shape[1]
                budget = min(
                    request.max_tokens or DEFAULT_MAX_TOKENS,
                    self._card.context_window - start,
                )
                processors = LogitsProcessorList()
                if request.temperature:
                    processors.append(_SeededSampler(request.temperature, self._seed))
                stop = _StopCheck(loaded, start, request.stop, cancel)
                started = time.perf_counter()
                with torch.inference_mode():
                    out = loaded.model.generate(
                        prompt,
                        attention_mask=torch.ones_like(prompt),
                        max_new_tokens=budget,
                        do_sample=False,
                        eos_token_id=loaded.eos_ids,
                        pad_token_id=loaded.pad_id,
                        logits_processor=processors,
                        stopping_criteria=StoppingCriteriaList([stop]),
                        streamer=streamer,
                    )
                new: list[int] = out[0, start:].tolist()
                text = loaded.decode(new)
        except RuntimeError as exc:
            raise UpstreamError(
                f"{self._card.id} failed while generating in-process: {exc}",
                model=self._card.id,
                retryable=False,
            ) from exc
        finally:
            if streamer is not None:
                streamer.end()  # type: ignore[no-untyped-call]  # even on failure
        took = time.perf_counter() - started
        logger.debug("%s: %d new tokens in %.2f s", self._card.id, len(new), took)

        if (cut := _stop_at(text, request.stop)) is not None:
            text, finish = text[:cut], "stop"
        elif new and new[-1] in loaded.eos_ids:
            finish = "stop"
        else:
            finish = "length" if len(new) >= budget else "stop"
        return text, Usage(start, len(new)), finish

    def _encode(self, loaded: _Loaded, request: ChatRequest) -> torch.Tensor:
        """The prompt's token ids, shape (1, tokens); BadRequestError if too long."""
        model, window = self._card.id, self._card.context_window
        if request.tools:
            raise BadRequestError(
                f"{model} runs in-process without function calling, and the request "
                f"gives {len(request.tools)} tools. Route calls with tools to a model "
                "whose card lists the 'tools' capability.",
                model=model,
            )
        if request.output_format() != "text":
            raise BadRequestError(
                f"{model} runs in-process and cannot hold its answer to the "
                f"response_format asked for ({request.output_format()}). Route such "
                "requests to a model behind an API that follows it.",
                model=model,
            )
        low_max = request.max_tokens is not None and request.max_tokens < 1
        if low_max or (request.temperature or 0) < 0:
            raise BadRequestError(
                f"max_tokens must be >= 1 and temperature >= 0, got "
                f"{request.max_tokens} and {request.temperature}",
                model=model,
            )
        encoding = loaded.tokenizer.apply_chat_template(
            _chat(request.messages, loaded.tool_role),
            add_generation_prompt=True,
            return_dict=True,
            # Text such as "<|im_end|>" inside a message stays text, not a turn end.
            sanitize_control_tokens=True,
        )
        ids = torch.tensor([cast(BatchEncoding, encoding)["input_ids"]])
        if ids.shape[1] >= window:
            raise BadRequestError(
                f"the prompt is {ids.shape[1]} tokens and {model} reads at most "
                f"{window} (its context window), leaving no room for an answer. "
                "Shorten the messages or route to a model with a larger window.",
                model=model,
            )
        return ids
