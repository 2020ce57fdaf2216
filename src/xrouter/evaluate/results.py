"""Plain result types shared by the evaluation runner, the metrics and the plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CurvePoint", "PolicyKind", "PolicyResult"]

PolicyKind = Literal["single", "router", "oracle"]


@dataclass(frozen=True)
class CurvePoint:
    """One operating point of a policy: its knob setting and what it achieved.

    ``cost_per_1k`` is USD per 1,000 queries; ``accuracy`` is a fraction in [0, 1].
    """

    knob: float
    accuracy: float
    cost_per_1k: float
    calls_per_query: float


@dataclass
class PolicyResult:
    """A policy evaluated on one suite's test split.

    ``points`` holds the knob sweep (one point for a single model). ``default`` is the
    index in ``points`` of the operating point reported in tables.
    """

    name: str
    kind: PolicyKind
    points: list[CurvePoint]
    default: int = 0
    knob_name: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def at_default(self) -> CurvePoint:
        return self.points[self.default]
