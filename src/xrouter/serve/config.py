"""The gateway's configuration file, and the default that works offline.

Every key is optional; the defaults serve the zeroeval suite's pool of models,
replayed from their recorded answers, behind the RL-trained policy::

    pool: pool.yaml               # models and backends (default: the suite replayed)
    suite: zeroeval               # the default pool's suite; its self_model stands
                                  # for the router answering itself
    data_dir: ../shared/data      # recorded outputs to ingest if the store lacks them
    router:
      kind: policy                # policy (RL-trained network) or llm (tool-calling)
      checkpoint: ~/.cache/xrouter/policies/zeroeval  # trained once if this key is out
      model: smollm2-135m         # the llm router's model card
      lambda: 1.0                 # default cost weight (default: the policy's own,
                                  # 1.0 for an llm router); per request:
                                  # xrouter:lambda=4
      stream: live                # how the policy streams: live (its first choice's
                                  # tokens as they come; no escalation) or episode
                                  # (the whole episode, then its answer in pieces);
                                  # per request: header x-xrouter-stream
    limits: {max_turns: 3, call_timeout_s: 60, episode_timeout_s: 120, retries: 2,
             default_max_tokens: 1024}   # the output a request without max_tokens
                                  # is given (and its worst case held for); longer
                                  # answers end with finish_reason "length"
    keys:                         # none: the gateway checks no keys
      - {name: team-a, sha256: <hex of the key>, daily_limit_usd: 5}
      - {name: ci, key_env: XROUTER_CI_KEY}
    daily_limit_usd: 100          # all keys together, per UTC day
    request_limit_header: x-xrouter-max-cost   # a per-request ceiling in USD
    max_body_bytes: 1000000
    log: {path: ~/.cache/xrouter/gateway/requests.sqlite, keep_prompts: false,
          max_held: 10000}        # rows kept in memory while the log cannot be
                                  # written (locked, disk full); with that many
                                  # waiting, new requests get 503 until it can

Relative paths are read from the config file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from xrouter.core.yamlfile import read_yaml_model
from xrouter.records.store import default_store_path

__all__ = ["GatewayConfig", "KeySpec", "RouterSpec", "load_gateway_config"]


class RouterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: Literal["policy", "llm"] = "policy"
    checkpoint: Path | None = None
    model: str = "smollm2-135m"
    lam: float | None = Field(default=None, alias="lambda", ge=0, allow_inf_nan=False)
    stream: Literal["live", "episode"] = "live"


class LimitsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_turns: int = Field(default=3, ge=1)
    call_timeout_s: float = Field(default=60.0, gt=0)
    episode_timeout_s: float = Field(default=120.0, gt=0)
    retries: int = Field(default=2, ge=0)
    default_max_tokens: int = Field(default=1024, ge=1)


class KeySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    sha256: str | None = None
    key_env: str | None = None
    daily_limit_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class LogSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = None
    keep_prompts: bool = False
    max_held: int = Field(default=10_000, ge=1)


class GatewayConfig(BaseModel):
    """A whole gateway configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pool: Path | None = None
    suite: str = "zeroeval"
    data_dir: Path | None = None
    router: RouterSpec = RouterSpec()
    limits: LimitsSpec = LimitsSpec()
    keys: tuple[KeySpec, ...] = ()
    daily_limit_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    request_limit_header: str = Field(
        default="x-xrouter-max-cost", pattern=r"^[a-z0-9-]+$"
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    log: LogSpec = LogSpec()

    @property
    def home(self) -> Path:
        return default_store_path().parent

    @property
    def checkpoint_path(self) -> Path:
        return self.router.checkpoint or self.home / "policies" / self.suite

    @property
    def log_path(self) -> Path:
        return self.log.path or self.home / "gateway" / "requests.sqlite"


def load_gateway_config(path: Path | None) -> GatewayConfig:
    """The configuration in ``path``, or the offline default when None."""
    if path is None:
        return GatewayConfig()
    config = read_yaml_model(path, GatewayConfig, "gateway config", empty_ok=True)
    base = path.parent

    def here(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        return p if p.is_absolute() else base / p

    return config.model_copy(
        update={
            "pool": here(config.pool),
            "data_dir": here(config.data_dir),
            "router": config.router.model_copy(
                update={"checkpoint": here(config.router.checkpoint)}
            ),
            "log": config.log.model_copy(update={"path": here(config.log.path)}),
        }
    )
