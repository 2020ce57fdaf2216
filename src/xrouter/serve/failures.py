"""How the gateway answers a request it refuses or could not serve: the HTTP
status, the OpenAI error type and code, and a message saying what to do."""

from __future__ import annotations

from xrouter.core.errors import (
    BackendError,
    BackendTimeoutError,
    BadRequestError,
    BudgetExceededError,
)
from xrouter.orchestrator.budget import beyond_limits, refusing_ledgers
from xrouter.orchestrator.loop import EpisodeFailedError

__all__ = ["CEILING", "RequestError", "failure_of"]

CEILING = "request's cost ceiling"  # the ledger of the request_limit_header


class RequestError(Exception):
    """A request the gateway refuses: HTTP status, OpenAI error type, message."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.param, self.code = status, kind, param, code
        self.retry_after_s = retry_after_s  # sent as Retry-After when given


def failure_of(
    exc: BackendError | BudgetExceededError, ceiling_header: str
) -> RequestError:
    """The HTTP error for a request that no model could answer.

    402 when only its own cost ceiling refused its calls, or when each refusal was
    of a call larger than its limit's whole amount: no retry can pass either.
    429 when a daily limit refused (it may pass tomorrow, or once calls in flight
    end). 400 when the last model tried rejected the request as given (a retry
    would be rejected again), 504 when it timed out, 502 otherwise.
    ``ceiling_header``: the header that sets the request's cost ceiling.
    """
    text = str(exc)
    refusing = refusing_ledgers(text)  # also those quoted by a failed episode
    if isinstance(exc, BudgetExceededError) or refusing:
        if refusing == {CEILING}:
            return RequestError(
                402,
                f"over the request's cost ceiling: {text}; raise the "
                f"{ceiling_header} header or ask for less (a shorter prompt or a "
                "lower max_tokens)",
                "insufficient_quota",
                code="cost_ceiling_exceeded",
            )
        if beyond_limits(text):
            return RequestError(
                402,
                f"over budget: {text}; that is more than the whole limit, so no "
                "retry can pass it: ask for less (a shorter prompt or a lower "
                "max_tokens)",
                "insufficient_quota",
                code="request_over_limit",
            )
        return RequestError(
            429, f"over budget: {text}", "insufficient_quota", code="budget_exceeded"
        )
    last = ""
    if isinstance(exc, EpisodeFailedError):
        tried = [c for c in exc.trace.calls if not c.by_router]
        last = (tried[-1].error or "") if tried else ""
    if isinstance(exc, BadRequestError) or last.startswith("bad_request:"):
        return RequestError(
            400,
            f"the model rejected the request: {text}",
            "invalid_request_error",
            code="upstream_rejected_request",
        )
    if isinstance(exc, BackendTimeoutError) or last.startswith("timeout:"):
        return RequestError(
            504, f"upstream timed out: {text}", "server_error", code="upstream_timeout"
        )
    return RequestError(
        502, f"upstream failed: {text}", "server_error", code="upstream_error"
    )
