"""Spending limits that no call may pass, even with many calls in flight at once.

A :class:`Ledger` is one limit (an episode's budget, an API key's daily limit, the
gateway's global one) with what has been spent and what is *held* for calls still
running. Before a call starts, its worst-case cost (its prompt and all of its
``max_tokens``, priced by the model card) is held on every ledger that applies, in
one step under one lock; the call is refused when any of them lacks room. When the
call ends the hold is replaced by what it really cost. So the sum of spent and held
never passes a limit, however many requests run at once, provided no call costs more
than its worst case (the orchestrator prices the worst case so that it cannot, unless
an upstream reports more output than the call's ``max_tokens``: that cost is booked
as reported, and warned of).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from xrouter.core.errors import BudgetExceededError, ConfigError

__all__ = [
    "Budget",
    "Hold",
    "Ledger",
    "beyond_limits",
    "refusing_ledgers",
    "usd_text",
]

_LOCK = threading.Lock()
logger = logging.getLogger(__name__)
# A refusal (see Budget.hold) gives the amount asked for, the ledger's name and
# its whole limit: "... may cost up to $A, more than the $L left of the <ledger>
# (limit $W)".
_REFUSAL = re.compile(
    r"may cost up to \$([0-9.]+), more than the \$[0-9.]+ left of the (.+?) "
    r"\(limit \$([0-9.]+)\)"
)


def usd_text(amount: float) -> str:
    """An amount in USD as plain decimals: six, or as many more as show two
    significant digits of a smaller amount (so no amount reads as zero, and two
    amounts read apart as the refusal's comparison needs)."""
    if amount <= 0 or not math.isfinite(amount):
        return f"{amount:.6f}"
    return f"{amount:.{max(6, 1 - math.floor(math.log10(amount)))}f}"


def refusing_ledgers(text: str) -> set[str]:
    """The names of the ledgers whose refusals ``text`` reports (a refusal's
    message, or an episode's failure that quotes several)."""
    return {ledger for _, ledger, _ in _REFUSAL.findall(text)}


def beyond_limits(text: str) -> bool:
    """Whether every refusal ``text`` reports asked for more than its ledger's
    whole limit: a call that would not fit even if nothing had been spent."""
    found = _REFUSAL.findall(text)
    return bool(found) and all(float(want) > float(limit) for want, _, limit in found)


@dataclass
class Ledger:
    """One spending limit in USD (None: unlimited, only counted)."""

    name: str
    limit_usd: float | None
    spent_usd: float = 0.0
    held_usd: float = 0.0
    closed: str = ""  # why it refuses every hold now (see close)

    def __post_init__(self) -> None:
        if self.limit_usd is not None and not (
            math.isfinite(self.limit_usd) and self.limit_usd >= 0
        ):
            raise ConfigError(
                f"{self.name}: a spending limit must be a finite number of USD >= 0, "
                f"got {self.limit_usd!r}"
            )

    def close(self, reason: str) -> None:
        """Refuse every hold from now on, for ``reason``; what is held stays
        held until its call ends, and is booked then."""
        with _LOCK:
            self.closed = reason

    @property
    def available_usd(self) -> float:
        """What may still be held or spent (infinite when unlimited)."""
        if self.closed:
            return 0.0
        if self.limit_usd is None:
            return math.inf
        return max(0.0, self.limit_usd - self.spent_usd - self.held_usd)


@dataclass
class Hold:
    """Money held on some ledgers for one call in flight."""

    ledgers: tuple[Ledger, ...]
    amount_usd: float
    what: str = "a call"
    open: bool = field(default=True)

    @property
    def closed(self) -> str:
        """Why a ledger it holds on refuses new holds now ("" when none does):
        a call that is retried would not get its hold again."""
        return next((ledger.closed for ledger in self.ledgers if ledger.closed), "")

    def settle(self, cost_usd: float) -> None:
        """The call ended having cost ``cost_usd``: free the hold, book the cost.

        The cost is booked as reported even past its hold, as the upstream bills
        it; that happens only when an upstream counts more tokens than the worst
        case allowed for (more output than the call's ``max_tokens``), and is
        logged as a warning, as a limit may then be passed.
        """
        if cost_usd > self.amount_usd * (1 + 1e-9) + 1e-12:
            logger.warning(
                "%s cost $%.6f, more than the $%.6f held for it as its worst case "
                "(the upstream counted more tokens than allowed for); booked as "
                "reported",
                self.what,
                cost_usd,
                self.amount_usd,
            )
        with _LOCK:
            if not self.open:
                raise RuntimeError("this hold was already settled or released")
            self.open = False
            for ledger in self.ledgers:
                ledger.held_usd = max(0.0, ledger.held_usd - self.amount_usd)
                ledger.spent_usd += cost_usd

    def release(self) -> None:
        """The call never ran or cost nothing: free the hold."""
        self.settle(0.0)


class Budget:
    """The ledgers that one episode's calls are charged to, checked together."""

    def __init__(self, ledgers: Sequence[Ledger] = ()) -> None:
        self.ledgers = tuple(ledgers)

    @classmethod
    def limit(cls, usd: float | None, name: str = "episode budget") -> Budget:
        """A budget of one fresh ledger."""
        return cls([Ledger(name, usd)])

    def __add__(self, other: Budget) -> Budget:
        return Budget(self.ledgers + other.ledgers)

    @property
    def available_usd(self) -> float:
        """The least room left on any ledger."""
        with _LOCK:
            return min(
                (ledger.available_usd for ledger in self.ledgers), default=math.inf
            )

    def hold(self, amount_usd: float, what: str) -> Hold:
        """Hold ``amount_usd`` on every ledger, or refuse if any lacks room.

        Raises ``BudgetExceededError`` naming the ledger and the figures.
        """
        if not (math.isfinite(amount_usd) and amount_usd >= 0):
            raise ValueError(f"a hold must be a finite amount >= 0, got {amount_usd}")
        with _LOCK:
            for ledger in self.ledgers:
                if ledger.closed:
                    raise BudgetExceededError(
                        f"{what} was not started: {ledger.closed}",
                        ledger=ledger.name,
                        amount_usd=amount_usd,
                        reason=ledger.closed,
                    )
                if amount_usd > ledger.available_usd:
                    raise BudgetExceededError(
                        f"{what} may cost up to ${usd_text(amount_usd)}, more than "
                        f"the ${usd_text(ledger.available_usd)} left of the "
                        f"{ledger.name} (limit ${usd_text(ledger.limit_usd or 0)})",
                        ledger=ledger.name,
                        amount_usd=amount_usd,
                        available_usd=ledger.available_usd,
                    )
            for ledger in self.ledgers:
                ledger.held_usd += amount_usd
        return Hold(self.ledgers, amount_usd, what)
