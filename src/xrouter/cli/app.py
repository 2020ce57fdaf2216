"""The ``xrouter`` command line: the CLI owns the console, logging and progress bars."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from xrouter.core.errors import ConfigError, XRouterError

__all__ = [
    "app",
    "console",
    "err_console",
    "guarded",
    "main",
    "progress_reporter",
    "writable_dir",
]

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="xrouter",
    help="Cost-aware routing across a pool of LLMs: data, evaluation and training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (a log file, CI) gets wide enough tables instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 132)
err_console = Console(stderr=True)

StorePath = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="Records store directory (default: $XROUTER_HOME/store, "
        "XROUTER_HOME defaulting to ~/.cache/xrouter).",
        show_default=False,
    ),
]
CatalogFiles = Annotated[
    list[Path] | None,
    typer.Option(
        "--catalog",
        help="YAML file of model cards that add to or override the shipped ones; "
        "may be given several times.",
        show_default=False,
    ),
]


# Directories the running command created (see ``writable_dir``); ``guarded``
# removes those that a failed command leaves empty.
_created: list[Path] = []


def writable_dir(path: Path, what: str) -> Path:
    """``path`` as a directory this process can write into, created if need be.

    Checked before any work starts, so a bad path fails at once rather than after
    a long run. If the command then fails, what it created here and left empty is
    removed again.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file; give a directory")
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        _created.extend(missing)  # deepest first
    except OSError as exc:
        raise ConfigError(
            f"cannot create {what} {path} ({exc.strerror}); give a writable directory"
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} is not writable; give a writable directory")
    return path


def guarded(func: Callable[P, R]) -> Callable[P, R]:
    """Turn xrouter's own errors into one clear line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        _created.clear()
        try:
            return func(*args, **kwargs)
        except XRouterError as exc:
            _remove_empty_created()
            message = Text.assemble(("error: ", "bold red"), str(exc))
            err_console.print(message, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            _remove_empty_created()
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except OSError as exc:
            # What the system refused (a full disk, a directory where a file
            # goes): its own words and the path, not a traceback.
            _remove_empty_created()
            where = f"{exc.filename}: " if exc.filename else ""
            reason = exc.strerror or str(exc)
            message = Text.assemble(
                ("error: ", "bold red"),
                f"{where}{reason.lower()}; fix that and run the command again",
            )
            err_console.print(message, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _remove_empty_created() -> None:
    for path in _created:
        with contextlib.suppress(OSError):
            path.rmdir()  # only an empty directory goes
    _created.clear()


class _RichReporter:
    """Adapts a rich ``Progress`` to the library's ``Reporter`` protocol."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None

    def start(self, stage: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[-1].total)
        self.task = self.progress.add_task(stage, total=total)

    def advance(self, amount: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, amount)


class _LineReporter:
    """Progress as a line per quarter of each stage, for logs and CI output."""

    def __init__(self) -> None:
        self.stage, self.total, self.done, self.next = "", 0, 0, 0.0

    def start(self, stage: str, total: int) -> None:
        self.stage, self.total, self.done, self.next = stage, total, 0, 0.25
        err_console.print(Text(f"{stage}: 0/{total}"))

    def advance(self, amount: int = 1) -> None:
        self.done += amount
        while self.total and self.done >= self.next * self.total:
            err_console.print(Text(f"{self.stage}: {self.done}/{self.total}"))
            self.next += 0.25


@contextmanager
def progress_reporter() -> Iterator[_RichReporter | _LineReporter]:
    """Progress bars on a terminal; plain lines at each quarter when piped."""
    if not err_console.is_terminal:
        yield _LineReporter()
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as progress:
        yield _RichReporter(progress)


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log the library's INFO lines.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )


def main() -> None:
    """Entry point of the ``xrouter`` console script."""
    # Importing each module registers its sub-commands.
    from xrouter.cli import (  # noqa: F401
        collect,
        data,
        evaluate,
        logs,
        route,
        serve,
        train,
    )

    try:
        app()
    except BrokenPipeError:  # pragma: no cover - piping into `head`
        sys.exit(0)
