"""Warm start: supervised fine-tuning of the router on a teacher's traces.

Each trace (``router_data.render_trace``) is one whole episode: the router's
prompt, its call to the model the teacher chose (the oracle's, or a trained
policy network's), the tool response, its select. The loss
is the mean next-token cross-entropy over the router's own tokens only
(``tokenize_conversation``'s mask becomes labels of -100 elsewhere).

trl's ``DataCollatorForLanguageModeling`` pads the batches and carries the labels;
``SFTTrainer`` itself is not used: the traces are multi-turn with a mask we build
exactly (the SmolLM2 and Qwen2.5 chat templates have no ``{% generation %}``
markers for trl's ``assistant_only_loss``), and the warm start shares its
checkpoints, resumption, metrics log and progress bar with the RL phase, which
trl's Trainer would each do its own way. Device placement and gradient
accumulation are ``accelerate``'s, as in trl.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from transformers import PreTrainedTokenizerBase
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from xrouter.core.catalog import ModelCard
from xrouter.train.router_data import (
    RouterExample,
    RouterTask,
    Teacher,
    TokenizedTrace,
    render_trace,
    tokenize_conversation,
)

__all__ = ["sft_loss", "sft_step", "sft_traces", "with_contrasts"]


def with_contrasts(
    examples: Sequence[RouterExample],
    contrast: Callable[[RouterExample], RouterExample | None],
) -> list[RouterExample]:
    """As many examples as given, each followed by its contrast (the same request
    at a lambda where the teacher chooses otherwise) where it has one; the later
    examples make room for the contrasts."""
    batch: list[RouterExample] = []
    for example in examples:
        if len(batch) == len(examples):
            break
        batch.append(example)
        other = contrast(example)
        if other is not None and len(batch) < len(examples):
            batch.append(other)
    return batch


def sft_traces(
    task: RouterTask,
    examples: Sequence[RouterExample],
    tokenizer: PreTrainedTokenizerBase,
    router_card: ModelCard,
    teacher: Teacher | None = None,
) -> list[TokenizedTrace]:
    """The teacher's (by default the oracle's) trace of each example, tokenized
    with its router mask."""
    return [
        tokenize_conversation(tokenizer, render_trace(task, ex, router_card, teacher))
        for ex in examples
    ]


def _collate(
    traces: Sequence[TokenizedTrace], pad_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    collator = DataCollatorForLanguageModeling(pad_token_id=pad_id)
    batch = collator([{"input_ids": t.input_ids, "labels": t.labels()} for t in traces])
    return {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def sft_loss(
    model: Any,
    traces: Sequence[TokenizedTrace],
    pad_id: int,
    choice_weight: float = 1.0,
) -> torch.Tensor:
    """Mean cross-entropy of the router's tokens of ``traces`` (one batch), each
    token that names the chosen model weighing ``choice_weight`` times as much.

    A trace's decision is a token or two among a hundred of call syntax that any
    trace repeats; weighing them up makes what tells traces apart count.
    Only the positions that predict a router token get logits (the vocabulary
    projection of a 2,000-token trace would otherwise dominate memory).
    """
    device = next(model.parameters()).device
    batch = _collate(traces, pad_id, device)
    labels = batch.pop("labels")  # (B, L), -100 where not trained
    wanted = (labels[:, 1:] != -100).any(dim=0).nonzero().flatten()  # (K,)
    logits = model(**batch, logits_to_keep=wanted).logits  # (B, K, V)
    targets = labels[:, wanted + 1]  # (B, K)
    losses = torch.nn.functional.cross_entropy(
        logits.float().transpose(1, 2), targets, ignore_index=-100, reduction="none"
    )  # (B, K), 0 where ignored
    choice = torch.zeros_like(labels, dtype=torch.float32)
    for row, trace in enumerate(traces):
        flags = torch.tensor(trace.choice or [0] * len(trace.input_ids))
        choice[row, : len(flags)] = flags.to(device)
    weights = (targets != -100) * (1 + (choice_weight - 1) * choice[:, wanted + 1])
    loss: torch.Tensor = (losses * weights).sum() / weights.sum()
    return loss


def sft_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    accelerator: Accelerator,
    traces: Sequence[TokenizedTrace],
    *,
    pad_id: int,
    micro_batch: int = 1,
    max_grad_norm: float = 1.0,
    choice_weight: float = 1.0,
) -> float:
    """One optimizer update over ``traces``, in micro-batches of ``micro_batch``
    accumulated by ``accelerator`` (its ``gradient_accumulation_steps`` should be
    ``len(traces) / micro_batch``). Returns the mean loss of the micro-batches."""
    model.train()
    losses = []
    for start in range(0, len(traces), micro_batch):
        with accelerator.accumulate(model):
            part = traces[start : start + micro_batch]
            loss = sft_loss(model, part, pad_id, choice_weight)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))
