"""``xrouter serve``: the OpenAI-compatible routing gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xrouter.cli.app import app, err_console, guarded
from xrouter.core.errors import ConfigError


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

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be from 1 to 65535, got {port}")
    config = load_gateway_config(config_file)
    err_console.print(
        f"xrouter gateway on http://{host}:{port}/v1 (health: /health, metrics: "
        f"/metrics); request log {config.log_path}"
    )
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        workers=1,
    )
