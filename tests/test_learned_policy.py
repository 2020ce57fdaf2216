"""The RL-trained router on real records: training, checkpoints, refusals."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import _router_suite as router_suite
import numpy as np
import pytest
import torch
from _checkpoints import stamp_manifest
from _standin import StandInEmbedder
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from xrouter.backends.replay import ReplayPool
from xrouter.core.catalog import Catalog, load_catalog, read_cards
from xrouter.core.errors import CheckpointError, ConfigError, DataError
from xrouter.core.types import CallRecord, Message, Usage
from xrouter.evaluate.episodes import replay_entries
from xrouter.orchestrator import episode as ep
from xrouter.orchestrator.loop import EpisodeView, Limits, Orchestrator
from xrouter.orchestrator.reward import RewardConfig
from xrouter.policies.checkpoint import load_checkpoint, save_checkpoint
from xrouter.policies.embedding import Embedder, routing_text
from xrouter.policies.frozen_net import FrozenNet
from xrouter.policies.knn import NearestNeighbour
from xrouter.policies.learned import (
    Decision,
    LearnedPolicy,
    LiveRouter,
    ReplayTable,
    Seen,
    TablePart,
    route_rows,
)
from xrouter.policies.policy_router import PolicyRouter, conversation_text, final_answer
from xrouter.policies.router_net import EpisodeInputs, RouterNet, encode, play
from xrouter.records.ingest import ingest
from xrouter.records.splits import split_mask
from xrouter.records.store import Store
from xrouter.train.env import TrainingData, assemble, load_training_data
from xrouter.train.grpo import (
    GRPOConfig,
    _flatten,
    _update,
    group_advantages,
    train_policy,
)
from xrouter.train.run import checkpoint_manifest

MODELS = router_suite.POOL
SUITE = router_suite.SUITE.model_copy(update={"name": "zeroeval-small"})
# One thread: a run repeats for a seed and a thread count, and the gains below
# were measured on one.
CONFIG = GRPOConfig(steps=200, prompts_per_step=32, eval_every=1000, seed=3, threads=1)


@pytest.fixture(scope="module")
def store(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Store:
    target = Store(tmp_path_factory.mktemp("store"))
    ingest(small_data, target, load_catalog(), ["zeroeval"])
    return target


@pytest.fixture(scope="module")
def data(store: Store) -> TrainingData:
    embedder = StandInEmbedder(store.path / "embeddings")
    return load_training_data(store, [SUITE], load_catalog(), embedder)


@pytest.fixture(scope="module")
def trained(data: TrainingData) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(CONFIG.seed)
    initial = train_policy(data, dataclasses.replace(CONFIG, steps=1)).net
    before = {k: v.clone() for k, v in initial.state_dict().items()}
    return train_policy(data, CONFIG).net, before


def mean_reward(
    net: torch.nn.Module, data: TrainingData, rows: np.ndarray, *, sample: bool
) -> float:
    """Mean reward over lambdas 1, 100 and 3000, sampling or taking the argmax."""
    rewards = []
    for lam in (1.0, 100.0, 3000.0):
        lams = np.full(len(rows), lam)
        inputs = data.table.inputs(rows, lams)
        played = play(
            net,  # type: ignore[arg-type]
            inputs,
            data.models,
            ep.EpisodeRules(CONFIG.max_turns),
            sample=sample,
            generator=torch.Generator().manual_seed(0),
        )
        score = data.table.score[rows, played.state.chosen]
        cost = ep.spent(played.state, inputs.responses)
        rewards.append(ep.batch_reward(score, cost, lams, RewardConfig()).mean())
    return float(np.mean(rewards))


def test_training_changes_the_weights_and_raises_the_reward(
    data: TrainingData, trained: tuple[torch.nn.Module, dict[str, torch.Tensor]]
) -> None:
    net, before = trained
    after = net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    untrained = train_policy(data, dataclasses.replace(CONFIG, steps=1)).net
    untrained.load_state_dict(before)
    for rows in (data.train[0], data.dev[0]):  # seen items, then held-out ones
        for sample in (True, False):
            gain = mean_reward(net, data, rows, sample=sample) - mean_reward(
                untrained, data, rows, sample=sample
            )
            assert gain > (0.01 if sample else 0.001)


def logits_of(net: torch.nn.Module, *arrays: np.ndarray) -> torch.Tensor:
    """The network's logits for numpy inputs (embedding, state and candidate
    features, candidate models, legal actions), without gradients."""
    with torch.no_grad():
        logits: torch.Tensor = net(*(torch.from_numpy(a) for a in arrays))
    return logits


def right_before_any_call(
    net: torch.nn.Module, data: TrainingData, inputs: EpisodeInputs
) -> torch.Tensor:
    """``[n, A]``: the logit of each candidate's chance of being right, at the
    start of each episode of ``inputs``."""
    state = ep.start(inputs.offered, inputs.self_model)
    state_x, cand_x, cand_model = encode(inputs, state, data.models, net.config)
    with torch.no_grad():
        _, right = net.heads(  # type: ignore[operator]
            torch.from_numpy(inputs.embedding),
            torch.from_numpy(state_x),
            torch.from_numpy(cand_x),
            torch.from_numpy(cand_model),
            torch.from_numpy(ep.legal_actions(state)),
        )
    return right  # type: ignore[no-any-return]


def chance_of_right_loss(
    net: torch.nn.Module, data: TrainingData, rows: np.ndarray
) -> float:
    """Cross-entropy of the network's chance that each offered model's answer is
    right, before any call, against the recorded scores of ``rows``."""
    inputs = data.table.inputs(rows, np.full(len(rows), 10.0))
    right = right_before_any_call(net, data, inputs)
    m = inputs.offered.shape[1]
    calls = right[:, 1 : 1 + m][torch.from_numpy(inputs.offered)]
    scores = torch.from_numpy(data.table.score[rows][inputs.offered]).float()
    return float(torch.nn.functional.binary_cross_entropy_with_logits(calls, scores))


def test_the_chance_of_right_loss_fits_the_recorded_scores(data: TrainingData) -> None:
    # With the policy's own loss silenced (no advantage, no entropy bonus), the
    # updates fit the network's chance that a model is right to the scores of
    # the episodes' items; measured on the train items before any call. The
    # head reads the prompt here: the stand-in embeddings leave nothing in the
    # neighbours' rates for a head reading the memory alone to correct.
    config = dataclasses.replace(
        CONFIG, entropy_coef=0.0, learning_rate=3e-3, reads_prompt=True
    )
    torch.manual_seed(0)  # the network's first weights, whatever ran before
    net = RouterNet(len(data.models.ids), config.net_config(config.reward()))
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    rules = ep.EpisodeRules(config.max_turns)
    before = chance_of_right_loss(net, data, data.train[0])
    for _ in range(50):
        examples = data.sample(rng, 32, (1.0, 100.0), 0.5).repeated(4)
        inputs = data.table.inputs(examples.rows, examples.lam, examples.offered)
        played = play(net, inputs, data.models, rules, sample=True, generator=generator)
        n = len(examples.rows)
        scores = data.table.score[examples.rows]
        batch = _flatten(played, inputs, scores, np.zeros(n), np.ones(n, dtype=bool))
        _update(net, optimiser, batch, config, generator)
    assert chance_of_right_loss(net, data, data.train[0]) < before - 0.02


def test_the_chance_of_right_is_fitted_on_dropped_groups_too(
    data: TrainingData,
) -> None:
    # Items on which every model fails give groups of equal rewards (all 0):
    # the policy learns nothing from them, but the chance of being right must
    # still learn that such items exist, or it is too high where items are hard.
    rows = data.train[0]
    failed = rows[(data.table.score[rows] == 0).all(axis=1)][:32]
    assert len(failed) == 32
    config = dataclasses.replace(CONFIG, entropy_coef=0.0, learning_rate=3e-3)
    torch.manual_seed(0)
    net = RouterNet(len(data.models.ids), config.net_config(config.reward()))
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(0)
    rules = ep.EpisodeRules(config.max_turns)
    lams = np.full(len(failed), 30.0)
    inputs = data.table.inputs(failed, lams)

    def chance() -> float:
        right = right_before_any_call(net, data, inputs)
        return float(torch.sigmoid(right[:, 1:]).mean())

    before = chance()
    for _ in range(20):
        played = play(net, inputs, data.models, rules, sample=True, generator=generator)
        rewards = ep.batch_reward(
            data.table.score[failed, played.state.chosen],
            ep.spent(played.state, inputs.responses),
            lams,
            config.reward(),
        )
        advantage, keep = group_advantages(rewards, 4)
        assert not keep.any()  # every episode failed: every group is dropped
        batch = _flatten(played, inputs, data.table.score[failed], advantage, keep)
        assert len(batch.action) == sum(len(t.rows) for t in played.turns)
        _update(net, optimiser, batch, config, generator)
    assert chance() < before - 0.1
    assert not batch.kept.any()


def test_the_shaped_logit_starts_at_the_configured_sharpness(
    data: TrainingData,
) -> None:
    net = train_policy(data, dataclasses.replace(CONFIG, steps=1, sharpness=5.0)).net
    start = RouterNet(len(data.models.ids), net.config)
    tau = torch.nn.functional.softplus(start.sharpness.detach()) * 4
    assert float(tau) == pytest.approx(5.0)


def test_training_is_reproducible_from_the_seed(data: TrainingData) -> None:
    config = dataclasses.replace(CONFIG, steps=3)
    a = train_policy(data, config).net.state_dict()
    b = train_policy(data, config).net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_group_advantages_normalise_within_groups_and_drop_equal_ones() -> None:
    rewards = np.array([1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    advantage, keep = group_advantages(rewards, 4)
    assert advantage.tolist() == [1.0, -1.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0]
    assert keep.tolist() == [True] * 4 + [False] * 4
    # A tiny spread (a cost difference at a small lambda) stays a tiny advantage.
    advantage, _ = group_advantages(np.array([1.0, 0.999]), 2, std_floor=0.1)
    assert advantage == pytest.approx([0.005, -0.005])


def test_a_tiny_training_set_is_refused(data: TrainingData, store: Store) -> None:
    pool = ReplayPool.load(store, ["zeroeval"], MODELS)
    head = dataclasses.replace(
        pool,
        item_ids=pool.item_ids[:40],
        **{f: getattr(pool, f)[:40] for f in ("tasks", "score", "cost")},
        **{f: getattr(pool, f)[:40] for f in ("input_tokens", "output_tokens")},
        extracted=pool.extracted[:40],
    )
    part = TablePart(head, np.zeros((40, 384), dtype=np.float32), MODELS[2])
    with pytest.raises(DataError) as info:
        assemble([SUITE], [part], load_catalog(), {})
    n = len(data.train[0][:0]) + int(
        (np.isin(data.table.item[data.train[0]], range(40))).sum()
    )
    assert str(info.value) == (
        f"only {n} train items across suite(s) zeroeval-small; training needs at "
        "least 32. Ingest more recorded outputs or add suites"
    )


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        GRPOConfig(lam_min=0.0)
    assert (
        str(info.value)
        == "the lambda range must satisfy 0 < min < max, both finite, got 0 to 30000"
    )
    with pytest.raises(ConfigError) as info:
        GRPOConfig(lam_max=float("inf"))
    assert str(info.value) == (
        "the lambda range must satisfy 0 < min < max, both finite, got 0.1 to inf"
    )
    with pytest.raises(ConfigError) as info:
        GRPOConfig(seed=-1)
    assert str(info.value) == "the seed must be from 0 to 2**63 - 1, got -1"
    with pytest.raises(ConfigError, match="the seed must be from 0 to 2"):
        GRPOConfig(seed=2**64)
    with pytest.raises(ConfigError, match="group_size must be >= 2"):
        GRPOConfig(group_size=1)
    with pytest.raises(ConfigError) as info:
        GRPOConfig(sharpness=0.0)
    assert str(info.value) == (
        "sharpness must be in (0, 1000) and right_coef finite and >= 0, got 0 and 1"
    )
    with pytest.raises(ConfigError, match=r"got 12 and -1$"):
        GRPOConfig(right_coef=-1.0)
    with pytest.raises(ConfigError) as info:
        GRPOConfig(ema_decay=1.0)
    assert str(info.value) == (
        "ema_decay must be in [0, 1) (0: keep the raw weights), got 1"
    )
    with pytest.raises(ConfigError) as info:
        GRPOConfig(lam_min=10.0, lam_max=100.0)
    assert str(info.value) == (
        "the default lambda 2 is outside the trained range 10 to 100; widen the "
        "range or choose a --default-lambda inside it"
    )


def test_the_kept_weights_are_the_moving_average(data: TrainingData) -> None:
    # With averaging off the kept weights are the last step's; with it on they
    # lag behind, so the two runs from one seed end apart.
    config = dataclasses.replace(CONFIG, steps=5, eval_every=5)
    raw = train_policy(data, dataclasses.replace(config, ema_decay=0.0)).net
    averaged = train_policy(data, config).net
    raw_weights, averaged_weights = raw.state_dict(), averaged.state_dict()
    assert all(
        not torch.equal(raw_weights[k], averaged_weights[k])
        for k in raw_weights
        if raw_weights[k].is_floating_point()
    )


@pytest.fixture(scope="module")
def checkpoint_dir(
    data: TrainingData,
    trained: tuple[torch.nn.Module, dict[str, torch.Tensor]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    path = tmp_path_factory.mktemp("ckpt")
    result = train_policy(data, dataclasses.replace(CONFIG, steps=1))
    result.net.load_state_dict(trained[0].state_dict())
    manifest = checkpoint_manifest(data, CONFIG, RewardConfig(), result, "static")
    save_checkpoint(path, result.net, data.memory, data.models, manifest)
    return path


def test_checkpoint_round_trip(
    checkpoint_dir: Path,
    data: TrainingData,
    trained: tuple[torch.nn.Module, dict[str, torch.Tensor]],
) -> None:
    loaded = load_checkpoint(checkpoint_dir)
    original = trained[0].state_dict()
    assert all(torch.equal(original[k], v) for k, v in loaded.net.state_dict().items())
    manifest = loaded.manifest
    assert manifest["models"] == list(MODELS)
    assert manifest["prices"]["gemma-2-2b-it"]["output_per_mtok"] > 0
    assert manifest["suites"]["zeroeval-small"]["pool"] == list(MODELS)
    assert manifest["data"]["fingerprints"]["zeroeval"] == data.fingerprints["zeroeval"]
    assert manifest["lambda_range"] == [0.1, 3e4] and manifest["seed"] == 3
    assert manifest["hyperparameters"]["clip_high"] == 0.28
    rows = data.dev[0]
    a = route_rows(trained[0], data.table, data.models, rows, 30.0)  # type: ignore[arg-type]
    b = route_rows(loaded.net, data.table, data.models, rows, 30.0)
    assert (a.state.chosen == b.state.chosen).all()
    assert loaded.memory.wide_of == data.memory.wide_of
    # Both files are readable alike (safetensors alone would make its own
    # readable by its owner only).
    modes = {
        (checkpoint_dir / f).stat().st_mode & 0o777
        for f in ("manifest.json", "policy.safetensors")
    }
    assert len(modes) == 1


def test_a_checkpoint_written_before_the_head_could_skip_the_prompt_loads(
    data: TrainingData, tmp_path: Path
) -> None:
    # Such a manifest has no reads_prompt entry, and its head read the prompt.
    config = dataclasses.replace(CONFIG, steps=1, reads_prompt=True)
    result = train_policy(data, config)
    manifest = checkpoint_manifest(data, config, RewardConfig(), result, "static")
    save_checkpoint(tmp_path, result.net, data.memory, data.models, manifest)
    older = json.loads((tmp_path / "manifest.json").read_text())
    del older["net"]["reads_prompt"]
    stamp_manifest(tmp_path, older)
    loaded = load_checkpoint(tmp_path)
    assert loaded.net.config.reads_prompt and loaded.net.prompt is not None
    rows = data.dev[0]
    a = route_rows(result.net, data.table, data.models, rows, 30.0)
    b = route_rows(loaded.net, data.table, data.models, rows, 30.0)
    assert (a.state.chosen == b.state.chosen).all()
    # Written now, the entry is there; by default the head reads the memory alone.
    assert not RouterNet(3, CONFIG.net_config(RewardConfig())).config.reads_prompt


def test_the_memory_estimates_as_the_tuned_nearest_neighbour_router_does(
    data: TrainingData,
) -> None:
    # The memory's smooth estimate of each model on a held-out prompt is the
    # prediction of the nearest-neighbour router tuned on the same train items.
    part = data.parts[0]
    knn = NearestNeighbour(part.embedding)
    knn.fit(part.pool, data.table.item[data.train[0]])
    assert data.neighbours == (knn.k,) and knn.k == 128
    assert data.memory.wide_of == (128,)
    rows = data.dev[0]
    score, cost = knn.predict(part.pool, data.table.item[rows])
    features = data.table.memory[rows][:, : len(MODELS)]
    assert features[..., 1] == pytest.approx(score, abs=1e-5)
    assert features[..., 2] == pytest.approx(cost, rel=1e-4)
    # Whether answers could be extracted: nearly always for these models, as on
    # the train items as a whole.
    train = data.train[0]
    found = (data.table.answer_code[train][:, : len(MODELS)] >= 0).mean(axis=0)
    assert features[..., 4].mean(axis=0) == pytest.approx(found, abs=0.02)
    assert found.min() > 0.9


def test_a_suite_is_estimated_from_its_own_records_alone(data: TrainingData) -> None:
    # A second suite with the same prompts and models, every verdict reversed, as
    # if another benchmark had graded them: it must not move the first suite's
    # estimates, though its prompts are the nearest there are.
    part = data.parts[0]
    graded = dataclasses.replace(
        part.pool, sources=("regraded",), score=1.0 - part.pool.score
    )
    parts = [part, TablePart(graded, part.embedding, part.self_model)]
    both = ReplayTable.build(parts, data.models)
    assert both.collections == ("zeroeval", "regraded")
    n = len(part.pool.item_ids)
    train = np.concatenate([data.train[0], data.train[0] + n])
    memory = both.memory_of(train, (128, 128))
    alone = data.table.memory[data.dev[0]]
    mixed = both.with_memory(memory, data.dev[0]).memory[data.dev[0]]
    assert mixed == pytest.approx(alone, abs=1e-6)
    again = both.with_memory(memory, data.dev[0] + n).memory[data.dev[0] + n]
    assert again[..., :2] == pytest.approx(1.0 - alone[..., :2], abs=1e-5)


def test_a_live_request_finds_the_neighbours_a_batch_finds(data: TrainingData) -> None:
    # Two collections, each remembering half the train prompts (graded the other
    # way round in the second), so that some requests are more like the first's
    # prompts and others the second's. The one-request search, which averages
    # only the collections that win, finds bit for bit what a search for that
    # request alone finds.
    part = data.parts[0]
    graded = dataclasses.replace(
        part.pool, sources=("regraded",), score=1.0 - part.pool.score
    )
    both = ReplayTable.build(
        [part, TablePart(graded, part.embedding, part.self_model)], data.models
    )
    n = len(part.pool.item_ids)
    train = np.concatenate([data.train[0][::2], data.train[0][1::2] + n])
    memory = both.memory_of(train, (32, 32))
    models = np.array(data.models.index(MODELS))
    queries = part.embedding[data.dev[0]]
    alone = np.stack([memory.lookup_one(q, models) for q in queries])

    def searched(collection: int | None) -> np.ndarray:
        own = None if collection is None else np.array([collection])
        return np.stack(
            [memory.lookup(q[None], models=models, collection=own)[0] for q in queries]
        )

    assert np.array_equal(alone, searched(None))
    from_first = (alone == searched(0)).all(axis=(1, 2))
    from_second = (alone == searched(1)).all(axis=(1, 2))
    assert (from_first ^ from_second).all()
    assert 0.2 < from_first.mean() < 0.8
    # A batch's matrix product rounds otherwise in the last place.
    batch = memory.lookup(queries, models=models)
    assert alone == pytest.approx(batch, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    ("shaped", "reads_prompt"),
    [(True, False), (True, True), (False, False), (False, True)],
)
def test_the_frozen_network_scores_as_the_network_does(
    data: TrainingData, shaped: bool, reads_prompt: bool
) -> None:
    config = dataclasses.replace(CONFIG, shaped=shaped, reads_prompt=reads_prompt)
    torch.manual_seed(7)
    net = RouterNet(len(data.models.ids), config.net_config(config.reward()))
    with torch.no_grad():  # away from the small start of the output layers
        for parameter in net.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    rows = data.dev[0]
    inputs = data.table.inputs(rows, np.geomspace(1.0, 3000.0, len(rows)))
    state = ep.start(inputs.offered, inputs.self_model)
    state_x, cand_x, cand_model = encode(inputs, state, data.models, net.config)
    legal = ep.legal_actions(state)
    legal[::4, 0] = False
    expected = logits_of(
        net, inputs.embedding, state_x, cand_x, cand_model, legal
    ).numpy()
    got = FrozenNet(net)(inputs.embedding, state_x, cand_x, cand_model, legal)
    assert got.dtype == np.float32
    assert np.array_equal(np.isinf(got), ~legal)
    assert got[legal] == pytest.approx(expected[legal], rel=1e-5, abs=1e-5)
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def _refusal(directory: Path, manifest: dict[str, Any]) -> str:
    """The message that refuses ``directory`` once its manifest is ``manifest``."""
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(directory)
    return str(info.value)


def _restamped(directory: Path, manifest: dict[str, Any]) -> str:
    """The refusal of ``manifest`` stamped on the weights (a faulty writer)."""
    stamp_manifest(directory, manifest)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(directory)
    return str(info.value)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for file in src.iterdir():
        (dst / file.name).write_bytes(file.read_bytes())
    return dst


def test_damaged_checkpoints_are_refused(checkpoint_dir: Path, tmp_path: Path) -> None:
    manifest = (checkpoint_dir / "manifest.json").read_bytes()
    assert (
        load_checkpoint(checkpoint_dir).digest == hashlib.sha256(manifest).hexdigest()
    )
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "absent")
    assert str(info.value) == (
        f"no checkpoint at {tmp_path / 'absent'}: it does not exist; write one with "
        f"`xrouter train policy --out {tmp_path / 'absent'}`"
    )
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(checkpoint_dir / "manifest.json")
    assert str(info.value) == (
        f"no checkpoint at {checkpoint_dir / 'manifest.json'}: it is a file; give "
        "the directory that `xrouter train policy --out` wrote"
    )
    corrupt = _copy(checkpoint_dir, tmp_path / "corrupt")
    weights = corrupt / "policy.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(corrupt)
    assert str(info.value) == (
        f"{weights} is corrupt or truncated; train the policy again"
    )
    # One byte of the numbers flipped (in the memory's last tensor, where no
    # network weight is): the file still reads, but not as it was written.
    flipped = _copy(checkpoint_dir, tmp_path / "flipped")
    weights = flipped / "policy.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(flipped)
    assert str(info.value) == (
        f"{weights} holds other numbers than it was written with (damaged since); "
        "train the policy again"
    )
    # Weights rewritten as NaN, the manifest's digest kept (and no digest of the
    # numbers, as in files written before they carried one): readable, but no
    # network routes with them.
    nan = _copy(checkpoint_dir, tmp_path / "nan")
    weights = nan / "policy.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        stamp = handle.metadata()
    assert set(stamp) == {"manifest_sha256", "tensors_sha256"}
    del stamp["tensors_sha256"]
    tensors = load_file(weights)
    tensors["out.weight"] = torch.full_like(tensors["out.weight"], float("nan"))
    save_file(tensors, weights, metadata=stamp)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(nan)
    assert str(info.value) == (
        f"{weights} holds weights that are not finite numbers (out.weight); the "
        "checkpoint is damaged, train the policy again"
    )
    broken = _copy(checkpoint_dir, tmp_path / "broken")
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(broken)
    assert str(info.value) == (
        f"{broken / 'manifest.json'} is not valid JSON; the checkpoint is damaged, "
        "train the policy again"
    )
    edited = _copy(checkpoint_dir, tmp_path / "edited")
    manifest = json.loads((edited / "manifest.json").read_text())
    assert manifest["memory"]["collections"] == ["zeroeval"]
    damaged = "; the checkpoint is damaged, train the policy again"
    where = edited / "manifest.json"
    for entry, value, says in [
        ("wide_of", ["many"], "memory.wide_of.0: Input should be a valid integer"),
        (
            "wide_of",
            [-1],
            "memory.wide_of.0: Input should be greater than or equal to 0",
        ),
        ("wide_of", 128, "memory.wide_of: Input should be a valid list"),
        (
            "wide_of",
            [128, 128],
            "memory.wide_of must hold a neighbour count per name in "
            "memory.collections (1)",
        ),
        ("collections", "zeroeval", "memory.collections: Input should be a valid list"),
        ("collections", ["a", "a"], "memory.collections names a collection twice"),
        ("near", 0, "memory.near: Input should be greater than or equal to 1"),
    ]:
        changed = json.loads(json.dumps(manifest))
        changed["memory"][entry] = value
        assert _refusal(edited, changed) == f"{where}: {says}{damaged}"
    for entry, value, says in [
        ("memory", [], "memory: Input should be an object"),
        ("models", 5, "models: Input should be a valid list"),
        ("lambda_range", [1], "lambda_range.1: Field required"),
        (
            "default_lambda",
            "x",
            "default_lambda: Input should be a valid number, "
            "unable to parse string as a number",
        ),
        (
            "net",
            {"hidden": "big"},
            "net.hidden: Input should be a valid number, unable to parse string as "
            "a number",
        ),
    ]:
        changed = json.loads(json.dumps(manifest))
        changed[entry] = value
        assert _refusal(edited, changed) == f"{where}: {says}{damaged}"
    # Entries of the right types that disagree with each other.
    net = manifest["net"]
    low, high = manifest["lambda_range"]
    assert (low, high) == (0.1, 30000.0)
    for entry, value, says in [
        (
            "lambda_range",
            [high, low],
            "lambda_range must be [min, max] with 0 < min < max, got 30000 to 0.1",
        ),
        (
            "default_lambda",
            1e9,
            "default_lambda 1e+09 lies outside lambda_range 0.1 to 30000",
        ),
        (
            "prices",
            {MODELS[0]: manifest["prices"][MODELS[0]]},
            f"prices lacks the input and output price of {MODELS[1]}",
        ),
        (
            "prices",
            {
                **manifest["prices"],
                MODELS[0]: {"input_per_mtok": -3.0, "output_per_mtok": 0.6},
            },
            f"prices.{MODELS[0]}.input_per_mtok: Input "
            "should be greater than or equal to 0",
        ),
        (
            "net",
            {**net, "max_turns": 0},
            "net: hidden, head_hidden and max_turns "
            f"must be at least 1, got {net['hidden']}, {net['head_hidden']} and 0",
        ),
    ]:
        changed = json.loads(json.dumps(manifest))
        changed[entry] = value
        assert _refusal(edited, changed) == f"{where}: {says}{damaged}"
    changed = json.loads(json.dumps(manifest))
    changed["net"]["hidden"] = "128"  # a number, but not of the right type
    assert _refusal(edited, changed) == (
        f"{where}: the network settings are not this xrouter's; train the policy again"
    )
    # A well-formed manifest that is not the one the weights were written with.
    weights = edited / "policy.safetensors"
    edit = f"{where} is not the manifest {weights} was written with (edited or "
    for entry, value in [
        ("models", [MODELS[1], MODELS[0], MODELS[2]]),
        ("embedding", "minilm"),
        ("default_lambda", 5.0),
    ]:
        changed = json.loads(json.dumps(manifest))
        changed[entry] = value
        assert _refusal(edited, changed) == f"{edit}replaced since){damaged}"
    # Stamped alike but not alike in size: the weights are checked against it.
    changed = json.loads(json.dumps(manifest))
    changed["memory"]["items"] += 1  # the weights hold one prompt fewer
    assert _restamped(edited, changed) == (
        f"{weights} does not fit the network {where} describes{damaged}"
    )
    changed["memory"]["items"] -= 1
    changed["models"] = list(MODELS[:2])
    assert _restamped(edited, changed) == (
        f"{weights} does not fit the network {where} describes{damaged}"
    )
    bare = _copy(checkpoint_dir, tmp_path / "bare")
    (bare / "policy.safetensors").unlink()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bare)
    assert str(info.value) == (
        f"{bare / 'policy.safetensors'} is missing; the checkpoint is incomplete, "
        "train it again"
    )


def test_a_pool_the_policy_never_saw_is_refused(
    checkpoint_dir: Path, store: Store
) -> None:
    checkpoint = load_checkpoint(checkpoint_dir)
    policy = LearnedPolicy(checkpoint, load_catalog(), StandInEmbedder())
    pool = ReplayPool.load(store, ["zeroeval"], MODELS)
    pool = dataclasses.replace(pool, models=[*MODELS[:2], "gemini-1.5-flash"])
    with pytest.raises(CheckpointError) as info:
        policy.fit(pool, np.arange(3))
    assert str(info.value) == (
        f"the policy at {checkpoint_dir} was trained without gemini-1.5-flash; it "
        "knows gpt-4o-mini-2024-07-18, claude-3-haiku-20240307, gemma-2-2b-it. "
        "Give it a pool of those models, or train again with this pool"
    )
    lone = ReplayPool.load(store, ["zeroeval"], MODELS[:1])
    with pytest.raises(CheckpointError) as info:
        policy.fit(lone, np.arange(3))
    assert str(info.value) == (
        "a router needs a pool of at least 2 models; got 1 (gpt-4o-mini-2024-07-18)"
    )


def test_a_changed_price_is_named_in_a_warning(
    checkpoint_dir: Path,
    store: Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shipped = next(c for c in load_catalog() if c.id == MODELS[0])
    card = shipped.model_dump(mode="json") | {"input_per_mtok": 0.3}
    file = tmp_path / "cards.yaml"
    file.write_text(json.dumps([card]))
    assert read_cards(file)[0].input_per_mtok == 0.3
    policy = LearnedPolicy(
        load_checkpoint(checkpoint_dir),
        load_catalog([file]),
        StandInEmbedder(store.path / "embeddings"),
    )
    assert _warnings_of_fit(policy, store, caplog) == [
        f"price of {MODELS[0]} changed since the policy at {checkpoint_dir} was "
        "trained: input $0.15 -> $0.3 per 1M tokens; it routes with the new price"
    ]


def test_a_pool_whose_records_the_memory_lacks_is_routed_with_a_warning(
    checkpoint_dir: Path,
    store: Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A policy whose memory was trained on another source's records.
    other = _copy(checkpoint_dir, tmp_path / "other")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["memory"]["collections"] = ["elsewhere"]
    stamp_manifest(other, manifest)
    policy = LearnedPolicy(
        load_checkpoint(other),
        load_catalog(),
        StandInEmbedder(store.path / "embeddings"),
    )
    assert _warnings_of_fit(policy, store, caplog) == [
        f"the policy at {other} remembers no records of zeroeval (it knows "
        "elsewhere); each model's estimates come from the records whose prompts "
        "are most like the request, as for a live request"
    ]
    pool = ReplayPool.load(store, ["zeroeval"], MODELS)
    assert policy.route(pool, np.arange(10), 2.0).called.shape == (10, 3)


def _warnings_of_fit(
    policy: LearnedPolicy, store: Store, caplog: pytest.LogCaptureFixture
) -> list[str]:
    """What fitting ``policy`` to the small zeroeval pool logs as warnings."""
    with caplog.at_level(logging.WARNING):
        policy.fit(ReplayPool.load(store, ["zeroeval"], MODELS), np.arange(3))
    return [r.getMessage() for r in caplog.records]


def test_lambda_outside_the_trained_range_is_refused(
    checkpoint_dir: Path, store: Store
) -> None:
    checkpoint = load_checkpoint(checkpoint_dir)
    policy = LearnedPolicy(
        checkpoint, load_catalog(), StandInEmbedder(store.path / "embeddings")
    )
    pool = ReplayPool.load(store, ["zeroeval"], MODELS)
    policy.fit(pool, np.arange(3))
    assert min(policy.knobs()) == 0.1 and max(policy.knobs()) == 3e4
    assert 2.0 in policy.knobs() and policy.default_knob() == 2.0
    routing = policy.route(pool, np.arange(10), 3e4)
    assert routing.called.shape == (10, 3)
    with pytest.raises(ConfigError) as info:
        policy.route(pool, np.arange(10), 1e5)
    assert str(info.value) == (
        f"lambda 100000 is outside the range the policy at {checkpoint_dir} was "
        "trained on (0.1 to 30000); choose a lambda in that range or train a "
        "policy over a wider one"
    )


def _table(
    checkpoint: Any,
    pool: ReplayPool,
    rows: np.ndarray,
    vectors: np.ndarray,
    models: Any,
) -> ReplayTable:
    """The pool as the network's table, ``rows`` holding ``vectors`` as their
    prompt embeddings (the memory's features filled in for them)."""
    embedding = np.zeros((len(pool.item_ids), 384), dtype=np.float32)
    embedding[rows] = vectors
    table = ReplayTable.build([TablePart(pool, embedding, MODELS[2])], models)
    return table.with_memory(checkpoint.memory, rows)


def test_live_decisions_on_real_embeddings_match_the_replayed_episodes(
    checkpoint_dir: Path, store: Store
) -> None:
    """The real MiniLM embedder on 40 prompts; the serving path (one request at a
    time) decides as the batched episodes do."""
    checkpoint = load_checkpoint(checkpoint_dir)
    catalog = load_catalog()
    pool = ReplayPool.load(store, ["zeroeval"], MODELS)
    # Held-out prompts: the memory holds the train items, which a replayed
    # episode would not let see themselves.
    rows = np.flatnonzero(~split_mask(pool.item_ids, "train"))[::25][:40]
    vectors = Embedder().encode([routing_text(it) for it in pool.items(rows)])
    assert vectors.shape == (40, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    models = checkpoint.model_table(catalog)
    table = _table(checkpoint, pool, rows, vectors, models)
    router = LiveRouter(checkpoint, catalog, MODELS, MODELS[2])
    tokens = pool.input_tokens[rows]
    assert (tokens == tokens[:, :1]).all()  # one prompt length for every model
    for lam in (1.0, 300.0, 1e4):
        first = route_rows(checkpoint.net, table, models, rows, lam).turns[0].action
        live = [
            router.first_decision(v, lam, int(n))
            for v, n in zip(vectors, tokens[:, 0], strict=True)
        ]
        ids = [0 if d.kind == "answer" else 1 + MODELS.index(d.model) for d in live]
        assert ids == first.tolist()


class _Known(Embedder):
    """Returns a fixed vector for each conversation text it was given."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.vectors = vectors

    def encode(self, texts: Any, progress: Any = None) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def test_whole_episodes_through_the_orchestrator_play_as_the_replayed_ones(
    checkpoint_dir: Path, store: Store
) -> None:
    """PolicyRouter plays every turn with the network; on the same prompt vectors
    it calls and returns what the batched episodes do, wherever its reading of
    the live responses' final answers agrees with the recorded one."""
    checkpoint = load_checkpoint(checkpoint_dir)
    catalog = load_catalog()
    pool = ReplayPool.load(store, ["zeroeval"], MODELS)
    rows = np.flatnonzero(~split_mask(pool.item_ids, "train"))[::10][:60]
    items = pool.items(rows)
    vectors = StandInEmbedder().encode([routing_text(it) for it in items])
    models = checkpoint.model_table(catalog)
    table = _table(checkpoint, pool, rows, vectors, models)
    known = {}
    for item, vector in zip(items, vectors, strict=True):
        messages = [Message(role, text) for role, text in item.messages]  # type: ignore[arg-type]
        known[conversation_text(messages)] = vector
    router = PolicyRouter(checkpoint, catalog, MODELS, MODELS[2], _Known(known))
    limits = Limits(max_turns=checkpoint.net.config.max_turns)
    orchestrator = Orchestrator(replay_entries(pool, catalog), limits)
    compared = 0
    for lam in (0.3, 30.0, 3000.0):
        played = route_rows(checkpoint.net, table, models, rows, lam).state
        for k, (row, item) in enumerate(zip(rows, items, strict=True)):
            messages = [Message(role, text) for role, text in item.messages]  # type: ignore[arg-type]
            result = asyncio.run(
                orchestrator.run(router, messages, lam=lam, item_id=item.item_id)
            )
            calls = [c for c in result.trace.calls if not c.by_router]
            live = {
                MODELS.index(c.model): final_answer(c.response or "") for c in calls
            }
            recorded = [pool.extracted[row, j] for j in live]
            if [a is None for a in live.values()] != [a is None for a in recorded]:
                continue  # a different reading of the answers, a different episode
            compared += 1
            assert set(live) == set(np.flatnonzero(ep.charged(played)[k]))
            assert MODELS.index(result.answered_by[0]) == played.chosen[k]
    assert compared >= 120


def test_a_later_turn_decides_from_what_came_back_as_in_the_batched_episodes(
    checkpoint_dir: Path, store: Store
) -> None:
    """After a first call to each model in turn, the live router's next action
    (from the response's cost, length and answer) is the batched episodes'."""
    checkpoint = load_checkpoint(checkpoint_dir)
    net, catalog = checkpoint.net, load_catalog()
    pool = ReplayPool.load(store, ["zeroeval"], MODELS)
    rows = np.flatnonzero(~split_mask(pool.item_ids, "train"))[::10][:40]
    vectors = StandInEmbedder().encode([routing_text(it) for it in pool.items(rows)])
    models = checkpoint.model_table(catalog)
    table = _table(checkpoint, pool, rows, vectors, models)
    live = LiveRouter(checkpoint, catalog, MODELS, MODELS[2])
    rules = ep.EpisodeRules(net.config.max_turns)
    tokens = pool.input_tokens[rows, 0]
    m = len(MODELS)
    kinds = set()
    for lam in (0.3, 30.0, 3000.0):
        inputs = table.inputs(rows, np.full(len(rows), lam))
        first = ep.start(inputs.offered, inputs.self_model)
        for j in range(m):
            state = ep.step(first, np.full(len(rows), 1 + j), rules)
            state_x, cand_x, cand_model = encode(inputs, state, models, net.config)
            legal = ep.legal_actions(state)
            batched = logits_of(
                net, inputs.embedding, state_x, cand_x, cand_model, legal
            ).argmax(dim=1)
            for k, row in enumerate(rows):
                mine = [i == j for i in range(m)]
                seen = Seen(
                    called=mine,
                    answered=mine,
                    cost=[
                        float(pool.cost[row, j]) if i == j else 0.0 for i in range(m)
                    ],
                    output_tokens=[
                        int(pool.output_tokens[row, j]) if i == j else 0
                        for i in range(m)
                    ],
                    answers=[
                        pool.extracted[row, j] if i == j else None for i in range(m)
                    ],
                    turns=1,
                )
                decision = live.decide(vectors[k], lam, int(tokens[k]), seen)
                assert decision is not None
                kinds.add(decision.kind)
                action = {
                    "answer": 0,
                    "call": 1 + MODELS.index(decision.model),
                    "select": 1 + m + MODELS.index(decision.model),
                }[decision.kind]
                assert action == int(batched[k])
    assert kinds >= {"call", "select"}


def _view_after(calls: list[CallRecord], catalog: Catalog, turn: int) -> EpisodeView:
    """A live episode's view at ``turn``, at lambda 2, after ``calls``."""
    return EpisodeView(
        messages=(Message("user", "Janet's ducks?"),),
        pool=[catalog.get(m) for m in MODELS],
        lam=2.0,
        turn=turn,
        max_turns=3,
        budget_left_usd=1.0,
        calls=calls,
    )


def test_the_policy_router_tells_the_network_what_came_back(
    checkpoint_dir: Path,
) -> None:
    """Failed calls are tried no more and never selected; a select names the
    model's latest answer; the router's own model's answer is returned at once."""
    checkpoint = load_checkpoint(checkpoint_dir)
    catalog = load_catalog()
    router = PolicyRouter(
        checkpoint, catalog, MODELS, MODELS[2], StandInEmbedder(), name="p"
    )
    given: list[Seen] = []
    script: list[Decision | None] = []

    def decide(embedding: Any, lam: float, tokens: int, seen: Seen) -> Any:
        given.append(seen)
        return script.pop(0)

    router.live.decide = decide  # type: ignore[method-assign]
    answer = "so the answer is \\boxed{18}."
    calls = [
        CallRecord(MODELS[0], None, Usage(10, 0), 0.0, call_id="c1", error="timeout"),
        CallRecord(MODELS[1], answer, Usage(10, 7), 0.002, call_id="c2", turn=2),
    ]
    view = _view_after(calls, catalog, turn=3)
    script.append(Decision("select", MODELS[1]))
    turn = asyncio.run(router.decide(view))
    assert [(c.name, c.arguments) for c in turn.calls] == [
        ("select_response", {"call_id": "c2"})
    ]
    seen = given[-1]
    assert seen.called == [True, True, False]
    assert seen.answered == [False, True, False]
    assert seen.cost == [0.0, 0.002, 0.0] and seen.output_tokens == [0, 7, 0]
    assert seen.answers == [None, "18", None] and seen.turns == 2

    script.append(None)  # nothing left to try: the turn-limit rule answers
    assert asyncio.run(router.decide(view)).calls == ()

    own = CallRecord(MODELS[2], "18", Usage(10, 1), 0.0001, call_id="c3", turn=3)
    view.calls = [*calls, own]
    turn = asyncio.run(router.decide(view))
    assert [(c.name, c.arguments) for c in turn.calls] == [
        ("select_response", {"call_id": "c3"})
    ]
    assert len(given) == 2  # the network was not asked


def test_a_fallbacks_answer_counts_as_its_own_models(checkpoint_dir: Path) -> None:
    """When the model asked for failed and its fallback answered, the network is
    told that the fallback's model answered (so it is not paid for again) and
    that the model asked for was called and failed."""
    checkpoint = load_checkpoint(checkpoint_dir)
    catalog = load_catalog()
    router = PolicyRouter(
        checkpoint, catalog, MODELS, MODELS[2], StandInEmbedder(), name="p"
    )
    given: list[Seen] = []

    def decide(embedding: Any, lam: float, tokens: int, seen: Seen) -> Any:
        given.append(seen)
        return Decision("select", MODELS[1])

    router.live.decide = decide  # type: ignore[method-assign]
    calls = [
        CallRecord(MODELS[0], None, Usage(10, 0), 0.0, call_id="c1", error="http 500"),
        CallRecord(
            MODELS[1],
            "\\boxed{18}",
            Usage(10, 5),
            0.001,
            call_id="c1",
            turn=1,
            fallback_for=MODELS[0],
        ),
    ]
    view = _view_after(calls, catalog, turn=2)
    turn = asyncio.run(router.decide(view))
    assert [(c.name, c.arguments) for c in turn.calls] == [
        ("select_response", {"call_id": "c1"})
    ]
    (seen,) = given
    assert seen.called == [True, True, False]
    assert seen.answered == [False, True, False]
    assert seen.answers == [None, "18", None] and seen.cost == [0.0, 0.001, 0.0]
