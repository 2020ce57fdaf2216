"""Training the LLM router end to end: warm start (SFT), then GRPO, with
checkpoints, resumption, a metrics log and evaluations between the phases.

``train_router`` is what ``xrouter train router`` calls. It runs the same on a CPU
and under ``accelerate launch`` or ``torchrun`` (``Accelerator`` places the model
and accumulates the warm start's gradients). Under several processes the work is
shared, not repeated: every process draws a step's examples alike, takes every
``processes``-th warm-start micro-batch or GRPO example, and the gradients are
averaged (warm start) or summed (GRPO) so that each step is the one a single
process would take; the episodes played are gathered everywhere for dynamic
sampling, advantages and the log; the evaluations' items are shared likewise. The
first process alone writes the log, checkpoints and progress.

The metrics log (``metrics.jsonl``) has one line per step (``phase`` ``sft`` or
``rl``) and one per evaluation and lambda (``phase`` ``eval``, ``stage`` ``base``,
``sft`` or ``rl``, ``lambda``).
"""

from __future__ import annotations

import difflib
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import gather_object

from xrouter.backends.model_dir import local_model_dir
from xrouter.core.catalog import Catalog
from xrouter.core.errors import ConfigError
from xrouter.core.progress import Reporter, Silent
from xrouter.evaluate.suites import Suite
from xrouter.policies.checkpoint import WEIGHTS, check_pool, load_checkpoint
from xrouter.policies.embedding import Embedder
from xrouter.records.store import Store
from xrouter.train.curves import CURVES_FILE, write_curves
from xrouter.train.router_checkpoint import (
    MetricsLog,
    latest_checkpoint,
    save_router_checkpoint,
)
from xrouter.train.router_config import DTYPES, RouterTrainConfig, check_resumable
from xrouter.train.router_data import (
    PolicyTeacher,
    RouterExample,
    RouterTask,
    Teacher,
    draw_examples,
    load_router_task,
    teacher_digest,
)
from xrouter.train.router_eval import (
    Rivals,
    choice_figures,
    eval_rows,
    first_call_logps,
    parse_rate,
    play_router,
    summarize,
)
from xrouter.train.router_policy import PolicyBackend, load_router_model
from xrouter.train.router_rl import (
    Episode,
    collect_groups,
    episode_metrics,
    fill_groups,
    grpo_update,
)
from xrouter.train.router_sft import sft_step, sft_traces, with_contrasts

__all__ = ["METRICS_FILE", "process_state", "train_router"]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def process_state() -> PartialState:
    """This process's place among those ``torchrun`` or ``accelerate launch``
    started (one, when launched plainly). On a machine without an accelerator the
    processes share the work over gloo; accelerate would otherwise take each for
    a lone process, and every one would repeat the whole run. The processes wait
    for each other up to an hour (the first saving a 7B checkpoint, say) rather
    than the collective's default ten minutes."""
    return PartialState(
        cpu=not torch.accelerator.is_available(), timeout=timedelta(hours=1)
    )


def _this_process(accelerator: Accelerator) -> slice:
    """This process's share of a list every process holds alike: every
    ``processes``-th entry from its index on."""
    return slice(accelerator.process_index, None, accelerator.num_processes)


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class _Run:
    """What the phases share: settings, data, model, accelerator, output."""

    config: RouterTrainConfig
    task: RouterTask
    model: Any
    tokenizer: Any
    accelerator: Accelerator
    out: Path
    log: MetricsLog
    reporter: Reporter
    teacher: Teacher | None = None  # None: the oracle

    def manifest(self) -> dict[str, Any]:
        return {
            "base": self.config.base,
            "suite": self.task.suite.name,
            "pool": list(self.task.records.models),
            "train_items": len(self.task.train),
            "data_fingerprint": self.task.fingerprint,
            "teacher_digest": teacher_digest(self.teacher),
            "settings": asdict(self.config),
            "metrics": self.log.last,
        }

    def save(self, optimizer: Any, phase: str, step: int, done: bool) -> None:
        if self.accelerator.is_main_process:
            save_router_checkpoint(
                self.out,
                self.accelerator.unwrap_model(self.model),
                self.tokenizer,
                optimizer,
                phase=phase,
                step=step,
                phase_done=done,
                manifest=self.manifest(),
            )
        self.accelerator.wait_for_everyone()

    @cached_property
    def rivals(self) -> Rivals:
        """The routers every evaluation is compared with, fitted once: the
        nearest-neighbour router and the teacher's policy network, if any."""
        policy = self.teacher if isinstance(self.teacher, PolicyTeacher) else None
        return Rivals(self.task, policy.checkpoint if policy else None)

    def evaluate(self, stage: str) -> None:
        """One line per lambda of ``eval_lambdas``: a router that reads the cost
        weight chooses differently at each; the dev parse rate at the first. The
        processes play every ``processes``-th item each; the first sums up."""
        cfg, acc = self.config, self.accelerator
        model = acc.unwrap_model(self.model)
        card = self.task.catalog.get(cfg.router_card)
        share = _this_process(acc)
        for k, lam in enumerate(cfg.eval_lambdas):
            line: dict[str, Any] = {"phase": "eval", "stage": stage, "lambda": lam}
            if cfg.parse_items and k == 0:
                rows = self.task.dev[: cfg.parse_items][share]
                rate = parse_rate(model, self.tokenizer, card, self.task, rows, lam)
                rates = gather_object([(rate, len(rows))])
                asked = sum(n for _, n in rates)
                line["parse_rate"] = sum(r * n for r, n in rates) / max(asked, 1)
            if cfg.eval_items:
                rows = eval_rows(self.task, cfg.eval_items)
                played = play_router(
                    model,
                    self.tokenizer,
                    card,
                    self.task,
                    rows[share],
                    lam=lam,
                    max_new_tokens=cfg.max_new_tokens,
                )
                played = gather_object(played)
                if acc.is_main_process:  # the rivals are fitted there alone
                    line |= summarize(
                        self.task,
                        rows,
                        played,
                        lam=lam,
                        cost_max=cfg.cost_max,
                        rivals=self.rivals,
                    )
            if cfg.choice_items:
                rows = eval_rows(self.task, cfg.choice_items)[share]
                logps = first_call_logps(
                    model, self.tokenizer, card, self.task, rows, lam=lam
                )
                read = gather_object(list(zip(rows.tolist(), logps, strict=True)))
                if acc.is_main_process:
                    line["first_call"] = choice_figures(
                        self.task, read, lam=lam, cost_max=cfg.cost_max
                    )
            if len(line) > 3:  # something measured beside phase, stage, lambda
                self.log.write(line)


def _examples(run: _Run, rng: np.random.Generator, size: int) -> list[RouterExample]:
    """A step's training examples, drawn with the step's own generator."""
    cfg = run.config
    return draw_examples(
        rng,
        run.task.train,
        size,
        run.task.records.models,
        lam_min=cfg.lambda_min,
        lam_max=cfg.lambda_max,
        full_pool=cfg.full_pool,
    )


def _run_sft(run: _Run, start: int, optimizer: Any) -> None:
    cfg, task = run.config, run.task
    card = task.catalog.get(cfg.router_card)
    pad_id = int(run.tokenizer.pad_token_id)
    run.reporter.start("warm start (SFT)", cfg.sft_steps)
    run.reporter.advance(start)
    for step in range(start, cfg.sft_steps):
        started = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, 1, step])
        examples = _examples(run, rng, cfg.sft_batch)
        drawn = set(examples)
        if cfg.sft_contrast and isinstance(run.teacher, PolicyTeacher):
            contrast = partial(
                run.teacher.contrast,
                rng=rng,
                lam_min=cfg.lambda_min,
                lam_max=cfg.lambda_max,
            )
            examples = with_contrasts(examples, contrast)
        traces = sft_traces(task, examples, run.tokenizer, card, run.teacher)
        loss = sft_step(
            run.model,
            optimizer,
            run.accelerator,
            _micro_batches_of_this_process(run, traces),
            pad_id=pad_id,
            micro_batch=cfg.micro_batch,
            max_grad_norm=cfg.max_grad_norm,
            choice_weight=cfg.choice_weight,
        )
        loss_t = torch.tensor(loss, device=run.accelerator.device)
        loss = float(run.accelerator.reduce(loss_t, reduction="mean"))
        run.log.write(
            {
                "phase": "sft",
                "step": step + 1,
                "loss": loss,
                "tokens": sum(len(t.input_ids) for t in traces),
                "contrasts": sum(example not in drawn for example in examples),
                "seconds": time.perf_counter() - started,
                "peak_memory_mb": _peak_memory_mb(),
            }
        )
        run.reporter.advance()
        done = step + 1 == cfg.sft_steps
        if done or (step + 1) % cfg.checkpoint_every == 0:
            run.save(optimizer, "sft", step + 1, done)


def _micro_batches_of_this_process(run: _Run, traces: list[Any]) -> list[Any]:
    """Every ``processes``-th micro-batch of the step's traces, from this
    process's index on: together the processes cover each micro-batch once."""
    size, acc = run.config.micro_batch, run.accelerator
    batches = [traces[k : k + size] for k in range(0, len(traces), size)]
    return [t for batch in batches[_this_process(acc)] for t in batch]


def _play_round(
    run: _Run,
    backend: PolicyBackend,
    step: int,
    rng: np.random.Generator,
    extra: int,
    n: int,
) -> list[list[Episode]]:
    """The groups of ``n`` fresh examples of a GRPO step: round 0 draws them with
    the step's generator, each refill round with a generator of its own. Each
    process plays every ``processes``-th example; all get every group played."""
    cfg, acc = run.config, run.accelerator
    draw = rng if extra == 0 else np.random.default_rng([cfg.seed, 3, step, extra])
    examples = _examples(run, draw, n)[_this_process(acc)]
    groups = collect_groups(
        run.task, examples, backend, cfg.group_size, cost_max=cfg.cost_max
    )
    played: list[list[Episode]] = gather_object(groups)
    return played


def _run_rl(run: _Run, start: int, optimizer: Any) -> None:
    cfg, task = run.config, run.task
    card = task.catalog.get(cfg.router_card)
    run.reporter.start("RL (GRPO)", cfg.rl_steps)
    run.reporter.advance(start)
    for step in range(start, cfg.rl_steps):
        started = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, 2, step])
        backend = PolicyBackend(
            run.accelerator.unwrap_model(run.model),
            run.tokenizer,
            card,
            temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens,
            # Each process draws its own sequences.
            seed=(cfg.seed * 1_000_003 + step) * run.accelerator.num_processes
            + run.accelerator.process_index,
        )
        play = partial(_play_round, run, backend, step, rng)
        groups, refills = fill_groups(play, cfg.prompts_per_step, cfg.refill_rounds)
        rollout_s = time.perf_counter() - started
        stats = grpo_update(
            run.model,
            optimizer,
            run.accelerator,
            groups,
            clip_low=cfg.clip_low,
            clip_high=cfg.clip_high,
            temperature=cfg.temperature,
            minibatches=cfg.minibatches,
            max_grad_norm=cfg.max_grad_norm,
            rng=rng,
        )
        line = {"phase": "rl", "step": step + 1, **episode_metrics(groups)}
        line |= asdict(stats) | {
            "refill_rounds": refills,
            "rollout_seconds": rollout_s,
            "seconds": time.perf_counter() - started,
            "peak_memory_mb": _peak_memory_mb(),
        }
        run.log.write(line)
        run.reporter.advance()
        done = step + 1 == cfg.rl_steps
        if done or (step + 1) % cfg.checkpoint_every == 0:
            run.save(optimizer, "rl", step + 1, done)


def _teacher(
    config: RouterTrainConfig, task: RouterTask, store: Store
) -> Teacher | None:
    """The warm start's teacher: None for the oracle, else the policy network of
    the checkpoint that ``config.teacher`` names (checked against the pool and the
    lambda range before any training)."""
    if config.teacher == "oracle":
        return None
    path = Path(config.teacher).expanduser()
    if not path.exists() and difflib.get_close_matches(config.teacher, ["oracle"]):
        raise ConfigError(
            f"no teacher {config.teacher!r}: no such checkpoint folder, and the "
            "oracle is spelt 'oracle'; give --teacher oracle or a policy checkpoint"
        )
    checkpoint = load_checkpoint(path)
    check_pool(checkpoint, task.records.models, task.catalog)
    teacher = PolicyTeacher(task, checkpoint, Embedder(store.path / "embeddings"))
    teacher.check_range(config.lambda_min, config.lambda_max)
    return teacher


def train_router(
    store: Store,
    suite: Suite,
    catalog: Catalog,
    config: RouterTrainConfig,
    out: Path,
    *,
    resume: bool = False,
    reporter: Reporter | None = None,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Warm-start then GRPO-train the router; returns the last manifest written
    (also in ``OUT/checkpoint-*/manifest.json``)."""
    catalog.get(config.router_card)
    task = load_router_task(store, suite, catalog, items=config.items, seed=config.seed)
    teacher = _teacher(config, task, store)  # refused before anything is written
    state = process_state()
    if config.sft_batch % (config.micro_batch * state.num_processes):
        raise ConfigError(
            f"sft_batch ({config.sft_batch}) must be a multiple of micro_batch "
            f"({config.micro_batch}) times the processes ({state.num_processes}), so "
            "that each process takes as many micro-batches; change --config's "
            "sft_batch or micro_batch"
        )
    if (out / WEIGHTS).exists():
        raise ConfigError(
            f"{out} holds a policy checkpoint of `xrouter train policy`; give the "
            "router run an --out of its own (nothing there is replaced)"
        )
    found = latest_checkpoint(out)
    if found is not None and not resume:
        raise ConfigError(
            f"{out} already holds checkpoints (the latest {found.path.name}); pass "
            "--resume to continue from it, or choose another --out"
        )
    checkpoint = found if resume else None
    if checkpoint is not None:
        check_resumable(checkpoint.manifest, config, task, out, teacher_digest(teacher))
    elif resume:
        logger.warning("nothing to resume in %s: training starts afresh", out)
    with state.main_process_first():  # the first converts the base model once
        base_dir = local_model_dir(config.base, home=store.path.parent)
    torch.manual_seed(config.seed)
    if config.threads is not None:
        # One thread: on a shared machine, OpenMP threads that wait for a busy
        # core slow every step many times over.
        torch.set_num_threads(config.threads)
    model, tokenizer = load_router_model(
        checkpoint.path if checkpoint else base_dir, dtype=DTYPES[config.dtype]
    )
    accelerator = Accelerator(
        cpu=state.device.type == "cpu",
        gradient_accumulation_steps=config.sft_batch
        // (config.micro_batch * state.num_processes),
    )
    out.mkdir(parents=True, exist_ok=True)
    main = accelerator.is_main_process
    log = MetricsLog(out / METRICS_FILE, on_metrics or (lambda line: None), writes=main)
    if checkpoint is not None:
        log.keep_until(checkpoint.phase, checkpoint.step)
    elif main and (out / METRICS_FILE).exists():
        (out / METRICS_FILE).unlink()  # a fresh run's log starts empty
    run = _Run(
        config,
        task,
        model,
        tokenizer,
        accelerator,
        out,
        log,
        (reporter or Silent()) if main else Silent(),
        teacher,
    )
    phase = checkpoint.phase if checkpoint else "sft"
    step = checkpoint.step if checkpoint else 0
    # A warm start resumed with more --sft-steps than it reached goes on.
    sft_over = phase == "rl" or step >= config.sft_steps

    run.model = accelerator.prepare(model)
    if checkpoint is None:
        run.evaluate("base")
    if not sft_over and config.sft_steps > 0:
        optimizer = torch.optim.AdamW(run.model.parameters(), lr=config.sft_lr)
        if checkpoint is not None:
            checkpoint.load_optimizer(optimizer)
        _run_sft(run, step, accelerator.prepare_optimizer(optimizer))
        run.evaluate("sft")
        phase, step = "rl", 0
    elif phase == "sft":
        step = 0  # the warm start is over; RL starts afresh

    if config.rl_steps > 0 and step < config.rl_steps:
        optimizer = torch.optim.AdamW(run.model.parameters(), lr=config.lr)
        if checkpoint is not None and checkpoint.phase == "rl":
            checkpoint.load_optimizer(optimizer)
        _run_rl(run, step, accelerator.prepare_optimizer(optimizer))
        run.evaluate("rl")
    if main and (out / METRICS_FILE).is_file():  # nothing logged: nothing ran
        write_curves(out / METRICS_FILE, out / CURVES_FILE)
    return run.manifest()
