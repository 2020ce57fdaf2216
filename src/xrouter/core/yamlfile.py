"""Reading a YAML settings file into a pydantic model, with errors a user can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from xrouter.core.errors import ConfigError

__all__ = ["read_settings_text", "read_yaml_model", "yaml_problem"]

M = TypeVar("M", bound=BaseModel)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML parse error on one line: where it is and what is wrong."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or "syntax error"
    return f"not valid YAML{where}: {problem}"


def read_settings_text(path: Path, what: str) -> str:
    """A settings file's text; an unreadable file, or one that is not UTF-8, is a
    ``ConfigError`` naming the file as ``what``."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None


def read_yaml_model(
    path: Path,
    model: type[M],
    what: str,
    *,
    shape: str = "a mapping",
    empty_ok: bool = False,
) -> M:
    """``path`` parsed as ``model``; every failure is a ``ConfigError`` naming the
    file (as ``what``) and, for invalid values, each field and what is wrong."""
    text = read_settings_text(path, what)
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is {yaml_problem(exc)}") from None
    if raw is None and empty_ok:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must be {shape}, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in _own_errors(exc)
        )
        raise ConfigError(f"{what} {path}: {problems}") from None


def _own_errors(exc: ValidationError) -> list[Any]:
    """The errors of ``exc`` less a list's "too short" where items of that list
    failed: pydantic counts only the valid items, so a one-item list whose item
    is wrong would also be reported as empty."""
    errors = exc.errors()
    failed = {tuple(err["loc"][:n]) for err in errors for n in range(len(err["loc"]))}
    return [
        err
        for err in errors
        if not (err["type"] == "too_short" and tuple(err["loc"]) in failed)
    ]
