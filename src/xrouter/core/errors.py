"""The exception tree of xrouter.

Every error the library raises on purpose derives from ``XRouterError``; the CLI
prints its message alone (no traceback) and exits non-zero, and the gateway maps it
to an OpenAI-style JSON error. Each message says what was given, why it is refused,
and what to do about it.

    XRouterError
    |-- ConfigError                  bad settings, unknown names, knobs out of range
    |   |-- CatalogError             a model card missing, malformed or unpriced
    |   |-- CheckpointError          a policy checkpoint damaged or not for this pool
    |   `-- UnknownTaskError         a task no verifier or suite knows
    |-- DataError                    input data that cannot be read as expected
    |   |-- SourceFormatError        a source file truncated or malformed
    |   |-- StoreError               the records store missing or inconsistent
    |   `-- NetworkUnavailableError  a download that cannot reach its origin
    |-- ReplayMissError              a replayed call with no record behind it
    |-- SandboxError                 generated code that could not be isolated
    |-- BackendError                 a failed model call, typed for the orchestrator
    |   |-- BackendTimeoutError      no answer in time (retryable)
    |   |-- RateLimitError           the upstream said 429 (retryable after a wait)
    |   |-- UpstreamError            5xx, a cut connection, no record (retryable or not)
    |   |-- BadRequestError          the upstream refused the request (not retryable)
    |   `-- AccessDeniedError        the upstream refused its key (not retryable)
    `-- BudgetExceededError          a call or request that would spend past a limit
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xrouter.core.types import Usage

__all__ = [
    "AccessDeniedError",
    "BackendError",
    "BackendTimeoutError",
    "BadRequestError",
    "BudgetExceededError",
    "CatalogError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "NetworkUnavailableError",
    "RateLimitError",
    "ReplayMissError",
    "SandboxError",
    "SourceFormatError",
    "StoreError",
    "UnknownTaskError",
    "UpstreamError",
    "XRouterError",
]


class XRouterError(Exception):
    """Base class of every error xrouter raises deliberately."""


class ConfigError(XRouterError):
    """A setting, name or knob that cannot be used as given."""


class CatalogError(ConfigError):
    """A model card that is missing, malformed or lacks a price."""


class CheckpointError(ConfigError):
    """A policy checkpoint that is missing, damaged, or does not fit the pool."""


class UnknownTaskError(ConfigError):
    """A task that no verifier or suite knows about."""


class DataError(XRouterError):
    """Input data that cannot be read as expected."""


class SourceFormatError(DataError):
    """A source file that is truncated or malformed.

    The message names the file and, where it applies, the line or row.
    """


class StoreError(DataError):
    """The records store is missing, empty or inconsistent."""


class NetworkUnavailableError(DataError):
    """A download that cannot reach its public origin."""


class ReplayMissError(XRouterError):
    """A replayed call for an (item, model) pair that has no record."""


class SandboxError(XRouterError):
    """Generated code that could not be started in the sandbox at all."""


class BackendError(XRouterError):
    """A call to one model that failed; the orchestrator retries it or falls back.

    ``retryable`` says whether trying the same call again may succeed; each kind
    has a default that a raiser may override (a replay miss is an upstream error
    that no retry can cure). ``billed`` is the usage the upstream reported for a
    reply that could not be used (one with no choices, say): it was paid for all
    the same.
    """

    default_retryable = True

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        retryable: bool | None = None,
        billed: Usage | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.retryable = self.default_retryable if retryable is None else retryable
        self.billed = billed

    @property
    def kind(self) -> str:
        """Short name of the failure, as traces and metrics show it."""
        for cls in type(self).__mro__:
            if cls in _KINDS:
                return _KINDS[cls]
        return "error"


class BackendTimeoutError(BackendError):
    """No complete answer within the call's time limit."""


class RateLimitError(BackendError):
    """The upstream asked to slow down (HTTP 429)."""

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, model=model)
        self.retry_after_s = retry_after_s


class UpstreamError(BackendError):
    """The upstream failed: a 5xx answer, a cut connection, a malformed reply."""


class BadRequestError(BackendError):
    """The upstream refused the request as given (4xx other than 401, 403, 429)."""

    default_retryable = False


class AccessDeniedError(BackendError):
    """The upstream refused the credentials it was called with (HTTP 401, 403)."""

    default_retryable = False


_KINDS: dict[type[BackendError], str] = {
    BackendError: "error",
    BackendTimeoutError: "timeout",
    RateLimitError: "rate_limit",
    UpstreamError: "upstream",
    BadRequestError: "bad_request",
    AccessDeniedError: "access_denied",
}


class BudgetExceededError(XRouterError):
    """A call or request whose cost would pass a spending limit: ``amount_usd``
    asked for, more than the ``available_usd`` left of the ledger ``ledger``; or
    refused by a ledger closed for ``reason``."""

    def __init__(
        self,
        message: str,
        *,
        ledger: str = "",
        amount_usd: float = 0.0,
        available_usd: float = 0.0,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.ledger, self.amount_usd = ledger, amount_usd
        self.available_usd, self.reason = available_usd, reason
