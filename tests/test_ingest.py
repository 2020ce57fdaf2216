"""Ingest of real source files into the store, and its handling of bad input."""

from __future__ import annotations

import ast
import csv
import gzip
import json
import multiprocessing
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pytest

from xrouter.core.catalog import load_catalog
from xrouter.core.errors import CatalogError, DataError, SourceFormatError, StoreError
from xrouter.records.ingest import ensure_ingested, ingest
from xrouter.records.schema import ITEM_SCHEMA, RECORD_SCHEMA
from xrouter.records.store import Store
from xrouter.records.tokens import count_tokens, first_tokens


@pytest.fixture(scope="module")
def store(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Store:
    target = Store(tmp_path_factory.mktemp("store"))
    ingest(small_data, target, load_catalog())
    return target


def test_every_source_present_is_ingested(store: Store) -> None:
    assert store.sources() == ["llmrouter", "routerbench", "zeroeval"]
    manifest = store.manifest()
    assert manifest["zeroeval"].items == 1319 + 721 + 800
    assert manifest["zeroeval"].records == 3 * (1319 + 721 + 800)
    assert manifest["routerbench"].items == 3164  # 14 of 3,178 sample ids repeat
    assert manifest["llmrouter"].items == 5989  # 119 of 6,108 questions repeat


def test_zeroeval_record_of_janets_ducks(store: Store) -> None:
    records = store.records(["zeroeval"], models=["gpt-4o-mini-2024-07-18"])
    row = records.filter(
        pc.equal(records["item_id"], "zeroeval/gsm8k/gsm8k-main-test-#0")
    )
    record = row.to_pylist()[0]
    assert record["score"] == 1.0 and record["score_origin"] == "verifier"
    assert record["extracted"] == "18"
    assert record["usage_origin"] == "counted" and record["cost_origin"] == "estimated"
    # priced from the card: $0.15 / $0.60 per 1M tokens
    expected = record["input_tokens"] * 0.15e-6 + record["output_tokens"] * 0.60e-6
    assert record["cost_usd"] == pytest.approx(expected, rel=1e-12)


def test_routerbench_costs_are_used_as_recorded(store: Store) -> None:
    records = store.records(["routerbench"], models=["gpt-4-1106-preview"])
    row = records.filter(pc.equal(records["item_id"], "routerbench/mbpp/mbpp.dev.1"))
    record = row.to_pylist()[0]
    assert record["cost_usd"] == pytest.approx(0.010910000000000001)
    assert record["cost_origin"] == "recorded" and record["usage_origin"] == "counted"
    assert record["score"] == 0.0 and record["score_origin"] == "source"


def test_llmrouter_usage_is_estimated_without_response_text(store: Store) -> None:
    records = store.records(["llmrouter"], columns=["response", "usage_origin"])
    assert records.column("response").null_count == records.num_rows
    assert set(records.column("usage_origin").to_pylist()) == {"estimated"}


def test_missing_and_empty_data_dirs_name_the_directory(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    with pytest.raises(
        DataError, match=f"data directory {tmp_path / 'nope'} does not exist"
    ):
        ingest(tmp_path / "nope", store, load_catalog())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        ingest(tmp_path / "empty", store, load_catalog())


def test_truncated_file_is_named_and_earlier_sources_are_kept(
    small_data: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    bad = data / "zeroeval" / "raw_gz" / "gsm__gemma-2-2b-it.json.gz"
    bad.write_bytes(bad.read_bytes()[:5000])
    store = Store(tmp_path / "store")
    with pytest.raises(SourceFormatError, match=f"{bad} is not a readable gzip file"):
        ingest(data, store, load_catalog(), ["routerbench", "zeroeval"])
    assert store.sources() == ["routerbench"]


def test_malformed_json_names_file_and_line(small_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    bad = data / "zeroeval" / "raw_gz" / "crux__gemma-2-2b-it.json.gz"
    bad.write_bytes(gzip.compress(b'[{"id": 1,\n "output": ]'))
    with pytest.raises(SourceFormatError, match=f"{bad}: malformed JSON at line 2"):
        ingest(data, Store(tmp_path / "s"), load_catalog(), ["zeroeval"])


def test_model_without_a_card_is_refused_naming_the_file(
    small_data: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    src = data / "zeroeval" / "raw_gz" / "gsm__gemma-2-2b-it.json.gz"
    odd = src.with_name("gsm__my-private-model.json.gz")
    src.rename(odd)
    with pytest.raises(
        CatalogError, match=f"{odd}: model 'my-private-model' has no model card"
    ):
        ingest(data, Store(tmp_path / "s"), load_catalog(), ["zeroeval"])


def test_ensure_ingested_skips_unchanged_sources(
    small_data: Path, tmp_path: Path
) -> None:
    store = Store(tmp_path / "store")
    ensure_ingested(
        small_data,
        store,
        load_catalog(),
    )
    stamp = store.manifest()["routerbench"].ingested_at
    ensure_ingested(small_data, store, load_catalog())
    assert store.manifest()["routerbench"].ingested_at == stamp


def test_reading_an_empty_store_says_to_ingest(tmp_path: Path) -> None:
    with pytest.raises(
        StoreError, match="is empty; run `xrouter data ingest --from DIR`"
    ):
        Store(tmp_path).items()


def test_a_csv_row_cut_short_is_refused_not_read_with_gaps(
    small_data: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    csv_file = data / "routerbench" / "winograde_test.csv"
    text = csv_file.read_text(encoding="utf-8")
    cut = text.rstrip("\n").rsplit(",", 20)[0] + "\n"  # the last row loses 20 fields
    csv_file.write_text(cut, encoding="utf-8")
    with pytest.raises(
        SourceFormatError, match="a row of 18 fields where the header has 38"
    ):
        ingest(data, Store(tmp_path / "s"), load_catalog(), ["routerbench"])


def test_a_csv_cut_inside_a_quoted_field_or_after_its_header_is_refused(
    copied: tuple[Path, Path], tmp_path: Path
) -> None:
    data, csv_file = copied
    text = csv_file.read_text(encoding="utf-8")
    opened = text.rindex(',"') + 2  # the last quoted field: the file ends inside it
    assert '"' not in text[opened : opened + 5]
    csv_file.write_text(text[: opened + 5], encoding="utf-8")
    line = text.count("\n", 0, text.rindex("\n", 0, opened)) + 2
    assert _refusal(data, tmp_path / "s", "routerbench") == (
        f"{csv_file}, line {line}: the file ends inside a quoted field; the file is "
        "truncated or malformed, fetch it again"
    )
    csv_file.write_text(text.split("\n", 1)[0] + "\n", encoding="utf-8")
    assert _refusal(data, tmp_path / "t", "routerbench") == (
        f"{csv_file} has a header but no rows; the file is truncated, fetch it again"
    )


def test_a_non_numeric_score_names_the_file(small_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    scores = data / "llmrouter" / "dcrouter_preprocessed" / "test.json"
    text = scores.read_text(encoding="utf-8").replace(
        '"gemma-2-9b-it": 1.0', '"gemma-2-9b-it": "n/a"', 1
    )
    scores.write_text(text, encoding="utf-8")
    with pytest.raises(
        SourceFormatError, match=f"{scores}: unexpected content \\(ValueError"
    ):
        ingest(data, Store(tmp_path / "s"), load_catalog(), ["llmrouter"])


@pytest.fixture
def copied(small_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the small data to edit, and its RouterBench Winogrande file."""
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    return data, data / "routerbench" / "winograde_test.csv"


def _refusal(data: Path, store: Path, source: str) -> str:
    """The message ingesting ``source`` from ``data`` into ``store`` fails with."""
    with pytest.raises(SourceFormatError) as refused:
        ingest(data, Store(store), load_catalog(), [source])
    return str(refused.value)


def _rows(file: Path) -> list[list[str]]:
    with file.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def _write_rows(file: Path, rows: list[list[str]]) -> None:
    with file.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)


def _edit_first_row(file: Path, column: str, value: str) -> None:
    rows = _rows(file)
    rows[1][rows[0].index(column)] = value
    _write_rows(file, rows)


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        ("claude-v2", "7.0", "has score 7.0, not in [0, 1]"),
        ("claude-v2", "nan", "has score nan, not in [0, 1]"),
        ("claude-v2|total_cost", "-0.5", "has cost -0.5 USD, not a finite number >= 0"),
        ("claude-v2|total_cost", "inf", "has cost inf USD, not a finite number >= 0"),
    ],
)
def test_a_score_or_cost_no_record_can_have_is_refused_naming_the_file(
    copied: tuple[Path, Path], tmp_path: Path, column: str, value: str, says: str
) -> None:
    data, file = copied
    _edit_first_row(file, column, value)
    message = _refusal(data, tmp_path / "s", "routerbench")
    assert message.startswith(
        f"{file}: unexpected content (ValueError: the record of claude-v2 on "
        "routerbench/"
    )
    assert says in message
    assert Store(tmp_path / "s").sources() == []  # nothing half-written


def test_a_file_missing_a_models_column_is_refused_not_read_without_it(
    copied: tuple[Path, Path], tmp_path: Path
) -> None:
    data, file = copied
    rows = _rows(file)
    gone = rows[0].index("claude-v2")
    _write_rows(file, [r[:gone] + r[gone + 1 :] for r in rows])
    assert _refusal(data, tmp_path / "s", "routerbench") == (
        f"{file}: the header has a column 'claude-v2|total_cost' but no 'claude-v2', "
        "so that model's records cannot be read; fetch the file again"
    )


def test_a_missing_mmlu_subject_or_an_empty_answer_file_is_refused(
    shared_data: Path, small_data: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(shared_data / "routellm", data / "routellm")
    responses = data / "routellm" / "evals" / "mmlu" / "responses"
    (responses / "mmlu_virology.csv").unlink()
    assert _refusal(data, tmp_path / "s", "routellm") == (
        f"{responses} lacks mmlu_virology.csv of the 57 MMLU subjects: point --from "
        "at a complete copy of the data (see `xrouter data pull`)"
    )

    shutil.copytree(small_data / "zeroeval", data / "zeroeval")
    answers = sorted((data / "zeroeval" / "raw_gz").glob("*.json.gz"))[0]
    answers.write_bytes(gzip.compress(b"[]"))
    assert _refusal(data, tmp_path / "z", "zeroeval") == (
        f"{answers} holds an empty list: no answers of its model; fetch it again or "
        "remove it"
    )


def test_a_lone_surrogate_in_a_prompt_is_stored_as_a_replacement_character(
    copied: tuple[Path, Path], tmp_path: Path
) -> None:
    data, file = copied
    rows = _rows(file)
    prompt = ast.literal_eval(rows[1][rows[0].index("prompt")])  # a list of turns
    _edit_first_row(file, "prompt", repr([*prompt[:-1], prompt[-1] + "\ud800"]))
    store = Store(tmp_path / "s")
    ingest(data, store, load_catalog(), ["routerbench"])
    sample = rows[1][rows[0].index("sample_id")]
    items = store.items(["routerbench"])
    found = [
        json.loads(m)
        for i, m in zip(
            items.column("item_id").to_pylist(),
            items.column("messages").to_pylist(),
            strict=True,
        )
        if i.endswith(sample)
    ]
    assert found and found[0][-1][1].endswith("\ufffd")
    assert found[0][-1][1].encode("utf-8")  # text UTF-8 can hold


def test_texts_longer_than_the_tokenizer_takes_are_counted_in_pieces() -> None:
    # The encoder refuses a million characters at once; "a" * 8 is one token.
    assert count_tokens("a" * 1_000_000) == 125_000
    long = "Janet's ducks lay 16 eggs per day. " * 40_000  # 1.4M characters
    assert count_tokens(long) == pytest.approx(40 * count_tokens(long[:35_000]), 1e-3)
    head = first_tokens(long, 300_000)
    assert long.startswith(head) and count_tokens(head) == 300_000
    assert first_tokens(long, 10**7) == long


def test_a_file_given_as_data_dir_is_named(tmp_path: Path) -> None:
    file = tmp_path / "data.csv"
    file.write_text("x")
    with pytest.raises(DataError, match=f"{file} is a file, not a data directory"):
        ingest(file, Store(tmp_path / "s"), load_catalog())


def test_a_broken_link_among_the_source_files_is_one_clear_error(
    copied: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = copied
    raw = data / "zeroeval" / "raw_gz"
    victim = sorted(raw.glob("*.json.gz"))[0]
    victim.unlink()
    victim.symlink_to(tmp_path / "nowhere")
    with pytest.raises(SourceFormatError) as refused:
        ensure_ingested(data, Store(tmp_path / "s"), load_catalog())
    assert str(refused.value) == (
        f"{victim} cannot be read (No such file or directory); fetch the file again"
    )


def test_routerbench_is_read_again_when_the_mbpp_tests_it_borrows_appear(
    small_data: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_data / "routerbench", data / "routerbench")
    store = Store(tmp_path / "s")

    def with_tests() -> int:
        golds = store.items(["routerbench"], tasks=["mbpp"], columns=["task", "gold"])
        return sum(bool(gold) for gold in golds.column("gold").to_pylist())

    ensure_ingested(data, store, load_catalog(), sources=["routerbench"])
    alone = store.manifest()["routerbench"]
    assert with_tests() == 0
    # LLMRouter's copy of MBPP carries the tests RouterBench's prompts lack.
    shutil.copytree(small_data / "llmrouter", data / "llmrouter")
    ensure_ingested(data, store, load_catalog(), sources=["routerbench"])
    assert store.manifest()["routerbench"].fingerprint != alone.fingerprint
    assert with_tests() == 99


def _note_source(path: Path, name: str) -> None:
    """Note one empty source in the store at ``path`` (in a process of its own)."""
    Store(path).write_source(
        name,
        ITEM_SCHEMA.empty_table(),
        RECORD_SCHEMA.empty_table(),
        data_dir=path,
        fingerprint=name,
        seconds=0.0,
    )


def test_sources_noted_by_processes_at_once_are_all_kept(tmp_path: Path) -> None:
    names = [f"collected-p{n}" for n in range(8)]
    with multiprocessing.get_context("fork").Pool(8) as pool:
        pool.starmap(_note_source, [(tmp_path, name) for name in names])
    assert sorted(Store(tmp_path).manifest()) == names


def test_a_zeroeval_gold_that_differs_between_files_or_is_not_a_value_is_refused(
    copied: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = copied
    raw = data / "zeroeval" / "raw_gz"
    first = raw / "gsm__claude-3-haiku-20240307.json.gz"
    later = raw / "gsm__gpt-4o-mini-2024-07-18.json.gz"
    rows = json.loads(gzip.decompress(later.read_bytes()))
    original = json.dumps(rows)

    def refusal(row: int, **fields: object) -> str:
        changed = json.loads(original)
        changed[row].update(fields)
        later.write_bytes(gzip.compress(json.dumps(changed).encode()))
        return _refusal(data, tmp_path / "s", "zeroeval")

    item = f"zeroeval/gsm8k/{rows[5]['id']}"
    assert refusal(5, answer="# 99") == (
        f"{later}: item 5 ({item}) has the gold answer '99', but {first} gives it "
        f"{rows[5]['answer'].lstrip('#').strip()!r}; every model is judged against "
        "one gold, so fetch the files again"
    )
    assert refusal(5, answer=None) == (
        f"{later}: item 5 has answer None, not a string or a number; fetch the file "
        "again"
    )
    assert refusal(2, id=[1, 2]) == (
        f"{later}: item 2 has id [1, 2], not a string or a number; fetch the file again"
    )


def test_routellm_mt_bench_is_scored_by_its_first_turn_and_its_files_are_complete(
    shared_data: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(shared_data / "routellm", data / "routellm")
    store = Store(tmp_path / "s")

    def mt_scores() -> dict[str, float]:
        ingest(data, store, load_catalog(), ["routellm"])
        rows = store.records(["routellm"], columns=["item_id", "model", "score"])
        return {
            r["model"]: r["score"]
            for r in rows.to_pylist()
            if r["item_id"] == "routellm/mt-bench/83"
        }

    # Question 83: GPT-4 Turbo's first turn is rated 10, its second 8.
    assert mt_scores()["gpt-4-1106-preview"] == 1.0
    evals = data / "routellm" / "evals"
    judgements = evals / "mt_bench" / "judgements.jsonl"
    rows = [json.loads(line) for line in judgements.read_text().splitlines()]
    for row in rows:
        if (row["question_id"], row["model"], row["turn"]) == (
            83,
            "gpt-4-1106-preview",
            1,
        ):
            row["score"] = -1  # FastChat's mark of a rating it could not read
    judgements.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert "gpt-4-1106-preview" not in mt_scores()

    rows[0]["score"] = 50
    judgements.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert _refusal(data, tmp_path / "s", "routellm") == (
        f"{judgements}, judgement 1: rating 50 is not from 1 to 10 (or -1, unread); "
        "fetch the file again"
    )
    judgements.write_text("")
    assert _refusal(data, store.path, "routellm") == (
        f"{judgements} holds no judgements; fetch it again"
    )
    flagged = evals / "gsm8k" / "contaminated_prompts.jsonl"
    flagged.unlink()
    assert _refusal(data, store.path, "routellm").startswith(f"{flagged} is missing")


def test_an_empty_llmrouter_score_file_is_refused(
    copied: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = copied
    scores = data / "llmrouter" / "dcrouter_preprocessed" / "test.json"
    for empty in ("[]", "{}"):
        scores.write_text(empty, encoding="utf-8")
        assert _refusal(data, tmp_path / "s", "llmrouter") == (
            f"{scores} must be a non-empty JSON list of scored questions; fetch it "
            "again"
        )


def test_bytes_that_are_not_utf8_are_placed_in_the_file_not_in_a_chunk(
    copied: tuple[Path, Path], tmp_path: Path
) -> None:
    data, csv_file = copied
    raw = csv_file.read_bytes()
    at = len(raw) - 1  # in the last row, far past the decoder's first chunk
    csv_file.write_bytes(raw[:at] + b"\xff" + raw[at:])
    assert _refusal(data, tmp_path / "s", "routerbench") == (
        f"{csv_file}: byte {at:,} is not UTF-8 text; fetch the file again"
    )


def test_a_gzip_file_whose_text_is_not_utf8_says_so(
    copied: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = copied
    packed = data / "zeroeval" / "raw_gz" / "gsm__gemma-2-2b-it.json.gz"
    text = gzip.decompress(packed.read_bytes())
    at = text.index(b'"id"')
    packed.write_bytes(gzip.compress(text[:at] + b"\xc3\x28" + text[at:]))
    assert _refusal(data, tmp_path / "s", "zeroeval") == (
        f"{packed}: byte {at:,} of its decompressed text is not UTF-8 text; fetch "
        "the file again"
    )


def test_a_source_named_twice_is_ingested_once(
    small_data: Path, tmp_path: Path
) -> None:
    infos = ingest(
        small_data, Store(tmp_path / "s"), load_catalog(), ["llmrouter", "llmrouter"]
    )
    assert [info.name for info in infos] == ["llmrouter"]
