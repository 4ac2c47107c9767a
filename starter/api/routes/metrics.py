"""`GET /metrics`: Prometheus text for the operators' monitoring (docs/operations.md, "Metrics").

The business counters come from the recovery ledger at each scrape, so every API replica reports
the same totals (the cases' own counts, not this process's); the webhooks' latency is this
process's (a histogram, summed across replicas by Prometheus).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dunning import contract
from runtime.ledger import DatabaseLedger, LedgerTotals, totals_of
from starter.api.deps import LedgerDep, database_or_503

router = APIRouter(tags=["operators"])

WEBHOOK_PREFIX = "/webhooks/"


def business_metrics(totals: LedgerTotals) -> list[Metric]:
    opened = CounterMetricFamily(contract.METRIC_CASES_OPENED, "Dunning cases opened (recovery ledger).")
    opened.add_metric([], totals.opened)
    closed = CounterMetricFamily(contract.METRIC_CASES_CLOSED, "Dunning cases closed, by outcome.", labels=["outcome"])
    for outcome, count in sorted(totals.closed.items()):
        closed.add_metric([outcome], count)
    recovered = CounterMetricFamily(
        contract.METRIC_RECOVERED_AMOUNT, "Amount recovered, minor units, by currency.", labels=["currency"]
    )
    for currency, amount in sorted(totals.recovered_amount.items()):
        recovered.add_metric([currency], amount)
    charges = CounterMetricFamily(contract.METRIC_CHARGE_ATTEMPTS, "Charges the cases made, by result.", labels=["result"])
    for result, count in sorted(totals.charge_attempts.items()):
        charges.add_metric([result], count)
    messages = CounterMetricFamily(
        contract.METRIC_MESSAGES, "Messages to customers, by channel and status.", labels=["channel", "status"]
    )
    for (channel, status), count in sorted(totals.messages.items()):
        messages.add_metric([channel, status], count)
    return [opened, closed, recovered, charges, messages]


class LedgerCollector(Collector):
    """Reads the ledger at each scrape (in the scrape's worker thread)."""

    def __init__(self, ledger: DatabaseLedger, include_simulated: bool = False) -> None:
        self.ledger = ledger
        self.include_simulated = include_simulated

    def collect(self) -> Iterator[Metric]:
        include = self.include_simulated
        yield from business_metrics(self.ledger.database.run(lambda db: totals_of(db, include_simulated=include)))


class ApiMetrics:
    """This process's registry: the webhooks' latency histogram."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.webhook_latency = Histogram(
            "dunning_webhook_request_duration_seconds",
            "Time to answer a webhook (Stripe, Twilio), by path and status code.",
            labelnames=["path", "status"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20),
        )

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Pure ASGI (a BaseHTTPMiddleware would wrap the body limit's errors): times every webhook."""
        histogram = self.webhook_latency

        async def timed(scope: Scope, receive: Receive, send: Send) -> None:
            path = scope.get("path", "") if scope["type"] == "http" else ""
            if not path.startswith(WEBHOOK_PREFIX):
                await app(scope, receive, send)
                return
            started, status = time.perf_counter(), 500

            async def sending(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, sending)
            finally:
                histogram.labels(path, str(status)).observe(time.perf_counter() - started)

        return timed


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, ledger: LedgerDep, include_simulated: bool = False) -> Response:
    """Simulated cases (`dunning simulate`) count only with `?include_simulated=true`."""
    own: ApiMetrics = request.app.state.metrics
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(ledger, include_simulated))
    with database_or_503():
        business = await asyncio.to_thread(generate_latest, registry)
    return Response(business + generate_latest(own.registry), media_type=CONTENT_TYPE_LATEST)
