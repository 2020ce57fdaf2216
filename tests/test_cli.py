"""The `xrouter` command line, run as a user would (typer's runner, real data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xrouter.cli import data, evaluate  # noqa: F401  (registers the sub-commands)
from xrouter.cli.app import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def math_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    file = tmp_path_factory.mktemp("suites") / "suites.yaml"
    file.write_text(
        "suites:\n"
        "  - name: zeroeval-math\n"
        "    source: zeroeval\n"
        "    tasks: [math-l5]\n"
        "    pool: [gpt-4o-mini-2024-07-18, claude-3-haiku-20240307, gemma-2-2b-it]\n"
        "    strong: gpt-4o-mini-2024-07-18\n"
        "    weak: gemma-2-2b-it\n"
        "    self_model: gemma-2-2b-it\n"
    )
    return file


def test_eval_writes_report_table_and_plot(
    small_data: Path, math_suite: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()  # holding an earlier report of another suite, and a file of ours
    (out / "report.json").write_text('{"suites": {"old-suite": {}}}')
    (out / "old-suite.png").write_bytes(b"\x89PNG")
    (out / "notes.txt").write_text("kept")
    code, output = run(
        "eval",
        "--from",
        str(small_data),
        "--out",
        str(out),
        "--suites",
        str(math_suite),
        "--store",
        str(tmp_path / "store"),
    )
    assert code == 0, output
    assert "zeroeval-math: " in output and "oracle" in output
    # The earlier report's plot went with it; nothing else was touched.
    assert sorted(p.name for p in out.iterdir()) == [
        "notes.txt",
        "report.json",
        "report.md",
        "zeroeval-math.png",
    ]
    report = json.loads((out / "report.json").read_text())
    suite = report["suites"]["zeroeval-math"]
    assert suite["pool"] == [
        "gpt-4o-mini-2024-07-18",
        "claude-3-haiku-20240307",
        "gemma-2-2b-it",
    ]
    names = {p["name"] for p in suite["policies"]}
    assert names == {*suite["pool"], "random-mix", "cascade", "knn", "oracle"}
    mini = next(p for p in suite["policies"] if p["name"] == "gpt-4o-mini-2024-07-18")
    assert 0.45 < mini["accuracy"] < 0.60  # ZeroEval publishes 52.15% on MATH-L5
    oracle = next(p for p in suite["policies"] if p["name"] == "oracle")
    assert oracle["accuracy"] >= max(p["accuracy"] for p in suite["policies"])
    assert (out / "zeroeval-math.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| oracle |" in (out / "report.md").read_text()


def test_missing_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    code, output = run(
        "eval", "--from", str(tmp_path / "absent"), "--store", str(tmp_path)
    )
    assert code == 1
    assert f"error: data directory {tmp_path / 'absent'} does not exist" in output
    assert "Traceback" not in output


def test_unknown_suite_lists_the_known_ones(small_data: Path, tmp_path: Path) -> None:
    code, output = run(
        "eval", "--from", str(small_data), "--suite", "nope", "--store", str(tmp_path)
    )
    assert code == 1
    assert (
        "unknown suite nope; choose from zeroeval, routerbench, routellm, llmrouter"
        in output
    )


def test_a_suite_named_without_records_is_refused(
    small_data: Path, tmp_path: Path
) -> None:
    # Left to the defaults, a suite without data is skipped; named, it is required.
    code, output = run(
        "eval",
        "--from",
        str(small_data),
        "--store",
        str(tmp_path / "store"),
        "--suite",
        "zeroeval",
        "--suite",
        "routellm",
        "--out",
        str(tmp_path / "out"),
    )
    assert (code, " ".join(output.split())) == (
        1,
        f"error: suite routellm cannot be read: no routellm folder under {small_data}",
    )
    assert not (tmp_path / "out").exists()


def test_bad_suites_file_names_the_field(small_data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "suites.yaml"
    bad.write_text("suites:\n  - name: x\n    source: zeroeval\n    pool: [a]\n")
    code, output = run("eval", "--from", str(small_data), "--suites", str(bad))
    assert code == 1
    assert f"{bad}: suite 1: strong: Field required" in output


def test_pull_without_network_says_to_use_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xrouter.records import pull

    # A closed loopback port answers like a machine without network: refused at once.
    monkeypatch.setattr(pull, "_API", "http://127.0.0.1:9/{repo}/{commit}")
    code, output = run("data", "pull", "--to", str(tmp_path / "data"))
    assert code == 1
    assert "cannot reach http://127.0.0.1:9/yuchenlin/ZeroEval/" in output
    assert "xrouter data ingest --from DIR" in output
    # A --to that cannot be a directory is named before the network is tried.
    (tmp_path / "afile").write_text("x")
    code, output = run("data", "pull", "--to", str(tmp_path / "afile" / "sub"))
    assert (code, output) == (
        1,
        f"error: cannot create --to directory {tmp_path / 'afile' / 'sub'} (Not a "
        "directory); give a writable directory\n",
    )


def test_verify_refuses_bad_arguments_and_a_damaged_published_file(
    small_data: Path, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    code, output = run("data", "verify", "--from", str(small_data), "--json",
                       str(tmp_path), "--store", store)  # fmt: skip
    assert (code, output) == (
        1, f"error: --json {tmp_path} is a directory; give a file path\n"
    )  # fmt: skip
    code, output = run("data", "verify", "--from", str(small_data), "--source",
                       "nosuch", "--store", store)  # fmt: skip
    assert (code, output) == (
        1,
        "error: unknown source 'nosuch'; choose from zeroeval, routerbench, "
        "routellm, llmrouter\n",
    )
    copy = tmp_path / "data"
    shutil.copytree(small_data, copy)
    published = copy / "zeroeval" / "official_accuracy.json"
    for damage in ('{"gsm": {"gpt-4o-mini-2024-07-18": "high"}}', "[1, 2]"):
        published.write_text(damage, encoding="utf-8")
        code, output = run("data", "verify", "--from", str(copy), "--source",
                           "zeroeval", "--store", store)  # fmt: skip
        assert code == 1 and output.splitlines()[-1] == (
            f"error: {published} must map each task to its models' accuracies "
            '(numbers), as {"gsm": {"gpt-4o-mini-2024-07-18": 94.24}}; fetch the '
            "file again"
        )


def test_verify_writes_rows_with_the_published_figures(
    small_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "verify.json"
    code, output = run(
        "data",
        "verify",
        "--from",
        str(small_data),
        "--source",
        "zeroeval",
        "--json",
        str(out),
        "--store",
        str(tmp_path / "store"),
    )
    assert code == 0, output
    assert (
        "zeroeval gsm8k: 3 models, max |diff| 0.00 points, 3 within 1 point" in output
    )
    rows = json.loads(out.read_text())
    mini = next(
        r
        for r in rows
        if r["task"] == "math-l5" and r["model"] == "gpt-4o-mini-2024-07-18"
    )
    assert mini["official"] == 52.15 and abs(mini["ours"] - 52.15) < 0.01
    assert {"task", "model", "ours", "official"} <= set(mini)


def write_suites(tmp_path: Path, body: str) -> Path:
    file = tmp_path / "suites.yaml"
    file.write_text("suites:\n" + body)
    return file


TWO = (
    "  - name: {name}\n    source: {source}\n"
    "    pool: [gpt-4-1106-preview, mistralai/mixtral-8x7b-chat]\n"
    "    strong: gpt-4-1106-preview\n    weak: mistralai/mixtral-8x7b-chat\n"
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            TWO.format(name="rb", source="routerbnech"),
            "suite 1: unknown source 'routerbnech'; choose from zeroeval, routerbench",
        ),
        (
            TWO.format(name="rb", source="routerbench") * 2,
            "suite 2: the name 'rb' is taken by an earlier suite",
        ),
        (
            TWO.format(name="../escape", source="routerbench"),
            "suite name '../escape' must be letters, digits",
        ),
        (
            "  - name: [oops\n",
            "not valid YAML at line 3, column 1: expected ',' or ']'",
        ),
        (
            TWO.format(name="rb", source="routerbench") + "    tasks: []\n",
            "suite 'rb' lists no tasks; leave tasks out to take every task of its "
            "source, or name some",
        ),
        (
            TWO.format(name="rb", source="routerbench")
            + "    tasks: [mbpp, winogrnade]\n",
            "source(s) routerbench have no items of task(s) winogrnade; their tasks "
            "are arc-challenge, mbpp, winogrande",
        ),
        (
            TWO.format(name="rb", source="routerbench").replace(
                "[gpt-4-1106-preview, mistralai/mixtral-8x7b-chat]",
                "gpt-4-1106-preview",
            ),
            "suite 1: pool: give a list, e.g. [gpt-4-1106-preview, ...], not one name",
        ),
    ],
)
def test_bad_suites_are_refused_before_any_work(
    small_data: Path, tmp_path: Path, body: str, message: str
) -> None:
    code, output = run(
        "eval",
        "--from",
        str(small_data),
        "--suites",
        str(write_suites(tmp_path, body)),
        "--store",
        str(tmp_path / "s"),
    )
    assert code == 1 and message in output, output
    assert "Traceback" not in output


def test_a_two_model_suite_runs_without_the_cascade(
    small_data: Path, tmp_path: Path
) -> None:
    suites = write_suites(tmp_path, TWO.format(name="pair", source="routerbench"))
    out = tmp_path / "out"
    code, output = run(
        "eval",
        "--from",
        str(small_data),
        "--suites",
        str(suites),
        "--out",
        str(out),
        "--store",
        str(tmp_path / "s"),
    )
    assert code == 0, output
    assert "note: cascade left out: it needs two cheap models and a third" in output
    names = {
        p["name"]
        for p in json.loads((out / "report.json").read_text())["suites"]["pair"][
            "policies"
        ]
    }
    assert names == {
        "gpt-4-1106-preview",
        "mixtral-8x7b-instruct-v0.1@together",
        "random-mix",
        "knn",
        "oracle",
    }


def test_a_pool_whose_models_cost_the_same_gets_no_aiq_and_says_why(
    small_data: Path, tmp_path: Path
) -> None:
    # Three of LLMRouter's models have one price, $0.20 per 1M tokens in and out.
    suites = write_suites(
        tmp_path,
        "  - name: same-price\n    source: llmrouter\n"
        "    pool: [qwen2.5-7b-instruct, llama-3.1-8b-instruct, "
        "mistral-7b-instruct-v0.3]\n"
        "    strong: llama-3.1-8b-instruct\n    weak: mistral-7b-instruct-v0.3\n",
    )
    out = tmp_path / "out"
    code, output = run(
        "eval", "--from", str(small_data), "--suites", str(suites),
        "--out", str(out), "--store", str(tmp_path / "s"),
    )  # fmt: skip
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())["suites"]["same-price"]
    assert {p["name"]: p["aiq"] for p in report["policies"]} == dict.fromkeys(
        [
            "qwen2.5-7b-instruct",
            "llama-3.1-8b-instruct",
            "mistral-7b-instruct-v0.3",
            "random-mix",
            "knn",
            "oracle",
        ]
    )
    (note,) = [n for n in report["notes"] if n.startswith("AIQ not reported")]
    assert note.startswith(
        "AIQ not reported: every pool model costs the same on the test split ($"
    )
    assert note.endswith("per 1k items), so there is no cost range to integrate over")


def test_a_pool_whose_models_share_no_item_is_named_as_such(
    small_data: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "data"
    raw = copy / "zeroeval" / "raw_gz"
    raw.mkdir(parents=True)
    # gemma answered only GSM8K here, claude only MATH: no item has both.
    for name in ("gsm__gemma-2-2b-it", "math-l5__claude-3-haiku-20240307"):
        shutil.copy(small_data / "zeroeval" / "raw_gz" / f"{name}.json.gz", raw)
    suites = write_suites(
        tmp_path,
        "  - name: apart\n    source: zeroeval\n"
        "    pool: [gemma-2-2b-it, claude-3-haiku-20240307]\n"
        "    strong: claude-3-haiku-20240307\n    weak: gemma-2-2b-it\n",
    )
    code, output = run(
        "eval", "--from", str(copy), "--suites", str(suites),
        "--out", str(tmp_path / "out"), "--store", str(tmp_path / "s"),
    )  # fmt: skip
    assert code == 1
    assert output.splitlines()[-1] == (
        "error: suite 'apart' has no items: none of the 2,040 items of zeroeval has "
        "a record of every pool model; choose pool models that answered the same "
        "items (`xrouter data models` lists each model's records)"
    )


def test_an_output_path_that_is_a_file_fails_at_once(
    small_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    out.write_text("x")
    code, output = run(
        "eval",
        "--from",
        str(small_data),
        "--out",
        str(out),
        "--store",
        str(tmp_path / "s"),
    )
    assert code == 1
    assert f"error: output directory {out} is a file; give a directory" in output
    assert not (tmp_path / "s").exists()  # refused before any ingest


def test_brackets_in_paths_survive_in_error_messages(tmp_path: Path) -> None:
    odd = tmp_path / "my[data]"
    code, output = run("eval", "--from", str(odd), "--store", str(tmp_path / "s"))
    assert code == 1
    assert f"data directory {odd} does not exist" in output


def test_models_on_an_empty_store_says_to_ingest(tmp_path: Path) -> None:
    code, output = run("data", "models", "--store", str(tmp_path))
    assert code == 1
    assert "is empty; run `xrouter data ingest --from DIR` first" in output


def test_a_suite_without_test_items_is_one_clear_line(
    small_data: Path,
    math_suite: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As when a user's data is so small that the id hash puts every item in
    train: the evaluation says so rather than averaging over nothing."""
    from xrouter.evaluate import runner as evaluation

    real = evaluation.split_mask
    monkeypatch.setattr(
        evaluation,
        "split_mask",
        lambda ids, split: real(ids, split) & (split != "test"),
    )
    code, output = run(
        "eval", "--from", str(small_data), "--suites", str(math_suite),
        "--out", str(tmp_path / "out"), "--store", str(tmp_path / "s"),
    )  # fmt: skip
    assert code == 1
    assert output.splitlines()[-1] == (
        "error: suite 'zeroeval-math' has no test items: all 721 of its items fall "
        "in other splits (the split is fixed by a hash of the item id, 60/10/30); "
        "ingest more of its data, or leave it out of --suites"
    )
    assert "Traceback" not in output


def test_a_misspelt_suite_key_is_named_beside_the_missing_one(
    small_data: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "suites.yaml"
    bad.write_text(
        "suites:\n  - name: x\n    source: zeroeval\n    pool: [a, b]\n"
        "    strong: a\n    weka: b\n"
    )
    code, output = run("eval", "--from", str(small_data), "--suites", str(bad))
    assert code == 1
    assert " ".join(output.split()) == (
        f"error: {bad}: suite 1: weak: Field required; weka: Extra inputs are not "
        "permitted"
    )
