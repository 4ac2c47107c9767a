"""A stand-in for Stripe's billing portal, for `dunning up` on sandbox payments only.

The customer page sends "Update your card" to the payments backend's portal; on the sandbox that
is this page, so a new user can click through the demo's whole customer journey: the form saves
a working test card, which reaches the customer's open cases as `card_updated` (as Stripe's
`payment_method.attached` webhook would), and returns to the customer's page. Never mounted
next to real Stripe.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import structlog
from fastapi import APIRouter, Form, Path, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import escape

from dunning import contract
from dunning.models import CardUpdated
from starter.api.deps import SettingsDep, TemporalDep

log = structlog.get_logger("dunning.api.sandbox_portal")
router = APIRouter(tags=["development"], include_in_schema=False)

CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9_\-.:]{1,255}$"
#: The card the sandbox portal saves: Stripe's test Visa, which the sandbox charges successfully.
WORKING_TEST_CARD = "pm_card_visa"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sandbox billing portal</title></head>
<body style="font: 1.05rem/1.5 system-ui, sans-serif; max-width: 32rem; margin: 2rem auto; padding: 0 1rem">
<main>
<h1>Sandbox billing portal</h1>
<p>This stands in for Stripe's billing portal while <code>dunning up</code> runs on sandbox payments.
Nothing is charged anywhere.</p>
<form method="post">
<input type="hidden" name="return_url" value="{return_url}">
<p><label><input type="radio" name="card" value="{card}" checked> Visa ending 4242 (works)</label></p>
<p><button type="submit">Save this card</button></p>
</form>
</main></body></html>
"""


def _back(return_url: str, public_url: str) -> str:
    """Only back to our own pages: never an open redirect."""
    return return_url if return_url.startswith(f"{public_url}/") else "/dev/mailbox"


@router.get("/dev/portal/{kind}/{customer_id}")
async def portal(
    kind: Annotated[str, Path(pattern="^(update|portal)$")],
    customer_id: Annotated[str, Path(pattern=CUSTOMER_ID_PATTERN)],
    settings: SettingsDep,
    return_url: Annotated[str, Query(max_length=2000)] = "",
) -> HTMLResponse:
    back = _back(return_url, settings.public_url())
    return HTMLResponse(PAGE.format(return_url=escape(back), card=WORKING_TEST_CARD), headers={"Cache-Control": "no-store"})


@router.post("/dev/portal/{kind}/{customer_id}")
async def save_card(
    kind: Annotated[str, Path(pattern="^(update|portal)$")],
    customer_id: Annotated[str, Path(pattern=CUSTOMER_ID_PATTERN)],
    settings: SettingsDep,
    client: TemporalDep,
    return_url: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    update = CardUpdated(payment_method_id=WORKING_TEST_CARD, source="sandbox portal", event_id=f"sandbox-{uuid.uuid4()}")
    cases = []
    async for execution in client.list_workflows(contract.open_cases_of_customer(customer_id), limit=20):
        await client.get_workflow_handle(execution.id).signal(contract.Signal.CARD_UPDATED.value, update)
        cases.append(execution.id)
    log.info("sandbox portal saved a working card", customer_id=customer_id, cases=cases)
    return RedirectResponse(_back(return_url, settings.public_url()), 303)
