"""The HTTP API: the ASGI app `starter.api:app` (`dunning api`, or any ASGI server).

One router per caller (routes/): `POST /webhooks/stripe`, `POST /webhooks/twilio/sms`,
`POST /webhooks/sendgrid/events`,
`GET /v1/customers/{customer_id}/dunning`, the codec server under `/codec`, and `GET /healthz`;
in development with sandbox providers (`dunning up`), the local mailbox at `GET /dev/mailbox`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from activities.backends import PaymentsBackend
from activities.policy_check import load_checked_experiments, load_checked_policies
from activities.sandbox import SandboxPayments
from activities.stripe_backend import StripePayments
from runtime import migrations
from runtime.database import Database
from runtime.links import CaseLinks, LinkSigner, parse_link_keys
from runtime.ledger import DatabaseLedger
from runtime.logging import configure_logging
from runtime.settings import Settings, reveal
from runtime.temporal import connect
from starter.api.deps import (
    DEFAULT_TOLERANCE_SECONDS,
    RPC_TIMEOUT,
    CardReaders,
    ClientFactory,
    FailureLookup,
    ServiceUnavailable,
    TemporalGateway,
    Timings,
)
from starter.api import pre_dunning
from starter.api.routes import (
    codec_server,
    customer_page,
    dashboard,
    dev_mailbox,
    health,
    in_app,
    metrics,
    reports,
    sandbox_portal,
    sendgrid_webhook,
    sms_webhook,
    stripe_webhook,
)

log = structlog.get_logger("dunning.api")

#: Stripe's events are a few KiB; anything this big is not a webhook we want.
DEFAULT_MAX_BODY_BYTES = 256 * 1024


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuses request bodies over `max_bytes` with 413, by Content-Length up front and by
    counting while streaming (chunked bodies), before any route reads them whole."""

    def __init__(self, app: ASGIApp, max_bytes: int, by_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        #: Paths that take more (SendGrid's event batches reach 768 KB).
        self.by_path = by_path or {}

    async def _too_large(self, send: Send, limit: int) -> None:
        response = JSONResponse({"detail": f"request body larger than {limit} bytes"}, status_code=413)
        await response(scope={"type": "http"}, receive=_nothing, send=send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.by_path.get(scope.get("path", ""), self.max_bytes)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                too_big = False
            if too_big:
                await self._too_large(send, limit)
                return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._too_large(send, limit)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def create_app(
    settings: Settings | None = None,
    client_factory: ClientFactory | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    webhook_tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    rpc_timeout: timedelta = RPC_TIMEOUT,
    visibility_rechecks: tuple[float, ...] = Timings.visibility_rechecks,
    failure_lookup: FailureLookup | None = None,
    payments: PaymentsBackend | None = None,
    card_readers: CardReaders | None = None,
) -> FastAPI:
    """The API. Policies are loaded (and validated) here, once: a bad policy file stops the start.

    `client_factory` returns the Temporal client (or an awaitable of it); by default the
    contract's `connect()` (TEMPORAL_ADDRESS, …), called on first use and kept. `rpc_timeout`
    bounds each Temporal call (a webhook gets twice that before it answers 503);
    `visibility_rechecks` are the pauses before listing a customer's open cases again when the
    first listing found none (visibility lags a just-started case). `failure_lookup` tells why
    an invoice failed (the event does not) and whether the invoice and its subscription still
    need dunning (the event may be late); by default Stripe is asked when its key is set.
    `card_readers` read the card a renewal will charge, for pre-dunning (the same default).
    """
    settings = settings or Settings()
    database = Database.from_settings(settings)  # connects on first use

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Under any ASGI server: the schema this code needs before the first request (several
        # replicas: one migrates, the others wait); an unreachable database stops the start.
        await asyncio.to_thread(migrations.upgrade, database, settings.dunning_state_dir)
        if settings.dunning_feedback_retention_days is not None:
            retention = timedelta(days=settings.dunning_feedback_retention_days)
            blanked = await asyncio.to_thread(DatabaseLedger(database).prune_feedback_comments, retention)
            log.info("feedback comments past retention blanked", comments=blanked, days=retention.days)
        yield
        database.dispose()

    app = FastAPI(title="Dunning API", version="0.1.0", docs_url=None, redoc_url=None, lifespan=lifespan)
    # What starter.api.deps hands to the routers.
    app.state.settings = settings
    app.state.database = database
    app.state.policies = load_checked_policies(settings.dunning_policy_dir)
    app.state.experiments = load_checked_experiments(settings.dunning_policy_dir, app.state.policies)
    app.state.temporal = TemporalGateway(client_factory or (lambda: connect(settings)))
    app.state.timings = Timings(rpc_timeout, webhook_tolerance_seconds, visibility_rechecks)
    if failure_lookup is None and settings.payments_backend() == "stripe" and settings.stripe_api_key:
        failure_lookup = StripePayments.from_settings(
            settings, timeout=stripe_webhook.FAILURE_LOOKUP_SECONDS
        ).failure_facts
    app.state.failure_lookup = failure_lookup
    if card_readers is None and settings.payments_backend() == "stripe" and settings.stripe_api_key:
        stripe_reader = StripePayments.from_settings(settings, timeout=pre_dunning.STRIPE_SECONDS)
        card_readers = CardReaders(stripe_reader.renewal_card, stripe_reader.subscriptions_charging)
    app.state.card_readers = card_readers or CardReaders()
    # The customer page: links signed with DUNNING_LINK_KEYS (none set: the API does not start),
    # billing-portal sessions created at the customer's click.
    app.state.links = CaseLinks(LinkSigner(parse_link_keys(reveal(settings.dunning_link_keys))), settings.public_url(), database)
    mailbox_file = settings.sandbox_mailbox_file()
    # `dunning up` on sandbox payments: the "billing portal" is a local page (/dev/portal).
    local_portal = mailbox_file is not None and settings.payments_backend() == "sandbox"
    if payments is None:
        if settings.payments_backend() == "stripe":
            payments = StripePayments.from_settings(settings)
        else:
            payments = SandboxPayments(portal_url=f"{settings.public_url()}/dev/portal") if local_portal else SandboxPayments()
    app.state.payments = payments
    app.state.metrics = metrics.ApiMetrics()
    app.add_middleware(app.state.metrics.middleware)  # the webhooks' latency, for GET /metrics
    app.add_middleware(
        BodySizeLimit,
        max_bytes=max_body_bytes,
        by_path={sendgrid_webhook.PATH: max(max_body_bytes, sendgrid_webhook.MAX_BODY_BYTES)},
    )

    @app.exception_handler(ServiceUnavailable)
    async def _unavailable(request: Request, exc: ServiceUnavailable) -> Response:
        log.warning("answered 503", path=request.url.path, reason=exc.detail)
        return await http_exception_handler(request, exc)

    app.include_router(stripe_webhook.router)  # Stripe: POST /webhooks/stripe
    app.include_router(sms_webhook.router)  # Twilio: POST /webhooks/twilio/sms
    app.include_router(sendgrid_webhook.router)  # SendGrid: POST /webhooks/sendgrid/events
    app.include_router(in_app.router)  # the SaaS app: GET /v1/customers/{customer_id}/dunning
    app.include_router(codec_server.router)  # operators: /codec/decode, /codec/encode (Temporal UI, CLI)
    app.include_router(health.router)  # operators and probes: GET /healthz
    app.include_router(customer_page.router)  # customers: /c/{token} and its actions
    if mailbox_file is not None:
        # Development only (`dunning up`, sandbox email and SMS): GET /dev/mailbox.
        app.state.mailbox_file = mailbox_file.resolve()
        app.include_router(dev_mailbox.router)
        log.info("local mailbox at /dev/mailbox", file=str(app.state.mailbox_file))
    if local_portal:
        app.include_router(sandbox_portal.router)
    app.include_router(reports.router)  # operators: GET /v1/reports/recovery
    app.include_router(dashboard.router)  # operators, in a browser: /dashboard
    app.include_router(metrics.router)  # monitoring: GET /metrics

    if not settings.stripe_webhook_secret:
        log.warning("STRIPE_WEBHOOK_SECRET is not set: POST /webhooks/stripe answers 503 until it is")
    return app


def __getattr__(name: str) -> Any:
    # `starter.api:app` is built on first access, so importing this module (tests, the CLI)
    # reads no environment and loads no policy.
    if name == "app":
        settings = Settings()
        # the served app (uvicorn starter.api:app): redacting JSON logs
        configure_logging(settings.dunning_log_level, settings.dunning_log_format)
        application = create_app(settings)
        globals()["app"] = application
        return application
    raise AttributeError(name)
