"""The orchestrator over real backends: an OpenAI-compatible server on loopback
(with faults) and the replay pool of real recorded answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from upstream import UpstreamServer

from xrouter.backends.build import replay_pool
from xrouter.backends.http import HttpBackend
from xrouter.backends.pool import Pool, PoolEntry
from xrouter.core.catalog import ModelCard, load_catalog
from xrouter.core.errors import BadRequestError, UpstreamError
from xrouter.core.types import CallRecord, ChatRequest, Completion, Message, Usage
from xrouter.orchestrator.budget import Budget, Ledger
from xrouter.orchestrator.calls import CallRunner
from xrouter.orchestrator.loop import (
    EpisodeResult,
    EpisodeView,
    Limits,
    Orchestrator,
    RouterTurn,
)
from xrouter.orchestrator.parsing import parse_tool_calls
from xrouter.records.store import Store
from xrouter.records.tokens import count_tokens, first_tokens

CATALOG = load_catalog()
JANET = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning "
    "and bakes muffins for her friends every day with four. She sells the remainder "
    "at the farmers' market daily for $2 per fresh duck egg. How much in dollars "
    "does she make every day at the farmers' market?"
)


@dataclass
class TextRouter:
    """A router whose turns are raw model text, parsed like the LLM router's."""

    texts: list[str]
    seen: list[list[Message]] = field(default_factory=list)
    name: str = "text-router"
    card: ModelCard | None = None

    def quote(self, view: EpisodeView) -> float:
        return 0.0

    async def decide(self, view: EpisodeView) -> RouterTurn:
        self.seen.append(list(view.transcript))
        text = self.texts[min(len(self.seen) - 1, len(self.texts) - 1)]
        parsed = parse_tool_calls(text)
        return RouterTurn(parsed.text, parsed.calls, parsed.errors)


@pytest.fixture(scope="module")
def running() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture
def server(running: UpstreamServer) -> UpstreamServer:
    running.reset()
    return running


def served(card_id: str, server: UpstreamServer, route: str) -> ModelCard:
    return CATALOG.get(card_id).model_copy(
        update={"base_url": server.base_url, "route": route, "api_key_env": None}
    )


def http_pool(server: UpstreamServer, fallback: bool = False) -> Pool:
    mini = served("gpt-4o-mini-2024-07-18", server, "mini")
    big = served("gpt-4o-2024-05-13", server, "big")
    return Pool(
        [
            PoolEntry(
                mini, HttpBackend(mini, timeout_s=0.5), big.id if fallback else None
            ),
            PoolEntry(big, HttpBackend(big, timeout_s=0.5)),
        ]
    )


def episode(
    pool: Pool, router: TextRouter, limits: Limits, **kwargs: object
) -> EpisodeResult:
    async def go() -> EpisodeResult:
        try:
            return await Orchestrator(pool, limits, seed=0).run(
                router,
                [Message("system", "Reply in English."), Message("user", "2+2?")],
                **kwargs,  # type: ignore[arg-type]
            )
        finally:
            await pool.aclose()

    return asyncio.run(go())


CALL_MINI = (
    '<tool_call>{"name": "call_gpt_4o_mini_2024_07_18", "arguments": '
    '{"system_prompt": "Answer with a number.", "max_tokens": 20}}</tool_call>'
)
FAST = Limits(max_turns=2, backoff_s=0.01, max_backoff_s=0.05, call_timeout_s=2.0)


def test_500_and_429_are_retried_against_the_real_server(
    server: UpstreamServer,
) -> None:
    server.script(["500", "429", "ok"])
    router = TextRouter(
        [CALL_MINI, '{"name": "select_response", "arguments": {"call_id": "c1"}}']
    )
    result = episode(http_pool(server), router, FAST)
    assert result.answer == "echo: 2+2?" and result.strategy == "select"
    assert server.attempts == 3
    sent = server.requests[-1]
    assert sent["model"] == "mini" and sent["max_tokens"] == 20
    assert sent["messages"][0] == {
        "role": "system",
        "content": "Answer with a number.\n\nReply in English.",
    }
    call = next(c for c in result.trace.calls if not c.by_router)
    assert call.attempts == 3 and call.error is None


def test_a_connection_cut_falls_back_to_the_next_model(server: UpstreamServer) -> None:
    server.script(["cut", "drop", "cut", "ok"])
    limits = Limits(max_turns=1, backoff_s=0.01, call_timeout_s=2.0)
    result = episode(http_pool(server, fallback=True), TextRouter([CALL_MINI]), limits)
    failed, rescued = (c for c in result.trace.calls if not c.by_router)
    assert failed.model == "gpt-4o-mini-2024-07-18" and failed.attempts == 3
    assert failed.error is not None and failed.error.startswith("upstream: ")
    assert rescued.fallback_for == failed.model and rescued.response == "echo: 2+2?"
    assert [r["model"] for r in server.requests] == ["mini", "mini", "mini", "big"]
    assert result.answer == "echo: 2+2?"


def test_a_reply_billed_without_an_answer_is_booked_and_not_asked_again(
    server: UpstreamServer,
) -> None:
    server.script(["no_choices", "ok"])
    ledger = Ledger("daily limit", 1.0)
    result = episode(
        http_pool(server, fallback=True),
        TextRouter([CALL_MINI]),
        Limits(max_turns=1, backoff_s=0.01, call_timeout_s=2.0),
        budget=Budget([ledger]),
    )
    failed, rescued = (c for c in result.trace.calls if not c.by_router)
    assert failed.error is not None and "a reply with no choices" in failed.error
    assert (failed.attempts, failed.usage) == (1, Usage(8, 2))
    # gpt-4o-mini: $0.15 per million tokens in, $0.60 out.
    assert failed.cost_usd == pytest.approx((8 * 0.15 + 2 * 0.60) / 1e6)
    assert [r["model"] for r in server.requests] == ["mini", "big"]
    assert rescued.response == "echo: 2+2?"
    assert ledger.spent_usd == pytest.approx(failed.cost_usd + rescued.cost_usd)
    assert ledger.held_usd == 0.0


def test_a_stream_billed_without_an_answer_is_booked_before_the_fallback(
    server: UpstreamServer,
) -> None:
    server.script(["no_choices", "ok"])
    pool = http_pool(server, fallback=True)
    ledger = Ledger("daily limit", 1.0)
    records: list[CallRecord] = []
    request = ChatRequest((Message("user", "2+2?"),), max_tokens=20)

    async def go() -> str:
        runner = CallRunner(pool, FAST, seed=0)
        stream = runner.stream(
            "gpt-4o-mini-2024-07-18", request, Budget([ledger]), records
        )
        try:
            return "".join([delta.text async for delta in stream])
        finally:
            await pool.aclose()

    assert asyncio.run(go()) == "echo: 2+2?"
    failed, rescued = records
    assert failed.error is not None
    assert "(a stream with its usage and no answer)" in failed.error
    # One word in (the user's message), two out, as the echo server counts them;
    # gpt-4o-mini at $0.15 per million tokens in and $0.60 out.
    assert (failed.attempts, failed.usage) == (1, Usage(1, 2))
    assert failed.cost_usd == pytest.approx((1 * 0.15 + 2 * 0.60) / 1e6)
    assert rescued.fallback_for == failed.model and rescued.error is None
    assert [r["model"] for r in server.requests] == ["mini", "big"]
    assert ledger.spent_usd == pytest.approx(failed.cost_usd + rescued.cost_usd)
    assert ledger.held_usd == 0.0


def test_a_stream_that_fails_after_its_text_is_billed_at_the_usage_it_reported(
    server: UpstreamServer,
) -> None:
    server.script(["text_usage"])  # text and usage, then no finish reason
    pool = http_pool(server, fallback=True)
    ledger = Ledger("daily limit", 1.0)
    records: list[CallRecord] = []
    request = ChatRequest((Message("user", "2+2?"),), max_tokens=20)
    texts: list[str] = []

    async def go() -> None:
        runner = CallRunner(pool, FAST, seed=0)
        stream = runner.stream(
            "gpt-4o-mini-2024-07-18", request, Budget([ledger]), records
        )
        try:
            async for delta in stream:
                texts.append(delta.text)
        finally:
            await pool.aclose()

    with pytest.raises(UpstreamError, match="ended before the model finished"):
        asyncio.run(go())
    # The text reached the reader, so the fallback is not called.
    assert "".join(texts) == "echo: 2+2?" and len(server.requests) == 1
    [failed] = records
    assert (failed.usage, failed.attempts) == (Usage(1, 2), 1)  # as reported
    assert failed.cost_usd == pytest.approx((1 * 0.15 + 2 * 0.60) / 1e6)
    assert ledger.spent_usd == pytest.approx(failed.cost_usd)


def test_a_stalled_upstream_times_out_and_the_episode_goes_on(
    server: UpstreamServer,
) -> None:
    server.mode = "stall"
    router = TextRouter([CALL_MINI, "I could not reach a model; 2+2 is 4."])
    limits = Limits(max_turns=2, retries=1, backoff_s=0.01, call_timeout_s=0.3)
    result = episode(http_pool(server), router, limits)
    call = next(c for c in result.trace.calls if not c.by_router)
    assert call.error is not None and call.error.startswith("timeout: ")
    assert call.attempts == 2
    assert result.answer == "I could not reach a model; 2+2 is 4."
    assert "<tool_response" in router.seen[1][-1].content


def test_the_budget_bounds_spend_over_real_calls(server: UpstreamServer) -> None:
    ledger = Ledger("daily limit", 0.001)
    calls = "\n".join(
        '<tool_call>{"name": "call_gpt_4o_2024_05_13", "arguments": '
        '{"system_prompt": "Be brief.", "max_tokens": 5}}</tool_call>'
        for _ in range(6)
    )
    result = episode(
        http_pool(server),
        TextRouter([calls]),
        Limits(max_turns=1),
        budget=Budget([ledger]),
    )
    ran = [c for c in result.trace.calls if not c.by_router]
    refused = [e for e in result.tool_errors if "refused" in e]
    assert len(ran) + len(refused) == 6 and refused and ran
    assert ledger.spent_usd == pytest.approx(sum(c.cost_usd for c in ran))
    assert ledger.spent_usd <= 0.001 and ledger.held_usd == 0.0
    assert server.attempts == len(ran)


def test_replayed_episode_returns_the_recorded_answer_and_cost(
    zeroeval_store: Store,
) -> None:
    store = zeroeval_store
    models = ["claude-3-haiku-20240307", "gpt-4o-mini-2024-07-18"]
    pool = replay_pool(store, "zeroeval", models, CATALOG)
    router = TextRouter(
        [
            '```json\n{"name": "call_gpt_4o_mini_2024_07_18", "arguments": '
            '{"system_prompt": "Solve it."}}\n```',
            '{"name": "select_response", "arguments": {"call_id": "c1"}}',
        ]
    )

    async def go() -> EpisodeResult:
        return await Orchestrator(pool, FAST).run(router, [Message("user", JANET)])

    result = asyncio.run(go())
    call = next(c for c in result.trace.calls if not c.by_router)
    record = store.records(["zeroeval"], models=["gpt-4o-mini-2024-07-18"]).to_pylist()
    janet = next(
        r for r in record if r["item_id"] == "zeroeval/gsm8k/gsm8k-main-test-#0"
    )
    assert result.answer == janet["response"]
    assert call.cost_usd == janet["cost_usd"] and result.cost_usd == janet["cost_usd"]
    assert json.loads(result.answer.split("```json")[-1].split("```")[0])["answer"]


def _replayed_janet(
    store: Store, gpt: str
) -> tuple[dict[str, Any], Callable[..., Completion]]:
    """``gpt``'s record on the first GSM8K test item (Janet's ducks), and a
    function that sends that item's prompt to ``gpt`` replayed, with options."""
    backend = replay_pool(store, "zeroeval", [gpt], CATALOG).entry(gpt).backend
    records = store.records(["zeroeval"], models=[gpt]).to_pylist()
    janet = next(
        r for r in records if r["item_id"] == "zeroeval/gsm8k/gsm8k-main-test-#0"
    )
    asked = (Message("user", JANET),)

    def ask(**options: Any) -> Completion:
        return asyncio.run(backend.complete(ChatRequest(asked, **options)))

    return janet, ask


def test_replay_cuts_a_live_answer_at_max_tokens_and_bills_it_pro_rata(
    zeroeval_store: Store,
) -> None:
    gpt = "gpt-4o-mini-2024-07-18"
    janet, ask = _replayed_janet(zeroeval_store, gpt)
    whole = ask(max_tokens=4096)
    assert (whole.text, whole.finish_reason) == (janet["response"], "stop")
    assert whole.usage.output_tokens == janet["output_tokens"] > 5
    cut = ask(max_tokens=5)
    assert cut.text == first_tokens(janet["response"], 5)
    assert count_tokens(cut.text) == 5 and janet["response"].startswith(cut.text)
    assert (cut.finish_reason, cut.usage.output_tokens) == ("length", 5)
    assert cut.usage.input_tokens == janet["input_tokens"]
    prompt_usd = CATALOG.get(gpt).cost(janet["input_tokens"], 0)
    reply_usd = (janet["cost_usd"] - prompt_usd) * 5 / janet["output_tokens"]
    assert cut.cost_usd == pytest.approx(prompt_usd + reply_usd)
    # An evaluation names its item and gets the record whole, as it was scored.
    scored = ask(max_tokens=5, item_id=janet["item_id"])
    assert (scored.text, scored.cost_usd) == (janet["response"], janet["cost_usd"])


def test_replay_ends_a_live_answer_at_a_stop_string_and_refuses_a_forced_tool_call(
    zeroeval_store: Store,
) -> None:
    gpt = "gpt-4o-mini-2024-07-18"
    janet, ask = _replayed_janet(zeroeval_store, gpt)
    # The first of the stop strings to appear ends the answer, before it.
    stopped = ask(stop=("Therefore", "eggs per day"))
    assert stopped.text == janet["response"][: janet["response"].index("eggs per day")]
    assert stopped.text.endswith("Janet's ducks lay 16 ")
    kept = count_tokens(stopped.text)
    assert (stopped.finish_reason, stopped.usage.output_tokens) == ("stop", kept)
    prompt_usd = CATALOG.get(gpt).cost(janet["input_tokens"], 0)
    reply_usd = (janet["cost_usd"] - prompt_usd) * kept / janet["output_tokens"]
    assert stopped.cost_usd == pytest.approx(prompt_usd + reply_usd)
    # A stop string the answer lacks changes nothing; max_tokens still cuts.
    whole = ask(stop=("no such words",))
    assert (whole.text, whole.cost_usd) == (janet["response"], janet["cost_usd"])
    both = ask(stop=("Therefore",), max_tokens=5)
    assert (both.text, both.finish_reason) == (
        first_tokens(janet["response"], 5),
        "length",
    )

    lookup = {"type": "function", "function": {"name": "lookup"}}
    for choice, shown in (("required", "'required'"), (lookup, json.dumps(lookup))):
        with pytest.raises(BadRequestError) as refused:
            ask(tool_choice=choice)
        assert str(refused.value) == (
            f"{gpt} is replayed from recorded answers, which hold no tool calls, so "
            f"tool_choice {shown} cannot be met; give the model a live backend in a "
            "pool file"
        )
    assert ask(tool_choice="auto").text == janet["response"]
