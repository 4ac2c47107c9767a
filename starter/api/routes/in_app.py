"""`GET /v1/customers/{customer_id}/dunning`, the SaaS app's router: what its in-app banner shows.

The SaaS app asks with the bearer token `DUNNING_API_TOKEN`. We find the customer's open case
through Temporal visibility (`CustomerId` search attribute) and read it with the `status`
query, so the answer is always the case's own state: open or not, the banner text, the
one-click update link, and the access state (`active`, `grace`, `suspended`).
"""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, Path, Query
from pydantic import BaseModel
from temporalio.client import Client
from temporalio.service import RPCError

from activities.messages import UnknownTemplate, render_banner
from dunning import contract
from dunning.models import OUTCOMES, AccessState, CaseStatus, Stage
from runtime.database import DatabaseUnavailable
from starter.api.deps import (
    DATABASE_UNAVAILABLE,
    TEMPORAL_UNAVAILABLE,
    ServiceUnavailable,
    SettingsDep,
    TemporalDep,
    UpdateLinkDep,
    https_only,
    require_operator,
)

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
    retry_at = status.next_retry_at or (
        status.next_action_at if (status.next_action or "").lower().startswith("retry") else None
    )
    # the latest decline's code: an expired card asks for "your new card", not "a different card"
    decline_code = next((a.result.decline_code for a in reversed(status.attempts) if a.result.status == "declined"), None)
    context: dict[str, Any] = {
        "amount_due": status.amount_due,
        "currency": status.currency,
        "grace_ends_at": status.grace_ends_at.isoformat() if status.grace_ends_at else None,
        "days_left": max(0, (status.grace_ends_at - now).days) if status.grace_ends_at else None,
        "decline_category": status.decline_category.value if status.decline_category else None,
        "decline_code": decline_code,
        "next_retry_at": retry_at.isoformat() if retry_at else None,
        # the suspension banner says when the subscription ends if still unpaid
        "cancel_at": status.cancel_at.isoformat() if status.cancel_at else None,
        "timezone": status.customer_timezone,
        "update_url": update_url or "-",
    }
    try:
        return render_banner(template, context, locale)
    except (UnknownTemplate, ValueError) as exc:
        log.warning("cannot render the in-app banner", template=template, error=str(exc))
        return None


async def _open_cases(client: Client, customer_id: str) -> list[CaseStatus]:
    statuses: list[CaseStatus] = []
    async for execution in client.list_workflows(contract.open_cases_of_customer(customer_id), limit=20):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        try:
            statuses.append(await handle.query(contract.QUERY_STATUS, result_type=CaseStatus))
        except RPCError:
            raise
        except Exception as exc:  # a case that can't answer right now must not hide the others
            log.warning("status query failed", workflow_id=execution.id, error=str(exc))
    return [s for s in statuses if s.outcome not in OUTCOMES and s.stage not in OUTCOMES]


@router.get(
    "/v1/customers/{customer_id}/dunning",
    response_model=DunningView,
    dependencies=[Depends(require_operator)],
    summary="The customer's open dunning case, for the SaaS app's in-app banner",
)
async def customer_dunning(
    customer_id: Annotated[str, Path(pattern=CUSTOMER_ID_PATTERN)],
    client: TemporalDep,
    update_link: UpdateLinkDep,
    settings: SettingsDep,
    locale: Annotated[str | None, Query(max_length=35)] = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> DunningView:
    try:
        cases = await _open_cases(client, customer_id)
    except RPCError as exc:
        log.warning("temporal unavailable", error=str(exc))
        raise ServiceUnavailable(TEMPORAL_UNAVAILABLE) from exc
    if not cases:
        return DunningView(open_case=False)
    # Several subscriptions in dunning: show the one that matters most (suspended first, then oldest).
    case = sorted(cases, key=lambda s: (-SEVERITY.get(s.access, 0), s.opened_at))[0]
    try:
        url = update_link(customer_id, case)
        if inspect.isawaitable(url):
            url = await url
    except DatabaseUnavailable as exc:
        raise ServiceUnavailable(DATABASE_UNAVAILABLE) from exc
    # Our own page link (plain http only on a laptop), else nothing but https: cases opened before
    # links were checked at the door may still hold a hostile hosted-invoice URL.
    url = url if isinstance(url, str) and url.startswith(f"{settings.public_url()}/c/") else https_only(url)
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
