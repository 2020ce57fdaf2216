"""`xrouter route`: the local SmolLM2 router over replayed pool models, and its
refusals of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gateway_server import train_checkpoint, write_pool
from typer.testing import CliRunner
from upstream import UpstreamServer

from xrouter.cli import route  # noqa: F401  (registers the sub-command)
from xrouter.cli.app import app
from xrouter.records.store import Store

runner = CliRunner()
JANET = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning "
    "and bakes muffins for her friends every day with four. She sells the remainder "
    "at the farmers' market daily for $2 per fresh duck egg. How much in dollars "
    "does she make every day at the farmers' market?"
)


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def replay_pool_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    file = tmp_path_factory.mktemp("pool") / "pool.yaml"
    file.write_text(
        "models:\n"
        "  - {model: gpt-4o-mini-2024-07-18, backend: replay}\n"
        "  - {model: claude-3-haiku-20240307, backend: replay}\n"
        "replay: {source: zeroeval}\n"
    )
    return file


@pytest.mark.slow
def test_route_answers_a_gsm8k_question_with_the_local_router(
    zeroeval_store: Store,
    replay_pool_file: Path,
    smollm2_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XROUTER_HOME", str(smollm2_home))
    code, output = run(
        "route",
        JANET,
        "--pool",
        str(replay_pool_file),
        "--store",
        str(zeroeval_store.path),
        "--router-tokens",
        "48",
        "--json",
    )
    assert code == 0, output
    result = json.loads(output)
    assert result["answer"].strip()
    assert result["calls"][0]["model"] == "smollm2-135m"
    assert result["calls"][0]["by_router"] is True
    assert result["calls"][0]["output_tokens"] <= 48
    # the trace adds up: the episode's cost is the sum of its calls' costs
    assert result["cost_usd"] == pytest.approx(
        sum(c["cost_usd"] for c in result["calls"])
    )
    assert result["usage"]["input_tokens"] == sum(
        c["input_tokens"] for c in result["calls"]
    )


def test_route_wants_exactly_one_request(tmp_path: Path) -> None:
    code, output = run("route")
    assert code == 1
    assert output == "error: give the request as PROMPT or as --messages FILE\n"
    file = tmp_path / "m.json"
    file.write_text('[{"role": "user", "content": "hi"}]')
    code, output = run("route", "hi", "--messages", str(file))
    assert code == 1 and "not both" in output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON"),
        ("[]", "must hold a non-empty JSON list"),
        ('[{"role": "wizard", "content": "hi"}]', "message 0: needs a role from"),
        ('[{"role": "system", "content": "Be terse."}]', "has no user message"),
        (
            '[{"role": "system", "content": ""}, {"role": "user", "content": "  "}]',
            "every message is empty; give the request text",
        ),
    ],
)
def test_bad_messages_files_are_refused(
    tmp_path: Path, content: str, message: str
) -> None:
    file = tmp_path / "messages.json"
    file.write_text(content)
    code, output = run("route", "--messages", str(file))
    assert code == 1 and message in output
    assert "Traceback" not in output


def test_bad_pool_files_and_knobs_are_refused(tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "models:\n  - {model: gpt-4o-mini-2024-07-18, backend: carrier-pigeon}\n"
    )
    code, output = run("route", "hi", "--pool", str(pool))
    assert (code, output) == (
        1,
        f"error: pool file {pool}: models.0.backend: Input should be 'http', "
        "'replay', 'local' or 'litellm'\n",
    )
    pool.write_text(
        "models:\n  - {model: gpt-4o-mini-2024-07-18}\n  - {model: gpt-4o-mini}\n"
    )
    code, output = run("route", "hi", "--pool", str(pool))
    assert code == 1
    assert output == (
        "error: model gpt-4o-mini-2024-07-18 appears twice in the pool "
        "('gpt-4o-mini' and 'gpt-4o-mini-2024-07-18' name the same model); list "
        "it once\n"
    )
    code, output = run("route", "hi", "--lambda", "-1")
    assert (code, output) == (1, "error: --lambda must be >= 0, got -1\n")
    for loose in ("inf", "1_0", "+4", "\uff14"):  # the last a full-width 4
        code, output = run("route", "hi", "--lambda", loose)
        assert (code, output) == (
            1,
            "error: --lambda must be a finite number written in ASCII digits, such "
            f"as 4 or 0.5, got {loose!r}\n",
        )
    code, output = run("route", "hi", "--router-tokens", "-5")
    assert (
        code == 2 and "Invalid value for '--router-tokens': Input should be" in output
    )
    code, output = run("route", "hi", "--max-turns", "0")
    assert code == 2 and "Invalid value for '--max-turns': Input should be" in output
    code, output = run("route", "   ")
    assert code == 1 and "the prompt is empty" in output
    # Bytes that are not UTF-8 reach Python as lone surrogates.
    code, output = run("route", "caf\udce9 \udcff")
    assert code == 1
    assert output == (
        "error: the prompt is not UTF-8 text (the shell passed bytes that are not); "
        "give it as UTF-8, or in a --messages file saved as UTF-8\n"
    )
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'[{"role": "user", "content": "caf\xe9 \xff\xfe"}]')
    code, output = run("route", "--messages", str(latin))
    assert code == 1
    assert output == (
        f"error: messages file {latin} is not UTF-8 text (byte 33); save it as UTF-8\n"
    )


def test_a_routed_request_that_fails_shows_what_it_tried_and_paid(
    zeroeval_store: Store, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Every upstream call fails with a reply billed and no answer in it: the
    # failure is still an error (exit 1), but the calls made and their cost are
    # shown, as the gateway shows them.
    checkpoint = train_checkpoint(
        zeroeval_store, tmp_path_factory.getbasetemp() / "gateway-policy"
    )
    with UpstreamServer() as upstream:
        upstream.mode = "no_choices"
        pool = write_pool(
            tmp_path_factory.mktemp("failing") / "pool.yaml", upstream.base_url
        )
        args = ["route", JANET, "--policy", str(checkpoint), "--pool", str(pool)]
        as_json = runner.invoke(app, [*args, "--lambda", "1", "--json"])
        as_table = runner.invoke(app, [*args, "--lambda", "1"])
    assert as_json.exit_code == 1 and as_table.exit_code == 1
    shown = json.loads(as_json.stdout)
    assert shown["error"].startswith("no model produced an answer: ")
    made = [c for c in shown["calls"] if not c["by_router"]]
    assert made and all(c["error"] for c in made) and shown["cost_usd"] > 0
    assert shown["cost_usd"] == pytest.approx(
        sum(c["cost_usd"] for c in shown["calls"])
    )
    assert f"cost: ${shown['cost_usd']:.6f}" in as_table.stdout
    assert as_table.stderr.startswith("error: no model produced an answer: ")
