"""The router model being trained, played in memory behind the shared ``LLMRouter``.

:class:`PolicyBackend` is a backend whose model is the causal LM under training.
Wrapped in ``LLMRouter`` it routes episodes through the shared orchestrator like
any served router, and it records every turn it plays: the prompt's token ids, the
sampled completion's ids and their log-probabilities under the sampling policy
(logits divided by the temperature). Those records are what the GRPO loss trains
on; the tool responses live only in later turns' prompts, so they are never
trained.

Sampling is a plain loop over the KV cache with a seeded generator: reproducible,
and it yields the log-probabilities on the way. The episodes of a GRPO group open
on the same prompt (one example: the same item, lambda and pool), so their first
turns are sampled together (``PolicyBackend.sharing_first_turns``): one pass over
the prompt, whose KV cache is then copied per episode, and one batch of G
sequences decoded in lockstep.
Each completion is a draw of its own from the same distribution; later turns,
whose prompts differ by what came back, are sampled one at a time, each pass
starting from the KV cache of the episode's first prompt, which every later
prompt begins with (:class:`PromptCache`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    DynamicCache,
    PreTrainedTokenizerBase,
)

from xrouter.backends.base import stream_from_complete
from xrouter.backends.model_dir import load_chat_model
from xrouter.core.catalog import ModelCard
from xrouter.core.errors import ConfigError
from xrouter.core.types import ChatRequest, Completion, StreamDelta, Usage
from xrouter.train.router_data import chat_text, encode

__all__ = [
    "PolicyBackend",
    "PromptCache",
    "RouterTurnSample",
    "common_prefix",
    "decode",
    "load_router_model",
    "prefill",
    "sample_batch",
]


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
    model, tokenizer = load_chat_model(
        folder,
        dtype=dtype,
        instead="give --base smollm2-135m or a model directory with config.json, "
        "weights and a tokenizer",
    )
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


def common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all of ``sequences`` share."""
    first, shortest = sequences[0], min(len(s) for s in sequences)
    n = 0
    while n < shortest and all(s[n] == first[n] for s in sequences):
        n += 1
    return n


@dataclass(frozen=True)
class PromptCache:
    """The keys and values a pass over a prompt left, per layer: a later prompt
    that starts with the same tokens continues from them instead of running its
    shared part again (an episode's later turns open on its first turn's prompt)."""

    ids: tuple[int, ...]
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @classmethod
    def of(cls, cache: Any, ids: Sequence[int]) -> PromptCache | None:
        """The cache of a pass over ``ids``; None where a layer holds fewer
        positions than the prompt (a sliding window), which cannot be continued."""
        layers = tuple((layer.keys, layer.values) for layer in cache.layers)
        if any(keys.shape[-2] != len(ids) for keys, _ in layers):
            return None
        return cls(tuple(ids), layers)

    def reach(self, prompt: Sequence[int]) -> int:
        """How many leading tokens of ``prompt`` the cache holds, short of its
        last token (a pass needs at least one token to predict from)."""
        return min(common_prefix([self.ids, prompt]), len(prompt) - 1)

    def fork(self, model: Any, length: int) -> Any:
        """A fresh cache of the first ``length`` positions; passes over it leave
        this one as it is."""
        return DynamicCache(
            ddp_cache_data=[
                (k[..., :length, :], v[..., :length, :]) for k, v in self.layers
            ],
            config=getattr(model, "module", model).config,  # wrapped under DDP
        )


def prefill(
    model: Any,
    prompt_ids: Sequence[int],
    known: PromptCache | None = None,
    *,
    logits_to_keep: int = 1,
) -> tuple[torch.Tensor, Any, PromptCache | None]:
    """One pass over ``prompt_ids``, continuing ``known`` where the prompt starts
    with its tokens: the last ``logits_to_keep`` positions' logits, the cache to
    decode on, and the prompt's own cache for later prompts."""
    device = next(model.parameters()).device
    start = known.reach(prompt_ids) if known is not None else 0
    cache = known.fork(model, start) if known is not None and start else None
    out = model(
        input_ids=torch.tensor([list(prompt_ids[start:])], device=device),
        cache=cache,
        use_cache=True,
        logits_to_keep=logits_to_keep,
    )
    return out.logits, out.cache, PromptCache.of(out.cache, prompt_ids)


@torch.no_grad()
def sample_batch(
    model: Any,
    prompt_ids: Sequence[int],
    n: int,
    *,
    max_new_tokens: int,
    temperature: float,
    stop_ids: set[int],
    generator: torch.Generator | None = None,
) -> list[tuple[list[int], list[float]]]:
    """``n`` completions of one prompt, decoded together after a single pass over
    the prompt (greedy when ``temperature`` is 0). Each comes as its token ids and
    their log-probabilities under ``softmax(logits / temperature)``."""
    logits, cache, _ = prefill(model, prompt_ids)
    return decode(
        model,
        logits,
        cache,
        n,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        stop_ids=stop_ids,
        generator=generator,
    )


@torch.no_grad()
def decode(
    model: Any,
    logits: torch.Tensor,
    cache: Any,
    n: int,
    *,
    max_new_tokens: int,
    temperature: float,
    stop_ids: set[int],
    generator: torch.Generator | None = None,
) -> list[tuple[list[int], list[float]]]:
    """``n`` sequences decoded in lockstep from a prompt's last ``logits`` and its
    ``cache`` (copied per sequence)."""
    if n > 1:
        cache.batch_repeat_interleave(n)
    logits = logits[:, -1].float().expand(n, -1)  # (n, vocab)
    ids: list[list[int]] = [[] for _ in range(n)]
    logps: list[list[float]] = [[] for _ in range(n)]
    live = [True] * n
    for _ in range(max_new_tokens):
        scaled = logits / temperature if temperature > 0 else logits
        logp = torch.log_softmax(scaled, dim=-1)
        if temperature > 0:
            tokens = torch.multinomial(logp.exp(), 1, generator=generator)[:, 0]
        else:
            tokens = logits.argmax(dim=-1)
        chosen = logp.gather(1, tokens[:, None])[:, 0]
        for k in range(n):
            if live[k]:
                token = int(tokens[k])
                ids[k].append(token)
                logps[k].append(float(chosen[k]))
                live[k] = token not in stop_ids
        if not any(live):
            break
        # A finished sequence keeps decoding alongside the others; what it
        # generates is never read.
        out = model(input_ids=tokens[:, None], cache=cache, use_cache=True)
        cache = out.cache
        logits = out.logits[:, -1].float()
    return list(zip(ids, logps, strict=True))


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
    # False: every turn runs its whole prompt (to measure what continuing the
    # first prompt's cache saves).
    reuse_prompt: bool = True
    turns: list[RouterTurnSample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = eos_ids(self.model, self.tokenizer)
        device = next(self.model.parameters()).device
        self._generator = torch.Generator(device=device).manual_seed(self.seed)
        self._share = 1
        self._opening = True  # the next request opens an episode
        self._queued: dict[tuple[int, ...], list[tuple[list[int], list[float]]]] = {}
        self._opened: PromptCache | None = None  # the episode's first prompt

    @contextmanager
    def sharing_first_turns(self, episodes: int) -> Iterator[None]:
        """Within the block, the first turn of an episode is sampled with those of
        the next ``episodes - 1`` episodes that open on the same prompt (a GRPO
        group); draws left over are dropped at the end."""
        self._share = episodes
        try:
            yield
        finally:
            self._share = 1
            self._queued.clear()
            self._opened = None

    @property
    def card(self) -> ModelCard:
        return self.router_card

    def take_turns(self) -> list[RouterTurnSample]:
        """The turns recorded since the last call, and forget them; the next
        request opens an episode."""
        turns, self.turns = self.turns, []
        self._opening = True
        return turns

    def _sample(self, prompt: list[int]) -> tuple[list[int], list[float]]:
        opening, self._opening = self._opening, False
        queued = self._queued.get(tuple(prompt)) if opening else None
        if queued:
            return queued.pop()
        with torch.no_grad():
            logits, cache, seen = prefill(
                self.model, prompt, None if opening else self._opened
            )
        if opening and self.reuse_prompt:
            self._opened = seen
        draws = decode(
            self.model,
            logits,
            cache,
            self._share if opening else 1,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            stop_ids=self._stop,
            generator=self._generator,
        )
        first = draws.pop(0)
        if draws:
            self._queued[tuple(prompt)] = draws[::-1]  # popped in drawn order
        return first

    async def complete(self, request: ChatRequest) -> Completion:
        started = time.perf_counter()
        text = chat_text(self.tokenizer, request.messages, generation_prompt=True)
        prompt = encode(self.tokenizer, text)
        ids, logps = self._sample(prompt)
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
