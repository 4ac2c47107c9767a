"""The HTTP API: the ASGI app `starter.api:app` (`dunning api`, or any ASGI server).

Routes: `POST /webhooks/stripe` (starter/stripe_webhook.py), `POST /webhooks/twilio/sms`
(starter/sms_webhook.py), `GET /v1/customers/{customer_id}/dunning` (starter/in_app.py) and
`GET /healthz`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.logging import configure_logging
from runtime.settings import Settings
from activities.stripe_backend import StripePayments
from dunning.policy import load_policies
from starter.api import codec_server, in_app, sms_webhook, stripe_webhook
from starter.api.deps import (
    RETRY_AFTER_SECONDS,
    RPC_TIMEOUT,
    ClientFactory,
    TemporalGateway,
    TemporalUnavailable,
    get_temporal_client,
)
from runtime.temporal import connect

log = structlog.get_logger("dunning.api")

#: Stripe's events are a few KiB; anything this big is not a webhook we want.
DEFAULT_MAX_BODY_BYTES = 256 * 1024


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuses request bodies over `max_bytes` with 413, by Content-Length up front and by
    counting while streaming (chunked bodies), before any route reads them whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, send: Send) -> None:
        response = JSONResponse({"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413)
        await response(scope={"type": "http"}, receive=_nothing, send=send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await self._too_large(send)
                return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
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
                await self._too_large(send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def create_app(
    settings: Settings | None = None,
    client_factory: ClientFactory | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    webhook_tolerance_seconds: int = stripe_webhook.DEFAULT_TOLERANCE_SECONDS,
    rpc_timeout: timedelta = RPC_TIMEOUT,
    visibility_rechecks: tuple[float, ...] = (0.5, 1.5),
    failure_lookup: stripe_webhook.FailureLookup | None = None,
) -> FastAPI:
    """The API. Policies are loaded (and validated) here, once: a bad policy file stops the start.

    `client_factory` returns the Temporal client (or an awaitable of it); by default the
    contract's `connect()` (TEMPORAL_ADDRESS, …), called on first use and kept. `rpc_timeout`
    bounds each Temporal call (a webhook gets twice that before it answers 503);
    `visibility_rechecks` are the pauses before listing a customer's open cases again when the
    first listing found none (visibility lags a just-started case). `failure_lookup` tells why
    an invoice failed (the event does not); by default Stripe is asked when its key is set.
    """
    settings = settings or Settings()
    policies = load_policies(settings.dunning_policy_dir)
    app = FastAPI(title="Dunning API", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.policies = policies
    app.state.temporal = TemporalGateway(client_factory or (lambda: connect(settings)))
    app.state.webhook_tolerance_seconds = webhook_tolerance_seconds
    app.state.rpc_timeout = rpc_timeout
    app.state.visibility_rechecks = visibility_rechecks
    if failure_lookup is None and settings.payments_backend() == "stripe" and settings.stripe_api_key:
        failure_lookup = StripePayments.from_settings(
            settings, timeout=stripe_webhook.FAILURE_LOOKUP_SECONDS
        ).failure_details
    app.state.failure_lookup = failure_lookup
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)

    @app.exception_handler(TemporalUnavailable)
    async def _temporal_unavailable(request: Request, exc: TemporalUnavailable) -> JSONResponse:
        return JSONResponse(
            {"detail": "temporal unavailable, retry later"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        """Liveness, and whether Temporal answers (503 with the reason when it does not)."""
        body: dict[str, Any] = {
            "status": "ok",
            "task_queue": settings.dunning_task_queue,
            "policies": sorted(policies),
            "stripe_webhooks": "ready" if settings.stripe_webhook_secret else "STRIPE_WEBHOOK_SECRET not set",
        }
        try:
            client = await get_temporal_client(request)
            await client.service_client.check_health(timeout=min(rpc_timeout, timedelta(seconds=3)))
        except Exception as exc:  # any failure here means "not reachable" to a probe
            log.warning("healthz: temporal unreachable", error=type(exc).__name__)
            body.update(status="degraded", temporal=f"unreachable ({type(exc).__name__})")
            return JSONResponse(body, status_code=503)
        body.update(temporal="reachable", namespace=client.namespace)
        return JSONResponse(body)

    # The contract's endpoints. The routers read settings and the Temporal client from
    # app.state (starter.api.deps); TemporalUnavailable raised in any of them becomes a 503 above.
    app.include_router(stripe_webhook.router)  # POST /webhooks/stripe
    app.include_router(sms_webhook.router)  # POST /webhooks/twilio/sms
    app.include_router(in_app.router)  # GET /v1/customers/{customer_id}/dunning
    app.include_router(codec_server.router)  # POST /codec/decode, /codec/encode (Temporal UI / CLI)

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
