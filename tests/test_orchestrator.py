"""The orchestrator's rules: selects, parallel calls, budget, retries, fallback,
tool errors and the turn limit, with scripted routers over in-process backends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from xrouter.backends.base import stream_from_complete
from xrouter.backends.pool import Pool, PoolEntry
from xrouter.core.catalog import ModelCard, load_catalog
from xrouter.core.errors import (
    BackendError,
    BadRequestError,
    BudgetExceededError,
    RateLimitError,
    UpstreamError,
)
from xrouter.core.types import (
    CallerOptions,
    CallRecord,
    ChatRequest,
    Completion,
    Message,
    StreamDelta,
    Usage,
)
from xrouter.orchestrator.budget import (
    Budget,
    Ledger,
    beyond_limits,
    refusing_ledgers,
    usd_text,
)
from xrouter.orchestrator.limits import reply_cap
from xrouter.orchestrator.loop import (
    EpisodeFailedError,
    EpisodeResult,
    EpisodeView,
    Limits,
    Orchestrator,
    RouterTurn,
    called_messages,
)
from xrouter.orchestrator.parsing import ToolCall
from xrouter.policies.llm_router import LLMRouter
from xrouter.records.tokens import count_tokens

CATALOG = load_catalog()
MINI = CATALOG.get("gpt-4o-mini-2024-07-18")  # $0.15 / $0.60 per 1M tokens
BIG = CATALOG.get("gpt-4o-2024-05-13")  # $5 / $15 per 1M tokens


@dataclass
class FakeBackend:
    """Answers from a script: a string is a reply, an exception is raised."""

    card: ModelCard
    script: list[str | BackendError] = field(default_factory=list)
    delay_s: float = 0.0
    seen: list[ChatRequest] = field(default_factory=list)
    finish_reason: str = "stop"
    events: list[str] = field(default_factory=list)  # may be shared between fakes

    async def complete(self, request: ChatRequest) -> Completion:
        self.seen.append(request)
        self.events.append(f"{self.card.id} starts")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.events.append(f"{self.card.id} ends")
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, BackendError):
            raise step
        return Completion(step, Usage(100, 50), finish_reason=self.finish_reason)

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        return stream_from_complete(self, request)

    async def aclose(self) -> None:
        return None


@dataclass
class ScriptedRouter:
    """Plays back one RouterTurn per turn and keeps the views it was shown."""

    turns: list[RouterTurn]
    views: list[EpisodeView] = field(default_factory=list)
    shown: list[list[Message]] = field(default_factory=list)
    name: str = "scripted"
    card: ModelCard | None = None

    def quote(self, view: EpisodeView) -> float:
        return 0.0

    async def decide(self, view: EpisodeView) -> RouterTurn:
        self.views.append(view)
        self.shown.append(list(view.transcript))
        return self.turns[min(len(self.views) - 1, len(self.turns) - 1)]


def call(name: str, **arguments: object) -> ToolCall:
    return ToolCall(name=name, arguments=dict(arguments), raw=json.dumps(arguments))


def turn(*calls: ToolCall, text: str = "") -> RouterTurn:
    return RouterTurn(text=text, calls=calls)


def pool(*backends: FakeBackend, fallback: dict[str, str] | None = None) -> Pool:
    fallback = fallback or {}
    return Pool([PoolEntry(b.card, b, fallback.get(b.card.id)) for b in backends])


def run(
    orchestrator: Orchestrator,
    router: ScriptedRouter,
    messages: Sequence[Message] = (Message("user", "What is 2+2?"),),
    **kwargs: object,
):  # type: ignore[no-untyped-def]
    return asyncio.run(orchestrator.run(router, messages, **kwargs))  # type: ignore[arg-type]


FAST = Limits(backoff_s=0.001, max_backoff_s=0.01)


def test_the_routers_own_answer_keeps_to_the_callers_max_tokens() -> None:
    mini = FakeBackend(MINI, ["4"])
    orchestrator = Orchestrator(pool(mini), FAST)
    said = "Two plus two is four, as counting on your fingers shows."
    capped = run(
        orchestrator,
        ScriptedRouter([turn(text=said)]),
        caller=CallerOptions(max_tokens=5),
    )
    assert (capped.answer, capped.finish_reason) == ("Two plus two is four", "length")
    assert capped.strategy == "self"
    whole = run(orchestrator, ScriptedRouter([turn(text=said)]))
    assert (whole.answer, whole.finish_reason) == (said, "stop")
    # A reply the router's own model cut short says so.
    smol = FakeBackend(
        CATALOG.get("smollm2-135m"), ["Two plus two is"], finish_reason="length"
    )
    cut = run(orchestrator, LLMRouter(smol))  # type: ignore[arg-type]
    assert (cut.answer, cut.finish_reason, cut.strategy) == (
        "Two plus two is",
        "length",
        "self",
    )


def test_a_router_that_only_writes_empty_replies_fails_in_words_for_the_client() -> (
    None
):
    mini = FakeBackend(MINI, ["4"])
    with pytest.raises(EpisodeFailedError) as failed:
        run(Orchestrator(pool(mini), FAST), ScriptedRouter([turn(text=" ")]))
    assert str(failed.value) == (
        "no model produced an answer: the router's reply was empty"
    )


def test_a_failure_of_many_calls_names_four_and_counts_the_rest() -> None:
    ids = [MINI.id, BIG.id, "claude-3-haiku-20240307", "gemma-2-2b-it", "o1-mini"]
    fakes = [
        FakeBackend(CATALOG.get(m), [UpstreamError(f"down {k}", retryable=False)])
        for k, m in enumerate(ids, 1)
    ]
    orchestrator = Orchestrator(pool(*fakes), Limits(max_turns=1))
    calls = [
        call(orchestrator.names.name_of(f.card.id), system_prompt="Go.") for f in fakes
    ]
    with pytest.raises(EpisodeFailedError) as failed:
        run(orchestrator, ScriptedRouter([turn(*calls)]))
    assert str(failed.value) == (
        "no model produced an answer: upstream: down 1; upstream: down 2; upstream: "
        "down 3; upstream: down 4; and 1 more, in the trace"
    )
    made = [c for c in failed.value.trace.calls if not c.by_router]
    assert [c.error for c in made] == [f"upstream: down {k}" for k in range(1, 6)]


def test_router_answering_itself_ends_the_episode_without_calls() -> None:
    mini = FakeBackend(MINI, ["4"])
    result = run(Orchestrator(pool(mini), FAST), ScriptedRouter([turn(text="4")]))
    assert (result.answer, result.strategy, result.answered_by) == (
        "4",
        "self",
        ("scripted",),
    )
    assert mini.seen == [] and result.cost_usd == 0.0


def test_call_then_select_returns_the_response_verbatim_and_bills_it() -> None:
    mini = FakeBackend(MINI, ["The answer is 4."])
    router = ScriptedRouter(
        [
            turn(call("call_gpt_4o_mini_2024_07_18", system_prompt="Be brief.")),
            turn(call("select_response", call_id="c1")),
        ]
    )
    result = run(Orchestrator(pool(mini), FAST), router)
    assert result.answer == "The answer is 4."
    assert result.strategy == "select" and result.answered_by == (MINI.id,)
    # 100 input and 50 output tokens at $0.15 and $0.60 per 1M.
    assert result.cost_usd == pytest.approx(100 * 0.15e-6 + 50 * 0.60e-6)
    shown = router.shown[1][-1].content
    assert '<tool_response call_id="c1" model="gpt-4o-mini-2024-07-18"' in shown
    assert "The answer is 4." in shown


def test_called_model_gets_the_routers_prompt_then_the_users_own() -> None:
    conversation = [Message("system", "Answer in French."), Message("user", "2+2?")]
    sent = called_messages(conversation, "You are a careful mathematician.")
    assert [m.as_dict() for m in sent] == [
        {
            "role": "system",
            "content": "You are a careful mathematician.\n\nAnswer in French.",
        },
        {"role": "user", "content": "2+2?"},
    ]


def test_calls_of_one_turn_run_in_parallel() -> None:
    events: list[str] = []
    mini = FakeBackend(MINI, ["a"], delay_s=0.4, events=events)
    big = FakeBackend(BIG, ["b"], delay_s=0.4, events=events)
    router = ScriptedRouter(
        [
            turn(
                call("call_gpt_4o_mini_2024_07_18", system_prompt="Be brief."),
                call("call_gpt_4o_2024_05_13", system_prompt="Be brief."),
            ),
            turn(call("select_response", call_id="c2")),
        ]
    )
    result = run(Orchestrator(pool(mini, big), FAST), router)
    assert events[:2] == [f"{MINI.id} starts", f"{BIG.id} starts"]
    assert result.answer == "b"


def test_a_call_whose_worst_case_passes_the_budget_is_refused_and_told() -> None:
    big = FakeBackend(BIG, ["expensive"])
    router = ScriptedRouter(
        [
            turn(
                call(
                    "call_gpt_4o_2024_05_13", system_prompt="Be brief.", max_tokens=1000
                )
            ),
            turn(text="I will answer myself: 4"),
        ]
    )
    # 1,000 output tokens of gpt-4o are $0.015, and a stream is read up to 1,158
    # ($0.01737; the prompt's 52 tokens at most, $0.00026): more than the $0.01
    # budget.
    result = run(Orchestrator(pool(big), FAST), router, budget=Budget.limit(0.01))
    assert big.seen == []
    assert result.strategy == "self" and result.cost_usd == 0.0
    assert result.tool_errors[0].startswith(
        "call_gpt_4o_2024_05_13: refused, a call to gpt-4o-2024-05-13 "
        "may cost up to $0.017630"
    )
    assert "more than the $0.010000 left of the episode budget" in result.tool_errors[0]


def test_a_refusal_of_less_than_a_millionth_of_a_dollar_shows_its_figures() -> None:
    # About ten input tokens of a $0.10 per 1M model, against a limit of a
    # third of that: with six decimals both would read $0.000000 or $0.000001.
    budget = Budget([Ledger("daily limit", 3.2e-7)])
    with pytest.raises(BudgetExceededError) as refused:
        budget.hold(1.04e-6, "a call to gemma-2-2b-it")
    message = str(refused.value)
    assert message == (
        "a call to gemma-2-2b-it may cost up to $0.0000010, more than the "
        "$0.00000032 left of the daily limit (limit $0.00000032)"
    )
    assert beyond_limits(message) and refusing_ledgers(message) == {"daily limit"}
    assert [usd_text(x) for x in (0.0, 0.015, 6.7e-5, 1.4e-6, 1.2e-6)] == [
        "0.000000",
        "0.015000",
        "0.000067",
        "0.0000014",
        "0.0000012",
    ]


def test_spend_is_booked_on_every_ledger_and_never_passes_a_limit() -> None:
    day = Ledger("daily limit", 0.001)
    mini = FakeBackend(MINI, ["ok"])
    router = ScriptedRouter(
        [
            turn(
                call(
                    "call_gpt_4o_mini_2024_07_18",
                    system_prompt="Be brief.",
                    max_tokens=100,
                )
            )
        ]
        * 3
    )
    orchestrator = Orchestrator(pool(mini), Limits(max_turns=3))
    for _ in range(40):
        with contextlib.suppress(EpisodeFailedError):
            run(orchestrator, ScriptedRouter(list(router.turns)), budget=Budget([day]))
    assert day.held_usd == 0.0
    assert day.spent_usd <= 0.001
    # each call costs $0.000045; the limit admits whole calls only
    assert day.spent_usd == pytest.approx(0.000045 * round(day.spent_usd / 0.000045))


def test_a_cost_past_its_hold_is_booked_as_reported_and_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    day = Ledger("daily limit", 0.001)
    hold = Budget([day]).hold(0.0001, "a call to gpt-4o-mini-2024-07-18")
    with caplog.at_level("WARNING", logger="xrouter.orchestrator.budget"):
        hold.settle(0.0015)  # an upstream that ignored max_tokens
    assert (day.spent_usd, day.held_usd) == (0.0015, 0.0)
    assert caplog.messages == [
        "a call to gpt-4o-mini-2024-07-18 cost $0.001500, more than the $0.000100 "
        "held for it as its worst case (the upstream counted more tokens than "
        "allowed for); booked as reported"
    ]
    assert Budget([day]).available_usd == 0.0


def test_a_closed_ledger_refuses_every_call_and_books_those_under_way() -> None:
    # A routed episode's first call is under way when its request's ledger is
    # closed (its client hung up): it ends and is booked; the router is not asked
    # again, and nothing else is called.
    request = Ledger("request", None)
    slow = FakeBackend(MINI, ["4"], delay_s=0.2)
    big = FakeBackend(BIG, ["four"])
    router = ScriptedRouter(
        [
            turn(call("call_gpt_4o_mini_2024_07_18", system_prompt="Be brief.")),
            turn(call("call_gpt_4o_2024_05_13", system_prompt="Be brief.")),
            turn(text="x"),
        ]
    )

    async def episode() -> EpisodeResult:
        running = asyncio.create_task(
            Orchestrator(pool(slow, big), FAST).run(
                router, [Message("user", "What is 2+2?")], budget=Budget([request])
            )
        )
        await asyncio.sleep(0.05)
        request.close("the client hung up")
        return await running

    result = asyncio.run(episode())
    assert [c.model for c in result.trace.calls if not c.by_router] == [MINI.id]
    assert big.seen == [] and result.answer == "4"
    assert request.spent_usd == pytest.approx(result.cost_usd) and request.held_usd == 0
    with pytest.raises(BudgetExceededError) as refused:
        Budget([request]).hold(0.0, "a call to gpt-4o-2024-05-13")
    assert str(refused.value) == (
        "a call to gpt-4o-2024-05-13 was not started: the client hung up"
    )


def test_retryable_failures_are_retried_then_succeed() -> None:
    flaky = FakeBackend(
        MINI, [UpstreamError("500"), RateLimitError("429", retry_after_s=0.0), "fine"]
    )
    router = ScriptedRouter(
        [
            turn(call("call_gpt_4o_mini_2024_07_18", system_prompt="Be brief.")),
            turn(text="x"),
        ]
    )
    result = run(Orchestrator(pool(flaky), FAST, seed=1), router)
    record = next(c for c in result.trace.calls if not c.by_router)
    assert (record.attempts, record.response, record.error) == (3, "fine", None)


def test_a_call_that_fails_for_good_goes_to_the_fallback() -> None:
    broken = FakeBackend(MINI, [UpstreamError("connection cut")])
    backup = FakeBackend(BIG, ["from the fallback"])
    router = ScriptedRouter(
        [turn(call("call_gpt_4o_mini_2024_07_18", system_prompt="Be brief."))]
    )
    orchestrator = Orchestrator(
        pool(broken, backup, fallback={MINI.id: BIG.id}),
        Limits(max_turns=1, retries=2, backoff_s=0.001),
    )
    result = run(orchestrator, router)
    failed, rescued = (c for c in result.trace.calls if not c.by_router)
    assert (failed.model, failed.attempts, failed.error) == (
        MINI.id,
        3,
        "upstream: connection cut",
    )
    assert (rescued.model, rescued.fallback_for, rescued.call_id) == (
        BIG.id,
        MINI.id,
        failed.call_id,
    )
    assert result.answer == "from the fallback" and result.strategy == "turn_limit"


def test_a_fallback_the_request_has_called_already_is_not_called_again() -> None:
    # gpt-4o-mini and gpt-4o share a fallback, claude-3-haiku, and all three
    # fail. Called side by side, the two failures send one call to the fallback:
    # the second would be billed for a failure the request has in hand.
    haiku = CATALOG.get("claude-3-haiku-20240307")
    mini, big, backup = (
        FakeBackend(card, [UpstreamError("down", retryable=False)])
        for card in (MINI, BIG, haiku)
    )
    router = ScriptedRouter(
        [
            turn(
                call("call_gpt_4o_mini_2024_07_18", system_prompt="Be brief."),
                call("call_gpt_4o_2024_05_13", system_prompt="Be brief."),
            ),
            turn(text="4"),
        ]
    )
    shared = {MINI.id: haiku.id, BIG.id: haiku.id}
    result = run(Orchestrator(pool(mini, big, backup, fallback=shared), FAST), router)
    calls = [c for c in result.trace.calls if not c.by_router]
    assert sorted(c.model for c in calls) == sorted([MINI.id, BIG.id, haiku.id])
    assert (len(mini.seen), len(big.seen), len(backup.seen)) == (1, 1, 1)
    note = (
        "upstream: down; its fallback claude-3-haiku-20240307 was not called: this "
        "request has called it already"
    )
    assert sorted(str(c.error) for c in calls if c.model != haiku.id) == sorted(
        [note, "upstream: down"]
    )


def test_a_prompt_a_models_context_window_cannot_hold_is_not_sent_to_it() -> None:
    # Gemma 2 2B holds 8,192 tokens; the prompt has 12,005. Called by name, it is
    # not sent there (nothing spent) and goes to the fallback, gpt-4o-mini, whose
    # window holds 128,000. Routed, gemma is not offered at all.
    gemma_card = CATALOG.get("gemma-2-2b-it")
    assert gemma_card.context_window == 8192
    long = (Message("user", "word " * 12_000),)
    gemma, mini = FakeBackend(gemma_card, ["from gemma"]), FakeBackend(MINI, ["4"])
    orchestrator = Orchestrator(
        pool(gemma, mini, fallback={gemma_card.id: MINI.id}), FAST
    )
    request = ChatRequest(messages=long, max_tokens=5)
    unsent, rescued = asyncio.run(
        orchestrator.calls.run(gemma_card.id, request, Budget())
    )
    assert gemma.seen == [] and len(mini.seen) == 1
    assert unsent.error == (
        "bad_request: the prompt's 12,005 tokens do not fit gemma-2-2b-it's context "
        "window of 8,192; it was not sent"
    )
    assert (unsent.attempts, unsent.cost_usd) == (0, 0.0)
    assert (rescued.model, rescued.response, rescued.fallback_for) == (
        MINI.id,
        "4",
        gemma_card.id,
    )
    router = ScriptedRouter([turn(text="4")])
    run(orchestrator, router, long)
    assert [card.id for card in router.views[0].pool] == [MINI.id]


def test_a_call_that_times_out_goes_to_its_fallback_without_a_retry() -> None:
    limits = Limits(max_turns=1, call_timeout_s=0.2, retries=2, backoff_s=0.001)
    ask = turn(call("call_gpt_4o_mini_2024_07_18", system_prompt="Be brief."))
    hung = FakeBackend(MINI, ["late"] * 3, delay_s=2.0)
    backup = FakeBackend(BIG, ["from the fallback"])
    orchestrator = Orchestrator(pool(hung, backup, fallback={MINI.id: BIG.id}), limits)
    result = run(orchestrator, ScriptedRouter([ask]))
    failed, rescued = (c for c in result.trace.calls if not c.by_router)
    assert (failed.model, failed.attempts, failed.error) == (
        MINI.id,
        1,
        "timeout: gpt-4o-mini-2024-07-18 gave no answer within 0.2 s",
    )
    assert (rescued.model, rescued.response) == (BIG.id, "from the fallback")
    # With no fallback to ask, the timeout is asked again, up to the retries.
    alone = FakeBackend(MINI, ["late"] * 3, delay_s=2.0)
    with pytest.raises(EpisodeFailedError) as failed_alone:
        run(Orchestrator(pool(alone), limits), ScriptedRouter([ask]))
    (record,) = (c for c in failed_alone.value.trace.calls if not c.by_router)
    assert (record.attempts, len(alone.seen)) == (3, 3)


@dataclass
class Chatterbox:
    """A backend that streams on past any max_tokens, as a faulty upstream can."""

    card: ModelCard
    sent: int = 0
    closed: bool = False

    async def complete(self, request: ChatRequest) -> Completion:
        raise NotImplementedError

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        try:
            for _ in range(1000):
                self.sent += 1
                yield StreamDelta(text=" word")
            yield StreamDelta(finish_reason="stop")
        finally:
            self.closed = True

    async def aclose(self) -> None:
        return None


def test_a_stream_past_its_max_tokens_is_stopped_and_billed_as_counted() -> None:
    # 20 tokens asked for: the stream is read up to the allowance of a worst
    # case (20 x 1.15 + 8 = 31 tokens); the piece that passes it is cut to it
    # and ends the stream, with finish reason "length".
    chatty = Chatterbox(MINI)
    runner = Orchestrator(pool(chatty), FAST).calls  # type: ignore[arg-type]
    request = ChatRequest(messages=(Message("user", "One word."),), max_tokens=20)
    records: list[CallRecord] = []

    async def read() -> list[StreamDelta]:
        pieces = runner.stream(MINI.id, request, Budget(), records)
        return [delta async for delta in pieces]

    deltas = asyncio.run(read())
    assert reply_cap(20) == 31 and "".join(d.text for d in deltas) == " word" * 31
    assert (deltas[-1].text, deltas[-1].finish_reason) == ("", "length")
    assert (chatty.sent, chatty.closed) == (32, True)
    (record,) = records
    assert (record.finish_reason, record.usage.output_tokens) == ("length", 31)
    assert record.cost_usd == pytest.approx(MINI.cost(record.usage.input_tokens, 31))


def test_bad_requests_are_not_retried() -> None:
    refused = FakeBackend(MINI, [BadRequestError("context too long")])
    router = ScriptedRouter(
        [
            turn(call("call_gpt_4o_mini_2024_07_18", system_prompt="Be brief.")),
            turn(text="x"),
        ]
    )
    result = run(Orchestrator(pool(refused), FAST), router)
    record = next(c for c in result.trace.calls if not c.by_router)
    assert (record.attempts, record.error) == (1, "bad_request: context too long")


def test_a_call_past_its_timeout_is_a_timeout_error() -> None:
    slow = FakeBackend(MINI, ["late"], delay_s=2.0)
    router = ScriptedRouter(
        [
            turn(call("call_gpt_4o_mini_2024_07_18", system_prompt="Be brief.")),
            turn(text="x"),
        ]
    )
    limits = Limits(call_timeout_s=0.1, retries=0)
    started = time.monotonic()
    result = run(Orchestrator(pool(slow), limits), router)
    assert time.monotonic() - started < 1.0
    record = next(c for c in result.trace.calls if not c.by_router)
    assert record.error == "timeout: gpt-4o-mini-2024-07-18 gave no answer within 0.1 s"


def test_a_fallback_the_episode_has_no_time_left_for_is_not_called() -> None:
    # The hanging model's first attempt spends the episode's 0.6 s: its fallback
    # is neither called nor logged as a failure of its own, and the failure
    # says why it was not called.
    hung = FakeBackend(MINI, ["late", "late"], delay_s=2.0)
    backup = FakeBackend(BIG, ["from the fallback"])
    router = ScriptedRouter(
        [
            turn(call("call_gpt_4o_mini_2024_07_18", system_prompt="Be brief.")),
            turn(text="x"),
        ]
    )
    count_tokens("load the encoding before the clock starts")
    limits = Limits(call_timeout_s=0.8, episode_timeout_s=0.6, retries=1)
    with pytest.raises(EpisodeFailedError) as failed:
        run(
            Orchestrator(pool(hung, backup, fallback={MINI.id: BIG.id}), limits), router
        )
    records = [c for c in failed.value.trace.calls if not c.by_router]
    assert [(r.model, r.attempts) for r in records] == [(MINI.id, 1)]
    assert backup.seen == []
    assert records[0].error == (
        "timeout: gpt-4o-mini-2024-07-18 gave no answer within the 0.6 s the "
        "episode had left; its fallback gpt-4o-2024-05-13 was not called: the "
        "episode's time ran out"
    )


def test_unknown_tools_bad_arguments_and_bad_selects_are_tool_errors() -> None:
    mini = FakeBackend(MINI, ["ok"])
    router = ScriptedRouter(
        [
            turn(
                call("call_gpt_9", system_prompt="Be brief."),
                call(
                    "call_gpt_4o_mini_2024_07_18",
                    system_prompt="Be brief.",
                    temperature="hot",
                ),
                call("select_response", call_id="c7"),
            ),
            turn(text="final"),
        ]
    )
    result = run(Orchestrator(pool(mini), FAST), router)
    assert result.answer == "final" and mini.seen == []
    errors = result.tool_errors
    assert (
        errors[0] == "select_response: no successful call 'c7' to select (none so far)"
    )
    assert errors[1].startswith(
        "call_gpt_9: no such tool; the tools are call_gpt_4o_mini"
    )
    assert "temperature" in errors[2]
    assert "<tool_error>" in router.shown[1][-1].content


def test_turn_limit_returns_the_latest_successful_call() -> None:
    mini = FakeBackend(MINI, ["cheap answer"])
    big = FakeBackend(BIG, ["strong answer"])
    router = ScriptedRouter(
        [
            turn(call("call_gpt_4o_mini_2024_07_18", system_prompt="Be brief.")),
            turn(call("call_gpt_4o_2024_05_13", system_prompt="Be brief.")),
        ]
    )
    result = run(Orchestrator(pool(mini, big), Limits(max_turns=2)), router)
    assert (result.answer, result.strategy, result.turns) == (
        "strong answer",
        "turn_limit",
        2,
    )


def test_an_episode_with_nothing_to_answer_fails_with_the_reasons() -> None:
    dead = FakeBackend(MINI, [BadRequestError("model not found")])
    router = ScriptedRouter(
        [turn(call("call_gpt_4o_mini_2024_07_18", system_prompt="Be brief."))]
    )
    with pytest.raises(EpisodeFailedError, match="bad_request: model not found"):
        run(Orchestrator(pool(dead), Limits(max_turns=1)), router)


def test_the_episode_time_limit_ends_the_episode_by_the_turn_limit_rule() -> None:
    quick = FakeBackend(MINI, ["first answer"])
    slow = FakeBackend(BIG, ["too late"], delay_s=3.0)
    router = ScriptedRouter(
        [
            turn(call("call_gpt_4o_mini_2024_07_18", system_prompt="Be brief.")),
            turn(call("call_gpt_4o_2024_05_13", system_prompt="Be brief.")),
            turn(text="never asked"),
        ]
    )
    limits = Limits(max_turns=3, episode_timeout_s=0.5, retries=0)
    started = time.monotonic()
    result = run(Orchestrator(pool(quick, slow), limits), router)
    assert time.monotonic() - started < 1.5
    assert (result.answer, result.strategy) == ("first answer", "turn_limit")
    late = next(c for c in result.trace.calls if c.model == BIG.id)
    assert late.error is not None and late.error.startswith("timeout: ")
    assert len(router.views) == 2
