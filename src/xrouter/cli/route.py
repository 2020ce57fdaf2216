"""``xrouter route``: one episode, with its answer, trace and cost printed."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from xrouter.backends.build import build_pool, replay_pool, router_backend
from xrouter.backends.pool import Pool, load_pool_spec
from xrouter.cli.app import CatalogFiles, StorePath, app, console, guarded
from xrouter.cli.data import open_store
from xrouter.core.catalog import Catalog, load_catalog
from xrouter.core.errors import ConfigError
from xrouter.core.types import ROLES, Message, Trace
from xrouter.orchestrator.budget import Budget
from xrouter.orchestrator.loop import EpisodeResult, Limits, Orchestrator
from xrouter.orchestrator.result import EpisodeFailedError, trace_dict
from xrouter.orchestrator.reward import read_lambda
from xrouter.policies.llm_router import LLMRouter
from xrouter.records.store import Store

if TYPE_CHECKING:  # torch, which a policy needs, takes seconds to import
    from xrouter.policies.policy_router import PolicyRouter

__all__ = ["default_replay_pool", "read_messages"]

DEFAULT_ROUTER = "smollm2-135m"
DEFAULT_SUITE = "zeroeval"


def read_messages(path: Path) -> list[Message]:
    """A conversation from a JSON file: a list of {"role", "content"} objects."""
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read messages file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"messages file {path} is not UTF-8 text (byte {exc.start}); save it "
            "as UTF-8"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"messages file {path} is not JSON: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            f"messages file {path} must hold a non-empty JSON list of "
            '{"role": ..., "content": ...} objects'
        )
    messages = []
    for n, entry in enumerate(raw):
        role = entry.get("role") if isinstance(entry, dict) else None
        content = entry.get("content") if isinstance(entry, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise ConfigError(
                f"messages file {path}, message {n}: needs a role from "
                f"{', '.join(ROLES)} and a string content"
            )
        messages.append(Message(role, content))
    if not any(m.role == "user" for m in messages):
        raise ConfigError(f"messages file {path} has no user message")
    if not any(m.content.strip() for m in messages):
        raise ConfigError(
            f"messages file {path}: every message is empty; give the request text"
        )
    return messages


def default_replay_pool(store: Store, catalog: Catalog, data_dir: Path | None) -> Pool:
    """The offline pool: the zeroeval suite's models, replayed from their records."""
    from xrouter.cli.data import ensure_source
    from xrouter.evaluate.suites import DEFAULT_SUITES

    suite = next(s for s in DEFAULT_SUITES if s.name == DEFAULT_SUITE).resolved(catalog)
    ensure_source(store, catalog, suite.source, data_dir)
    return replay_pool(store, suite.source, suite.pool, catalog)


@app.command("route")
@guarded
def route_command(
    prompt: Annotated[
        str | None, typer.Argument(help="The request; or give --messages.")
    ] = None,
    messages_file: Annotated[
        Path | None,
        typer.Option("--messages", help="JSON file: a list of {role, content}."),
    ] = None,
    pool_file: Annotated[
        Path | None,
        typer.Option(
            "--pool",
            help="Pool YAML (models and backends); default: the zeroeval suite's "
            "models replayed from their records, offline.",
        ),
    ] = None,
    router: Annotated[
        str,
        typer.Option(
            "--router",
            help="The router model: a model card, or a transformers model directory "
            "such as a checkpoint of `xrouter train router`.",
        ),
    ] = DEFAULT_ROUTER,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="Route with a trained policy checkpoint (`xrouter train policy`) "
            "instead of the router model; --router and --router-tokens are then "
            "unused.",
        ),
    ] = None,
    lam_text: Annotated[
        str | None,
        typer.Option(
            "--lambda",
            help="Cost weight the router is told (default: a --policy "
            "checkpoint's default lambda, else 1).",
        ),
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option("--budget", help="Most USD the episode may spend."),
    ] = None,
    max_turns: Annotated[
        int, typer.Option("--max-turns", help="Most router turns.", min=1)
    ] = 3,
    router_tokens: Annotated[
        int,
        typer.Option("--router-tokens", help="Most tokens per router turn.", min=1),
    ] = 256,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Recorded outputs to ingest if the store lacks them "
            "(default: $XROUTER_DATA, else ../shared/data if present).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    store: StorePath = None,
    catalog: CatalogFiles = None,
) -> None:
    """Route one request: the router answers or calls pool models; print the
    answer, every call with its tokens, latency and cost, and the total."""
    if prompt is None and messages_file is None:
        raise ConfigError("give the request as PROMPT or as --messages FILE")
    if prompt is not None and messages_file is not None:
        raise ConfigError("give the request as PROMPT or as --messages FILE, not both")
    lam = None if lam_text is None else read_lambda(lam_text)
    if lam is not None and not math.isfinite(lam):
        raise ConfigError(
            f"--lambda must be a finite number written in ASCII digits, such as 4 "
            f"or 0.5, got {lam_text!r}"
        )
    if policy is None and lam is not None and lam < 0:
        raise ConfigError(f"--lambda must be >= 0, got {lam_text}")
    if prompt is not None and not prompt.strip():
        raise ConfigError("the prompt is empty; give the request text")
    if prompt is not None and not _is_text(prompt):
        raise ConfigError(
            "the prompt is not UTF-8 text (the shell passed bytes that are not); "
            "give it as UTF-8, or in a --messages file saved as UTF-8"
        )
    messages = (
        [Message("user", prompt)]
        if prompt is not None
        else read_messages(messages_file)  # type: ignore[arg-type]
    )
    spec = load_pool_spec(pool_file) if pool_file else None
    # The command line's cards come last: they override the pool file's.
    cards = load_catalog([*(spec.catalog if spec else ()), *(catalog or ())])
    if spec is None:
        pool = default_replay_pool(open_store(store), cards, data_dir)
    else:
        target = None
        if spec.replay is not None and any(m.backend == "replay" for m in spec.models):
            from xrouter.cli.data import ensure_source
            from xrouter.records.ingest import priced_otherwise

            # Replayed costs are priced at ingest: records missing or priced by
            # another catalog are ingested (again), as is everything --from holds.
            target = open_store(store)
            source = spec.replay.source
            if data_dir is not None or priced_otherwise(target, source, cards):
                ensure_source(target, cards, source, data_dir)
        pool = build_pool(spec, cards, target)
    chosen: LLMRouter | PolicyRouter
    if policy is not None:
        from xrouter.policies.checkpoint import load_checkpoint
        from xrouter.policies.policy_router import PolicyRouter

        checkpoint = load_checkpoint(policy)
        chosen = PolicyRouter(checkpoint, cards, pool.ids, None)
        lam = checkpoint.default_lambda if lam is None else lam
        chosen.check(lam)
    else:
        chosen = LLMRouter(router_backend(router, cards), max_tokens=router_tokens)
        lam = 1.0 if lam is None else lam
    orchestrator = Orchestrator(pool, Limits(max_turns=max_turns))
    started = time.monotonic()
    try:
        result = asyncio.run(
            _run(orchestrator, chosen, messages, lam, Budget.limit(budget))
        )
    except EpisodeFailedError as failed:  # what was tried, and paid for, is shown
        elapsed = time.monotonic() - started
        if as_json:
            shown = {"error": str(failed), **trace_dict(failed.trace)}
            console.print_json(json.dumps({**shown, "seconds": elapsed}))
        else:
            _print_trace(failed.trace, [])
            _print_cost(failed.trace, elapsed)
        raise
    elapsed = time.monotonic() - started
    if as_json:
        console.print_json(json.dumps({**result.as_dict(), "seconds": elapsed}))
        return
    _print(result, elapsed)


def _is_text(text: str) -> bool:
    """Whether ``text`` is valid Unicode: bytes a shell passed that are not UTF-8
    arrive as lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def _run(
    orchestrator: Orchestrator,
    router: LLMRouter | PolicyRouter,
    messages: list[Message],
    lam: float,
    budget: Budget,
) -> EpisodeResult:
    try:
        return await orchestrator.run(router, messages, lam=lam, budget=budget)
    finally:
        await orchestrator.pool.aclose()
        if isinstance(router, LLMRouter):
            await router.backend.aclose()


def _print(result: EpisodeResult, elapsed: float) -> None:
    _print_trace(result.trace, result.tool_errors)
    console.print(
        f"\n[bold]answer[/] ({result.strategy}, from {', '.join(result.answered_by)}, "
        f"{result.turns} turn(s)):"
    )
    console.print(result.answer, markup=False, highlight=False)
    _print_cost(result.trace, elapsed)


def _print_trace(trace: Trace, tool_errors: list[str]) -> None:
    """Every call as a table, and the tool errors the router was shown."""
    table = Table(title="trace", title_justify="left")
    for column in ("turn", "call", "model", "tokens in/out", "latency", "cost USD"):
        table.add_column(column, justify="right" if column != "model" else "left")
    table.add_column("outcome")
    for c in trace.calls:
        outcome = "router turn" if c.by_router else (c.error or "ok")
        if c.fallback_for:
            outcome += f" (fallback for {c.fallback_for})"
        table.add_row(
            str(c.turn),
            c.call_id or "-",
            c.model,
            f"{c.usage.input_tokens}/{c.usage.output_tokens}",
            f"{c.latency_s:.2f} s",
            f"{c.cost_usd:.6f}",
            outcome,
        )
    console.print(table)
    for error in tool_errors:
        console.print(f"[yellow]tool error shown to the router:[/] {error}")


def _print_cost(trace: Trace, elapsed: float) -> None:
    router_cost = sum(c.cost_usd for c in trace.calls if c.by_router)
    model_calls = sum(not c.by_router for c in trace.calls)
    console.print(
        f"\ncost: ${trace.cost_usd:.6f} = router ${router_cost:.6f} + models "
        f"${trace.cost_usd - router_cost:.6f} over {model_calls} model call(s), "
        f"{trace.usage.total_tokens:,} tokens, {elapsed:.1f} s",
        markup=False,
    )
