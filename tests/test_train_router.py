"""Training the LLM router (`xrouter train router`): warm-start traces and their
masks, the SFT and GRPO updates, the clip, resumption and the command line.

A tiny randomly initialised Qwen2-style model and a byte-level BPE tokenizer
trained here stand in for the router; the pool is the real ZeroEval sample of
``zeroeval_store`` (three models) replayed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from _router_suite import POOL, SUITE
from _standin import StandInEmbedder
from accelerate import Accelerator
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from typer.testing import CliRunner

from xrouter.backends.build import router_backend, router_dir
from xrouter.cli import train  # noqa: F401  (registers the sub-commands)
from xrouter.cli.app import app
from xrouter.cli.evaluate import _llm_factory
from xrouter.cli.train import router_settings
from xrouter.core.catalog import load_catalog
from xrouter.core.errors import ConfigError
from xrouter.core.types import ChatRequest, Message, Usage
from xrouter.evaluate.episodes import sample_items
from xrouter.evaluate.runner import evaluate_policy
from xrouter.orchestrator.reward import RewardConfig, reward
from xrouter.orchestrator.tools import router_system_prompt, tool_name
from xrouter.policies.checkpoint import load_checkpoint, save_checkpoint
from xrouter.policies.embedding import Embedder, routing_text
from xrouter.policies.knn import NearestNeighbour
from xrouter.policies.learned import LearnedPolicy, LiveRouter
from xrouter.records.splits import split_mask
from xrouter.train import router_run
from xrouter.train.curves import write_curves
from xrouter.train.env import load_training_data
from xrouter.train.grpo import GRPOConfig, train_policy
from xrouter.train.router_checkpoint import latest_checkpoint
from xrouter.train.router_config import RouterTrainConfig, check_resumable
from xrouter.train.router_data import (
    PolicyTeacher,
    RouterExample,
    RouterTask,
    call_opening,
    chat_text,
    draw_examples,
    encode,
    load_router_task,
    render_trace,
    tokenize_conversation,
)
from xrouter.train.router_eval import Rivals, choice_figures, first_call_logps
from xrouter.train.router_policy import (
    PolicyBackend,
    PromptCache,
    RouterTurnSample,
    load_router_model,
    sample_batch,
)
from xrouter.train.router_rl import (
    Episode,
    clipped_token_loss,
    collect_groups,
    fill_groups,
    group_advantages,
    group_backward,
    grpo_update,
    play_episode,
    turn_logps,
)
from xrouter.train.router_run import train_router
from xrouter.train.router_sft import sft_loss, sft_step, sft_traces, with_contrasts
from xrouter.train.run import checkpoint_manifest

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)
runner = CliRunner()


@pytest.fixture(scope="module")
def task(zeroeval_store: Any) -> RouterTask:
    return load_router_task(zeroeval_store, SUITE, load_catalog(), items=40)


@pytest.fixture(scope="module")
def tiny_dir(task: RouterTask, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 model and a BPE tokenizer trained on the router's texts."""
    catalog = load_catalog()
    texts = [router_system_prompt([catalog.get(m) for m in POOL], lam=1.0)]
    texts += [m.content for r in task.train[:10] for m in task.messages(int(r))]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=600,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML,
    )
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16384,
        tie_word_embeddings=True,
    )
    folder = tmp_path_factory.mktemp("tiny-router")
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def policy_dir(
    zeroeval_store: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """A policy network trained briefly on the pool (stand-in embeddings, cached
    in a folder of their own), and that folder."""
    vectors = tmp_path_factory.mktemp("standin-embeddings")
    catalog = load_catalog()
    data = load_training_data(
        zeroeval_store, [SUITE], catalog, StandInEmbedder(vectors)
    )
    config = GRPOConfig(steps=3, prompts_per_step=16, eval_every=1000)
    result = train_policy(data, config)
    path = tmp_path_factory.mktemp("teacher")
    manifest = checkpoint_manifest(data, config, config.reward(), result, "static")
    save_checkpoint(path, result.net, data.memory, data.models, manifest)
    return path, vectors


def _examples(task: RouterTask, n: int, seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    return draw_examples(rng, task.train, n, POOL, lam_min=0.1, lam_max=100.0)


def test_sft_trace_masks_exactly_the_router_tokens(
    task: RouterTask, tiny_dir: Path
) -> None:
    _, tokenizer = load_router_model(tiny_dir)
    card = load_catalog().get("smollm2-135m")
    example = _examples(task, 1)[0]
    messages = render_trace(task, example, card)
    assert [m.role for m in messages][-3:] == ["assistant", "user", "assistant"]
    first, tool, last = (m.content for m in messages[-3:])
    assert '"name": "call_' in first and "select_response" in last
    assert tool.startswith("<tool_response call_id=")
    assert '"call_id": "c1"' in last  # the id the orchestrator gave the call

    trace = tokenize_conversation(tokenizer, messages)
    assert tokenizer.decode(trace.input_ids) == chat_text(tokenizer, messages)
    trained = [t for t, m in zip(trace.input_ids, trace.mask, strict=True) if m]
    assert trained == encode(tokenizer, first + "<|im_end|>") + encode(
        tokenizer, last + "<|im_end|>"
    )
    # Two spans, each starting right after "<|im_start|>assistant\n".
    starts = [k for k in range(1, len(trace.mask)) if trace.mask[k] > trace.mask[k - 1]]
    assert len(starts) == 2
    head = chat_text(tokenizer, messages[:-3], generation_prompt=True)
    assert starts[0] == len(encode(tokenizer, head))
    untrained = tokenizer.decode(
        [t for t, m in zip(trace.input_ids, trace.mask, strict=True) if not m]
    )
    assert tool in untrained and messages[0].content in untrained
    assert trace.labels().count(-100) == len(trace.mask) - sum(trace.mask)
    # The decision: the tokens that spell the chosen tool's name in the first call.
    chosen = [t for t, c in zip(trace.input_ids, trace.choice, strict=True) if c]
    name = first.split('"name": "')[1].split('"')[0]
    assert name.startswith("call_") and name in tokenizer.decode(chosen)
    assert all(m for m, c in zip(trace.mask, trace.choice, strict=True) if c)
    assert max(k for k, c in enumerate(trace.choice) if c) < starts[1]


def test_a_policy_teacher_plays_the_networks_first_choice(
    task: RouterTask, policy_dir: tuple[Path, Path]
) -> None:
    path, vectors = policy_dir
    checkpoint = load_checkpoint(path)
    teacher = PolicyTeacher(task, checkpoint, StandInEmbedder(vectors))
    card = load_catalog().get("smollm2-135m")
    for example in _examples(task, 6, seed=3):
        chosen = teacher(example)
        assert chosen in example.models
        first = render_trace(task, example, card, teacher)[-3].content
        assert f'"name": "{tool_name(chosen)}"' in first

    # The same choice as the network's own for the prompt, lambda and pool.
    row = int(task.train[0])
    live = LiveRouter(checkpoint, load_catalog(), POOL, POOL[2])
    item = task.records.items([row])[0]
    vector = StandInEmbedder().encode([routing_text(item)])[0]
    tokens = int(task.records.input_tokens[row].max())
    for lam in (0.1, 30.0, 3000.0):
        expected = live.first_decision(vector, lam, tokens).model
        assert teacher(RouterExample(row, lam, POOL)) == expected

    with pytest.raises(ConfigError) as caught:
        teacher.check_range(0.01, 100.0)
    assert str(caught.value) == (
        f"the teacher policy at {path} was trained for lambda 0.1 to 30000; the "
        "examples draw 0.01 to 100. Narrow --lambda-min/--lambda-max to its range"
    )


def test_a_policy_teachers_contrast_is_the_request_at_a_lambda_it_routes_otherwise(
    task: RouterTask, policy_dir: tuple[Path, Path]
) -> None:
    path, vectors = policy_dir
    teacher = PolicyTeacher(task, load_checkpoint(path), StandInEmbedder(vectors))
    grid = np.geomspace(0.1, 3000.0, 13).tolist()
    paired = 0
    for example in _examples(task, 8, seed=5):
        rng = np.random.default_rng(0)
        other = teacher.contrast(example, rng, 0.1, 3000.0)
        choices = {teacher(replace(example, lam=lam)) for lam in grid}
        if other is None:
            # The network makes the same choice at every lambda of the grid.
            assert choices == {teacher(example)}
            continue
        paired += 1
        assert (other.row, other.models) == (example.row, example.models)
        assert other.lam in grid
        assert teacher(other) != teacher(example)
    assert paired > 0

    # Each example is followed by its contrast where it has one; the batch keeps
    # its size, so the later examples make room.
    a, b, c, d = _examples(task, 4, seed=6)
    flipped = {a.row: replace(a, lam=7.0), c.row: replace(c, lam=9.0)}
    batch = with_contrasts([a, b, c, d], lambda ex: flipped.get(ex.row))
    assert batch == [a, flipped[a.row], b, c]
    assert with_contrasts([a, b], lambda ex: None) == [a, b]


def test_an_sft_step_lowers_the_loss_on_the_traces(
    task: RouterTask, tiny_dir: Path
) -> None:
    model, tokenizer = load_router_model(tiny_dir)
    traces = sft_traces(
        task, _examples(task, 2), tokenizer, load_catalog().get("smollm2-135m")
    )
    pad = int(tokenizer.pad_token_id)
    accelerator = Accelerator(gradient_accumulation_steps=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    with torch.no_grad():
        before = float(sft_loss(model, traces, pad))
    for _ in range(3):
        sft_step(model, optimizer, accelerator, traces, pad_id=pad)
    with torch.no_grad():
        after = float(sft_loss(model, traces, pad))
    assert after < before - 0.1


def test_the_choice_weight_weighs_the_tokens_naming_the_choice(
    task: RouterTask, tiny_dir: Path
) -> None:
    model, tokenizer = load_router_model(tiny_dir)
    card = load_catalog().get("smollm2-135m")
    traces = sft_traces(task, _examples(task, 2), tokenizer, card)
    pad = int(tokenizer.pad_token_id)
    with torch.no_grad():
        logits = [model(torch.tensor([t.input_ids])).logits[0] for t in traces]
        per_token = [
            torch.nn.functional.cross_entropy(
                out[:-1], torch.tensor(t.labels()[1:]), reduction="none"
            )
            for out, t in zip(logits, traces, strict=True)
        ]
        losses = torch.cat(per_token)
        trained = torch.tensor([m for t in traces for m in t.mask[1:]]).bool()
        chosen = torch.tensor([c for t in traces for c in t.choice[1:]]).float()
        weights = trained * (1 + 4 * chosen)
        assert float(sft_loss(model, traces, pad)) == pytest.approx(
            float(losses[trained].mean()), rel=1e-4
        )
        assert float(sft_loss(model, traces, pad, 5.0)) == pytest.approx(
            float((losses * weights).sum() / weights.sum()), rel=1e-4
        )


def test_clip_bounds_are_applied() -> None:
    ratio = torch.tensor([1.5, 1.5, 0.5, 0.5, 1.1])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, 2.0])
    loss, clipped = clipped_token_loss(
        ratio.log(), torch.zeros(5), adv, clip_low=0.2, clip_high=0.28
    )
    # r=1.5, A>0: capped at 1.28; A<0: the unclipped -1.5 is the smaller.
    # r=0.5, A>0: unclipped 0.5; A<0: held at 0.8. Inside the band: r A.
    expected = -torch.tensor([1.28, -1.5, 0.5, -0.8, 2.2])
    torch.testing.assert_close(loss, expected)
    assert clipped.tolist() == [True, False, False, True, False]


def test_group_advantages_normalise_within_groups_and_flag_flat_ones() -> None:
    rewards = np.array([[1.0, 0.0, 1.0, 0.0], [0.3, 0.3, 0.3, 0.3]])
    adv, keep = group_advantages(rewards)
    assert keep.tolist() == [True, False]
    np.testing.assert_allclose(adv[0], [1, -1, 1, -1], atol=1e-5)
    assert not adv[1].any()


def _router_prompt(task: RouterTask, tokenizer: Any) -> list[int]:
    catalog = load_catalog()
    system = router_system_prompt([catalog.get(m) for m in POOL], lam=1.0)
    messages = [Message("system", system), *task.messages(int(task.train[0]))]
    return encode(tokenizer, chat_text(tokenizer, messages, generation_prompt=True))


def _count_passes(model: Any) -> list[int]:
    """The length of every pass the model runs from now on, in order."""
    passes: list[int] = []
    forward = model.forward

    def counted(*args: Any, **kwargs: Any) -> Any:
        passes.append(kwargs["input_ids"].shape[1])
        return forward(*args, **kwargs)

    model.forward = counted
    return passes


def test_completions_decoded_together_are_those_decoded_alone(
    task: RouterTask, tiny_dir: Path
) -> None:
    """Greedy, a batch of three is the lone completion thrice; sampled, each
    completion's recorded log-probabilities are what a full pass over prompt and
    completion gives, the numbers GRPO's ratio starts from."""
    model, tokenizer = load_router_model(tiny_dir)
    prompt = _router_prompt(task, tokenizer)
    stop = {int(tokenizer.eos_token_id)}
    alone = sample_batch(
        model, prompt, 1, max_new_tokens=12, temperature=0.0, stop_ids=stop
    )
    together = sample_batch(
        model, prompt, 3, max_new_tokens=12, temperature=0.0, stop_ids=stop
    )
    assert len(alone[0][0]) == 12
    for ids, logps in together:
        assert ids == alone[0][0]
        np.testing.assert_allclose(logps, alone[0][1], atol=1e-5)

    generator = torch.Generator().manual_seed(3)
    drawn = sample_batch(
        model,
        prompt,
        4,
        max_new_tokens=12,
        temperature=1.0,
        stop_ids=stop,
        generator=generator,
    )
    assert len({tuple(ids) for ids, _ in drawn}) == 4
    for ids, logps in drawn:
        turn = RouterTurnSample(prompt, ids, logps, "")
        full = turn_logps(model, turn, 1.0)
        np.testing.assert_allclose(full.detach().numpy(), logps, atol=1e-4)


def test_a_groups_first_turns_share_one_pass_over_their_prompt(
    task: RouterTask, tiny_dir: Path
) -> None:
    model, tokenizer = load_router_model(tiny_dir)
    passes = _count_passes(model)
    card = load_catalog().get("smollm2-135m")
    backend = PolicyBackend(model, tokenizer, card, max_new_tokens=6, seed=1)
    groups = collect_groups(task, _examples(task, 2), backend, 3)
    # The untrained router answers at once: one turn per episode, and one pass
    # over each example's prompt for its three episodes.
    assert [[len(e.turns) for e in g] for g in groups] == [[1, 1, 1], [1, 1, 1]]
    prompt_passes = [n for n in passes if n > 1]  # decoding runs one token
    assert len(prompt_passes) == 2
    for group in groups:
        opening = {tuple(e.turns[0].prompt_ids) for e in group}
        assert len(opening) == 1 and len(next(iter(opening))) in prompt_passes


def test_a_later_turn_continues_the_first_prompts_cache(
    task: RouterTask, tiny_dir: Path
) -> None:
    """An episode's second turn runs only what its prompt adds to the first (the
    router's call and the tool's response), and the log-probabilities it records
    are those of a full pass over its prompt."""
    model, tokenizer = load_router_model(tiny_dir)
    passes = _count_passes(model)
    card = load_catalog().get("smollm2-135m")
    backend = PolicyBackend(model, tokenizer, card, max_new_tokens=5, seed=2)
    opening = [*task.messages(int(task.train[0]))]
    call = '{"name": "call_gemma_2_2b_it", "arguments": {}}'
    later = [
        *opening,
        Message("assistant", call),
        Message("tool", "The answer is 42.", name="call_gemma_2_2b_it"),
    ]
    asyncio.run(backend.complete(ChatRequest(opening)))
    first_pass = passes[0]
    passes.clear()
    asyncio.run(backend.complete(ChatRequest(later)))
    first, second = backend.take_turns()
    assert first_pass == len(first.prompt_ids)
    assert second.prompt_ids[: len(first.prompt_ids)] == first.prompt_ids
    assert passes[0] == len(second.prompt_ids) - len(first.prompt_ids)
    full = turn_logps(model, second, 1.0).detach().numpy()
    np.testing.assert_allclose(full, second.logprobs, atol=1e-4)


def test_a_groups_backward_pass_runs_their_shared_prefix_once_as_full_passes_would(
    task: RouterTask, tiny_dir: Path
) -> None:
    """The update runs a group's shared prompt prefix once; the gradient of a loss
    over the turns' log-probabilities is that of a full pass per turn."""
    model, tokenizer = load_router_model(tiny_dir)
    prompt = _router_prompt(task, tokenizer)
    rng = np.random.default_rng(4)
    vocab = len(tokenizer)
    turns = [
        RouterTurnSample(prompt, rng.integers(0, vocab, 7).tolist(), [], ""),
        RouterTurnSample(
            prompt + rng.integers(0, vocab, 30).tolist(),
            rng.integers(0, vocab, 4).tolist(),
            [],
            "",
        ),
        RouterTurnSample(
            prompt[:-3] + rng.integers(0, vocab, 9).tolist(),
            rng.integers(0, vocab, 5).tolist(),
            [],
            "",
        ),
    ]
    weights = {id(t): torch.linspace(-1.0, 1.0, len(t.completion_ids)) for t in turns}

    def loss_of(turn: RouterTurnSample, logps: torch.Tensor) -> torch.Tensor:
        return (weights[id(turn)] * logps).sum()

    model.zero_grad()
    alone = sum(loss_of(t, turn_logps(model, t, 0.7)) for t in turns)
    alone.backward()
    expected = [p.grad.detach().clone() for p in model.parameters()]
    passes = _count_passes(model)
    model.zero_grad()
    together = group_backward(model, Accelerator(), turns, loss_of, 0.7)
    # The prefix once (the prompt less the three tokens the third turn changes),
    # then each turn's own tokens.
    assert passes == [len(prompt) - 3, 3 + 7, 3 + 30 + 4, 9 + 5]
    assert float(together) == pytest.approx(float(alone.detach()), abs=1e-5)
    for a, param in zip(expected, model.parameters(), strict=True):
        torch.testing.assert_close(param.grad, a, atol=1e-5, rtol=1e-3)


def test_ctrl_c_in_an_episode_stops_it(task: RouterTask, tiny_dir: Path) -> None:
    """A Ctrl-C while the router generates ends the episode with KeyboardInterrupt,
    for the command to report; it is never taken for a failed call."""
    model, tokenizer = load_router_model(tiny_dir)
    forward = model.forward
    calls = []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # one Ctrl-C, in the middle of the first turn
            os.kill(os.getpid(), signal.SIGINT)
        return forward(*args, **kwargs)

    model.forward = interrupted
    card = load_catalog().get("smollm2-135m")
    backend = PolicyBackend(model, tokenizer, card, max_new_tokens=4, seed=1)
    with pytest.raises(KeyboardInterrupt):
        play_episode(task, _examples(task, 1)[0], backend)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_grpo_step_changes_parameters_and_drops_flat_groups(
    task: RouterTask, tiny_dir: Path
) -> None:
    model, tokenizer = load_router_model(tiny_dir)
    card = load_catalog().get("smollm2-135m")
    backend = PolicyBackend(model, tokenizer, card, max_new_tokens=12, seed=1)
    groups = collect_groups(task, _examples(task, 3), backend, 2)
    assert all(e.turns and e.turns[0].logprobs for g in groups for e in g)
    # The episodes are real; their rewards are set so one group differs.
    for group, rewards in zip(
        groups, ([1.0, 0.0], [0.4, 0.4], [0.0, 0.0]), strict=True
    ):
        for episode, value in zip(group, rewards, strict=True):
            episode.reward = value
    accelerator = Accelerator()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    stats = grpo_update(
        model, optimizer, accelerator, groups, clip_low=0.2, clip_high=0.28
    )
    assert (stats.kept_groups, stats.dropped_groups) == (1, 2)
    assert stats.updates == 1 and stats.tokens > 0
    assert any(
        not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
    )

    flat = grpo_update(
        model, optimizer, accelerator, groups[1:], clip_low=0.2, clip_high=0.28
    )
    assert (flat.kept_groups, flat.dropped_groups, flat.updates) == (0, 2, 0)


SHARED_RUN = Path(__file__).with_name("_distributed_router.py")


def _torchrun(*args: str) -> None:
    """``_distributed_router.py`` in two processes on this machine's CPU."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(SHARED_RUN), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]


def test_two_processes_take_the_grpo_step_one_process_takes(
    zeroeval_store: Any, tiny_dir: Path, tmp_path: Path
) -> None:
    """Each process plays two of four examples and runs the passes of half the
    groups; with the gradients summed, both hold the weights one process gets
    from the same episodes."""
    saved_path = tmp_path / "update.pt"
    _torchrun("update", str(zeroeval_store.path), str(tiny_dir), str(saved_path))
    saved = torch.load(saved_path, weights_only=False)
    assert len(saved["groups"]) == 4 and saved["checksums"][0] == saved["checksums"][1]

    from _distributed_router import update_step

    model, _ = load_router_model(tiny_dir)
    # As after a warm start of four micro-batches: no bearing on a GRPO step.
    accelerator = Accelerator(gradient_accumulation_steps=4)
    model, stats = update_step(model, accelerator, saved["groups"])
    alone = asdict(stats)
    assert (alone["kept_groups"], alone["updates"], alone["tokens"]) == (
        saved["stats"]["kept_groups"],
        saved["stats"]["updates"],
        saved["stats"]["tokens"],
    )
    assert alone["kept_groups"] == 4
    assert alone["loss"] == pytest.approx(saved["stats"]["loss"], abs=1e-6)
    for name, weight in model.state_dict().items():
        torch.testing.assert_close(weight, saved["weights"][name], atol=1e-6, rtol=1e-5)
    assert accelerator.gradient_accumulation_steps == 4


def test_a_run_in_two_processes_logs_each_step_once_and_warm_starts_as_one(
    zeroeval_store: Any, tiny_dir: Path, tmp_path: Path
) -> None:
    """Under torchrun the warm-start step splits its batch between the processes
    and is the step one process takes over the whole batch; the first process
    alone writes the log and checkpoints."""
    from _distributed_router import RUN

    together, alone = tmp_path / "two", tmp_path / "one"
    _torchrun("run", str(zeroeval_store.path), str(tiny_dir), str(together))
    config = RouterTrainConfig(base=str(tiny_dir), **RUN)
    train_router(zeroeval_store, SUITE, load_catalog(), config, alone)

    def lines(out: Path) -> list[dict[str, Any]]:
        return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]

    two, one = lines(together), lines(alone)
    assert [(x["phase"], x.get("step", x.get("stage"))) for x in two] == [
        ("eval", "base"),
        ("eval", "base"),
        ("sft", 1),
        ("eval", "sft"),
        ("eval", "sft"),
        ("rl", 1),
        ("eval", "rl"),
        ("eval", "rl"),
    ]
    # The three held-out items split two and one between the processes: the
    # same figures as one process playing all three.
    evals = [x for x in two if x["phase"] == "eval"]
    assert evals == [x for x in one if x["phase"] == "eval"]
    assert all(x["items"] == 3 for x in evals)
    sft_two, sft_one = two[2], one[2]
    assert sft_two["tokens"] == sft_one["tokens"]
    assert sft_two["loss"] == pytest.approx(sft_one["loss"], abs=1e-6)
    # The untrained router answers each episode itself and earns 0: both rounds
    # of two examples are flat, each example played once by one process.
    rl = two[5]
    assert (rl["kept_groups"], rl["dropped_groups"], rl["refill_rounds"]) == (0, 4, 1)
    assert rl["action_mix"] == {"self": 1.0}
    assert sorted(p.name for p in together.glob("checkpoint-*")) == [
        "checkpoint-rl-000001",
        "checkpoint-sft-000001",
    ]
    for name in ("checkpoint-sft-000001", "checkpoint-rl-000001"):
        mine = load_file(together / name / "model.safetensors")
        theirs = load_file(alone / name / "model.safetensors")
        for key, weight in theirs.items():
            torch.testing.assert_close(mine[key], weight, atol=1e-6, rtol=1e-5)


def test_dynamic_sampling_replaces_flat_groups_for_a_bounded_number_of_rounds() -> None:
    """Each round plays as many fresh examples as informative groups are missing;
    the groups of equal rewards stay in the batch, for the update to drop."""
    rounds = {
        0: [[0.0, 0.0], [1.0, 0.0], [0.5, 0.5]],  # one of three informative
        1: [[0.9, 0.9], [0.0, 0.7]],  # the two missing: one informative
        2: [[0.2, 0.0]],  # the last one missing
        3: [[0.3, 0.1]],
    }
    asked = []

    def play(extra: int, n: int) -> list[list[Episode]]:
        asked.append((extra, n))
        episodes = rounds[extra]
        assert len(episodes) == n
        return [[Episode(r, r, 0.0, "pool", 1, True) for r in g] for g in episodes]

    groups, extra = fill_groups(play, 3, rounds=5)
    assert asked == [(0, 3), (1, 2), (2, 1)] and extra == 2
    assert [[e.reward for e in g] for g in groups] == [
        *rounds[0],
        *rounds[1],
        *rounds[2],
    ]
    asked.clear()
    groups, extra = fill_groups(play, 3, rounds=1)
    assert asked == [(0, 3), (1, 2)] and extra == 1 and len(groups) == 5
    asked.clear()
    assert fill_groups(play, 3, rounds=0)[1] == 0 and asked == [(0, 3)]


def test_the_first_calls_chances_are_those_full_passes_give(
    task: RouterTask, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each row's log chance of opening with a call to each model, the system
    part run once across rows, is what a full pass over the router's prompt and
    the opening gives, as it is for a model whose cache cannot be continued;
    warm-start steps raise it."""
    model, tokenizer = load_router_model(tiny_dir)
    catalog = load_catalog()
    card = catalog.get("smollm2-135m")
    rows = task.test[:3]
    found = first_call_logps(model, tokenizer, card, task, rows, lam=4.0)
    assert found.shape == (3, len(POOL))
    system = router_system_prompt([catalog.get(m) for m in POOL], lam=4.0)
    for i, row in enumerate(rows):
        messages = [Message("system", system), *task.messages(int(row))]
        text = chat_text(tokenizer, messages, generation_prompt=True)
        prompt = encode(tokenizer, text)
        for j, name in enumerate(POOL):
            opening = call_opening(tokenizer, name)
            said = tokenizer.decode(opening)
            assert said.startswith(f'<tool_call>{{"name": "{tool_name(name)}"')
            assert tokenizer.decode(opening[:-1]).count('"') == 3
            with torch.no_grad():
                logits = model(torch.tensor([prompt + opening])).logits[0]
            logps = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
            full = float(logps[torch.arange(len(opening)), opening].sum())
            assert found[i, j] == pytest.approx(full, rel=1e-4)
    with monkeypatch.context() as patched:
        patched.setattr(PromptCache, "of", classmethod(lambda *args: None))
        uncached = first_call_logps(model, tokenizer, card, task, rows, lam=4.0)
    assert uncached == pytest.approx(found, rel=1e-4)

    traces = sft_traces(task, _examples(task, 2), tokenizer, card)
    pad = int(tokenizer.pad_token_id)
    accelerator = Accelerator(gradient_accumulation_steps=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    for _ in range(3):
        sft_step(model, optimizer, accelerator, traces, pad_id=pad)
    after = first_call_logps(model, tokenizer, card, task, rows, lam=4.0)
    mass = np.logaddexp.reduce(found, axis=1)
    assert (np.logaddexp.reduce(after, axis=1) > mass + 5).all()


def test_choice_figures_mix_the_recorded_rewards_by_the_chances(
    task: RouterTask,
) -> None:
    records, rows = task.records, task.test[:4]
    chances = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]] * 2)
    read = list(zip(rows.tolist(), np.log(chances * 0.5), strict=True))
    figures = choice_figures(task, read, lam=100.0)
    assert figures["call_mass"] == pytest.approx(0.5)
    assert figures["chances"] == pytest.approx(
        dict(zip(POOL, [0.3, 0.2, 0.5], strict=True))
    )
    config = RewardConfig(lam=100.0)
    earned = np.array(
        [
            [reward(records.score[r, j], records.cost[r, j], config) for j in range(3)]
            for r in rows
        ]
    )
    assert figures["expected_reward"] == pytest.approx((chances * earned).sum(1).mean())
    picked = [0, 2, 0, 2]
    assert figures["likeliest_reward"] == pytest.approx(earned[range(4), picked].mean())
    assert figures["likeliest_accuracy"] == pytest.approx(
        records.score[rows, picked].mean()
    )
    assert figures["oracle_reward"] == pytest.approx(earned.max(1).mean())
    best = int(earned.mean(0).argmax())
    assert figures["best_single_by_reward"] == {
        "model": POOL[best],
        "reward": pytest.approx(earned[:, best].mean()),
    }


def _config(tiny_dir: Path, **changes: Any) -> RouterTrainConfig:
    settings: dict[str, Any] = {
        "base": str(tiny_dir),
        "items": 20,
        "sft_steps": 2,
        "sft_batch": 2,
        "rl_steps": 0,
        "prompts_per_step": 1,
        "group_size": 2,
        "max_new_tokens": 8,
        "sft_lr": 1e-3,
    }
    return RouterTrainConfig(**(settings | changes))


def test_resuming_restores_step_weights_and_optimizer(
    zeroeval_store: Any, tiny_dir: Path, tmp_path: Path
) -> None:
    catalog = load_catalog()
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_router(zeroeval_store, SUITE, catalog, _config(tiny_dir), straight)
    train_router(zeroeval_store, SUITE, catalog, _config(tiny_dir, sft_steps=1), split)
    with pytest.raises(ConfigError, match="--resume"):
        train_router(zeroeval_store, SUITE, catalog, _config(tiny_dir), split)
    manifest = train_router(
        zeroeval_store,
        SUITE,
        catalog,
        _config(tiny_dir, rl_steps=1),
        split,
        resume=True,
    )

    found = latest_checkpoint(split)
    assert found is not None and (found.phase, found.step) == ("rl", 1)
    assert manifest["settings"]["group_size"] == 2 and manifest["data_fingerprint"]
    sft = [json.loads(x) for x in (split / "metrics.jsonl").read_text().splitlines()]
    # The untrained router answers every episode itself, wrongly: each group
    # earns 0 throughout, so both refill rounds are played and all dropped.
    rl = next(x for x in sft if x["phase"] == "rl")
    assert rl["action_mix"] == {"self": 1.0} and rl["reward"] == 0.0
    assert (rl["refill_rounds"], rl["kept_groups"], rl["dropped_groups"]) == (2, 0, 3)
    assert [x["step"] for x in sft if x["phase"] == "sft"] == [1, 2]
    assert {
        "reward",
        "accuracy",
        "cost_usd",
        "calls_per_episode",
        "parse_failures",
    } <= set(next(x for x in sft if x["phase"] == "rl"))
    a, _ = load_router_model(straight / "checkpoint-sft-000002")
    b, _ = load_router_model(split / "checkpoint-sft-000002")
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_a_resumed_run_logs_each_step_once_and_keeps_its_settings(
    zeroeval_store: Any,
    tiny_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog = load_catalog()
    config = _config(tiny_dir, checkpoint_every=1)
    save = router_run.save_router_checkpoint

    def interrupted(*args: Any, **kwargs: Any) -> Path:
        if kwargs["step"] == 2:  # step 2 is logged, then the run stops
            raise KeyboardInterrupt
        return save(*args, **kwargs)

    monkeypatch.setattr(router_run, "save_router_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_router(zeroeval_store, SUITE, catalog, config, tmp_path)
    logged = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in logged] == [1, 2]
    monkeypatch.setattr(router_run, "save_router_checkpoint", save)

    with pytest.raises(ConfigError) as info:
        train_router(
            zeroeval_store, SUITE, catalog, _config(tiny_dir, group_size=3), tmp_path,
            resume=True,
        )  # fmt: skip
    assert str(info.value) == (
        f"the run in {tmp_path} was trained otherwise: group_size 2 -> 3. Resume it "
        "with its own settings (only the step counts, evaluation, checkpointing "
        "and threads may change), or choose another --out"
    )
    with pytest.raises(ConfigError) as info:
        train_router(
            zeroeval_store, SUITE, catalog, _config(tiny_dir, items=30), tmp_path,
            resume=True,
        )  # fmt: skip
    # Other train items are another setting, not other records.
    assert str(info.value).startswith(
        f"the run in {tmp_path} was trained otherwise: items 20 -> 30. Resume"
    )
    # The same suite name over another pool is another run.
    two = SUITE.model_copy(update={"pool": (POOL[0], POOL[2])})
    with pytest.raises(ConfigError) as info:
        train_router(zeroeval_store, two, catalog, config, tmp_path, resume=True)
    assert str(info.value).startswith(
        f"the run in {tmp_path} was trained otherwise: pool ['gpt-4o-mini-2024-07-18',"
        " 'claude-3-haiku-20240307', 'gemma-2-2b-it'] -> ['gpt-4o-mini-2024-07-18', "
        "'gemma-2-2b-it']. Resume"
    )
    train_router(zeroeval_store, SUITE, catalog, config, tmp_path, resume=True)
    lines = [
        json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert [(x["phase"], x["step"]) for x in lines] == [("sft", 1), ("sft", 2)]
    # The step-2 line is the resumed run's: its loss is the interrupted one's.
    assert lines[1]["loss"] == pytest.approx(json.loads(logged[1])["loss"], abs=1e-6)


def test_resuming_with_a_teacher_trained_again_is_refused(
    tiny_dir: Path, tmp_path: Path
) -> None:
    config = _config(tiny_dir)
    task: Any = SimpleNamespace(
        suite=SUITE, records=SimpleNamespace(models=POOL), fingerprint="v3-ab:cd"
    )
    manifest = {
        "suite": SUITE.name,
        "pool": list(POOL),
        "data_fingerprint": "v3-ab:cd",
        "teacher_digest": "1f" * 32,
        "settings": dataclasses.asdict(config),
    }
    check_resumable(manifest, config, task, tmp_path, "1f" * 32)
    with pytest.raises(ConfigError) as info:
        check_resumable(manifest, config, task, tmp_path, "2e" * 32)
    assert str(info.value).startswith(
        f"the run in {tmp_path} was trained otherwise: the teacher checkpoint "
        "(trained again since). Resume"
    )


def test_a_trained_router_is_named_by_its_checkpoint_directory(
    zeroeval_store: Any, task: RouterTask, tiny_dir: Path, tmp_path: Path
) -> None:
    """`route --router DIR` and `eval --llm-router DIR` take a checkpoint of this
    command: its own weights answer, billed at its router card."""
    config = _config(tiny_dir, sft_steps=1)
    train_router(zeroeval_store, SUITE, load_catalog(), config, tmp_path)
    found = latest_checkpoint(tmp_path)
    assert found is not None
    backend = router_backend(str(found.path), load_catalog())
    assert backend.card.id == "smollm2-135m"
    # The run's own folder names its latest checkpoint, and a report names the
    # router by that checkpoint.
    assert router_dir(str(tmp_path)) == router_dir(str(found.path)) == found.path
    run_eval = _llm_factory(str(tmp_path), 1, 1.0, load_catalog(), tmp_path, SUITE)
    row = run_eval(task.records, task.test)
    assert row.name == "llm:smollm2-135m@checkpoint-sft-000001"
    messages = (Message("user", task.messages(int(task.train[0]))[-1].content),)
    done = asyncio.run(backend.complete(ChatRequest(messages, max_tokens=8)))
    model, tokenizer = load_router_model(found.path)
    prompt = encode(tokenizer, chat_text(tokenizer, messages, generation_prompt=True))
    stop = {int(tokenizer.eos_token_id)}
    ((ids, _),) = sample_batch(
        model, prompt, 1, max_new_tokens=8, temperature=0.0, stop_ids=stop
    )
    assert done.usage == Usage(len(prompt), len(ids))
    assert done.text == tokenizer.decode(ids, skip_special_tokens=True)


def test_a_router_folder_that_is_no_language_model_is_named(tmp_path: Path) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "policy.safetensors").write_bytes(b"")
    (policy / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError) as refused:
        router_backend(str(policy), load_catalog())
    assert str(refused.value) == (
        f"{policy} is a policy checkpoint of `xrouter train policy`, not a language "
        "model: give it with --policy"
    )
    with pytest.raises(ConfigError) as refused:
        router_backend(str(tmp_path), load_catalog())
    assert str(refused.value) == (
        f"{tmp_path} holds no transformers model (no config.json): give a checkpoint "
        "of `xrouter train router`, or a model card's id"
    )


def test_a_policy_checkpoints_folder_is_no_place_for_a_router_run(
    zeroeval_store: Any, tiny_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "policy.safetensors").write_bytes(b"weights")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ConfigError) as refused:
        train_router(zeroeval_store, SUITE, load_catalog(), _config(tiny_dir), tmp_path)
    assert str(refused.value) == (
        f"{tmp_path} holds a policy checkpoint of `xrouter train policy`; give the "
        "router run an --out of its own (nothing there is replaced)"
    )
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_a_router_whose_weights_were_cut_short_is_named(
    tiny_dir: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut"
    cut.mkdir()
    for file in tiny_dir.iterdir():
        (cut / file.name).write_bytes(file.read_bytes())
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ConfigError) as refused:
        load_router_model(cut)
    assert str(refused.value).startswith(f"the weights in {cut} cannot be read (")
    assert str(refused.value).endswith(
        "): the file is damaged or was cut short. Copy or train it again, or give "
        "--base smollm2-135m or a model directory with config.json, weights and a "
        "tokenizer"
    )
    with pytest.raises(ConfigError, match="the file is damaged or was cut short"):
        asyncio.run(
            router_backend(str(cut), load_catalog()).complete(
                ChatRequest((Message("user", "hi"),))
            )
        )


def test_the_parse_rate_is_over_the_dev_items_there_are(
    zeroeval_store: Any,
    tiny_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Asked for more dev items than the split holds, the rate is over those it
    holds: a router that always parses scores 1."""
    asked: list[int] = []

    def always(*args: Any, **kwargs: Any) -> float:
        asked.append(len(args[4]))
        return 1.0

    monkeypatch.setattr(router_run, "parse_rate", always)
    config = _config(tiny_dir, sft_steps=0, parse_items=100_000)
    train_router(zeroeval_store, SUITE, load_catalog(), config, tmp_path)
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert line["parse_rate"] == 1.0 and line["lambda"] == 1.0
    task = load_router_task(zeroeval_store, SUITE, load_catalog(), items=20)
    assert asked == [len(task.dev)] and 0 < len(task.dev) < 100_000


def test_each_evaluation_is_logged_at_every_lambda(
    zeroeval_store: Any, tiny_dir: Path, tmp_path: Path
) -> None:
    config = _config(
        tiny_dir, sft_steps=1, eval_items=2, choice_items=3, eval_lambdas=[1.0, 300.0]
    )
    manifest = train_router(zeroeval_store, SUITE, load_catalog(), config, tmp_path)
    lines = [
        json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    evals = [(x["stage"], x["lambda"]) for x in lines if x["phase"] == "eval"]
    assert evals == [("base", 1.0), ("base", 300.0), ("sft", 1.0), ("sft", 300.0)]
    # Drawn beside the log: each lambda's held-out reward by stage, the router's
    # beside the nearest-neighbour router's on the same items.
    assert (tmp_path / "curves.png").is_file()
    panels = write_curves(tmp_path / "metrics.jsonl", tmp_path / "again.png")
    held_out = panels["held-out reward by stage: 0 base, 1 sft"]
    at_300 = [x for x in lines if x["phase"] == "eval" and x["lambda"] == 300.0]
    assert held_out["router @ lambda 300"] == (
        [0.0, 1.0],
        [x["reward"] for x in at_300],
    )
    assert held_out["knn @ lambda 300"][1] == [x["knn"]["reward"] for x in at_300]
    # The first call read from the chances, on three items of their own.
    assert [x["first_call"]["items"] for x in at_300] == [3, 3]
    assert held_out["first call, expected @ lambda 300"] == (
        [0.0, 1.0],
        [x["first_call"]["expected_reward"] for x in at_300],
    )
    sft = [x["loss"] for x in lines if x["phase"] == "sft"]
    assert panels["warm start (SFT) loss"]["loss"] == ([1.0], sft)
    # The oracle's choice does not depend on lambda: no contrasting traces.
    assert [x["contrasts"] for x in lines if x["phase"] == "sft"] == [0]
    assert {"eval/base@1", "eval/sft@300"} <= set(manifest["metrics"])
    # The same items at both lambdas: the best single model by reward may differ,
    # the oracle's accuracy may not.
    by = {(x["stage"], x["lambda"]): x for x in lines if x["phase"] == "eval"}
    assert (
        by["sft", 1.0]["oracle"]["accuracy"] == by["sft", 300.0]["oracle"]["accuracy"]
    )
    # Whose answer each episode returned: a pool model's or the router's own;
    # a failed episode returned none.
    for line in by.values():
        failed = line["strategies"].get("failed", 0)
        assert sum(line["answered_by"].values()) == 2 - failed
        assert set(line["answered_by"]) <= {*SUITE.pool, str(tiny_dir)}
    with pytest.raises(ConfigError) as info:
        _config(tiny_dir, eval_lambdas=[])
    assert str(info.value) == "eval_lambdas must list one or more lambdas >= 0, got []"
    with pytest.raises(ConfigError, match=r"got \[1.0, -2.0\]"):
        _config(tiny_dir, eval_lambdas=[1.0, -2.0])


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["train", "router", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"group_size": "four"},
            "router training setting group_size: Input should be a valid integer, "
            "unable to parse string as an integer (got 'four')",
        ),
        (
            {"eval_lambdas": 5},
            "router training setting eval_lambdas: Input should be a valid tuple "
            "(got 5)",
        ),
        (
            {"lambda_min": None},
            "router training setting lambda_min: Input should be a valid number "
            "(got None)",
        ),
        ({"sft_batch": 0}, "sft_batch must be >= 1, got 0"),
        (
            {"sft_steps": 0, "rl_steps": 0},
            "nothing to do: --sft-steps, --rl-steps, --eval-items and --choice-items "
            "are all 0; give one of them above 0",
        ),
        ({"micro_batch": 0}, "micro_batch must be >= 1, got 0"),
        ({"threads": -2}, "threads must be >= 1 (or null: torch's default), got -2"),
        ({"full_pool": 2}, "full_pool must be a share from 0 to 1, got 2.0"),
        ({"cost_max": -1}, "reward cost_max must be a finite number >= 0, got -1.0"),
        (
            {"vllm": True},
            "the setting vllm: true is not supported yet: episodes are sampled with "
            "the trained model itself; drop it",
        ),
    ],
)
def test_bad_settings_in_a_config_file_are_refused_before_any_work(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        RouterTrainConfig.from_mapping(settings)
    assert str(info.value) == message


def test_a_misspelt_settings_section_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        RouterTrainConfig.from_mapping({"settingz": {"sft_steps": 2}})
    assert str(info.value).startswith(
        "unknown router training setting(s) settingz (settingz holds a mapping: "
        "settings go under settings: or at the top level of the file); the "
        "settings are base, checkpoint_every, "
    )
    with pytest.raises(ConfigError) as info:
        RouterTrainConfig.from_mapping({"sft_stepz": 2})
    assert str(info.value).startswith(
        "unknown router training setting(s) sft_stepz; the settings are base, "
    )


def test_help_names_lambda_group_and_clip() -> None:
    code, output = run("--help")
    assert code == 0
    for word in (
        "lambda",
        "--group-size",
        "--clip-low",
        "--clip-high",
        "--refill-rounds",
        "--resume",
    ):
        assert word in output


def test_the_shipped_7b_config_holds_the_papers_settings() -> None:
    path = Path(__file__).parents[1] / "configs" / "router-qwen2.5-7b.yaml"
    config = RouterTrainConfig.from_mapping(router_settings(path))
    assert (config.clip_low, config.clip_high, config.temperature) == (0.2, 0.28, 1.0)
    assert (config.group_size, config.refill_rounds, config.dtype) == (
        8,
        3,
        "bfloat16",
    )


def test_a_config_file_with_keys_beside_settings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text("settings:\n  sft_steps: 1\nrl_steps: 5\nlr: 1.0e-6\n")
    with pytest.raises(ConfigError) as caught:
        router_settings(path)
    assert str(caught.value) == (
        f"--config {path}: lr, rl_steps beside 'settings:' would not be read; move "
        "them under settings: (or put every setting at the top level)"
    )
    path.write_text("sft_steps: 1\nrl_steps: 5\n")  # all at the top level
    assert router_settings(path) == {"sft_steps": 1, "rl_steps": 5}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--group-size", "1"], "--group-size must be at least 2"),
        (["--lambda-min", "5", "--lambda-max", "1"], "the lambda range is inverted"),
        (
            ["--lambda-max", "inf"],
            "the lambda range is inverted, negative or unbounded: --lambda-min 0.1, "
            "--lambda-max inf",
        ),
        (["--seed", "-1"], "--seed must be from 0 to 2**63 - 1, got -1"),
        (
            ["--seed", str(2**64)],
            f"--seed must be from 0 to 2**63 - 1, got {2**64}",
        ),
        (["--items", "0"], "--items 0 leaves an empty training set"),
        (["--base", "no-such-model"], "no local model 'no-such-model'"),
        (["--teacher", "/no/such/policy"], "no checkpoint at /no/such/policy"),
        (
            ["--teacher", "oracel"],
            "no teacher 'oracel': no such checkpoint folder, and the oracle is spelt "
            "'oracle'; give --teacher oracle or a policy checkpoint",
        ),
        (["--sft-lr", "nan"], "--sft-lr must be a finite learning rate > 0, got nan"),
        (["--lr", "-1"], "--lr must be a finite learning rate > 0, got -1.0"),
        (
            ["--prompts-per-step", "0"],
            "prompts_per_step (--prompts-per-step) must be >= 1, got 0",
        ),
        (
            ["--checkpoint-every", "0"],
            "checkpoint_every (--checkpoint-every) must be >= 1, got 0",
        ),
        (["--temperature", "nan"], "--temperature must be a finite number > 0"),
        (["--clip-high", "inf"], "and a finite --clip-high > 0, got 0.2 and inf"),
    ],
)
def test_bad_input_gives_one_clear_line(
    args: list[str],
    message: str,
    small_data: Path,
    zeroeval_store: Any,
    tiny_dir: Path,
    tmp_path: Path,
) -> None:
    if "--base" not in args:
        args = ["--base", str(tiny_dir), *args]
    suites = tmp_path / "suites.yaml"
    suites.write_text(json.dumps({"suites": [SUITE.model_dump()]}))
    code, output = run(
        "--from",
        str(small_data),
        "--store",
        str(zeroeval_store.path),
        "--out",
        str(tmp_path / "out"),
        "--suites",
        str(suites),
        "--suite",
        "zeroeval3",
        *args,
    )
    assert code == 1
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in output
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_the_router_is_compared_with_knn_and_the_policy_on_its_own_items(
    task: RouterTask, policy_dir: tuple[Path, Path]
) -> None:
    """The reference rows of an evaluation are what the offline evaluation
    reports for the same routers, items and lambda."""
    checkpoint = load_checkpoint(policy_dir[0])
    rows = sample_items(task.records, task.test, 12, seed=0)
    config = RewardConfig(lam=1.0)
    found = Rivals(task, checkpoint).on(rows, config)
    assert sorted(found) == ["knn", "policy"]
    assert sorted(Rivals(task).on(rows, config)) == ["knn"]

    records, embedder = task.records, Embedder(task.records.store.path / "embeddings")
    train_rows = np.flatnonzero(split_mask(records.item_ids, "train"))
    knn = NearestNeighbour(embedder.encode_items("zeroeval", records.items()))
    policy = LearnedPolicy(checkpoint, task.catalog, embedder, SUITE.self_model)
    for name, router in (("knn", knn), ("policy", policy)):
        router.fit(records, train_rows)
        result = evaluate_policy(router, records, rows)
        point = next(p for p in result.points if p.knob == 1.0)
        assert found[name]["accuracy"] == pytest.approx(point.accuracy)
        assert found[name]["cost_per_1k"] == pytest.approx(point.cost_per_1k)
        penalty = min(1.0 * point.cost_per_1k / 1000, config.cost_max)
        assert point.accuracy * (1 - 12 * penalty) <= found[name]["reward"]
        assert found[name]["reward"] <= point.accuracy
