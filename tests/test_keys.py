"""API keys (hashes only, constant-time checks, exact config errors), `xrouter
key-hash`, and the daily limits: restarts, UTC rollover and concurrent holds."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from xrouter.cli import logs  # noqa: F401  (registers the sub-commands)
from xrouter.cli.app import app
from xrouter.core.errors import BudgetExceededError, ConfigError
from xrouter.orchestrator.budget import Budget
from xrouter.serve.config import KeySpec
from xrouter.serve.keys import ApiKey, DailyLimits, KeyRing, hash_key
from xrouter.serve.requestlog import RequestEntry, RequestLog

runner = CliRunner()
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
MAY_9 = datetime(2026, 5, 9, tzinfo=UTC).timestamp()
DAY = 86_400.0


def test_hash_key_is_the_hex_sha256_of_the_key() -> None:
    assert hash_key("abc") == ABC_SHA256
    with pytest.raises(ValueError, match="an API key cannot be empty"):
        hash_key("")


def test_keys_from_hashes_and_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI_KEY", "ci-secret")
    ring = KeyRing(
        [
            {"name": "team-a", "sha256": ABC_SHA256.upper(), "daily_limit_usd": 5},
            KeySpec(name="ci", key_env="CI_KEY"),
        ]
    )
    assert ring.names == ("team-a", "ci") and len(ring) == 2 and not ring.open
    assert ring.authenticate("abc") == ApiKey("team-a", 5.0)
    assert ring.authenticate("ci-secret") == ApiKey("ci", None)
    for wrong in ("abd", "ABC", "abc ", "", None, "ci-secret\n"):
        assert ring.authenticate(wrong) is None


def test_every_stored_hash_is_compared_on_every_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ring = KeyRing(
        [{"name": f"k{n}", "sha256": hash_key(f"key-{n}")} for n in range(5)]
    )
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for attempt, expected in (("key-0", "k0"), ("key-4", "k4"), ("nope", None)):
        compared.clear()
        found = ring.authenticate(attempt)
        assert (found.name if found else None) == expected
        assert len(compared) == 5
        assert len({stored for _, stored in compared}) == 5
    compared.clear()
    assert ring.authenticate(None) is None and len(compared) == 5


def test_an_open_ring_checks_nothing() -> None:
    ring = KeyRing([])
    assert ring.open and ring.names == ()
    assert ring.authenticate("anything") is None


BAD_HEX = (
    "api key 'a': sha256 must be 64 hexadecimal digits, as `xrouter key-hash` "
    "prints them; the value given is not (it is not shown here in case it is the "
    "key itself)"
)
BOTH_OR_NEITHER = (
    "api key 'a': give exactly one of sha256 (the key's hash, as `xrouter "
    "key-hash` prints it) and key_env (an environment variable holding the key)"
)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [{"name": "a", "sha256": ABC_SHA256}, {"name": "a", "sha256": "b" * 64}],
            "api key name 'a' is used twice; give each key its own name",
        ),
        (
            [{"name": "a", "sha256": ABC_SHA256}, {"name": "b", "sha256": ABC_SHA256}],
            "api keys 'a' and 'b' are the same key; give each name its own key",
        ),
        ([{"name": "a", "sha256": "my-raw-secret-key"}], BAD_HEX),
        ([{"name": "a", "sha256": "g" * 64}], BAD_HEX),
        ([{"name": "a", "sha256": "ab " * 21 + "a"}], BAD_HEX),
        ([{"name": "a"}], BOTH_OR_NEITHER),
        ([{"name": "a", "sha256": ABC_SHA256, "key_env": "X"}], BOTH_OR_NEITHER),
        (
            [{"name": "a", "sha256": hash_key("x")[:-1] + "g"}],
            BAD_HEX,
        ),
        (
            [{"name": "a", "sha256": "e3b0c44298fc1c149afbf4c8996fb924"
              "27ae41e4649b934ca495991b7852b855"}],
            "api key 'a': sha256 is the hash of an empty key; hash the real key "
            "with `xrouter key-hash`",
        ),
        (
            [{"name": "a", "sha256": ABC_SHA256, "daily_limit_usd": -1}],
            "api key 'a': daily_limit_usd must be a number of USD >= 0 or null, "
            "got -1",
        ),
        (
            [{"name": "a", "sha256": ABC_SHA256, "daily_limit_usd": "5"}],
            "api key 'a': daily_limit_usd must be a number of USD >= 0 or null, "
            "got '5'",
        ),
        (
            [{"sha256": ABC_SHA256}],
            "api key entry 0 has no name; give each key a name",
        ),
        (
            [{"name": "a", "hash": ABC_SHA256}],
            "api key entry 0 has unknown fields ['hash']; the fields are name, "
            "sha256, key_env, daily_limit_usd",
        ),
    ],
)  # fmt: skip
def test_bad_key_entries_are_refused_with_exact_texts(
    entries: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        KeyRing(entries)
    assert str(info.value) == message
    assert "my-raw-secret-key" not in str(info.value)


def test_environment_keys_must_be_set_and_clean(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MISSING_KEY", raising=False)
    monkeypatch.setenv("EMPTY_KEY", "")
    monkeypatch.setenv("PADDED_KEY", " secret\n")
    unset = (
        "api key 'ci': environment variable {} is not set or empty; export the "
        "key in it, or give sha256 instead"
    )
    cases = {
        "MISSING_KEY": unset.format("MISSING_KEY"),
        "EMPTY_KEY": unset.format("EMPTY_KEY"),
        "PADDED_KEY": "api key 'ci': environment variable PADDED_KEY has spaces or "
        "a line break around the key; remove them",
    }
    for variable, message in cases.items():
        with pytest.raises(ConfigError) as info:
            KeyRing([KeySpec(name="ci", key_env=variable)])
        assert str(info.value) == message


def test_key_hash_command_reads_stdin_or_makes_a_key() -> None:
    result = runner.invoke(app, ["key-hash"], input="abc\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == ABC_SHA256 + "\n"

    made = runner.invoke(app, ["key-hash", "--new"])
    assert made.exit_code == 0, made.output
    key_line, hash_line = made.stdout.splitlines()
    key = key_line.removeprefix("key:    ")
    assert key.startswith("xr-") and len(key) == 46
    assert hash_line == f"sha256: {hash_key(key)}"
    again = runner.invoke(app, ["key-hash", "--new"]).stdout.splitlines()[0]
    assert again != key_line

    for given in ("", "\n", "one\ntwo\n"):
        refused = runner.invoke(app, ["key-hash"], input=given)
        assert refused.exit_code == 1
        assert refused.stderr == (
            "error: give one API key on stdin (for example `printf %s KEY | "
            "xrouter key-hash`), or pass --new to make one\n"
        )


# -- daily limits ---------------------------------------------------------------


class Clock:
    """A settable stand-in for time.time."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def spent(request_id: str, ts: float, key: str | None, cost: float) -> RequestEntry:
    return RequestEntry(
        request_id, ts, key, "direct", "m1", "single", ("m1",), (), 1, 1, cost,
        0.1, 200, "ok", False,
    )  # fmt: skip


@pytest.fixture
def log(tmp_path: Path) -> Iterator[RequestLog]:
    with closing(RequestLog(tmp_path / "requests.sqlite")) as opened:
        yield opened


def test_a_restart_picks_up_the_days_spend_from_the_log(log: RequestLog) -> None:
    log.append(spent("yesterday", MAY_9 - 60, "alice", 4.0))
    log.append(spent("a", MAY_9 + 60, "alice", 0.5))
    log.append(spent("b", MAY_9 + 120, "bob", 0.25))
    log.append(spent("c", MAY_9 + 180, None, 0.125))
    limits = DailyLimits(10.0, log, clock=Clock(MAY_9 + 3600))
    overall, alice = limits.ledgers(ApiKey("alice", 1.0))
    assert (overall.spent_usd, overall.limit_usd) == (0.875, 10.0)
    assert (alice.spent_usd, alice.limit_usd) == (0.5, 1.0)
    assert overall.name == "gateway's daily limit on 2026-05-09 UTC"
    assert alice.name == "daily limit of key 'alice' on 2026-05-09 UTC"
    assert limits.ledgers(ApiKey("bob", 1.0))[1].spent_usd == 0.25
    # A key without a limit of its own, and no key, count only on the gateway's.
    assert limits.ledgers(ApiKey("carol")) == [overall]
    assert limits.ledgers(None)[0] is overall


def test_ledgers_are_shared_by_concurrent_requests(log: RequestLog) -> None:
    limits = DailyLimits(None, log, clock=Clock(MAY_9))
    got: list[list[Any]] = []
    start = threading.Barrier(16)

    def ask() -> None:
        start.wait()
        got.append(limits.ledgers(ApiKey("alice", 2.0)))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(ledgers[0]) for ledgers in got}) == 1
    assert len({id(ledgers[1]) for ledgers in got}) == 1


def test_ledgers_roll_over_at_utc_midnight(log: RequestLog) -> None:
    clock = Clock(MAY_9 - 1)
    limits = DailyLimits(1.0, log, clock=clock)
    may_8, alice_8 = limits.ledgers(ApiKey("alice", 0.5))
    hold = Budget([may_8, alice_8]).hold(0.25, "a request")
    clock.now = MAY_9 - 0.001
    assert limits.ledgers(ApiKey("alice", 0.5))[0] is may_8

    log.append(spent("early", MAY_9 + 1, "alice", 0.125))
    clock.now = MAY_9 + 2
    may_9, alice_9 = limits.ledgers(ApiKey("alice", 0.5))
    assert may_9 is not may_8 and alice_9 is not alice_8
    assert may_9.name == "gateway's daily limit on 2026-05-09 UTC"
    assert (may_9.spent_usd, may_9.held_usd, alice_9.spent_usd) == (0.125, 0.0, 0.125)
    # A request still in flight over midnight settles on the day it started.
    hold.settle(0.25)
    assert (may_8.spent_usd, may_8.held_usd, may_9.spent_usd) == (0.25, 0.0, 0.125)

    clock.now = MAY_9 - 5  # a clock stepped back keeps today's ledgers
    assert limits.ledgers(None)[0] is may_9
    clock.now = MAY_9 + DAY
    assert limits.ledgers(None)[0].name == "gateway's daily limit on 2026-05-10 UTC"


def test_a_tiny_limit_holds_under_concurrent_requests(log: RequestLog) -> None:
    limit, each = 0.001, 0.0003
    limits = DailyLimits(0.01, log, clock=Clock(MAY_9))
    key = ApiKey("tiny", limit)
    ledger = limits.ledgers(key)[1]
    seen: list[float] = []
    refused: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            spent_usd = ledger.spent_usd  # read first: it only grows
            seen.append(spent_usd + ledger.held_usd)

    def request() -> None:
        for _ in range(50):
            try:
                hold = Budget(limits.ledgers(key)).hold(each, "a request")
            except BudgetExceededError as exc:
                refused.append(str(exc))
                continue
            hold.settle(each * 0.5)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=request) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    watcher.join()
    assert max(seen) <= limit + 1e-12
    assert ledger.held_usd == 0.0
    assert ledger.spent_usd <= limit + 1e-12
    assert len(refused) > 0
    assert refused[0].startswith(
        "a request may cost up to $0.000300, more than the $"
    ) and refused[0].endswith(
        " left of the daily limit of key 'tiny' on 2026-05-09 UTC (limit $0.001000)"
    )


def test_a_bad_global_limit_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        DailyLimits(-1.0, None)
    assert str(info.value) == (
        "gateway's daily limit: a spending limit must be a finite number of USD "
        ">= 0, got -1.0"
    )
