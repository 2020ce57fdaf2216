"""Training data for the LLM router: items, examples, and warm-start traces.

A :class:`RouterTask` is one suite's replay pool split by the fixed item-id hash
(train for training, dev for held-out checks, test for the final evaluation). A
:class:`RouterExample` is one train item, a lambda drawn per example from a range
(it goes into the router's system prompt) and the pool models offered: the whole
pool, or a random subset of at least two.

Warm-start traces render a teacher's choice as the router's turns. The default
teacher is the oracle: the cheapest offered model whose recorded answer is right;
when none is right the cheapest offered model (the reward is then 0 whatever the
router does, and the format stays one call and one select; the router answering
itself would teach a 135M model to write answers it cannot get right). The oracle
sees the verdicts, so its choices follow nothing in the prompt a router can read;
a trained policy network (:class:`PolicyTeacher`) instead chooses from the prompt,
lambda and the offered pool, as the router must. The traces are played through
the shared ``Orchestrator`` and ``LLMRouter`` with a scripted backend, so the
prompt, the tool-response text and the call ids are exactly what the router reads
at inference; only the two completions are scripted:

1. ``<tool_call>{"name": "call_<chosen>", "arguments": {"system_prompt": ...}}``
2. ``<tool_call>{"name": "select_response", "arguments": {"call_id": "<id>"}}``

:func:`tokenize_conversation` turns a rendered conversation into token ids and a
0/1 mask that is 1 exactly on the router's own tokens (each assistant message and
its end-of-turn token); the system prompt, the user's messages and the tool
responses are 0.

Call ids are numbered within each episode (``c1`` is an episode's first call), so
the ids in the traces are the ids the router sees at inference.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from transformers import PreTrainedTokenizerBase

from xrouter.backends.base import stream_from_complete
from xrouter.backends.pool import Pool, PoolEntry
from xrouter.backends.replay import ReplayPool
from xrouter.core.catalog import Catalog, ModelCard
from xrouter.core.errors import ConfigError, DataError
from xrouter.core.types import ChatRequest, Completion, Message, StreamDelta, Usage
from xrouter.evaluate.episodes import replay_entries
from xrouter.evaluate.suites import Suite
from xrouter.orchestrator.loop import EpisodeResult, Limits, Orchestrator
from xrouter.orchestrator.tools import SELECT_TOOL, tool_name
from xrouter.policies.checkpoint import Checkpoint
from xrouter.policies.embedding import Embedder
from xrouter.policies.learned import LiveRouter
from xrouter.policies.llm_router import LLMRouter
from xrouter.records.splits import split_mask
from xrouter.records.store import Store

__all__ = [
    "ORACLE_PROMPT",
    "PolicyTeacher",
    "RouterExample",
    "RouterTask",
    "Teacher",
    "TokenizedTrace",
    "call_opening",
    "draw_examples",
    "first_prompt",
    "load_router_task",
    "oracle_model",
    "render_trace",
    "teacher_digest",
    "tokenize_conversation",
]

ORACLE_PROMPT = "Solve the task step by step, then state the final answer."
_CALL_ID = re.compile(r'<tool_response call_id="([^"]+)"')


@dataclass(frozen=True)
class RouterExample:
    """One training example: an item (row of the replay pool), lambda, models."""

    row: int
    lam: float
    models: tuple[str, ...]


@dataclass
class RouterTask:
    """One suite's replay pool and its train, dev and test rows."""

    suite: Suite
    records: ReplayPool
    catalog: Catalog
    train: NDArray[np.int64]
    dev: NDArray[np.int64]
    test: NDArray[np.int64]
    fingerprint: str
    entries: dict[str, PoolEntry] = field(default_factory=dict)

    def pool(self, models: Sequence[str]) -> Pool:
        """The replay pool restricted to ``models`` (in the suite's order)."""
        return Pool([self.entries[m] for m in self.records.models if m in models])

    def messages(self, row: int) -> tuple[Message, ...]:
        item = self.records.items([row])[0]
        return item.chat()

    def item_id(self, row: int) -> str:
        return self.records.item_ids[row]


def load_router_task(
    store: Store,
    suite: Suite,
    catalog: Catalog,
    *,
    items: int | None = None,
    seed: int = 0,
) -> RouterTask:
    """Load ``suite``'s replay pool; ``items`` caps the train items (a seeded
    random subset). Raises ``DataError`` when no train item is left."""
    resolved = suite.resolved(catalog)
    records = resolved.replay_pool(store)
    rows = {
        split: np.flatnonzero(split_mask(records.item_ids, split)).astype(np.int64)
        for split in ("train", "dev", "test")
    }
    train = rows["train"]
    if items is not None and items < len(train):
        rng = np.random.default_rng(seed)
        train = np.sort(rng.choice(train, size=items, replace=False))
    if len(train) == 0:
        raise DataError(
            f"suite {suite.name!r} has no train items ({len(records.item_ids)} items "
            "in all, none in the train split or --items 0); ingest its source or "
            "choose a suite with more items"
        )
    manifest = store.manifest()
    info = manifest.get(resolved.source)
    digest = hashlib.sha256(
        "\n".join(records.item_ids[int(r)] for r in train).encode()
    ).hexdigest()[:16]
    fingerprint = f"{info.fingerprint if info else 'unknown'}:train-{digest}"
    entries = {e.card.id: e for e in replay_entries(records, catalog)}
    return RouterTask(
        resolved,
        records,
        catalog,
        train,
        rows["dev"],
        rows["test"],
        fingerprint,
        entries,
    )


def draw_examples(
    rng: np.random.Generator,
    rows: NDArray[np.int64],
    count: int,
    models: Sequence[str],
    *,
    lam_min: float,
    lam_max: float,
    full_pool: float = 0.5,
) -> list[RouterExample]:
    """``count`` examples: items drawn from ``rows``, lambda log-uniform in the
    range (uniform when it starts at 0), and the whole pool with probability
    ``full_pool``, else a random subset of at least two models."""
    examples = []
    for row in rng.choice(rows, size=count, replace=count > len(rows)):
        if lam_min > 0:
            lam = math.exp(rng.uniform(math.log(lam_min), math.log(lam_max)))
        else:
            lam = float(rng.uniform(lam_min, lam_max))
        chosen = tuple(models)
        if len(models) > 2 and rng.random() >= full_pool:
            size = int(rng.integers(2, len(models) + 1))
            picked = set(rng.choice(len(models), size=size, replace=False).tolist())
            chosen = tuple(m for k, m in enumerate(models) if k in picked)
        examples.append(RouterExample(int(row), float(lam), chosen))
    return examples


def oracle_model(records: ReplayPool, row: int, models: Sequence[str]) -> str:
    """The cheapest of ``models`` whose recorded answer on ``row`` is right, else
    the cheapest of them (by recorded cost)."""
    ranked = sorted(models, key=lambda m: records.cost[row, records.model_index(m)])
    right = [m for m in ranked if records.score[row, records.model_index(m)] > 0]
    return (right or ranked)[0]


Teacher = Callable[[RouterExample], str]
"""The pool model a warm-start trace calls for an example."""


def teacher_digest(teacher: Teacher | None) -> str | None:
    """What a policy teacher is, whatever its path: its checkpoint manifest's
    sha256; None for the oracle."""
    return teacher.checkpoint.digest if isinstance(teacher, PolicyTeacher) else None


class PolicyTeacher:
    """A trained policy network's first choice for each example, as a teacher.

    The network sees what the router sees: the prompt (its embedding, of the kind
    the checkpoint was trained on), lambda and the offered models. Its "answer
    yourself" is rendered as a call to the suite's self model, the pool model
    that stands for the router answering.
    """

    def __init__(
        self, task: RouterTask, checkpoint: Checkpoint, embedder: Embedder
    ) -> None:
        self.task, self.checkpoint = task, checkpoint
        records = task.records
        self._vectors = embedder.like(checkpoint.embedding).encode_items(
            records.sources[0], records.items()
        )
        self._routers: dict[tuple[str, ...], LiveRouter] = {}

    def check_range(self, lam_min: float, lam_max: float) -> None:
        """Refuse a lambda range the network was not trained on."""
        lo, hi = self.checkpoint.lambda_range
        if not lo <= lam_min <= lam_max <= hi:
            raise ConfigError(
                f"the teacher policy at {self.checkpoint.path} was trained for "
                f"lambda {lo:g} to {hi:g}; the examples draw {lam_min:g} to "
                f"{lam_max:g}. Narrow --lambda-min/--lambda-max to its range"
            )

    def contrast(
        self,
        example: RouterExample,
        rng: np.random.Generator,
        lam_min: float,
        lam_max: float,
    ) -> RouterExample | None:
        """The example at another lambda of the range, one of those where the
        network chooses another model (None where it chooses the same at all).

        Paired with the example in one warm-start batch, it shows the router the
        same request and pool twice, with only lambda and the call differing.
        """
        if lam_max <= 0:
            return None
        grid = np.geomspace(max(lam_min, lam_max * 1e-6), lam_max, 13)
        chosen = self(example)
        others = [
            other
            for lam in grid.tolist()
            if self(other := replace(example, lam=lam)) != chosen
        ]
        return others[int(rng.integers(len(others)))] if others else None

    def __call__(self, example: RouterExample) -> str:
        router = self._routers.get(example.models)
        if router is None:
            self_model = self.task.suite.self_model
            router = LiveRouter(
                self.checkpoint,
                self.task.catalog,
                example.models,
                self_model if self_model in example.models else None,
            )
            self._routers[example.models] = router
        records = self.task.records
        tokens = int(records.input_tokens[example.row].max())
        decision = router.first_decision(
            self._vectors[example.row], example.lam, tokens
        )
        return decision.model


def _call_text(name: str, arguments: dict[str, Any]) -> str:
    payload = json.dumps({"name": name, "arguments": arguments})
    return f"<tool_call>{payload}</tool_call>"


class _ScriptedBackend:
    """Plays the oracle's two turns and keeps each request the router made."""

    def __init__(self, card: ModelCard, oracle: str) -> None:
        self._card, self._oracle = card, oracle
        self.requests: list[tuple[Message, ...]] = []
        self.replies: list[str] = []

    @property
    def card(self) -> ModelCard:
        return self._card

    async def complete(self, request: ChatRequest) -> Completion:
        self.requests.append(request.messages)
        if not self.replies:
            args = {"system_prompt": ORACLE_PROMPT}
            text = _call_text(tool_name(self._oracle), args)
        else:
            found = _CALL_ID.findall(request.messages[-1].content)
            text = _call_text(SELECT_TOOL, {"call_id": found[-1] if found else "c1"})
        self.replies.append(text)
        return Completion(text, Usage(0, 0))

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        return stream_from_complete(self, request)

    async def aclose(self) -> None:
        return None


def _play_script(
    task: RouterTask,
    example: RouterExample,
    router_card: ModelCard,
    chosen: str,
    *,
    turns: int,
) -> tuple[_ScriptedBackend, EpisodeResult]:
    backend = _ScriptedBackend(router_card, chosen)
    orchestrator = Orchestrator(task.pool(example.models), Limits(max_turns=turns))
    result = asyncio.run(
        orchestrator.run(
            LLMRouter(backend),
            task.messages(example.row),
            lam=example.lam,
            item_id=task.item_id(example.row),
        )
    )
    return backend, result


def first_prompt(
    task: RouterTask, example: RouterExample, router_card: ModelCard
) -> tuple[Message, ...]:
    """The router's prompt on the first turn of ``example``, as the orchestrator
    writes it."""
    chosen = oracle_model(task.records, example.row, example.models)
    backend, _ = _play_script(task, example, router_card, chosen, turns=1)
    return backend.requests[0]


def render_trace(
    task: RouterTask,
    example: RouterExample,
    router_card: ModelCard,
    teacher: Teacher | None = None,
) -> list[Message]:
    """The whole conversation the router sees when it plays the teacher's choice
    (the oracle's by default): its prompt (system, the user's messages), then its
    turns and the tool responses, ending with its last message."""
    if teacher is None:
        chosen = oracle_model(task.records, example.row, example.models)
    else:
        chosen = teacher(example)
    backend, result = _play_script(task, example, router_card, chosen, turns=2)
    if result.strategy != "select" or len(backend.requests) != 2:
        raise DataError(
            f"the warm-start trace for {task.item_id(example.row)} ended with "
            f"{result.strategy} after {len(backend.requests)} turns, not a select "
            f"in turn 2 ({'; '.join(result.tool_errors) or 'no tool errors'})"
        )
    last = backend.requests[-1]
    return [*last, Message("assistant", backend.replies[-1])]


@dataclass(frozen=True)
class TokenizedTrace:
    """Token ids of a conversation, the 0/1 mask of the router's own tokens, and
    the 0/1 flags of the tokens that name the model its first call chooses (the
    decision; empty when it makes none)."""

    input_ids: list[int]
    mask: list[int]
    choice: list[int] = field(default_factory=list)

    def labels(self) -> list[int]:
        """Ids where the mask is 1, -100 (ignored by the loss) elsewhere."""
        return [
            t if m else -100 for t, m in zip(self.input_ids, self.mask, strict=True)
        ]


def chat_text(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    *,
    generation_prompt: bool = False,
) -> str:
    """The chat template applied to ``messages``, as text."""
    chat = [{"role": m.role, "content": m.content} for m in messages]
    text = tokenizer.apply_chat_template(
        chat, tokenize=False, add_generation_prompt=generation_prompt
    )
    if not isinstance(text, str):
        raise ConfigError("the tokenizer's chat template did not render to text")
    return text


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(t) for t in ids]


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]
) -> TokenizedTrace:
    """Ids of the templated conversation with the assistant messages masked in.

    The text is cut at message boundaries and each piece tokenized alone, so the
    mask is exact; an assistant piece is its content and the end-of-turn token
    (what the model must learn to write), and the template's glue after that
    token is masked out.
    """
    eos = tokenizer.eos_token
    if not isinstance(eos, str) or not eos:
        raise ConfigError("the tokenizer has no end-of-sequence token to train on")
    pieces: list[tuple[str, bool]] = []
    done = ""
    for k, message in enumerate(messages):
        if message.role != "assistant":
            continue
        head = chat_text(tokenizer, messages[:k], generation_prompt=True)
        full = chat_text(tokenizer, messages[: k + 1])
        if not head.startswith(done) or not full.startswith(head):
            raise ConfigError(
                "the chat template renders a conversation's start differently once "
                "more messages follow, so router tokens cannot be masked exactly; "
                "use a model whose template only appends (ChatML-style)"
            )
        body = full[len(head) :]
        cut = body.find(eos)
        cut = len(body) if cut < 0 else cut + len(eos)
        pieces += [(head[len(done) :], False), (body[:cut], True), (body[cut:], False)]
        done = full
    pieces.append((chat_text(tokenizer, messages)[len(done) :], False))
    ids: list[int] = []
    mask: list[int] = []
    choice: list[int] = []
    for text, trained in pieces:
        if not text:
            continue
        named = _CHOSEN.search(text) if trained and not any(choice) else None
        encoded = tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=named is not None
        )
        piece = [int(t) for t in encoded["input_ids"]]
        ids += piece
        mask += [int(trained)] * len(piece)
        if named is None:
            choice += [0] * len(piece)
        else:
            lo, hi = named.span(1)
            choice += [int(a < hi and b > lo) for a, b in encoded["offset_mapping"]]
    return TokenizedTrace(ids, mask, choice)


# The model a router's call names: its decision.
_CHOSEN = re.compile(r'"name":\s*"(call_[^"]+)"')


def call_opening(tokenizer: PreTrainedTokenizerBase, model: str) -> list[int]:
    """The ids a router turn opens with when it calls ``model`` as the warm start
    writes the call, through the token holding the quote that ends the model's
    name (so that one name's opening is never a prefix of another's)."""
    text = _call_text(tool_name(model), {"system_prompt": ORACLE_PROMPT})
    named = _CHOSEN.search(text)
    assert named is not None  # _call_text writes the name
    end = named.end(1)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [
        int(t)
        for t, (start, _) in zip(
            encoded["input_ids"], encoded["offset_mapping"], strict=True
        )
        if start <= end
    ]
