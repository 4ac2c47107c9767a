"""`GET /v1/customers/{customer_id}/dunning`: what the SaaS app shows in its in-app banner.

The SaaS app asks with the bearer token `DUNNING_API_TOKEN`. We find the customer's open case
through Temporal visibility (`CustomerId` search attribute) and read it with the `status`
query, so the answer is always the case's own state: open or not, the banner text, the
one-click update link, and the access state (`active`, `grace`, `suspended`).

Include it with `app.include_router(starter.api.in_app.router)`; `get_temporal_client`,
`get_api_token` and `get_update_link` are dependencies an app or a test can override.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

import structlog
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from pydantic import BaseModel
from temporalio.client import Client
from temporalio.service import RPCError

from activities.messages import UnknownTemplate, render_banner
from runtime.settings import Settings
from dunning.models import OUTCOMES, AccessState, CaseStatus, Stage

log = structlog.get_logger(__name__)

router = APIRouter(tags=["in-app"])

CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9_\-.:]{1,255}$"

SEVERITY = {AccessState.SUSPENDED: 2, AccessState.GRACE: 1, AccessState.ACTIVE: 0}


class DunningView(BaseModel):
    open_case: bool
    case_id: str | None = None
    stage: Stage | None = None
    message: str | None = None
    update_url: str | None = None
    access_state: AccessState = AccessState.ACTIVE
    amount_due: int | None = None
    currency: str | None = None
    grace_ends_at: datetime | None = None


# --- dependencies ------------------------------------------------------------------

_client: Client | None = None
_client_lock = asyncio.Lock()


async def get_temporal_client(request: Request) -> Client:
    """The app's shared client when the app has one (`app.state.temporal`, a gateway with
    `async client()`, as `starter.api.app` sets up), else one per process, connected on first use."""
    gateway = getattr(request.app.state, "temporal", None)
    if gateway is not None and hasattr(gateway, "client"):
        return await gateway.client()
    global _client
    async with _client_lock:
        if _client is None:
            from runtime.temporal import connect

            _client = await connect()
    return _client


def app_settings(request: Request) -> Settings:
    """The app's settings (`app.state.settings`) when it has them, else from the environment."""
    settings = getattr(request.app.state, "settings", None)
    return settings if isinstance(settings, Settings) else Settings()


def get_api_token(request: Request) -> str | None:
    token = app_settings(request).dunning_api_token
    return token.get_secret_value() if token else None


class UpdateLink(Protocol):
    """Sync or async: `(customer_id, status) -> url`; e.g. the payments backend's `update_link`."""

    def __call__(self, customer_id: str, status: CaseStatus) -> str | None | Awaitable[str | None]: ...


def hosted_invoice_link(customer_id: str, status: CaseStatus) -> str | None:
    """The first outstanding invoice's hosted page: pay it or add a new card in one click."""
    for invoice in status.outstanding_invoices:
        if invoice.hosted_invoice_url:
            return invoice.hosted_invoice_url
    return None


def get_update_link() -> UpdateLink:
    return hosted_invoice_link


def require_bearer_token(
    expected: Annotated[str | None, Depends(get_api_token)],
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    if not expected:
        raise HTTPException(503, "DUNNING_API_TOKEN is not configured")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


# --- the endpoint ------------------------------------------------------------------


def open_cases_query(customer_id: str) -> str:
    return f'WorkflowType = "DunningWorkflow" AND ExecutionStatus = "Running" AND CustomerId = "{customer_id}"'


def _locale(locale: str | None, accept_language: str | None) -> str:
    if locale:
        return locale
    if accept_language:
        return accept_language.split(",")[0].split(";")[0].strip() or "en"
    return "en"


def banner_for(status: CaseStatus, update_url: str | None, locale: str, now: datetime | None = None) -> str | None:
    """The banner the case asks for (`banner_template`), rendered from its current state in the
    language the SaaS app asks for; None when the case shows no banner."""
    template = status.banner_template
    if not template:
        return None
    now = now or datetime.now(UTC)
    context: dict[str, Any] = {
        "amount_due": status.amount_due,
        "currency": status.currency,
        "grace_ends_at": status.grace_ends_at.isoformat() if status.grace_ends_at else None,
        "days_left": max(0, (status.grace_ends_at - now).days) if status.grace_ends_at else None,
        "decline_category": status.decline_category.value if status.decline_category else None,
        "next_retry_at": status.next_action_at.isoformat()
        if status.next_action_at and (status.next_action or "").lower().startswith("retry")
        else None,
        "update_url": update_url or "-",
    }
    try:
        return render_banner(template, context, locale)
    except (UnknownTemplate, ValueError) as exc:
        log.warning("cannot render the in-app banner", template=template, error=str(exc))
        return None


async def _open_cases(client: Client, customer_id: str) -> list[CaseStatus]:
    statuses: list[CaseStatus] = []
    async for execution in client.list_workflows(open_cases_query(customer_id), limit=20):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        try:
            statuses.append(await handle.query("status", result_type=CaseStatus))
        except RPCError:
            raise
        except Exception as exc:  # a case that can't answer right now must not hide the others
            log.warning("status query failed", workflow_id=execution.id, error=str(exc))
    return [s for s in statuses if s.outcome not in OUTCOMES and s.stage not in OUTCOMES]


@router.get(
    "/v1/customers/{customer_id}/dunning",
    response_model=DunningView,
    dependencies=[Depends(require_bearer_token)],
    summary="The customer's open dunning case, for the SaaS app's in-app banner",
)
async def customer_dunning(
    customer_id: Annotated[str, Path(pattern=CUSTOMER_ID_PATTERN)],
    client: Annotated[Client, Depends(get_temporal_client)],
    update_link: Annotated[UpdateLink, Depends(get_update_link)],
    locale: Annotated[str | None, Query(max_length=35)] = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> DunningView:
    try:
        cases = await _open_cases(client, customer_id)
    except RPCError as exc:
        log.warning("temporal unavailable", error=str(exc))
        raise HTTPException(503, f"Temporal is unavailable: {exc.message}") from exc
    if not cases:
        return DunningView(open_case=False)
    # Several subscriptions in dunning: show the one that matters most (suspended first, then oldest).
    case = sorted(cases, key=lambda s: (-SEVERITY.get(s.access, 0), s.opened_at))[0]
    url = update_link(customer_id, case)
    if inspect.isawaitable(url):
        url = await url
    return DunningView(
        open_case=True,
        case_id=case.case_id,
        stage=case.stage,
        message=banner_for(case, url, _locale(locale, accept_language)),
        update_url=url,
        access_state=case.access,
        amount_due=case.amount_due,
        currency=case.currency,
        grace_ends_at=case.grace_ends_at,
    )
