"""Evaluating an episode-running router on replayed items: the score of a returned
response is its recorded verdict; text the router wrote is judged by the verifier."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from xrouter.backends.replay import ReplayPool
from xrouter.core.catalog import ModelCard, load_catalog
from xrouter.evaluate.episodes import evaluate_episodes, run_episode, sample_items
from xrouter.orchestrator.loop import EpisodeView, RouterTurn
from xrouter.orchestrator.parsing import parse_tool_calls
from xrouter.records.splits import split_mask
from xrouter.records.store import Store

CATALOG = load_catalog()
MODELS = ["gpt-4o-mini-2024-07-18", "claude-3-haiku-20240307", "gemma-2-2b-it"]


@dataclass
class Scripted:
    """Calls gpt-4o-mini then selects it, or answers every item with ``answer``."""

    answer: str | None = None
    name: str = "scripted"
    card: ModelCard | None = None

    def quote(self, view: EpisodeView) -> float:
        return 0.0

    async def decide(self, view: EpisodeView) -> RouterTurn:
        if self.answer is not None:
            return RouterTurn(text=self.answer)
        text = (
            '{"name": "call_gpt_4o_mini_2024_07_18", "arguments": '
            '{"system_prompt": "Solve it."}}'
            if view.turn == 1
            else '{"name": "select_response", "arguments": {"call_id": '
            f'"{view.calls[-1].call_id}"}}}}'
        )
        parsed = parse_tool_calls(text)
        return RouterTurn(parsed.text, parsed.calls, parsed.errors)


@pytest.fixture(scope="module")
def records(zeroeval_store: Store) -> ReplayPool:
    return ReplayPool.load(zeroeval_store, ["zeroeval"], MODELS, tasks=["gsm8k"])


def test_a_returned_response_scores_its_recorded_verdict(records: ReplayPool) -> None:
    test = np.flatnonzero(split_mask(records.item_ids, "test"))
    rows = sample_items(records, test, 6, seed=0)
    assert list(rows) == sorted(rows) and len(set(rows)) == 6
    evaluation = evaluate_episodes(Scripted(), records, rows, CATALOG)
    j = records.models.index("gpt-4o-mini-2024-07-18")
    assert evaluation.accuracy == pytest.approx(records.score[rows, j].mean())
    assert evaluation.cost_per_1k == pytest.approx(records.cost[rows, j].mean() * 1000)
    assert {e.strategy for e in evaluation.episodes} == {"select"}
    assert evaluation.singles["gpt-4o-mini-2024-07-18"][0] == evaluation.accuracy
    result = evaluation.result()
    assert result.points[0].calls_per_query == 1.0
    assert result.notes[0].startswith("scripted evaluated on 6 sampled test items")


def test_text_the_router_wrote_is_judged_by_the_verifier(records: ReplayPool) -> None:
    items = records.items([0, 1])
    janet = next(i for i, it in enumerate(items) if it.gold == "18")
    right = evaluate_episodes(
        Scripted('{"reasoning": "16 - 3 - 4 = 9 eggs, 9 * 2", "answer": "18"}'),
        records,
        np.array([janet]),
        CATALOG,
    )
    wrong = evaluate_episodes(
        Scripted('{"answer": "20"}'), records, np.array([janet]), CATALOG
    )
    assert (right.accuracy, wrong.accuracy) == (1.0, 0.0)
    assert right.episodes[0].strategy == "self" and right.cost_per_1k == 0.0


def test_an_interrupt_inside_a_call_ends_the_episode_without_a_logged_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Ctrl-C lands in whichever task runs: here a call the episode started and
    # does not await yet. The episode ends with KeyboardInterrupt, and asyncio
    # does not log the call's unretrieved interrupt as an error.
    async def call() -> None:
        raise KeyboardInterrupt

    async def episode() -> Any:
        started = asyncio.ensure_future(call())
        await asyncio.sleep(1)
        return started

    with pytest.raises(KeyboardInterrupt):
        run_episode(episode())
    gc.collect()
    assert "exception was never retrieved" not in caplog.text
