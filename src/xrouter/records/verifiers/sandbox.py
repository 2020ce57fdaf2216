"""Run untrusted Python with its tests in a separate, limited process.

Each run is a fresh ``python -I -S`` child in an empty temporary working directory,
with no ``PATH`` and its own process group. Isolated mode drops ``PYTHON*``
variables and the script directory from ``sys.path``; ``-S`` drops site-packages,
so neither xrouter nor the project's dependencies can be imported (solutions get
the standard library). Before any generated code runs, the child caps its own
address space (``RLIMIT_AS``), CPU seconds, file size and core dumps, moves into a
new network namespace when the kernel allows it, and replaces ``socket.socket`` so
that no connection can be opened in any case. The parent enforces a wall-clock
timeout and kills the whole process group.

The limits are set by the child itself rather than by a ``preexec_fn``:
``preexec_fn`` is unsafe when the parent runs threads, and batches of solutions are
run from a thread pool. The child sets them before it reads the code, so the code
never runs unlimited. This is a guard against buggy code (loops, memory hogs, stray
network calls), not a security boundary against hostile code: files outside the
working directory stay readable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from xrouter.core.errors import SandboxError

__all__ = ["RunResult", "run_tests"]

logger = logging.getLogger(__name__)

_RUNNER = r"""
import ctypes, json, os, resource, socket, sys
payload = json.loads(sys.stdin.read())
mem = payload["memory_mb"] * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
cpu = payload["cpu_s"]
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 24, 1 << 24))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
try:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:
        libc.unshare(0x10000000 | 0x40000000)
except (OSError, AttributeError):
    pass


class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        raise PermissionError("network access is disabled in the sandbox")


def _no_network(*args, **kwargs):
    raise PermissionError("network access is disabled in the sandbox")


socket.socket = socket.SocketType = _NoSocket
socket.create_connection = socket.socketpair = socket.fromfd = _no_network
report = os.fdopen(os.dup(1), "w")
report.write(payload["token"] + " READY\n")
report.flush()
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)
os.dup2(null, 2)
namespace = {"__name__": "__sandbox__"}
try:
    exec(compile(payload["code"], "solution.py", "exec"), namespace)
    for test in payload["tests"]:
        exec(compile(test, "test.py", "exec"), namespace)
    outcome = "PASS"
except AssertionError:
    outcome = "FAIL"
except BaseException as exc:
    outcome = "ERROR " + type(exc).__name__
report.write(payload["token"] + " " + outcome + "\n")
report.flush()
os._exit(0)
"""


@dataclass(frozen=True)
class RunResult:
    """What happened to one run: ``status`` is PASS, FAIL, ERROR <type>,
    TIMEOUT or DIED (the process ended without reporting, e.g. killed for CPU)."""

    passed: bool
    status: str


def run_tests(
    code: str, tests: list[str], *, timeout_s: float = 5.0, memory_mb: int = 512
) -> RunResult:
    """Run ``code`` then each test statement; PASS only if every assert holds.

    Raises ``SandboxError`` only when the child interpreter cannot be started or
    dies before it gets to the code; a failing, crashing or hanging solution is a
    result, not an error.
    """
    token = secrets.token_hex(8)
    payload = json.dumps(
        {
            "code": code,
            "tests": tests,
            "token": token,
            "memory_mb": int(memory_mb),
            "cpu_s": max(1, int(timeout_s) + 1),
        }
    )
    with tempfile.TemporaryDirectory(prefix="xrouter-sandbox-") as workdir:
        out, err, timed_out = _run_child(payload, workdir, timeout_s)
    lines = [line.split(" ", 1)[1] for line in out.splitlines() if line[:16] == token]
    if timed_out:
        if not lines:  # a starved machine, not a broken sandbox: the run just fails
            logger.warning("the sandbox did not start within %.1f s", timeout_s)
        return RunResult(False, "TIMEOUT")
    if not lines:
        raise SandboxError(
            "the sandbox interpreter did not start "
            f"({err.strip()[-300:] or 'no output'}); check that {sys.executable} "
            f"runs and that memory_mb={memory_mb} leaves room for it"
        )
    status = lines[-1] if len(lines) > 1 else "DIED"
    return RunResult(status == "PASS", status)


def _run_child(payload: str, workdir: str, timeout_s: float) -> tuple[str, str, bool]:
    env = {"HOME": workdir, "LANG": "C.UTF-8", "TMPDIR": workdir}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _RUNNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
            text=True,
        )
    except OSError as exc:
        raise SandboxError(
            f"cannot start the sandbox interpreter {sys.executable}: {exc}"
        ) from exc
    try:
        out, err = proc.communicate(payload, timeout=timeout_s)
        return out, err, False
    except subprocess.TimeoutExpired:
        logger.debug("sandbox run exceeded %.1f s; killing it", timeout_s)
        _kill_group(proc)
        out, err = proc.communicate()
        return out, err, True
    finally:
        _kill_group(proc)  # also reap anything the code left running


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
