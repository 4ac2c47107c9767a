"""`POST /webhooks/stripe`, Stripe's router: events become signals to the cases.

- `invoice.payment_failed` → signal-with-start `payment_failed` on `dunning-{subscription}`
- `invoice.paid`, `invoice.payment_succeeded` → `invoice_paid` to that case
- `payment_method.attached`, `payment_method.automatically_updated`, `customer.source.updated`,
  `customer.updated` (default payment method changed) → `card_updated` on every open case of
  the customer (found by the `CustomerId` search attribute)
- `customer.subscription.deleted` → `subscription_canceled` to that case
- anything else → 2xx, ignored

The answer is 2xx only once Temporal holds the signal, 503 when it could not be reached
(Stripe retries), 400 for a bad signature or body. Every signal carries the Stripe event id,
which the case uses to drop redeliveries; a redelivered `invoice.payment_failed` whose case
already closed is recognised here (the case's memo names the invoice that opened it).
Logs name events and Stripe ids only: never the body, contact details or secrets.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import stripe
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from dunning import contract
from dunning.contract import Signal
from dunning.models import (
    CardUpdated,
    DunningInput,
    InvoicePaid,
    PaymentFailed,
    SubscriptionCanceled,
)
from dunning.money import format_money
from dunning.policy import Policy, choose_policy
from runtime.settings import reveal
from starter.api.deps import (
    TEMPORAL_UNAVAILABLE,
    FailureLookup,
    FailureLookupDep,
    PoliciesDep,
    ServiceUnavailable,
    SettingsDep,
    TemporalGatewayDep,
    Timings,
    TimingsDep,
    is_transient,
)

log = structlog.get_logger("dunning.webhooks.stripe")

router = APIRouter(tags=["stripe"])

CARD_EVENTS = frozenset(
    {
        "payment_method.attached",
        "payment_method.automatically_updated",
        "customer.source.updated",
        "customer.updated",
    }
)
_STRIPE_ID = re.compile(r"^[A-Za-z0-9_]{3,255}$")
#: How long a webhook waits for Stripe to say why an invoice failed.
FAILURE_LOOKUP_SECONDS = 3.0


class BadEvent(ValueError):
    """The event is signed but unusable (a field we need is missing or malformed): 400."""


# --- what an event asks for ---------------------------------------------------------


@dataclass
class StartCase:
    subscription_id: str
    customer_id: str
    payload: PaymentFailed
    requested_policy: str | None


@dataclass
class SignalCase:
    subscription_id: str
    signal: Signal
    payload: BaseModel


@dataclass
class SignalCustomerCases:
    customer_id: str
    signal: Signal
    payload: BaseModel


@dataclass
class Ignore:
    reason: str


Action = StartCase | SignalCase | SignalCustomerCases | Ignore


def _id(value: Any) -> str | None:
    """A Stripe reference that may be an id or an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _stripe_id(value: Any, what: str) -> str:
    ident = _id(value)
    if ident is None:
        raise BadEvent(f"{what} is missing")
    if not _STRIPE_ID.match(ident):
        raise BadEvent(f"{what} is not a Stripe id")
    return ident


def _invoice_subscription(invoice: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The invoice's subscription and that subscription's metadata, current API first."""
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") if isinstance(parent, dict) else None
    if isinstance(details, dict) and details.get("subscription"):
        return _id(details["subscription"]), details.get("metadata") or {}
    legacy = invoice.get("subscription_details")
    metadata = legacy.get("metadata") if isinstance(legacy, dict) else None
    return _id(invoice.get("subscription")), metadata or {}


def _expanded_payment_error(invoice: dict[str, Any]) -> dict[str, Any]:
    """The decline, when the event carries the invoice's payment intent expanded (older API
    versions, the sandbox demo); otherwise `{}` and the API asks Stripe for it."""
    intent = invoice.get("payment_intent")
    error = intent.get("last_payment_error") if isinstance(intent, dict) else None
    return error if isinstance(error, dict) else {}


def plan(event: dict[str, Any]) -> Action:
    """What a verified Stripe event asks of the cases (pure: no I/O)."""
    event_type = event.get("type")
    event_id = event.get("id")
    if not isinstance(event_type, str) or not isinstance(event_id, str) or not event_id:
        raise BadEvent("`id` and `type` are required")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise BadEvent("`data.object` is required")

    if event_type == "invoice.payment_failed":
        subscription_id, metadata = _invoice_subscription(obj)
        if subscription_id is None:
            return Ignore("invoice is not for a subscription")
        if obj.get("billing_reason") == "subscription_create":
            # The first payment of a new subscription fails while the customer is signing up,
            # on-session: Stripe's checkout handles it. Dunning is for renewals.
            return Ignore("first invoice of a new subscription, not a renewal")
        subscription_id = _stripe_id(subscription_id, "the invoice's subscription")
        customer_id = _stripe_id(obj.get("customer"), "invoice.customer")
        try:
            created = event.get("created")
            error = _expanded_payment_error(obj)
            payload = PaymentFailed(
                invoice_id=_stripe_id(obj.get("id"), "invoice.id"),
                amount_due=obj["amount_due"],
                currency=obj["currency"],
                customer_id=customer_id,
                subscription_id=subscription_id,
                payment_method_id=_id(error.get("payment_method")) or _id(obj.get("default_payment_method")),
                failure_code=error.get("code"),
                decline_code=error.get("decline_code"),
                advice_code=error.get("advice_code"),
                message=error.get("message"),
                hosted_invoice_url=obj.get("hosted_invoice_url"),
                occurred_at=datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None,
                event_id=event_id,
            )
        except KeyError as exc:
            raise BadEvent(f"invoice.{exc.args[0]} is missing") from exc
        except ValidationError as exc:
            raise BadEvent(f"invoice: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from exc
        requested = metadata.get("dunning_policy") if isinstance(metadata, dict) else None
        # Stripe metadata values are strings; anything else names no policy.
        return StartCase(subscription_id, customer_id, payload, requested if isinstance(requested, str) else None)

    if event_type in ("invoice.paid", "invoice.payment_succeeded"):
        subscription_id, _ = _invoice_subscription(obj)
        if subscription_id is None:
            return Ignore("invoice is not for a subscription")
        return SignalCase(
            _stripe_id(subscription_id, "the invoice's subscription"),
            Signal.INVOICE_PAID,
            InvoicePaid(invoice_id=_stripe_id(obj.get("id"), "invoice.id"), event_id=event_id),
        )

    if event_type == "customer.subscription.deleted":
        details = obj.get("cancellation_details")
        details = details if isinstance(details, dict) else {}
        reason = details.get("reason") or details.get("comment")
        # Stripe's own reason, kept as is: `payment_failed` means Stripe's dunning canceled it.
        stripe_reason = details.get("reason")
        return SignalCase(
            _stripe_id(obj.get("id"), "subscription.id"),
            Signal.SUBSCRIPTION_CANCELED,
            SubscriptionCanceled(
                reason=reason or "canceled in Stripe",
                event_id=event_id,
                cancellation_reason=stripe_reason if isinstance(stripe_reason, str) else None,
            ),
        )

    if event_type in CARD_EVENTS:
        if event_type == "customer.updated":
            customer_id = _stripe_id(obj.get("id"), "customer.id")
            previous = data.get("previous_attributes") or {}
            previous_settings = previous.get("invoice_settings") or {}
            new_default = _id((obj.get("invoice_settings") or {}).get("default_payment_method"))
            if isinstance(previous_settings, dict) and "default_payment_method" in previous_settings and new_default:
                payment_method = new_default
            elif "default_source" in previous and _id(obj.get("default_source")):
                payment_method = _id(obj.get("default_source"))
            else:
                return Ignore("the customer's default payment method did not change")
        else:
            if _id(obj.get("customer")) is None:
                return Ignore("payment method belongs to no customer")
            customer_id = _stripe_id(obj.get("customer"), "customer")
            payment_method = _id(obj.get("id"))
        return SignalCustomerCases(
            customer_id,
            Signal.CARD_UPDATED,
            CardUpdated(payment_method_id=payment_method, event_id=event_id, source=event_type),
        )

    return Ignore(f"{event_type} is not an event dunning acts on")


# --- doing it -------------------------------------------------------------------------


@dataclass
class Outcome:
    action: str
    detail: str
    cases: list[str] = field(default_factory=list)


def _not_found(exc: BaseException) -> bool:
    return isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND


def _policy_for(action: StartCase, policies: dict[str, Policy]) -> tuple[Policy, str | None]:
    """The policy the case pins, and the requested name when it is one we do not have: the case
    records the fallback instead of it passing unnoticed."""
    policy = choose_policy(policies, action.requested_policy)
    if not action.requested_policy or action.requested_policy in policies:
        return policy, None
    log.warning(
        "unknown dunning_policy in the subscription's metadata: using another",
        subscription_id=action.subscription_id,
        requested_policy=action.requested_policy,
        policy=policy.name,
    )
    return policy, action.requested_policy


@dataclass
class Delivery:
    """What carrying out an action needs: the Temporal client and the app's settings."""

    client: Client
    task_queue: str
    policies: dict[str, Policy]
    timings: Timings
    failure_lookup: FailureLookup | None


async def _start_case(action: StartCase, to: Delivery) -> Outcome:
    client, timeout = to.client, to.timings.rpc_timeout
    wid = contract.workflow_id(action.subscription_id)
    invoice_id = action.payload.invoice_id
    # A redelivered failure whose case has since closed must not open a new case.
    try:
        described = await client.get_workflow_handle(wid).describe(rpc_timeout=timeout)
    except RPCError as exc:
        if not _not_found(exc):
            raise
    else:
        if described.status != WorkflowExecutionStatus.RUNNING:
            opened_by = await described.memo_value("invoice_id", None)
            if opened_by == invoice_id:
                log.info(
                    "redelivered failure of a closed case ignored",
                    workflow_id=wid,
                    invoice_id=invoice_id,
                    run_id=described.run_id,
                )
                return Outcome("ignored", f"case {wid} for {invoice_id} already closed", [wid])

    policy, unknown_policy = _policy_for(action, to.policies)
    payload = await _with_decline(action.payload, to.failure_lookup)
    summary = f"{action.customer_id} · {format_money(payload.amount_due, payload.currency)} · {action.subscription_id}"
    handle = await client.start_workflow(
        contract.WORKFLOW_TYPE,
        DunningInput(
            subscription_id=action.subscription_id,
            customer_id=action.customer_id,
            policy=policy,
            requested_policy=unknown_policy,
        ),
        id=wid,
        task_queue=to.task_queue,
        start_signal=Signal.PAYMENT_FAILED,
        start_signal_args=[payload],
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(contract.CUSTOMER_ID, action.customer_id),
                SearchAttributePair(contract.SUBSCRIPTION_ID, action.subscription_id),
                SearchAttributePair(contract.AMOUNT_DUE, payload.amount_due),
                SearchAttributePair(contract.CURRENCY, payload.currency.lower()),
            ]
        ),
        memo={"invoice_id": invoice_id, "opened_by_event": payload.event_id},
        static_summary=summary,
        static_details=(
            f"Opened by Stripe event `{payload.event_id}`: invoice `{invoice_id}` failed.\nPolicy `{policy.name}`."
        ),
        rpc_timeout=timeout,
    )
    log.info(
        f"{Signal.PAYMENT_FAILED} delivered",
        workflow_id=wid,
        run_id=handle.result_run_id,
        invoice_id=invoice_id,
        policy=policy.name,
    )
    return Outcome("signal_with_start", f"{Signal.PAYMENT_FAILED} → {wid} (policy {policy.name})", [wid])


async def _with_decline(payload: PaymentFailed, lookup: FailureLookup | None) -> PaymentFailed:
    """The event says that the invoice failed, not why: ask Stripe for the decline, so that a hard
    decline is never retried on the same card. Best effort: without it the case still opens."""
    if lookup is None or payload.decline_code or payload.failure_code:
        return payload
    try:
        async with asyncio.timeout(FAILURE_LOOKUP_SECONDS):
            details = await lookup(payload.invoice_id)
    except Exception as exc:
        log.warning(
            "decline details unavailable; the case opens without them",
            invoice_id=payload.invoice_id,
            error=type(exc).__name__,
        )
        return payload
    if details is None:
        return payload
    return payload.model_copy(
        update={
            "failure_code": details.code,
            "decline_code": details.decline_code,
            "advice_code": details.advice_code,
            "message": details.message,
            "payment_method_id": details.payment_method_id or payload.payment_method_id,
        }
    )


async def _signal_case(action: SignalCase, to: Delivery) -> Outcome:
    wid = contract.workflow_id(action.subscription_id)
    try:
        await to.client.get_workflow_handle(wid).signal(
            action.signal, action.payload, rpc_timeout=to.timings.rpc_timeout
        )
    except RPCError as exc:
        if _not_found(exc):
            log.info("no open case for signal", signal=action.signal, workflow_id=wid)
            return Outcome("ignored", f"no open case {wid}")
        raise
    log.info("signal delivered", signal=action.signal, workflow_id=wid)
    return Outcome("signaled", f"{action.signal} → {wid}", [wid])


async def _signal_customer_cases(action: SignalCustomerCases, to: Delivery) -> Outcome:
    client, timeout = to.client, to.timings.rpc_timeout
    query = contract.open_cases_of_customer(action.customer_id)
    ids = [execution.id async for execution in client.list_workflows(query, rpc_timeout=timeout)]
    # Visibility lags behind a start by up to a second or so: a card added right after the failure
    # (the customer fixing it on the spot) would miss the case just opened. Look again, briefly.
    for delay in to.timings.visibility_rechecks:
        if ids:
            break
        await asyncio.sleep(delay)
        ids = [execution.id async for execution in client.list_workflows(query, rpc_timeout=timeout)]

    async def signal(wid: str) -> str | None:
        try:
            await client.get_workflow_handle(wid).signal(action.signal, action.payload, rpc_timeout=timeout)
        except RPCError as exc:
            if _not_found(exc):  # closed since the listing
                return None
            raise
        return wid

    delivered = [wid for wid in await asyncio.gather(*(signal(w) for w in ids)) if wid]
    if not delivered:
        log.info("no open case for customer", signal=action.signal, customer_id=action.customer_id)
        return Outcome("ignored", f"no open case for {action.customer_id}")
    log.info("signal fanned out", signal=action.signal, customer_id=action.customer_id, cases=delivered)
    return Outcome("signaled", f"{action.signal} → {len(delivered)} case(s)", delivered)


async def _deliver(action: StartCase | SignalCase | SignalCustomerCases, to: Delivery) -> Outcome:
    if isinstance(action, StartCase):
        return await _start_case(action, to)
    if isinstance(action, SignalCase):
        return await _signal_case(action, to)
    return await _signal_customer_cases(action, to)


# --- the endpoint -----------------------------------------------------------------------


def _refuse(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"detail": reason}, status_code=status)


_SIGNATURE_REASONS = {
    "Timestamp outside the tolerance zone": "stale timestamp: the event was signed too long ago",
    "No signatures found matching the expected signature for payload": "signature does not match the body",
    "Unable to extract timestamp and signatures from header": "malformed Stripe-Signature header",
    "No signatures found with expected scheme v1": "malformed Stripe-Signature header (no v1 signature)",
}


@router.post("/webhooks/stripe")
async def stripe_webhook(
    request: Request,
    settings: SettingsDep,
    policies: PoliciesDep,
    gateway: TemporalGatewayDep,
    timings: TimingsDep,
    failure_lookup: FailureLookupDep,
) -> JSONResponse:
    secret = reveal(settings.stripe_webhook_secret)
    if not secret:
        log.error("STRIPE_WEBHOOK_SECRET is not set: refusing Stripe webhooks until it is")
        raise ServiceUnavailable("webhook secret not configured")

    body = await request.body()
    header = request.headers.get("stripe-signature")
    if not header:
        return _refuse(400, "missing Stripe-Signature header")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _refuse(400, "body is not UTF-8")
    try:
        stripe.WebhookSignature.verify_header(text, header, secret, tolerance=timings.webhook_tolerance_seconds)
    except stripe.SignatureVerificationError as exc:
        message = exc.user_message or str(exc)
        reason = next((r for m, r in _SIGNATURE_REASONS.items() if message.startswith(m)), "bad signature")
        log.warning("stripe webhook refused", reason=reason)
        return _refuse(400, reason)

    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        return _refuse(400, "body is not JSON")
    if not isinstance(event, dict):
        return _refuse(400, "body is not a JSON object")
    try:
        action = plan(event)
    except BadEvent as exc:
        log.warning("stripe event refused", event_id=event.get("id"), type=event.get("type"), reason=str(exc))
        return _refuse(400, f"bad event: {exc}")

    event_id, event_type = event["id"], event["type"]
    if isinstance(action, Ignore):
        log.info("stripe event ignored", event_id=event_id, type=event_type, reason=action.reason)
        outcome = Outcome("ignored", action.reason)
    else:
        try:
            # The SDK retries an unreachable server for up to ~10 s whatever the rpc timeout:
            # answer 503 well before Stripe gives up on us (a late success is deduped anyway).
            async with asyncio.timeout(2 * timings.rpc_timeout.total_seconds()):
                to = Delivery(await gateway.client(), settings.dunning_task_queue, policies, timings, failure_lookup)
                outcome = await _deliver(action, to)
        except Exception as exc:
            if is_transient(exc):
                log.warning(
                    "temporal unavailable: stripe will retry",
                    event_id=event_id,
                    type=event_type,
                    error=type(exc).__name__,
                )
                raise ServiceUnavailable(TEMPORAL_UNAVAILABLE) from None
            # No traceback: a rendered traceback with locals would print the webhook secret.
            log.error(
                "stripe event not delivered",
                event_id=event_id,
                type=event_type,
                error=type(exc).__name__,
                detail=str(exc)[:300],
            )
            return _refuse(500, f"could not deliver the event: {type(exc).__name__}")
    return JSONResponse(
        {
            "received": True,
            "event_id": event_id,
            "type": event_type,
            "action": outcome.action,
            "detail": outcome.detail,
            "cases": outcome.cases,
        }
    )
