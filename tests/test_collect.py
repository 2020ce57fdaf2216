"""`xrouter data collect` against a real OpenAI-compatible server on loopback:
records, prices, resumption from the journal, the cost ceiling, rate limits."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from upstream import UpstreamServer

from xrouter.backends.http import HttpBackend
from xrouter.backends.pool import Pool, PoolEntry
from xrouter.backends.replay import ReplayPool
from xrouter.cli import evaluate, train  # noqa: F401  (registers `eval`, `train`)
from xrouter.cli.app import app
from xrouter.cli.collect import collect_command  # noqa: F401  (registers it)
from xrouter.core.catalog import load_catalog
from xrouter.core.errors import ConfigError, SourceFormatError, UnknownTaskError
from xrouter.core.types import ChatRequest, Completion
from xrouter.orchestrator.collect import (
    CollectSummary,
    RateLimiter,
    benchmark_items,
    collect,
    collected_source,
    journal_path,
)
from xrouter.orchestrator.limits import Limits
from xrouter.records.schema import Item
from xrouter.records.store import Store
from xrouter.records.tokens import count_tokens

CATALOG = load_catalog()
MINI, BIG = "gpt-4o-mini-2024-07-18", "gpt-4o-2024-05-13"
PRICES = {MINI: (0.15, 0.60), BIG: (5.0, 15.0)}  # USD per 1M tokens in, out
ROUTES = {"mini": MINI, "big": BIG}
FAST = Limits(backoff_s=0.01, max_backoff_s=0.02, call_timeout_s=5.0)
SOURCE = "collected-test"


@pytest.fixture(scope="module")
def running() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture
def server(running: UpstreamServer) -> UpstreamServer:
    running.reset()
    return running


@pytest.fixture(scope="module")
def gsm(zeroeval_store: Store) -> list[Item]:
    """Four real GSM8K items; the gold of the second is set to 42, the number the
    echoed instruction ends on, so that the echo is right there."""
    items = benchmark_items(zeroeval_store, "gsm8k", limit=4)
    return [items[0], replace(items[1], gold="42"), *items[2:]]


class Counting(HttpBackend):
    """The HTTP backend, counting how many of its calls are in flight at once."""

    in_flight = most = 0

    async def complete(self, request: ChatRequest) -> Completion:
        Counting.in_flight += 1
        Counting.most = max(Counting.most, Counting.in_flight)
        try:
            return await super().complete(request)
        finally:
            Counting.in_flight -= 1


def http_pool(server: UpstreamServer) -> Pool:
    cards = [
        CATALOG.get(card).model_copy(update={"base_url": server.base_url, "route": r})
        for r, card in ROUTES.items()
    ]
    return Pool([PoolEntry(card, Counting(card, timeout_s=5.0)) for card in cards])


async def collecting(
    store: Store, server: UpstreamServer, items: list[Item], **kwargs: Any
) -> CollectSummary:
    pool = http_pool(server)
    try:
        return await collect(
            store, pool, items, **{"source_name": SOURCE, "limits": FAST, **kwargs}
        )
    finally:
        await pool.aclose()


def run(
    store: Store, server: UpstreamServer, items: list[Item], **kwargs: Any
) -> CollectSummary:
    return asyncio.run(collecting(store, server, items, **kwargs))


def journal(store: Store) -> list[dict[str, Any]]:
    lines = journal_path(store, SOURCE).read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_records_hold_the_echoes_their_usage_and_card_priced_costs(
    server: UpstreamServer, gsm: list[Item], tmp_path: Path
) -> None:
    store = Store(tmp_path)
    server.latency_s, Counting.most = 0.03, 0
    options = {"system_prompt": "Answer briefly.", "max_tokens": 500}
    summary = run(store, server, gsm, concurrency=3, **options)

    assert server.attempts == 8 and Counting.most == 3  # calls in flight at most
    first = server.requests[0]
    assert first["max_tokens"] == 500
    assert first["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert summary.calls == 8 and summary.failed == summary.skipped == 0
    assert summary.left == 0 and summary.stopped is None and summary.records == 8

    records = store.records([SOURCE]).to_pylist()
    assert [(r["item_id"], r["model"]) for r in records] == sorted(
        (item.item_id, model) for item in gsm for model in (MINI, BIG)
    )
    prompts = {item.item_id: item.prompt for item in gsm}
    for r in records:
        words = len(prompts[r["item_id"]].split())
        per_in, per_out = PRICES[r["model"]]
        assert r["response"] == " ".join(f"echo: {prompts[r['item_id']]}".split())
        assert (r["input_tokens"], r["output_tokens"]) == (2 + words, 1 + words)
        cost = (r["input_tokens"] * per_in + r["output_tokens"] * per_out) / 1_000_000
        assert r["cost_usd"] == cost
        right = r["item_id"] == gsm[1].item_id
        assert (r["extracted"], r["score"]) == ("42", 1.0 if right else 0.0)
        origins = (r["score_origin"], r["usage_origin"], r["cost_origin"])
        assert origins == ("verifier", "recorded", "estimated")
    janet = records[1]  # gsm8k #0 answered by mini: 99 x $0.15 + 98 x $0.60 per 1M
    assert janet["model"] == MINI
    assert (janet["input_tokens"], janet["output_tokens"]) == (99, 98)
    assert janet["cost_usd"] == pytest.approx(7.365e-05, abs=1e-12)
    assert summary.spent_usd == pytest.approx(sum(r["cost_usd"] for r in records))

    # Item ids are kept, so every item stays in its split.
    items = store.items([SOURCE]).to_pylist()
    assert [(i["item_id"], i["source"], i["gold"]) for i in items] == [
        (item.item_id, SOURCE, item.gold) for item in gsm
    ]
    assert len(journal(store)) == 8
    assert len(ReplayPool.load(store, [SOURCE], [MINI, BIG]).item_ids) == 4


def test_a_rerun_after_failures_makes_exactly_the_missing_calls(
    server: UpstreamServer, gsm: list[Item], tmp_path: Path
) -> None:
    store = Store(tmp_path)
    server.script(["ok"] * 3)
    server.mode = "400"  # not retryable: one attempt per pair
    first = run(store, server, gsm, concurrency=2)
    assert (first.calls, first.failed, first.left, first.records) == (8, 5, 5, 3)
    lines = journal(store)
    assert len(lines) == 8 and sum(line["error"] is None for line in lines) == 3
    assert all(line["cost_usd"] == 0.0 for line in lines if line["error"])
    failed = {(line["item_id"], line["model"]) for line in lines if line["error"]}

    server.reset()
    second = run(store, server, gsm)
    ids = {item.prompt: item.item_id for item in gsm}
    asked = [(ids[b["messages"][-1]["content"]], b["model"]) for b in server.requests]
    assert server.attempts == 5 and {(i, ROUTES[m]) for i, m in asked} == failed
    assert (second.calls, second.skipped, second.left, second.records) == (5, 3, 0, 8)
    assert second.spent_total_usd == pytest.approx(
        first.spent_usd + second.spent_usd, abs=1e-15
    )

    server.reset()
    third = run(store, server, gsm)
    assert server.attempts == 0 and (third.calls, third.skipped) == (0, 8)
    assert len(journal(store)) == 13


def test_a_call_that_timed_out_is_not_asked_again_in_the_run(
    server: UpstreamServer, gsm: list[Item], tmp_path: Path
) -> None:
    # Its provider may still bill the answer it finishes: one attempt per pair.
    store = Store(tmp_path)
    server.mode, server.stall_s = "stall", 2.0
    slow = replace(FAST, call_timeout_s=0.2, retries=2)
    summary = run(store, server, gsm[:2], limits=slow)
    assert server.attempts == 4 and (summary.calls, summary.failed) == (4, 4)
    lines = journal(store)
    assert [line["attempts"] for line in lines] == [1] * 4
    assert all(line["error"].startswith("timeout:") for line in lines)


def test_a_cancelled_run_keeps_every_call_it_paid_for(
    server: UpstreamServer, gsm: list[Item], tmp_path: Path
) -> None:
    store = Store(tmp_path)
    server.latency_s = 0.05

    async def interrupted() -> None:
        task = asyncio.create_task(collecting(store, server, gsm, concurrency=1))
        path = journal_path(store, SOURCE)
        while not path.exists() or len(path.read_text().splitlines()) < 3:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    paid = len(journal(store))
    assert 3 <= paid < 8
    assert store.manifest()[SOURCE].records == paid

    server.reset()
    summary = run(store, server, gsm)
    assert server.attempts == 8 - paid and summary.skipped == paid
    assert summary.left == 0 and len(journal(store)) == 8


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_new_calls_and_those_in_flight_are_kept(
    server: UpstreamServer, gsm: list[Item], tmp_path: Path, sig: signal.Signals
) -> None:
    store = Store(tmp_path)
    server.latency_s = 0.3

    async def signalled() -> CollectSummary:
        task = asyncio.create_task(collecting(store, server, gsm, concurrency=2))
        while server.attempts < 3:  # two calls answered, the third in flight
            await asyncio.sleep(0.005)
        os.kill(os.getpid(), sig)
        return await task

    summary = asyncio.run(signalled())
    assert summary.interrupted_by == sig.name
    assert summary.stopped == f"interrupted by {sig.name}"
    # Every call the server was sent was answered and journaled: none is paid
    # for without a record, so none is paid for twice.
    paid = len(journal(store))
    assert 3 <= paid < 8 and server.attempts == paid == summary.calls
    assert store.manifest()[SOURCE].records == paid

    server.reset()
    again = run(store, server, gsm)
    assert server.attempts == 8 - paid and again.left == 0
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers given back


def test_a_truncated_last_journal_line_is_dropped_with_a_warning(
    server: UpstreamServer,
    gsm: list[Item],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store(tmp_path)
    run(store, server, gsm[:1])
    path = journal_path(store, SOURCE)
    with path.open("a") as file:
        file.write('{"item_id": "zeroeval/gsm8k/gsm8k-main-te')

    server.reset()
    with caplog.at_level(logging.WARNING, logger="xrouter.orchestrator.journal"):
        summary = run(store, server, gsm[:2])
    assert "cut short by an interrupted write" in caplog.text
    assert server.attempts == 2 and (summary.skipped, summary.records) == (2, 4)
    assert len(journal(store)) == 4  # every line parses again

    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(SourceFormatError, match=r"line 2: not a journal entry"):
        run(store, server, gsm[:2])
    # A last line that is whole JSON of another shape was no interrupted write.
    path.write_text("\n".join([*lines, '{"note": "mine"}']) + "\n")
    with pytest.raises(SourceFormatError, match=r"line 5: not a journal entry"):
        run(store, server, gsm[:2])
    assert path.read_text().endswith('{"note": "mine"}\n')  # nothing dropped


def test_the_cost_ceiling_stops_new_calls_and_a_higher_one_resumes(
    server: UpstreamServer, gsm: list[Item], tmp_path: Path
) -> None:
    store = Store(tmp_path)
    # Each call holds its worst case (1024 output tokens, read up to 1,185):
    # about $0.0007 for mini, $0.019 for the big model, which really costs about
    # $0.0017 a call. After three items and the fourth's mini call, $0.0180 is
    # left: the fourth item's big call ($0.0189) no longer fits.
    first = run(store, server, gsm, concurrency=1, max_cost_usd=0.0235)
    assert first.stopped is not None and "collection cost ceiling" in first.stopped
    assert (first.calls, first.left) == (7, 1) and server.attempts == 7
    assert first.spent_total_usd <= 0.0235

    server.reset()
    again = run(store, server, gsm, concurrency=1, max_cost_usd=0.0235)
    assert again.calls == 0 and server.attempts == 0  # earlier spend counts
    assert again.stopped is not None

    higher = run(store, server, gsm, concurrency=3, max_cost_usd=1.0)
    assert server.attempts == 1 and (higher.calls, higher.left) == (1, 0)
    assert higher.stopped is None and higher.records == 8


def test_calls_in_flight_do_not_stop_a_run_short_of_its_ceiling(
    server: UpstreamServer, gsm: list[Item], tmp_path: Path
) -> None:
    # Four at once: two big calls' worst cases ($0.019 each) do not fit $0.0235
    # together, but the first one's real cost leaves room for the next. The run
    # gets as far as one call at a time does.
    store = Store(tmp_path)
    summary = run(store, server, gsm, concurrency=4, max_cost_usd=0.0235)
    assert summary.stopped is not None and (summary.calls, summary.left) == (7, 1)
    assert server.attempts == 7 and summary.spent_total_usd <= 0.0235


class Gate(RateLimiter):
    """Lets one mini call start, then holds mini back for good; big waits 0.1 s."""

    minis = 0

    async def acquire(self, key: str) -> None:
        self.minis += key == MINI
        if key == BIG:
            await asyncio.sleep(0.1)
        elif self.minis > 1:
            await asyncio.Event().wait()


def test_a_stop_ends_the_waits_for_a_rate_limit(
    server: UpstreamServer, gsm: list[Item], tmp_path: Path
) -> None:
    # $0.001 fits mini's worst case, not big's: big is refused while mini waits.
    store = Store(tmp_path)
    limited = collecting(store, server, gsm, limiter=Gate(1), max_cost_usd=0.001)
    summary = asyncio.run(asyncio.wait_for(limited, 5.0))
    assert summary.stopped is not None and (summary.calls, summary.left) == (1, 7)


def test_the_rate_limiter_allows_rpm_starts_per_minute_and_model() -> None:
    now, slept = [1000.0], []

    async def sleep(seconds: float) -> None:  # a clock that moves when slept on
        slept.append(seconds)
        now[0] += seconds

    async def starts() -> list[float]:
        limiter, seen = RateLimiter(2, clock=lambda: now[0], sleep=sleep), []
        for key in ("mini", "mini", "big", "mini", "big", "big", "big"):
            await limiter.acquire(key)
            seen.append(now[0] - 1000.0)
            now[0] += 1.0
        return seen

    # The third mini start waits until the first leaves the 60 s window; the start
    # of big at 2.0 has left it at 62.0, but the one at 61.0 makes the last wait.
    assert asyncio.run(starts()) == [0.0, 1.0, 2.0, 60.0, 61.0, 62.0, 121.0]
    assert slept == [57.0, 58.0]


def test_bad_input_is_refused_before_any_call(
    server: UpstreamServer, gsm: list[Item], tmp_path: Path
) -> None:
    store = Store(tmp_path)
    unscored = [replace(gsm[0], task="chat", verifier=None)]
    with pytest.raises(UnknownTaskError, match="1 items of task 'chat' have no verif"):
        run(store, server, unscored)
    ungraded = [replace(gsm[0], gold=None), gsm[1]]
    with pytest.raises(UnknownTaskError) as info:
        run(store, server, ungraded)
    assert str(info.value) == (
        "1 items of task 'gsm8k' in source zeroeval have no gold answer, so their "
        "collected responses could not be scored; take the task's items from a "
        "source that records its answers (--source)"
    )
    with pytest.raises(ConfigError, match="--concurrency must be at least 1, got 0"):
        run(store, server, gsm, concurrency=0)
    with pytest.raises(ConfigError, match="collected source collected-NAME, not mine"):
        run(store, server, gsm, source_name="mine")
    assert server.attempts == 0
    assert collected_source("mine") == collected_source("collected-mine")
    with pytest.raises(ConfigError, match="'my pool' may hold only letters"):
        collected_source("my pool")


cli = CliRunner()


def xrouter(*args: str) -> tuple[int, str]:
    result = cli.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def cli_store(zeroeval_store: Store, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(zeroeval_store.path, copy)
    return copy


def pool_file(server: UpstreamServer, folder: Path) -> Path:
    entry = "  - {{model: {}, route: {}, base_url: '" + server.base_url + "'}}\n"
    file = folder / "mine.yaml"
    file.write_text(
        "models:\n" + "".join(entry.format(c, r) for r, c in ROUTES.items())
    )
    return file


def test_cli_collects_then_eval_reads_the_collected_source(
    server: UpstreamServer, cli_store: Path, small_data: Path, tmp_path: Path
) -> None:
    pool = pool_file(server, tmp_path)
    args = ("data", "collect", "--pool", str(pool), "--store", str(cli_store))
    code, output = xrouter(*args, "--task", "gsm8k", "--limit", "24")
    assert code == 0, output
    assert "collected collected-mine" in output and "24 items, 48 records" in output
    assert server.attempts == 48

    server.mode = "400"
    code, output = xrouter(*args, "--task", "gsm8k", "--limit", "25")
    assert code == 1 and server.attempts == 50
    assert "2 calls failed for good; their pairs are journaled as failures" in output
    flat = " ".join(output.split())  # the console wraps long lines
    for model in (MINI, BIG):  # why, per model
        assert f"{model}: 1 failed, the last with bad_request: model '{model}'" in flat
    assert "rejected the request (HTTP 400: upstream fault: bad request)" in flat

    server.mode = "ok"
    code, output = xrouter(*args, "--task", "gsm8k", "--limit", "30", "--max-cost", "0")
    assert code == 1, output  # stopped with pairs left: not a finished run
    assert "stopped at the cost ceiling of $0: 12 pairs left" in output
    assert server.attempts == 50

    suites = tmp_path / "suites.yaml"
    suites.write_text(
        "suites:\n  - name: mine\n    source: collected-mine\n"
        f"    pool: [{MINI}, {BIG}]\n    strong: {BIG}\n    weak: {MINI}\n"
    )
    out = tmp_path / "out"
    places = ("--from", small_data, "--suites", suites, "--store", cli_store)
    code, output = xrouter("eval", *map(str, places), "--out", str(out))
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())
    assert report["suites"]["mine"]["items"]["all"] == 24

    # A policy trains on the collected records as on any others (more of them).
    code, output = xrouter(*args, "--task", "gsm8k", "--limit", "64")
    assert code == 0, output
    ckpt = tmp_path / "ckpt"
    settings = ("--steps", "2", "--threads", "1", "--embedding", "static")
    code, output = xrouter(
        "train", "policy", *map(str, places), "--out", str(ckpt), *settings
    )
    assert code == 0, output
    assert "trained 2 steps" in output
    code, output = xrouter(
        "eval", *map(str, places), "--policy", str(ckpt), "--out", str(out)
    )
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())
    names = [p["name"] for p in report["suites"]["mine"]["policies"]]
    assert "rl-router" in names

    # A collection that was never made is named as such.
    suites.write_text(suites.read_text().replace("collected-mine", "collected-mien"))
    code, output = xrouter("eval", *map(str, places), "--out", str(out))
    assert code == 1
    assert " ".join(output.split()) == (
        "suite mine skipped: the store has no collected-mien source; collect it "
        "with `xrouter data collect --name mien` error: no suite's records can be "
        "read: the suites read collected-mien; point --from at the recorded data, "
        "or collect the source with `xrouter data collect`"
    )


BAD_INPUT = {
    "--task gsm9k": "no source in the store at {store} has items of task 'gsm9k'; "
    "its tasks are cruxeval, gsm8k, math-l5",
    "--task gsm8k --limit 0": "--limit must be at least 1, got 0",
    "--task gsm8k --name a.b": "collection name 'a.b' may hold only letters, "
    "digits, '-' and '_'; pass another --name",
    "--task gsm8k --split val": "unknown split 'val'; choose all, train, dev, test",
}


@pytest.mark.parametrize(("extra", "message"), BAD_INPUT.items())
def test_cli_bad_input_is_one_clear_line(
    server: UpstreamServer, cli_store: Path, tmp_path: Path, extra: str, message: str
) -> None:
    pool = pool_file(server, tmp_path)
    args = ("data", "collect", "--pool", str(pool), "--store", str(cli_store))
    code, output = xrouter(*args, *extra.split())
    assert (code, output.strip()) == (1, "error: " + message.format(store=cli_store))
    assert server.attempts == 0


def test_the_command_lines_cards_override_the_pool_files(
    server: UpstreamServer, cli_store: Path, tmp_path: Path
) -> None:
    pool = pool_file(server, tmp_path)
    (tmp_path / "pool-cards.yaml").write_text(
        f"- {{id: {MINI}, input_per_mtok: 1.0, output_per_mtok: 2.0}}\n"
    )
    pool.write_text(pool.read_text() + "catalog: [pool-cards.yaml]\n")
    override = tmp_path / "override.yaml"
    override.write_text(
        f"- {{id: {MINI}, input_per_mtok: 20.0, output_per_mtok: 80.0}}\n"
    )
    args = ("data", "collect", "--pool", str(pool), "--store", str(cli_store))
    code, output = xrouter(
        *args, "--task", "gsm8k", "--limit", "2", "--catalog", str(override)
    )
    assert code == 0, output
    records = Store(cli_store).records(["collected-mine"]).to_pylist()
    mini = [r for r in records if r["model"] == MINI]
    assert len(mini) == 2
    for r in mini:
        priced = (r["input_tokens"] * 20.0 + r["output_tokens"] * 80.0) / 1_000_000
        assert r["cost_usd"] == pytest.approx(priced, abs=1e-15)


def test_tokens_a_server_does_not_report_are_counted_and_said_so(
    server: UpstreamServer, gsm: list[Item], tmp_path: Path
) -> None:
    store = Store(tmp_path)
    server.mode = "no_usage"
    run(store, server, gsm[:1])
    records = store.records([SOURCE]).to_pylist()
    assert [(r["model"], r["usage_origin"]) for r in records] == [
        (BIG, "counted"),
        (MINI, "counted"),
    ]
    # o200k's count of the echo, not the server's word count
    assert records[0]["output_tokens"] == count_tokens(records[0]["response"])
    assert all(line["usage_counted"] for line in journal(store))
