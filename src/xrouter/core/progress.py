"""How long-running library work reports progress without owning the console.

The library calls a ``Reporter``; the CLI passes one that draws rich progress bars.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Reporter", "Silent"]


class Reporter(Protocol):
    """Receives ``start`` once per stage, then ``advance`` as work gets done."""

    def start(self, stage: str, total: int) -> None: ...

    def advance(self, amount: int = 1) -> None: ...


class Silent:
    """A reporter that reports nothing."""

    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass
