"""The router model being trained, played in memory behind the shared ``LLMRouter``.

:class:`PolicyBackend` is a backend whose model is the causal LM under training.
Wrapped in ``LLMRouter`` it routes episodes through the shared orchestrator like
any served router, and it records every turn it plays: the prompt's token ids, the
sampled completion's ids and their log-probabilities under the sampling policy
(logits divided by the temperature). Those records are what the GRPO loss trains
on; the tool responses live only in later turns' prompts, so they are never
trained.

Sampling is a plain loop over the KV cache with a seeded generator (one sequence
at a time): reproducible, and it yields the log-probabilities on the way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from xrouter.backends.base import stream_from_complete
from xrouter.backends.local import _quiet_progress
from xrouter.core.catalog import ModelCard
from xrouter.core.errors import ConfigError
from xrouter.core.types import ChatRequest, Completion, StreamDelta, Usage
from xrouter.train.router_data import chat_text, encode

__all__ = ["PolicyBackend", "RouterTurnSample", "load_router_model", "sample_tokens"]


@dataclass
class RouterTurnSample:
    """One router turn as generated: prompt ids, completion ids, their logprobs."""

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    text: str
    advantage: float = 0.0


def load_router_model(
    folder: Path, *, dtype: torch.dtype = torch.float32
) -> tuple[Any, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from a transformers model directory."""
    try:
        with _quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load a transformers chat model from {folder} ({exc}); give "
            "--base smollm2-135m or a model directory with config.json, weights and "
            "a tokenizer"
        ) from exc
    if not isinstance(tokenizer.chat_template, str):
        raise ConfigError(
            f"the tokenizer in {folder} has no chat template; the router needs an "
            "instruction-tuned model"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def eos_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Every token id that ends a turn (the generation config's and the
    tokenizer's)."""
    found: set[int] = set()
    for value in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list):
            found.update(int(v) for v in value)
    return found


@torch.no_grad()
def sample_tokens(
    model: Any,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    temperature: float,
    stop_ids: set[int],
    generator: torch.Generator | None = None,
) -> tuple[list[int], list[float]]:
    """Sample a completion (greedy when ``temperature`` is 0); returns its ids and
    their log-probabilities under ``softmax(logits / temperature)``."""
    device = next(model.parameters()).device
    out = model(
        input_ids=torch.tensor([list(prompt_ids)], device=device), use_cache=True
    )
    ids: list[int] = []
    logps: list[float] = []
    for _ in range(max_new_tokens):
        logits = out.logits[0, -1].float()  # (vocab,)
        scaled = logits / temperature if temperature > 0 else logits
        logp = torch.log_softmax(scaled, dim=-1)
        if temperature > 0:
            token = int(torch.multinomial(logp.exp(), 1, generator=generator).item())
        else:
            token = int(logits.argmax().item())
        ids.append(token)
        logps.append(float(logp[token]))
        if token in stop_ids:
            break
        out = model(
            input_ids=torch.tensor([[token]], device=device),
            cache=out.cache,
            use_cache=True,
        )
    return ids, logps


@dataclass
class PolicyBackend:
    """A backend played by the model under training; records each turn.

    ``temperature`` 0 decodes greedily (evaluation); training samples at 1.0.
    Requests' own ``max_tokens`` and ``temperature`` are ignored: the trainer's
    settings hold for every turn.
    """

    model: Any
    tokenizer: PreTrainedTokenizerBase
    router_card: ModelCard
    temperature: float = 1.0
    max_new_tokens: int = 96
    seed: int = 0
    turns: list[RouterTurnSample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = eos_ids(self.model, self.tokenizer)
        device = next(self.model.parameters()).device
        self._generator = torch.Generator(device=device).manual_seed(self.seed)

    @property
    def card(self) -> ModelCard:
        return self.router_card

    def take_turns(self) -> list[RouterTurnSample]:
        """The turns recorded since the last call, and forget them."""
        turns, self.turns = self.turns, []
        return turns

    async def complete(self, request: ChatRequest) -> Completion:
        started = time.perf_counter()
        text = chat_text(self.tokenizer, request.messages, generation_prompt=True)
        prompt = encode(self.tokenizer, text)
        ids, logps = sample_tokens(
            self.model,
            prompt,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            stop_ids=self._stop,
            generator=self._generator,
        )
        reply = self.tokenizer.decode(ids, skip_special_tokens=True)
        reply = reply if isinstance(reply, str) else "".join(reply)
        self.turns.append(RouterTurnSample(prompt, ids, logps, reply))
        finish = "stop" if ids and ids[-1] in self._stop else "length"
        return Completion(
            reply,
            Usage(len(prompt), len(ids)),
            finish_reason=finish,
            latency_s=time.perf_counter() - started,
        )

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        return stream_from_complete(self, request)

    async def aclose(self) -> None:
        return None
