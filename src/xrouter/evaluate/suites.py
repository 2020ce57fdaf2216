"""Evaluation suites: one source of records with its own pool of models.

Each suite names its pool (canonical model-card ids), the strong/weak pair that APGR
compares against, and optionally a small model that stands for the router answering
a request itself. Users pass their own suites as YAML (``--suites FILE``).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from xrouter.backends.replay import ReplayPool
from xrouter.core.catalog import Catalog
from xrouter.core.errors import ConfigError
from xrouter.core.yamlfile import read_settings_text, yaml_problem
from xrouter.records.sources import SOURCES
from xrouter.records.store import Store

__all__ = ["DEFAULT_SUITES", "Suite", "load_suites"]

_NAME = re.compile(r"[A-Za-z0-9._-]+")


class Suite(BaseModel):
    """One evaluation suite."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Suite name, used in reports and file names.")
    source: str = Field(description="The records source the suite reads.")
    pool: tuple[str, ...] = Field(description="Model-card ids of the pool, >= 2.")
    tasks: tuple[str, ...] | None = Field(
        default=None, description="Restrict to these tasks; all tasks when omitted."
    )
    strong: str = Field(description="The strong model of the APGR pair.")
    weak: str = Field(description="The weak model of the APGR pair.")
    self_model: str | None = Field(
        default=None,
        description="A pool model that stands for the router answering by itself.",
    )
    exclude_meta: tuple[str, ...] = Field(
        default=(), description="Leave out items whose meta flags any of these keys."
    )

    @field_validator("pool", "tasks", "exclude_meta", mode="before")
    @classmethod
    def _a_list(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError(f"give a list, e.g. [{value}, ...], not one name")
        return value

    @model_validator(mode="after")
    def _check(self) -> Suite:
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"suite name {self.name!r} must be letters, digits, '.', '_' or '-' "
                "(it names the suite's plot file)"
            )
        if self.source not in SOURCES and not self.source.startswith("collected-"):
            raise ValueError(
                f"unknown source {self.source!r}; choose from {', '.join(SOURCES)} "
                "or a collected source (collected-NAME)"
            )
        if len(self.pool) < 2:
            raise ValueError(f"suite {self.name!r} needs a pool of >= 2 models")
        if self.tasks is not None and not self.tasks:
            raise ValueError(
                f"suite {self.name!r} lists no tasks; leave tasks out to take every "
                "task of its source, or name some"
            )
        if len(set(self.pool)) != len(self.pool):
            raise ValueError(f"suite {self.name!r} lists a pool model twice")
        named = [self.strong, self.weak] + (
            [self.self_model] if self.self_model else []
        )
        outside = [m for m in named if m not in self.pool]
        if outside:
            raise ValueError(
                f"suite {self.name!r} names {', '.join(outside)} outside its pool"
            )
        return self

    def resolved(self, catalog: Catalog) -> Suite:
        """The same suite with every model name replaced by its card's id."""
        try:
            ids = [catalog.resolve(m) for m in self.pool]
            roles = {
                "strong": catalog.resolve(self.strong),
                "weak": catalog.resolve(self.weak),
                "self_model": catalog.resolve(self.self_model)
                if self.self_model
                else None,
            }
        except ConfigError as exc:
            raise ConfigError(f"suite {self.name!r}: {exc}") from exc
        twice = sorted({m for m in ids if ids.count(m) > 1})
        if twice:
            raise ConfigError(
                f"suite {self.name!r} lists {', '.join(twice)} twice in its pool "
                "(once by an alias); keep one name per model"
            )
        return self.model_copy(update={"pool": tuple(ids), **roles})

    def replay_pool(self, store: Store) -> ReplayPool:
        """The suite's records in ``store`` as a replay pool (its pool, its tasks,
        without the items its ``exclude_meta`` leaves out); resolve it first."""
        return ReplayPool.load(
            store,
            [self.source],
            self.pool,
            tasks=self.tasks,
            exclude_meta=self.exclude_meta,
        )


DEFAULT_SUITES: tuple[Suite, ...] = (
    Suite(
        name="zeroeval",
        source="zeroeval",
        pool=(
            "o1-mini-2024-09-12",
            "claude-3-opus-20240229",
            "claude-3-5-sonnet-20240620",
            "gpt-4o-2024-08-06",
            "Llama-3.1-405B-Inst@sambanova",
            "Mistral-Large-2",
            "gemini-1.5-pro",
            "Meta-Llama-3.1-70B-Instruct",
            "claude-3-haiku-20240307",
            "gpt-4o-mini-2024-07-18",
            "deepseek-v2.5-0908",
            "gemini-1.5-flash",
            "Meta-Llama-3.1-8B-Instruct",
            "gemma-2-2b-it",
        ),
        strong="o1-mini-2024-09-12",
        weak="gpt-4o-mini-2024-07-18",
        self_model="gemma-2-2b-it",
    ),
    Suite(
        name="routerbench",
        source="routerbench",
        pool=(
            "gpt-4-1106-preview",
            "gpt-3.5-turbo-1106",
            "claude-v2",
            "claude-v1",
            "claude-instant-v1",
            "meta/llama-2-70b-chat",
            "mistralai/mixtral-8x7b-chat",
            "mistralai/mistral-7b-chat",
            "zero-one-ai/Yi-34B-Chat",
            "WizardLM/WizardLM-13B-V1.2",
            "meta/code-llama-instruct-34b-chat",
        ),
        strong="gpt-4-1106-preview",
        weak="mistralai/mixtral-8x7b-chat",
    ),
    Suite(
        name="routellm",
        source="routellm",
        pool=("gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"),
        strong="gpt-4-1106-preview",
        weak="mistralai/Mixtral-8x7B-Instruct-v0.1",
        exclude_meta=("contaminated",),
    ),
    Suite(
        name="llmrouter",
        source="llmrouter",
        pool=(
            "llama-3.3-nemotron-super-49b-v1",
            "llama-3.1-nemotron-51b-instruct",
            "llama3-chatqa-1.5-70b",
            "qwen2.5-7b-instruct",
            "gemma-2-9b-it",
            "llama-3.1-8b-instruct",
            "mistral-7b-instruct-v0.3",
            "llama3-chatqa-1.5-8b",
            "codegemma-7b",
        ),
        strong="llama-3.1-nemotron-51b-instruct",
        weak="llama-3.1-8b-instruct",
    ),
)


def load_suites(file: Path | None) -> tuple[Suite, ...]:
    """The default suites, or those of a user YAML file (a list of suites)."""
    if file is None:
        return DEFAULT_SUITES
    text = read_settings_text(Path(file), "suites file")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: {yaml_problem(exc)}") from exc
    entries = raw.get("suites") if isinstance(raw, dict) else raw
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{file}: expected a list of suites under 'suites:'")
    suites: list[Suite] = []
    for index, entry in enumerate(entries):
        try:
            suites.append(Suite.model_validate(entry))
        except ValidationError as exc:
            problems = []
            for error in exc.errors():  # all of them: a typo'd key is two
                where = ".".join(str(p) for p in error["loc"])
                message = str(error["msg"]).removeprefix("Value error, ")
                problems.append(f"{where + ': ' if where else ''}{message}")
            raise ConfigError(
                f"{file}: suite {index + 1}: {'; '.join(problems)}"
            ) from exc
        if suites[-1].name in [s.name for s in suites[:-1]]:
            raise ConfigError(
                f"{file}: suite {index + 1}: the name {suites[-1].name!r} is taken by "
                "an earlier suite; give each suite its own name"
            )
    return tuple(suites)
