"""The request log's place, checked before SQLite opens it, and the lock file
that makes one gateway the owner of a log."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TextIO

from xrouter.core.errors import ConfigError

__all__ = ["check_path", "own"]


def check_path(path: Path) -> None:
    """Refuse a path that cannot hold a log, before SQLite gives a vaguer error."""
    if path.is_dir():
        raise ConfigError(
            f"request log path {path} is a directory; give the path of a file, "
            f"such as {path / 'requests.sqlite'}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # SQLite writes its -wal and -shm files beside the log.
        writable = os.access(path.parent, os.W_OK | os.X_OK) and (
            not path.exists() or os.access(path, os.R_OK | os.W_OK)
        )
        problem = None if writable else "not writable by this user"
    except OSError as exc:
        problem = exc.strerror
    if problem:
        raise ConfigError(
            f"cannot write the request log {path} ({problem}); give a path in a "
            "writable folder"
        )


def own(path: Path) -> TextIO:
    """The lock file of the log at ``path``, locked for this process (its pid
    written in it); ``ConfigError`` when another process holds it."""
    lock_path = path.with_name(path.name + ".lock")
    handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 (kept open)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ConfigError(
            f"another gateway (pid {holder}) is writing the request log {path}; "
            "two gateways on one log would each spend the whole daily limits. "
            "Give this one its own log.path, or stop the other"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
