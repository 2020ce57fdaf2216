"""Prometheus metrics of the gateway, served at ``GET /metrics``.

- ``xrouter_requests_total{router, status}``: requests by router and HTTP status
  (router ``none``: refused before routing, for its input or its key; status 499:
  the client left a stream before its end);
- ``xrouter_request_errors_total{router, kind}``: refused or failed requests;
- ``xrouter_request_latency_seconds{router}``: time to the whole answer;
- ``xrouter_calls_total{model, outcome}``: model calls (``ok`` or the failure kind);
- ``xrouter_cost_usd_total{model}`` and ``xrouter_tokens_total{model, kind}``: spend
  and tokens by model, the router's own included;
- ``xrouter_request_log_waiting_rows``: rows waiting in memory because the request
  log cannot be written (alert when above 0), and
  ``xrouter_request_log_dropped_rows``: rows of requests that called no model
  (refusals, and the in-flight rows of requests starting) not kept while the log
  could not be written.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from xrouter.core.types import CallRecord
from xrouter.serve.logwriter import LogWriter

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """One registry per gateway, so several gateways in one process stay apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "xrouter_requests", "Requests answered", ["router", "status"], registry=r
        )
        self.errors = Counter(
            "xrouter_request_errors",
            "Requests refused or failed",
            ["router", "kind"],
            registry=r,
        )
        self.latency = Histogram(
            "xrouter_request_latency_seconds",
            "Seconds to the whole answer",
            ["router"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.calls = Counter(
            "xrouter_calls", "Model calls", ["model", "outcome"], registry=r
        )
        self.cost = Counter(
            "xrouter_cost_usd", "USD spent on model calls", ["model"], registry=r
        )
        self.tokens = Counter(
            "xrouter_tokens", "Tokens of model calls", ["model", "kind"], registry=r
        )
        self.log_waiting = Gauge(
            "xrouter_request_log_waiting_rows",
            "Request log rows waiting in memory to be written",
            registry=r,
        )
        self.log_dropped = Gauge(
            "xrouter_request_log_dropped_rows",
            "Rows of requests that called no model (refusals, requests starting) not "
            "kept while the request log could not be written",
            registry=r,
        )

    def watch(self, log: LogWriter) -> None:
        """Read the request log's waiting and dropped rows at each scrape."""
        self.log_waiting.set_function(lambda: log.waiting)
        self.log_dropped.set_function(lambda: log.dropped)

    def observe(
        self,
        router: str,
        status: int,
        seconds: float,
        calls: list[CallRecord],
        error_kind: str | None = None,
    ) -> None:
        self.requests.labels(router, str(status)).inc()
        if error_kind is not None:
            self.errors.labels(router, error_kind).inc()
        self.latency.labels(router).observe(seconds)
        for call in calls:
            outcome = "ok" if call.error is None else call.error.split(":")[0]
            self.calls.labels(call.model, outcome).inc()
            self.cost.labels(call.model).inc(call.cost_usd)
            self.tokens.labels(call.model, "input").inc(call.usage.input_tokens)
            self.tokens.labels(call.model, "output").inc(call.usage.output_tokens)

    def refused(self, status: int, kind: str) -> None:
        """A request refused before routing (bad input, key, unknown model)."""
        self.requests.labels("none", str(status)).inc()
        self.errors.labels("none", kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
