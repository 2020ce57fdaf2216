"""``xrouter serve``: the OpenAI-compatible routing gateway."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from xrouter.cli.app import app, err_console, guarded
from xrouter.core.errors import ConfigError, XRouterError

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@app.command("serve")
@guarded
def serve_command(
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Gateway YAML (pool, router, keys, limits, log); default: the "
            "zeroeval models replayed offline behind the trained policy.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    log_level: Annotated[
        str, typer.Option("--log-level", help="uvicorn's log level.")
    ] = "warning",
) -> None:
    """Serve /v1/chat/completions (routed, cost-accounted), /v1/models, /health
    and /metrics."""
    import uvicorn

    from xrouter.serve.app import create_app
    from xrouter.serve.config import load_gateway_config
    from xrouter.serve.gateway import Gateway
    from xrouter.serve.logwriter import LogWriter
    from xrouter.serve.requestlog import RequestLog

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be from 1 to 65535, got {port}")
    log_level = log_level.lower()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(
            f"--log-level must be one of {', '.join(_LOG_LEVELS)}, got {log_level!r}"
        )
    config = load_gateway_config(config_file)
    # The log is opened (its lock taken, rows a stopped gateway saved written in)
    # at startup; doing it here first turns a bad log.path, another gateway on
    # it, or a damaged saved file into one line.
    LogWriter(RequestLog(config.log_path, owner=True)).close()
    _check_free(host, port)
    _one_blas_thread()
    gateway = Gateway(config)
    limit = config.limits.episode_timeout_s

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:  # the first signal; a second stops at once
                err_console.print(
                    "stopping: requests in flight finish first (up to the episode "
                    f"time limit, {limit:g} s); press Ctrl-C again to stop at once"
                )
            super().handle_exit(sig, frame)

    server = Server(
        uvicorn.Config(
            create_app(config, gateway),
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            workers=1,
        )
    )
    # A gateway that cannot load its pool or router stops here with the reason,
    # rather than staying up to answer 503.
    gateway.on_failure = lambda: setattr(server, "should_exit", True)
    err_console.print(
        f"xrouter gateway starting on http://{host}:{port}/v1 (health: /health, "
        f"metrics: /metrics); request log {config.log_path}"
    )
    server.run()
    if gateway.error is not None:
        reason = gateway.error
        text = str(reason) if isinstance(reason, XRouterError) else gateway.failed
        raise ConfigError(f"the gateway could not start: {text}")


# What to do when the gateway's address cannot be listened on, by errno.
_LISTEN_ADVICE = {
    errno.EADDRINUSE: "choose another --port, or stop what holds it",
    errno.EADDRNOTAVAIL: "give --host an address of this machine (127.0.0.1, or "
    "0.0.0.0 for all of them)",
}


def _check_free(host: str, port: int) -> None:
    """Refuse an address this process cannot listen on, before anything starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(
            f"--host {host!r} is not an address of this machine ({exc.strerror})"
        ) from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            advice = _LISTEN_ADVICE.get(
                exc.errno or 0, "choose another --host or --port"
            )
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}); {advice}"
            ) from None


def _one_blas_thread() -> None:
    """Let numpy's BLAS and torch use one thread each in this process, unless
    told otherwise.

    A routing decision multiplies small matrices (the memory's similarities with
    numpy, the policy network with torch); thread pools gain nothing on sizes
    this small and, when other work holds the cores, their waiting threads cost
    more than the work: on two busy cores a decision took ~10 ms with torch's
    default threads, ~1 ms with one. numpy is loaded by now, so its environment
    variable would come too late.
    """
    if "OPENBLAS_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    torch.set_num_threads(1)
    try:  # installed with sentence-transformers (through scikit-learn)
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:
        return
    threadpool_limits(1, user_api="blas")
