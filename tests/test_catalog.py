"""Tests of the model catalog: shipped cards, prices, data-source names, user YAML."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from xrouter.core.catalog import (
    CAPABILITIES,
    SHIPPED_CARDS_DIR,
    TIERS,
    Catalog,
    ModelCard,
    load_catalog,
    read_cards,
)
from xrouter.core.errors import CatalogError, ConfigError

REQUIRED = (
    "id, provider, route, input_per_mtok, output_per_mtok, context_window, tier, "
    "description, price_source, price_date"
)
FIX = f"Every card needs {REQUIRED}; prices are USD per 1M tokens, from 0 to 10,000."

# The published xRouter pool: shared/data/prices/xrouter_pool.md (the authors'
# router_utils.py, October 2025) with the gpt-4.1-nano list price of 0.40 output.
XROUTER_POOL = {
    "gpt-5": (1.25, 10.00, "premium"),
    "gpt-5-mini": (0.25, 2.00, "standard"),
    "gpt-5-nano": (0.05, 0.40, "budget"),
    "gpt-4o": (2.50, 10.00, "premium"),
    "gpt-4o-mini": (0.15, 0.60, "budget"),
    "gpt-4.1": (2.00, 8.00, "premium"),
    "gpt-4.1-mini": (0.40, 1.60, "budget"),
    "gpt-4.1-nano": (0.10, 0.40, "budget"),
    "o3": (2.00, 8.00, "specialized"),
    "o4-mini": (1.10, 4.40, "standard"),
    "gpt-oss-120b": (0.15, 0.60, "standard"),
    "gpt-oss-20b": (0.05, 0.20, "budget"),
    "qwen3-235b-a22b-instruct-2507": (0.20, 0.60, "premium"),
    "qwen3-235b-a22b-thinking-2507": (0.65, 3.00, "specialized"),
    "qwen3-coder-480b-a35b-instruct": (2.00, 2.00, "specialized"),
    "kimi-k2-instruct": (1.00, 3.00, "premium"),
    "deepseek-r1": (3.00, 7.00, "premium"),
    "deepseek-r1-0528": (0.55, 2.19, "standard"),
}

# Cards priced from RouterArena's cost.json: a name of the card -> its key there.
ROUTERARENA_KEYS = {
    "gpt-4-1106-preview": "gpt-4-1106-preview",
    "gpt-3.5-turbo-1106": "gpt-3.5-turbo-1106",
    "gpt-4-turbo-2024-04-09": "gpt-4-turbo",
    "claude-3-haiku-20240307": "claude-3-haiku-20240307",
    "claude-3-5-sonnet-20240620": "anthropic/claude-3.5-sonnet",
    "Mistral-Large-2": "mistral-large-latest",
    "Mistral-Nemo-Instruct-2407": "open-mistral-nemo",
    "mistralai/mixtral-8x7b-chat": "mistralai/mixtral-8x7b-instruct",
    "mistralai/mistral-7b-chat": "mistralai/mistral-7b-instruct",
    "Meta-Llama-3.1-70B-Instruct": "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo",
    "Meta-Llama-3-70B-Instruct": "meta-llama/Meta-Llama-3-70B-Instruct-Turbo",
    "Meta-Llama-3-8B-Instruct": "meta-llama/llama-3-8b-instruct",
    "Meta-Llama-3.1-8B-Instruct": "llama-3-1-8b-instruct",
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def card_yaml(card_id: str = "my-model", **fields: object) -> str:
    """One valid card as YAML text (a list item); ``fields`` override or drop (None)."""
    values: dict[str, object] = {
        "id": card_id,
        "provider": "together",
        "route": "my-org/my-model",
        "input_per_mtok": 0.5,
        "output_per_mtok": 1.5,
        "context_window": 32768,
        "tier": "standard",
        "description": "A test model.",
        "price_source": "https://example.org/pricing",
        "price_date": "2025-01-01",
    }
    values.update(fields)
    lines = [f"{k}: {json.dumps(v)}" for k, v in values.items() if v is not None]
    return "- " + "\n  ".join(lines) + "\n"


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return _write


# --------------------------------------------------------------- shipped catalog


def test_shipped_catalog_loads(catalog: Catalog) -> None:
    assert len(catalog) >= 100
    assert len(set(catalog.ids())) == len(catalog)
    assert sorted(p.name for p in SHIPPED_CARDS_DIR.glob("*.yaml")) == [
        "anthropic.yaml",
        "google.yaml",
        "legacy.yaml",
        "local.yaml",
        "nvidia-nim.yaml",
        "open-models.yaml",
        "openai.yaml",
        "other-apis.yaml",
    ]
    for card in catalog:
        assert isinstance(card.input_per_mtok, float)
        assert isinstance(card.output_per_mtok, float)
        assert card.id == card.id.lower(), card.id
        assert card.tier in TIERS
        assert set(card.capabilities) <= set(CAPABILITIES)
        assert dt.date(2023, 1, 1) <= card.price_date <= dt.date(2026, 1, 1)


def test_loading_is_cached_and_not_done_at_import() -> None:
    assert load_catalog() is load_catalog()
    code = (
        "import xrouter.core.catalog as c; "
        "assert c._shipped_catalog.cache_info().currsize == 0"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def test_gpt5_price(catalog: Catalog) -> None:
    card = catalog.get("gpt-5")
    assert (card.input_per_mtok, card.output_per_mtok) == (1.25, 10.00)
    assert card.id == "gpt-5-2025-08-07"
    assert card.provider == "openai"


def test_cost_of_gpt4o_mini(catalog: Catalog) -> None:
    card = catalog.get("gpt-4o-mini")
    assert card.id == "gpt-4o-mini-2024-07-18"
    expected = 1000 * 0.15e-6 + 500 * 0.60e-6
    assert card.cost(1000, 500) == pytest.approx(expected, rel=1e-12, abs=0)
    assert card.cost(0, 0) == 0.0
    with pytest.raises(ValueError, match="token counts must be >= 0"):
        card.cost(-1, 5)


@pytest.mark.parametrize("name", sorted(XROUTER_POOL))
def test_xrouter_pool_prices(catalog: Catalog, name: str) -> None:
    card = catalog.get(name)
    assert (card.input_per_mtok, card.output_per_mtok, card.tier) == XROUTER_POOL[name]
    assert "xRouter" in card.price_source
    assert card.price_date == dt.date(2025, 10, 1)


def test_router_cards(catalog: Catalog) -> None:
    local = catalog.get("smollm2-135m")
    assert (local.tier, local.provider) == ("local", "local")
    assert (local.input_per_mtok, local.output_per_mtok) == (0.0, 0.0)
    assert local.route == "HuggingFaceTB/SmolLM2-135M-Instruct"
    served = catalog.get("xrouter-router-7b")
    assert (served.input_per_mtok, served.output_per_mtok) == (0.04, 0.10)


def test_hidden_reasoning_is_noted_for_o1(catalog: Catalog) -> None:
    for name in ("o1-mini-2024-09-12", "o1-preview-2024-09-12"):
        assert "exclude its hidden reasoning tokens" in catalog.get(name).description


def test_routerbench_alias_resolves(catalog: Catalog) -> None:
    assert (
        catalog.resolve("mistralai/mixtral-8x7b-chat")
        == "mixtral-8x7b-instruct-v0.1@together"
    )
    assert catalog.resolve("mistralai/Mixtral-8x7B-Instruct-v0.1") == catalog.resolve(
        "Mixtral-8x7B-Instruct-v0.1"
    )
    assert "mistralai/mixtral-8x7b-chat" in catalog
    assert "no-such-model" not in catalog
    assert 42 not in catalog


def test_host_variants_are_separate_cards(catalog: Catalog) -> None:
    ids = {
        catalog.resolve(name)
        for name in (
            "Llama-3.1-405B-Inst@sambanova",
            "Meta-Llama-3.1-405B-Instruct@hyperbolic",
            "Llama-3.1-405B-Inst-fp8",
        )
    }
    assert len(ids) == 3
    assert catalog.resolve("Llama-3.1-405B-Inst-fp8@together") == catalog.resolve(
        "Llama-3.1-405B-Instruct-Turbo"
    )


def test_every_field_is_documented() -> None:
    for name, info in ModelCard.model_fields.items():
        assert info.description, name


# --------------------------------------------------------------- data sources


def zeroeval_names(data: Path) -> set[str]:
    raw = data / "zeroeval" / "raw_gz"
    names = {p.name.split("__", 1)[1].removesuffix(".json.gz") for p in raw.iterdir()}
    official = json.loads((data / "zeroeval" / "official_accuracy.json").read_text())
    return names | {model for task in official.values() for model in task}


def routerbench_names(data: Path) -> set[str]:
    names: set[str] = set()
    for path in sorted((data / "routerbench").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f))
        names |= {col.split("|")[0] for col in header if col.endswith("|total_cost")}
    return names


def routellm_names(data: Path) -> set[str]:
    evals = data / "routellm" / "evals"
    headers = [evals / "gsm8k" / "gsm8k_responses.csv"]
    headers += sorted((evals / "mmlu" / "responses").glob("*.csv"))
    names: set[str] = set()
    for path in headers:
        with path.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f))
        names |= {c for c in header if c != "prompt" and not c.endswith("_response")}
    with (evals / "mt_bench" / "judgements.jsonl").open(encoding="utf-8") as f:
        names |= {json.loads(line)["model"] for line in f if line.strip()}
    return names


def llmrouter_names(data: Path) -> set[str]:
    root = data / "llmrouter"
    candidates = root / "example_data" / "llm_candidates" / "default_llm.json"
    names = set(json.loads(candidates.read_text()))
    for split in ("train", "test"):
        rows = json.loads(
            (root / "dcrouter_preprocessed" / f"{split}.json").read_text()
        )
        names |= {model for row in rows for model in row["scores"]}
    return names


@pytest.mark.parametrize(
    ("source", "names", "at_least"),
    [
        ("ZeroEval", zeroeval_names, 60),
        ("RouterBench", routerbench_names, 11),
        ("RouteLLM", routellm_names, 2),
        ("LLMRouter", llmrouter_names, 9),
    ],
)
def test_every_data_source_model_resolves(
    catalog: Catalog,
    shared_data: Path,
    source: str,
    names: Callable[[Path], set[str]],
    at_least: int,
) -> None:
    found = names(shared_data)
    assert len(found) >= at_least, source
    missing = sorted(name for name in found if name not in catalog)
    assert missing == [], f"{source} models without a card: {missing}"


def test_routerbench_names_are_the_expected_ones(
    catalog: Catalog, shared_data: Path
) -> None:
    assert routerbench_names(shared_data) == {
        "gpt-4-1106-preview",
        "gpt-3.5-turbo-1106",
        "claude-instant-v1",
        "claude-v1",
        "claude-v2",
        "meta/llama-2-70b-chat",
        "mistralai/mixtral-8x7b-chat",
        "mistralai/mistral-7b-chat",
        "zero-one-ai/Yi-34B-Chat",
        "WizardLM/WizardLM-13B-V1.2",
        "meta/code-llama-instruct-34b-chat",
    }
    assert catalog.get("meta/code-llama-instruct-34b-chat").input_per_mtok == 0.776


def test_llmrouter_prices_match_their_file(catalog: Catalog, shared_data: Path) -> None:
    path = (
        shared_data
        / "llmrouter"
        / "example_data"
        / "llm_candidates"
        / "default_llm.json"
    )
    for name, entry in json.loads(path.read_text()).items():
        card = catalog.get(name)
        assert card.id == name
        assert card.provider == "nvidia", name
        assert card.route == entry["model"], name
        assert card.input_per_mtok == entry["input_price"], name
        assert card.output_per_mtok == entry["output_price"], name
    assert catalog.get("qwen2.5-7b-instruct").input_per_mtok == 0.20
    nim_file = (SHIPPED_CARDS_DIR / "nvidia-nim.yaml").read_text(encoding="utf-8")
    assert "feature text says 0.30 / 0.30" in nim_file


def test_routerarena_prices_match_their_file(
    catalog: Catalog, shared_data: Path
) -> None:
    costs = json.loads((shared_data / "prices" / "routerarena_cost.json").read_text())
    for name, key in ROUTERARENA_KEYS.items():
        card = catalog.get(name)
        assert "RouterArena" in card.price_source, name
        assert card.input_per_mtok == costs[key]["input_token_price_per_million"]
        assert card.output_per_mtok == costs[key]["output_token_price_per_million"]
    checked = {catalog.resolve(name) for name in ROUTERARENA_KEYS}
    sourced = {card.id for card in catalog if "RouterArena" in card.price_source}
    assert sourced == checked


# --------------------------------------------------------------- user YAML


def test_user_yaml_overrides_a_price_and_adds_a_card(
    write: Callable[[str, str], Path],
) -> None:
    override = card_yaml(
        "gpt-4o-mini-2024-07-18",
        aliases=["gpt-4o-mini"],
        provider="openai",
        route="gpt-4o-mini-2024-07-18",
        input_per_mtok=0.075,
        output_per_mtok=0.30,
        tier="budget",
    )
    path = write("mine.yaml", override + card_yaml("my-llama", aliases=["llama-x"]))
    mine = load_catalog([path])
    assert mine.get("gpt-4o-mini").input_per_mtok == 0.075
    assert mine.get("gpt-4o-mini").cost(1000, 500) == pytest.approx(0.000225)
    assert mine.resolve("llama-x") == "my-llama"
    assert mine.origin("llama-x") == f"{path}:12"
    assert len(mine) == len(load_catalog()) + 1
    assert load_catalog().get("gpt-4o-mini").input_per_mtok == 0.15
    assert "my-llama" not in load_catalog()


def test_an_entry_naming_a_known_card_may_give_only_its_new_prices(
    write: Callable[[str, str], Path],
) -> None:
    text = "- id: gpt-4o-mini\n  input_per_mtok: 1.50\n  output_per_mtok: 6.00\n"
    path = write("prices.yaml", text)
    mine = load_catalog([path])
    card, shipped = mine.get("gpt-4o-mini"), load_catalog().get("gpt-4o-mini")
    assert (card.id, card.input_per_mtok, card.output_per_mtok) == (
        "gpt-4o-mini-2024-07-18",
        1.50,
        6.00,
    )
    assert card.cost(1000, 500) == pytest.approx(0.0045)
    assert card.price_source == f"override at {path}:1"
    assert card.price_date == dt.date.today()
    same = {"aliases", "provider", "route", "context_window", "tier", "description"}
    assert all(getattr(card, name) == getattr(shipped, name) for name in same)
    assert len(mine) == len(load_catalog())
    # An unknown id still needs a whole card.
    path = write("new.yaml", "- id: my-new-model\n  input_per_mtok: 1.50\n")
    assert "card 'my-new-model' is invalid: missing field 'provider'" in error_of(path)


def test_a_price_beyond_any_published_one_is_refused(
    write: Callable[[str, str], Path],
) -> None:
    path = write("dear.yaml", "- id: gpt-4o-mini\n  input_per_mtok: 1.0e+300\n")
    assert error_of(path) == (
        f"{path}:1: card 'gpt-4o-mini-2024-07-18' is invalid: input_per_mtok must be "
        f"<= 10000, got 1e+300. {FIX}"
    )
    path = write("text.yaml", "- id: gpt-4o-mini\n  input_per_mtok: 1e3\n")
    assert error_of(path) == (
        f"{path}:1: card 'gpt-4o-mini-2024-07-18' is invalid: input_per_mtok: a "
        "number written as text, got '1e3'; write it with a decimal point and a "
        f"signed exponent (1.5e-3 as 1.5e-03, 1e3 as 1.0e+3). {FIX}"
    )


def test_later_user_file_wins_and_override_replaces_aliases(
    write: Callable[[str, str], Path],
) -> None:
    first = write("a.yaml", card_yaml("my-model", aliases=["mm"], input_per_mtok=1.0))
    second = write("b.yaml", card_yaml("my-model", input_per_mtok=2.0))
    merged = load_catalog([first, second])
    assert merged.get("my-model").input_per_mtok == 2.0
    assert "mm" not in merged


def test_empty_user_file_adds_nothing(write: Callable[[str, str], Path]) -> None:
    assert len(load_catalog([write("empty.yaml", "# nothing yet\n")])) == len(
        load_catalog()
    )


def test_read_cards_and_yaml_merge_keys(write: Callable[[str, str], Path]) -> None:
    text = card_yaml("base-model") + "  <<: &host {base_url: 'https://h.example/v1'}\n"
    path = write("anchors.yaml", text)
    (card,) = read_cards(path)
    assert card.base_url == "https://h.example/v1"
    assert card.price_date == dt.date(2025, 1, 1)


# --------------------------------------------------------------- errors


def error_of(path: Path) -> str:
    with pytest.raises(CatalogError) as info:
        load_catalog([path])
    return str(info.value)


def test_bad_yaml_syntax(write: Callable[[str, str], Path]) -> None:
    path = write("syntax.yaml", "- id: a\n  provider: x\n bad: here\n")
    assert error_of(path) == (
        f"{path}:3: invalid YAML (expected <block end>, but found '<block mapping "
        "start>'). Fix the syntax: a card file is a YAML list of mappings, one "
        "'- id: ...' entry per card."
    )


def test_missing_field(write: Callable[[str, str], Path]) -> None:
    path = write("missing.yaml", card_yaml(output_per_mtok=None))
    assert error_of(path) == (
        f"{path}:1: card 'my-model' is invalid: missing field 'output_per_mtok'. {FIX}"
    )


def test_null_price(write: Callable[[str, str], Path]) -> None:
    text = card_yaml().replace("input_per_mtok: 0.5", "input_per_mtok: null")
    path = write("null.yaml", text)
    assert error_of(path) == (
        f"{path}:1: card 'my-model' is invalid: input_per_mtok: Input should be a "
        f"valid number, got None. {FIX}"
    )


def test_negative_price(write: Callable[[str, str], Path]) -> None:
    path = write("negative.yaml", card_yaml() + card_yaml("other", input_per_mtok=-1))
    assert error_of(path) == (
        f"{path}:11: card 'other' is invalid: input_per_mtok must be >= 0, got -1. "
        f"{FIX}"
    )


def test_several_problems_and_unknown_field(write: Callable[[str, str], Path]) -> None:
    path = write("many.yaml", card_yaml(tier="cheap", price=3))
    assert error_of(path) == (
        f"{path}:1: card 'my-model' is invalid: tier: Input should be 'budget', "
        "'standard', 'premium', 'specialized' or 'local', got 'cheap'; unknown field "
        f"'price'. {FIX}"
    )


def test_card_without_id(write: Callable[[str, str], Path]) -> None:
    path = write("noid.yaml", card_yaml(id=None))
    assert error_of(path) == (
        f"{path}:1: card without an id is invalid: missing field 'id'. {FIX}"
    )


def test_duplicate_id_within_one_file(write: Callable[[str, str], Path]) -> None:
    path = write("dup.yaml", card_yaml() + card_yaml())
    assert error_of(path) == (
        f"{path}:11: duplicate card id 'my-model' (first defined at {path}:1). An id "
        "may appear once per file; to override a card, put the new version in a user "
        "YAML file passed with --catalog FILE."
    )


def test_field_given_twice(write: Callable[[str, str], Path]) -> None:
    path = write("twice.yaml", card_yaml() + "  input_per_mtok: 0.1\n")
    assert error_of(path) == (
        f"{path}:11: field 'input_per_mtok' is given twice in one card. Keep one of "
        "the two lines."
    )


def test_alias_clash_with_a_shipped_card(
    write: Callable[[str, str], Path], catalog: Catalog
) -> None:
    path = write("clash.yaml", card_yaml(aliases=["gpt-4o-mini"]))
    shipped = catalog.origin("gpt-4o-mini")
    assert shipped.startswith(f"{SHIPPED_CARDS_DIR / 'openai.yaml'}:")
    assert error_of(path) == (
        f"{path}:1: card 'my-model' uses the name 'gpt-4o-mini', which already names "
        f"card 'gpt-4o-mini-2024-07-18' ({shipped}). A name may point to one card "
        "only: remove it from one of the two cards, or override card "
        "'gpt-4o-mini-2024-07-18' (same id) in your file."
    )


def test_alias_clash_between_two_cards_of_one_file(
    write: Callable[[str, str], Path],
) -> None:
    text = card_yaml("model-a", aliases=["shared"]) + card_yaml(
        "model-b", aliases=["shared"]
    )
    path = write("clash2.yaml", text)
    assert error_of(path) == (
        f"{path}:12: card 'model-b' uses the name 'shared', which already names card "
        f"'model-a' ({path}:1). A name may point to one card only: remove it from one "
        "of the two cards, or override card 'model-a' (same id) in your file."
    )


def test_alias_repeated_within_a_card(write: Callable[[str, str], Path]) -> None:
    path = write("self.yaml", card_yaml(aliases=["x", "my-model", "x"]))
    assert error_of(path) == (
        f"{path}:1: card 'my-model' is invalid: aliases repeat 'my-model', 'x'. {FIX}"
    )


def test_not_a_list(write: Callable[[str, str], Path]) -> None:
    path = write("mapping.yaml", "id: my-model\n")
    assert error_of(path) == (
        f"{path}: expected a YAML list of model cards, got dict. Start each card with "
        f"'- id: ...'; see {SHIPPED_CARDS_DIR} for examples."
    )


def test_list_item_not_a_card(write: Callable[[str, str], Path]) -> None:
    path = write("scalar.yaml", card_yaml() + "- just-a-name\n")
    assert error_of(path) == (
        f"{path}:11: expected a card (a mapping of fields), got str. Each list entry "
        "must look like '- id: ...'."
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert error_of(path) == (
        f"{path}: cannot read this card file ([Errno 2] No such file or directory: "
        f"'{path}'). Check the path given to --catalog or under catalog: in a pool "
        "file; card files are UTF-8 YAML."
    )


def test_infinite_price_is_refused(write: Callable[[str, str], Path]) -> None:
    path = write(
        "inf.yaml", card_yaml().replace("input_per_mtok: 0.5", "input_per_mtok: .inf")
    )
    assert "input_per_mtok" in error_of(path)
    assert "finite number" in error_of(path)


def test_unknown_model_suggests_close_names(catalog: Catalog) -> None:
    with pytest.raises(CatalogError) as info:
        catalog.get("gpt-4o-mimi")
    assert str(info.value) == (
        "unknown model 'gpt-4o-mimi'. Did you mean 'gpt-4o-mini', 'gpt-4.1-mini', "
        "'gpt-5-mini'? To use a model the catalog lacks, write a card for it in a YAML "
        "file of your own (a list of cards with the fields of the shipped "
        f"{SHIPPED_CARDS_DIR}/*.yaml) and pass the file with --catalog PATH (CLI), "
        "list it under catalog: in the gateway's pool file, or call "
        "load_catalog(extra=[path])."
    )
    assert isinstance(info.value, ConfigError)
    with pytest.raises(CatalogError, match="Did you mean 'claude-3-haiku-20240307'"):
        catalog.resolve("Claude-3-Haiku")
    with pytest.raises(CatalogError, match="No similar name is known"):
        catalog.resolve("zzzzzzzzzzzzzzzzzzzzzzzz")


# --------------------------------------------------------------- the card model


def test_card_is_frozen_strict_and_consistent() -> None:
    (card,) = [
        ModelCard.model_validate(
            {
                "id": "m",
                "provider": "together",
                "route": "r",
                "input_per_mtok": 1,
                "output_per_mtok": 2.5,
                "context_window": 8192,
                "tier": "budget",
                "description": "d",
                "price_source": "s",
                "price_date": "2024-01-01",
            }
        )
    ]
    assert card.input_per_mtok == 1.0
    assert card.names == ("m",)
    with pytest.raises(ValidationError):
        card.input_per_mtok = 0.0
    base = card.model_dump()
    for bad in (
        {"input_per_mtok": "1.25"},
        {"output_per_mtok": True},
        {"context_window": 0},
        {"capabilities": ["long-context"]},
        {"capabilities": ["telepathy"]},
        {"description": "two\nlines"},
        {"api_key_env": "lower-case"},
        {"base_url": "ftp://x"},
    ):
        with pytest.raises(ValidationError):
            ModelCard.model_validate({**base, **bad})
    catalog = Catalog([card])
    assert catalog.ids() == ("m",)
    assert catalog.origin("m") == "<code>"
    assert list(catalog) == [card]
    assert repr(catalog) == "<Catalog of 1 model cards>"
