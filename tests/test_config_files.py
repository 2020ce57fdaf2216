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
    file.write_text("models:\n  - {model: [oops\n")
    with pytest.raises(ConfigError) as caught:
        load_pool_spec(file)
    assert str(caught.value) == (
        f"pool file {file} is not valid YAML at line 3, column 1: expected ',' or "
        "']', but got '<stream end>'"
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


def _serve(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from xrouter.cli import serve  # noqa: F401  (registers the command)
    from xrouter.cli.app import app

    result = CliRunner().invoke(app, ["serve", *args])
    return result.exit_code, result.output


def _gateway_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    """A gateway config of ``text``, in a home of its own."""
    monkeypatch.setenv("XROUTER_HOME", str(tmp_path / "home"))
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    return config


def test_a_gateway_that_cannot_load_its_pool_exits_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "pool: absent.yaml\nrouter: {checkpoint: policy}\n"
    config = _gateway_yaml(tmp_path, monkeypatch, text)
    code, output = _serve("--config", str(config), "--port", "18931")
    assert code == 1 and "Traceback" not in output
    assert output.splitlines()[-1] == (
        f"error: the gateway could not start: cannot read pool file "
        f"{tmp_path / 'absent.yaml'}: No such file or directory"
    )


def test_a_log_path_that_cannot_hold_a_log_stops_serve_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    config = _gateway_yaml(tmp_path, monkeypatch, f"log: {{path: {folder}}}\n")
    code, output = _serve("--config", str(config), "--port", "18932")
    assert (code, output.splitlines()) == (
        1,
        [
            f"error: request log path {folder} is a directory; give the path of a "
            f"file, such as {folder / 'requests.sqlite'}"
        ],
    )


def test_a_named_checkpoint_that_is_missing_is_not_trained_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _gateway_yaml(tmp_path, monkeypatch, "router: {checkpoint: policy}\n")
    from xrouter.serve.config import load_gateway_config
    from xrouter.serve.startup import _needs_training

    assert not _needs_training(load_gateway_config(config))
    assert _needs_training(load_gateway_config(None))  # the default, never trained


def test_serve_refuses_a_taken_port_and_a_config_that_is_not_text(
    tmp_path: Path,
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = _serve("--port", str(port))
    assert code == 1
    assert output.strip() == (
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "choose another --port, or stop what holds it"
    )
    code, output = _serve("--host", "10.255.255.1", "--port", str(port))
    assert code == 1
    assert output.strip() == (
        f"error: cannot listen on 10.255.255.1:{port} (Cannot assign requested "
        "address); give --host an address of this machine (127.0.0.1, or 0.0.0.0 "
        "for all of them)"
    )
    binary = tmp_path / "gateway.yaml"
    binary.write_bytes(b"\xff\xfe not text")
    code, output = _serve("--config", str(binary))
    assert code == 1
    assert output.strip() == (
        f"error: gateway config {binary} is not UTF-8 text (byte 0); save it as UTF-8"
    )


def _refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: str
) -> ConfigError:
    """What start-up, with no policy trained yet, says of the pool file ``pool``."""
    from xrouter.core.catalog import load_catalog
    from xrouter.serve.startup import prepare

    (tmp_path / "mine.yaml").write_text(pool)
    config = _gateway_yaml(tmp_path, monkeypatch, "pool: mine.yaml\n")
    with pytest.raises(ConfigError) as info:
        prepare(load_gateway_config(config), load_catalog())
    return info.value


def test_a_pool_of_other_models_is_refused_before_the_default_policy_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mistral-Large-2 is a zeroeval model, named as the suite names it.
    refusal = _refused_at_start(
        tmp_path,
        monkeypatch,
        "models:\n"
        "  - {model: gpt-4o-mini-2024-07-18, base_url: 'http://127.0.0.1:9/v1'}\n"
        "  - {model: Mistral-Large-2, base_url: 'http://127.0.0.1:9/v1'}\n"
        "  - {model: gpt-4-1106-preview, base_url: 'http://127.0.0.1:9/v1'}\n",
    )
    assert str(refusal) == (
        "the default policy is trained on the zeroeval suite's models, and the pool "
        f"{tmp_path / 'mine.yaml'} has others (gpt-4-1106-preview); train a policy "
        "on records of this pool (`xrouter data collect`, then `xrouter train "
        "policy --suites FILE --out DIR`) and set router.checkpoint to DIR, or use "
        "router.kind: llm"
    )


def test_a_pool_that_cannot_be_built_is_refused_before_the_default_policy_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    refusal = _refused_at_start(
        tmp_path,
        monkeypatch,
        "models:\n"
        "  - {model: Meta-Llama-3.1-8B-Instruct, base_url: 'http://127.0.0.1:9/v1'}\n"
        "  - {model: deepseek-v2.5-0908}\n",
    )
    assert str(refusal) == (
        "model 'deepseek-v2.5-0908' at https://api.deepseek.com/v1 needs an API key "
        "in $DEEPSEEK_API_KEY, which is not set; export DEEPSEEK_API_KEY=... before "
        "starting."
    )
    assert not (tmp_path / "home" / "policies").exists()


def test_a_request_to_a_gateway_still_starting_gets_503_and_when_to_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Start-up that never ends (as training the default policy takes minutes):
    # requests wait START_WAIT_S for it, then are told to come back.
    import asyncio

    from fastapi.testclient import TestClient

    from xrouter.serve import app as app_module
    from xrouter.serve.gateway import Gateway

    monkeypatch.setenv("XROUTER_HOME", str(tmp_path / "home"))
    config = load_gateway_config(None)
    gateway = Gateway(config)

    async def never() -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(gateway, "start", never)
    monkeypatch.setattr(app_module, "START_WAIT_S", 0.2)
    ask = {"model": "xrouter", "messages": [{"role": "user", "content": "hi"}]}
    with TestClient(app_module.create_app(config, gateway)) as client:
        reply = client.post("/v1/chat/completions", json=ask)
        models = client.get("/v1/models")
        health = client.get("/health")
    assert (reply.status_code, reply.headers["retry-after"]) == (503, "10")
    assert reply.json()["error"]["code"] == "starting"
    assert reply.json()["error"]["message"] == (
        "the gateway is still starting (loading its pool and router, or training "
        "its default policy once); retry in a while, or wait for GET /health to "
        "answer 200"
    )
    assert models.status_code == 503
    assert (health.status_code, health.json()) == (503, {"status": "starting"})
