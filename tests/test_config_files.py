"""Pool files and gateway configs: read into their models, refused with the file and
the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from xrouter.backends.pool import load_pool_spec
from xrouter.core.errors import ConfigError
from xrouter.serve.config import GatewayConfig, load_gateway_config


def test_an_empty_gateway_config_is_the_offline_default(tmp_path: Path) -> None:
    file = tmp_path / "gateway.yaml"
    file.write_text("")
    assert load_gateway_config(file) == GatewayConfig()
    assert load_gateway_config(None).router.kind == "policy"


def test_gateway_config_paths_are_read_from_the_files_folder(tmp_path: Path) -> None:
    file = tmp_path / "gateway.yaml"
    file.write_text(
        "pool: pools/mine.yaml\n"
        "router: {checkpoint: ckpt, lambda: 4, stream: episode}\n"
    )
    config = load_gateway_config(file)
    assert config.pool == tmp_path / "pools" / "mine.yaml"
    assert config.checkpoint_path == tmp_path / "ckpt"
    assert (config.router.lam, config.router.stream) == (4.0, "episode")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "must be a mapping, got list"),
        ("router: {kind: oracle}\n", "router.kind: Input should be 'policy' or 'llm'"),
        ("router: {stream: later}\n", "router.stream: Input should be 'live' or"),
        ("daily_limit_usd: -1\n", "daily_limit_usd: Input should be greater than"),
        ("colour: blue\n", "colour: Extra inputs are not permitted"),
        ("keys: [\n", "is not valid YAML"),
    ],
)
def test_bad_gateway_configs_name_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    file = tmp_path / "gateway.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(file)
    assert str(caught.value).startswith(f"gateway config {file}")
    assert message in str(caught.value)


def test_pool_files_are_refused_with_what_they_lack(tmp_path: Path) -> None:
    file = tmp_path / "pool.yaml"
    with pytest.raises(ConfigError) as caught:
        load_pool_spec(file)
    assert (
        str(caught.value) == f"cannot read pool file {file}: No such file or directory"
    )
    file.write_text("just text\n")
    with pytest.raises(ConfigError) as caught:
        load_pool_spec(file)
    assert str(caught.value) == (
        f"pool file {file} must be a mapping with a 'models' list, got str"
    )
    file.write_text("models: []\n")
    with pytest.raises(ConfigError, match="models: Tuple should have at least 1 item"):
        load_pool_spec(file)


def test_a_suite_naming_an_unknown_model_is_refused_by_name(tmp_path: Path) -> None:
    from xrouter.core.catalog import load_catalog
    from xrouter.evaluate.suites import load_suites

    file = tmp_path / "suites.yaml"
    file.write_text(
        "- name: mine\n"
        "  source: zeroeval\n"
        "  pool: [gpt-4o-mimi, gpt-4o-2024-08-06]\n"
        "  strong: gpt-4o-2024-08-06\n"
        "  weak: gpt-4o-mimi\n"
    )
    (suite,) = load_suites(file)
    with pytest.raises(ConfigError) as info:
        suite.resolved(load_catalog())
    assert str(info.value).startswith(
        "suite 'mine': unknown model 'gpt-4o-mimi'. Did you mean 'gpt-4o-mini'"
    )
