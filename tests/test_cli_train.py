"""`xrouter train policy` and `xrouter eval --policy`, run as a user would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _standin import StandInEmbedder
from typer.testing import CliRunner

from xrouter.backends.replay import ReplayPool
from xrouter.cli import data, evaluate, route, train  # noqa: F401  (registers commands)
from xrouter.cli.app import app
from xrouter.cli.evaluate import _other_data
from xrouter.core.catalog import load_catalog
from xrouter.core.errors import DataError
from xrouter.policies.checkpoint import load_checkpoint
from xrouter.records.ingest import ingest
from xrouter.records.store import Store
from xrouter.train.curves import write_curves

runner = CliRunner()
POOL = ["gpt-4o-mini-2024-07-18", "claude-3-haiku-20240307", "gemma-2-2b-it"]


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def setup(
    small_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """A store of the small data whose MATH prompts are already embedded (by the
    stand-in), and a suite of MATH-L5 over three models."""
    root = tmp_path_factory.mktemp("cli")
    store = Store(root / "store")
    ingest(small_data, store, load_catalog(), ["zeroeval"])
    pool = ReplayPool.load(store, ["zeroeval"], POOL, tasks=["math-l5"])
    StandInEmbedder(store.path / "embeddings").encode_items("zeroeval", pool.items())
    suites = root / "suites.yaml"
    suites.write_text(
        "- name: zeroeval-math\n"
        "  source: zeroeval\n"
        "  tasks: [math-l5]\n"
        f"  pool: [{', '.join(POOL)}]\n"
        "  strong: gpt-4o-mini-2024-07-18\n"
        "  weak: gemma-2-2b-it\n"
        "  self_model: gemma-2-2b-it\n"
    )
    return store.path, suites


def flags(small_data: Path, setup: tuple[Path, Path]) -> list[str]:
    """The data, store and suites options of every command here."""
    store, suites = setup
    return ["--from", str(small_data), "--store", str(store), "--suites", str(suites)]


def trained(small_data: Path, setup: tuple[Path, Path], out: Path, steps: int) -> str:
    """Train a policy of ``steps`` steps into ``out``; what the command printed."""
    common = flags(small_data, setup)
    code, output = run(
        "train", "policy", *common, "--out", str(out), "--steps", str(steps)
    )
    assert code == 0, output
    return output


def test_train_then_evaluate_the_policy(
    small_data: Path, setup: tuple[Path, Path], tmp_path: Path
) -> None:
    common = flags(small_data, setup)
    ckpt = tmp_path / "ckpt"
    output = trained(small_data, setup, ckpt, 4)
    assert "zeroeval-math" in output and "trained 4 steps" in output
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["suites"]["zeroeval-math"]["pool"] == POOL
    assert manifest["hyperparameters"]["steps"] == 4
    assert manifest["hyperparameters"]["threads"] == 2
    lines = (ckpt / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4
    first = json.loads(lines[0])
    assert {"train/reward", "train/accuracy", "actions/call", "actions/select"} <= set(
        first
    )
    # The curves drawn beside the log are the log's numbers.
    assert (ckpt / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = [json.loads(line) for line in lines]
    panels = write_curves(ckpt / "metrics.jsonl", tmp_path / "again.png")
    reward = panels["episodes sampled in training"]["reward"]
    assert reward == ([1.0, 2.0, 3.0, 4.0], [x["train/reward"] for x in logged])
    dev = panels["dev AIQ of the greedy policy (dashed: the best baseline's)"]
    assert dev["zeroeval-math"] == ([4.0], [logged[3]["dev/aiq/zeroeval-math"]])
    assert dev["baseline: zeroeval-math"][1] == [
        logged[3]["dev/baseline/zeroeval-math"]
    ]
    (tmp_path / "torn.jsonl").write_text(lines[0] + "\n" + lines[1][:20] + "\n")
    with pytest.raises(DataError) as info:
        write_curves(tmp_path / "torn.jsonl", tmp_path / "torn.png")
    assert str(info.value) == (
        f"{tmp_path / 'torn.jsonl'}, line 2, is not JSON; the metrics file is damaged"
    )

    out = tmp_path / "eval"
    code, output = run("eval", *common, "--out", str(out), "--policy", str(ckpt))
    assert code == 0, output
    assert "rl-router" in output
    report = json.loads((out / "report.json").read_text())
    rows = report["suites"]["zeroeval-math"]["policies"]
    learned = next(p for p in rows if p["name"] == "rl-router")
    assert learned["knob"] == "lambda"
    knobs = [point["knob"] for point in learned["curve"]]
    assert min(knobs) == 0.1 and max(knobs) == 3e4 and 2.0 in knobs
    assert "| rl-router |" in (out / "report.md").read_text()
    # Trained on the records it is evaluated on: no note says otherwise.
    notes = report["suites"]["zeroeval-math"]["notes"]
    assert not [n for n in notes if "was trained on other records" in n]

    # Two checkpoints in folders of one name are told apart by their parents;
    # the same checkpoint twice is refused.
    for parent in ("a", "b"):
        (tmp_path / parent / "ckpt").mkdir(parents=True)
        for file in ckpt.iterdir():
            (tmp_path / parent / "ckpt" / file.name).write_bytes(file.read_bytes())
    both = [
        "--policy",
        str(tmp_path / "a" / "ckpt"),
        "--policy",
        str(tmp_path / "b" / "ckpt"),
    ]
    code, output = run("eval", *common, "--out", str(tmp_path / "two"), *both)
    assert code == 0, output
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    rows = {p["name"]: p for p in report["suites"]["zeroeval-math"]["policies"]}
    assert (
        rows["rl-router:a/ckpt"]["aiq"]
        == rows["rl-router:b/ckpt"]["aiq"]
        == learned["aiq"]
    )
    code, output = run(
        "eval", *common, "--out", str(tmp_path / "same"), "--policy", str(ckpt),
        "--policy", str(tmp_path / "." / "ckpt"),
    )  # fmt: skip
    assert code == 1
    assert output == f"error: --policy {ckpt.resolve()} is given twice; give it once\n"


def test_route_one_request_with_the_trained_policy(
    small_data: Path, setup: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt = tmp_path / "ckpt"
    trained(small_data, setup, ckpt, 3)
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        f"models:\n  - {{model: {POOL[0]}, backend: replay}}\n"
        f"  - {{model: {POOL[1]}, backend: replay}}\n"
        "replay: {source: zeroeval}\n"
    )
    janet = (
        "Janet's ducks lay 16 eggs per day. She eats three for breakfast every "
        "morning and bakes muffins for her friends every day with four. She sells "
        "the remainder at the farmers' market daily for $2 per fresh duck egg. How "
        "much in dollars does she make every day at the farmers' market?"
    )
    store = ["--store", str(setup[0]), "--from", str(small_data)]
    route_flags = ["--policy", str(ckpt), "--pool", str(pool), *store]
    code, output = run("route", janet, *route_flags, "--json")
    assert code == 0, output
    result = json.loads(output)
    assert result["answered_by"] and set(result["answered_by"]) <= set(POOL[:2])
    models = [c for c in result["calls"] if not c["by_router"]]
    assert models and {c["model"] for c in models} <= set(POOL[:2])
    # The policy decides for free: the episode costs what its model calls cost.
    assert result["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in models))
    assert result["cost_usd"] > 0
    code, output = run("route", janet, *route_flags)
    assert code == 0, output
    assert f"over {len(models)} model call(s)," in output
    # Replayed calls are billed at the prices of --catalog: the records are
    # re-ingested at them from --from, into a copy of the store here.
    repriced = tmp_path / "store"
    shutil.copytree(setup[0], repriced)
    dear = tmp_path / "dear.yaml"
    dear.write_text(
        "".join(
            f"- {{id: {m}, input_per_mtok: 15.0, output_per_mtok: 60.0}}\n"
            for m in POOL
        )
    )
    code, output = run(
        "route", janet, "--policy", str(ckpt), "--pool", str(pool), "--json",
        "--store", str(repriced), "--from", str(small_data), "--catalog", str(dear),
    )  # fmt: skip
    assert code == 0, output
    result = json.loads(output[output.index("{") :])
    calls = [c for c in result["calls"] if not c["by_router"]]
    assert calls and result["cost_usd"] == pytest.approx(
        sum(c["input_tokens"] * 15e-6 + c["output_tokens"] * 60e-6 for c in calls)
    )
    code, output = run("route", janet, *route_flags, "--lambda", "1e6")
    assert code == 1
    assert output.strip() == (
        f"error: lambda 1e+06 is outside the range the policy at {ckpt} was trained "
        "on (0.1 to 30000); choose a lambda in that range or train a policy over a "
        "wider one"
    )
    # Without --lambda, a policy routes at its own default lambda, here one of a
    # range that leaves out 1.
    narrow = tmp_path / "narrow"
    code, output = run(
        "train", "policy", *flags(small_data, setup), "--out", str(narrow),
        "--steps", "3", "--lambda-min", "2", "--lambda-max", "100",
        "--default-lambda", "10", "--threads", "1",
    )  # fmt: skip
    assert code == 0, output
    settings = json.loads((narrow / "manifest.json").read_text())["hyperparameters"]
    assert (settings["threads"], settings["lam_min"], settings["lam_max"]) == (
        1,
        2,
        100,
    )
    code, output = run("route", janet, "--policy", str(narrow), "--pool", str(pool),
                       *store, "--json")  # fmt: skip
    assert code == 0, output
    assert json.loads(output)["answered_by"]


def test_eval_refuses_a_pool_the_policy_cannot_route_before_any_work(
    small_data: Path, setup: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt = tmp_path / "ckpt"
    trained(small_data, setup, ckpt, 2)
    suites = tmp_path / "two.yaml"
    suites.write_text(
        setup[1].read_text() + "- name: gsm-other\n"
        "  source: zeroeval\n"
        "  tasks: [gsm8k]\n"
        "  pool: [gpt-4o-mini-2024-07-18, gpt-4o-2024-08-06]\n"
        "  strong: gpt-4o-2024-08-06\n"
        "  weak: gpt-4o-mini-2024-07-18\n"
    )
    store = ["--from", str(small_data), "--store", str(setup[0])]
    out = tmp_path / "report"
    code, output = run(
        "eval",
        *store,
        "--suites",
        str(suites),
        "--out",
        str(out),
        "--policy",
        str(ckpt),
    )
    assert code == 1
    # Nothing of the first suite was evaluated before the second one's refusal.
    assert output == (
        f"error: the policy at {ckpt} was trained without gpt-4o-2024-08-06; it "
        f"knows {', '.join(POOL)}. Give it a pool of those models, or "
        "train again with this pool\n"
    )
    assert not out.exists()


def test_bad_input_is_one_clear_line(
    small_data: Path, setup: tuple[Path, Path], tmp_path: Path
) -> None:
    common = flags(small_data, setup)
    absent = tmp_path / "absent"
    code, output = run("eval", *common, "--out", str(tmp_path), "--policy", str(absent))
    assert code == 1 and "Traceback" not in output
    assert f"error: no checkpoint at {absent}: it does not exist" in output
    router_run = tmp_path / "router-run"
    router_run.mkdir()
    (router_run / "latest.json").write_text('{"checkpoint": "checkpoint-sft-000001"}')
    for force in ([], ["--force"]):
        code, output = run("train", "policy", *common, "--out", str(router_run), *force)
        assert code == 1
        assert output == (
            f"error: {router_run} holds a run of `xrouter train router`; give the "
            "policy an --out of its own (nothing there is replaced, --force or not)\n"
        )
    code, output = run(
        "train", "policy", *common, "--out", str(tmp_path), "--lambda-min", "0"
    )
    assert code == 1
    assert (
        "error: the lambda range must satisfy 0 < min < max, both finite, got 0 to "
        "30000" in output
    )


def test_a_failed_run_leaves_an_earlier_checkpoint_whole(
    small_data: Path,
    setup: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    common = flags(small_data, setup)
    ckpt = tmp_path / "ckpt"
    code, output = run("train", "policy", *common, "--out", str(ckpt), "--steps", "3")
    assert code == 0, output
    before = {f.name: f.read_bytes() for f in ckpt.iterdir()}

    # A second run into the same directory is interrupted at its second step.
    from xrouter.train import grpo

    step = grpo._train_step
    calls = []

    def interrupted(*args: object, **kwargs: object) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return step(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(grpo, "_train_step", interrupted)
    code, output = run("train", "policy", *common, "--out", str(ckpt), "--seed", "1")
    assert code == 1 and calls == []
    assert output == (
        f"error: {ckpt} already holds a policy checkpoint; pass --force to replace "
        "it (it stays whole until the new one is written), or choose another --out\n"
    )
    code, output = run(
        "train", "policy", *common, "--out", str(ckpt), "--seed", "1", "--force"
    )
    assert code == 130 and "interrupted" in output
    # The checkpoint's weights, manifest and metrics are those of the first run;
    # the interrupted run's one step is kept aside.
    assert {f: (ckpt / f).read_bytes() for f in before} == before
    partial = (ckpt / "metrics.jsonl.partial").read_text().splitlines()
    assert [json.loads(line)["step"] for line in partial] == [1]
    monkeypatch.setattr(grpo, "_train_step", step)

    # A run whose manifest cannot be written (a directory stands where it goes,
    # as a full disk would refuse it) fails in one line before either file moves.
    blocker = ckpt / "manifest.json.tmp"
    blocker.mkdir()
    code, output = run(
        "train", "policy", *common, "--out", str(ckpt), "--steps", "2", "--force"
    )
    assert code == 1
    assert output.endswith(
        f"error: {blocker}: is a directory; fix that and run the command again\n"
    )
    assert {f: (ckpt / f).read_bytes() for f in before} == before
    assert not (ckpt / "policy.safetensors.tmp").exists()
    load_checkpoint(ckpt)


def test_a_failed_command_removes_the_directories_it_made(
    small_data: Path, setup: tuple[Path, Path], tmp_path: Path
) -> None:
    store, _ = setup
    out = tmp_path / "new" / "ckpt"
    missing = tmp_path / "missing.yaml"
    code, output = run(
        "train", "policy", "--from", str(small_data), "--store", str(store),
        "--suites", str(missing), "--out", str(out),
    )  # fmt: skip
    assert code == 1 and "Traceback" not in output
    assert not (tmp_path / "new").exists()


def test_suites_without_records_are_named(
    small_data: Path, setup: tuple[Path, Path], tmp_path: Path
) -> None:
    store, suites = setup
    both = tmp_path / "suites.yaml"
    both.write_text(
        suites.read_text() + "- name: arena\n"
        "  source: routellm\n"
        "  pool: [gpt-4-1106-preview, mixtral-8x7b-instruct-v0.1@together]\n"
        "  strong: gpt-4-1106-preview\n"
        "  weak: mixtral-8x7b-instruct-v0.1@together\n"
        "  self_model: mixtral-8x7b-instruct-v0.1@together\n"
    )
    common = ["--from", str(small_data), "--store", str(store), "--suites", str(both)]
    out = tmp_path / "ckpt"
    code, output = run("train", "policy", *common, "--out", str(out), "--steps", "2")
    assert code == 0, output
    assert f"suite arena skipped: no routellm folder under {small_data}" in output
    assert "trained 2 steps" in output


def test_a_checkpoint_trained_on_other_records_is_noted() -> None:
    trained = SimpleNamespace(
        manifest={"data": {"fingerprints": {"zeroeval": "v2-1a2b-3c4d"}}}
    )
    learned: Any = [(trained, "rl-router")]
    assert _other_data(learned, "zeroeval", "v2-1a2b-3c4d") == []
    assert _other_data(learned, "routerbench", "v3-9f9f-3c4d") == []  # not trained on
    assert _other_data(learned, "zeroeval", "v3-5e6f-3c4d") == [
        "rl-router was trained on other records of zeroeval than the store holds now "
        "(data fingerprint v2-1a2b-3c4d, now v3-5e6f-3c4d); retrain it on these to "
        "compare like with like"
    ]
    assert _other_data(learned, "zeroeval", "v2-1a2b-7e7e") == [
        "rl-router was trained on these records of zeroeval at other prices of its "
        "models than the catalog's now; it routes with the new prices (retrain it "
        "at them to compare like with like)"
    ]
