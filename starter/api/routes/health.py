"""`GET /healthz`: for probes and operators, liveness and whether Temporal and the database answer."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import structlog
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from runtime.database import DatabaseUnavailable
from starter.api.deps import DatabaseDep, PoliciesDep, SettingsDep, TemporalGatewayDep, TimingsDep

log = structlog.get_logger("dunning.api")

router = APIRouter(tags=["operators"])


@router.get("/healthz")
async def healthz(
    settings: SettingsDep,
    policies: PoliciesDep,
    gateway: TemporalGatewayDep,
    timings: TimingsDep,
    database: DatabaseDep,
) -> JSONResponse:
    """Liveness, and whether Temporal and the service's database answer: 503 with the reason in
    the body when one does not (a probe's answer, not an error: the body says what is degraded)."""
    body: dict[str, Any] = {
        "status": "ok",
        "task_queue": settings.dunning_task_queue,
        "policies": sorted(policies),
        "stripe_webhooks": "ready" if settings.stripe_webhook_secret else "STRIPE_WEBHOOK_SECRET not set",
    }
    try:
        await asyncio.to_thread(database.ping)
        body["database"] = "reachable"
    except DatabaseUnavailable as exc:
        log.warning("healthz: database unreachable", error=str(exc))
        body.update(status="degraded", database="unreachable")
    try:
        client = await gateway.client()
        await client.service_client.check_health(timeout=min(timings.rpc_timeout, timedelta(seconds=3)))
    except Exception as exc:  # any failure here means "not reachable" to a probe
        log.warning("healthz: temporal unreachable", error=type(exc).__name__)
        body.update(status="degraded", temporal=f"unreachable ({type(exc).__name__})")
        return JSONResponse(body, status_code=503)
    body.update(temporal="reachable", namespace=client.namespace)
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)
