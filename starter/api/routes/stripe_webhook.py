"""`POST /webhooks/stripe`, Stripe's router: events become signals to the cases.

- `invoice.payment_failed` → signal-with-start `payment_failed` on `dunning-{subscription}`
- `invoice.paid`, `invoice.payment_succeeded` → `invoice_paid` to that case
- `payment_method.attached`, `payment_method.automatically_updated`, `customer.source.updated`,
  `customer.updated` (default payment method changed) → `card_updated` on every open case of
  the customer (found by the `CustomerId` search attribute)
- `customer.subscription.deleted` → `subscription_canceled` to that case
- `invoice.upcoming`, `customer.source.expiring` → signal-with-start `renewal_upcoming` on
  `card-expiry-{subscription}` (pre-dunning) when the card the renewal charges expires before it
  and the subscription's policy has `[[pre_dunning]]` (starter/api/pre_dunning.py reads Stripe)
- the card events above also reach the customer's running pre-dunning reminders, which end
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
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from dunning import contract
from dunning.card_expiry import RenewalCard
from dunning.contract import Signal
from dunning.models import (
    CardUpdated,
    InvoicePaid,
    PaymentFailed,
    SubscriptionCanceled,
)
from dunning.experiments import Choice, Experiment, choose
from dunning.policy import Policy
from starter import cases
from starter.api import pre_dunning
from starter.api.deps import (
    TEMPORAL_UNAVAILABLE,
    CardReaders,
    CardReadersDep,
    FailureLookup,
    FailureLookupDep,
    ExperimentsDep,
    PoliciesDep,
    ServiceUnavailable,
    SettingsDep,
    TemporalGatewayDep,
    Timings,
    TimingsDep,
    is_transient,
)
from starter.api.stripe_events import (
    CardOfCustomer,
    DeletedSubscription,
    ExpiringSource,
    FailedInvoice,
    InvoiceOfSubscription,
    PaymentError,
    StripeEvent,
    UpcomingInvoice,
    UpdatedCustomer,
    why,
)
from starter.api.stripe_signature import signature_problem

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
#: How long a webhook waits for Stripe to say why an invoice failed and whether it still stands.
FAILURE_LOOKUP_SECONDS = 3.0
#: Stripe statuses after which a failure needs no dunning: the invoice is settled, or the
#: subscription is over. A late `invoice.payment_failed` finding one of these opens no case.
SETTLED_INVOICE = frozenset({"paid", "void", "uncollectible"})
ENDED_SUBSCRIPTION = frozenset({"canceled", "incomplete_expired"})

Shape = TypeVar("Shape", bound=BaseModel)


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


Action = StartCase | SignalCase | SignalCustomerCases | pre_dunning.RenewalAhead | pre_dunning.SourceExpiring | Ignore


def _parse(model: type[Shape], obj: dict[str, Any], what: str) -> Shape | Ignore:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        return Ignore(f"unusable {what}: {why(exc, what)}")


def read_event(document: dict[str, Any]) -> StripeEvent | Ignore:
    """The envelope of a verified event (id, type, created, data), or why it is unusable."""
    try:
        return StripeEvent.model_validate(document)
    except ValidationError as exc:
        return Ignore(f"unusable event: {why(exc, 'event')}")


def plan(event: StripeEvent | dict[str, Any]) -> Action:
    """What a verified Stripe event asks of the cases (pure: no I/O).

    Each event type reads its object through its own model (starter/api/stripe_events.py); an
    event or object we cannot use is `Ignore` with the reason, never an exception."""
    if not isinstance(event, StripeEvent):
        read = read_event(event)
        if isinstance(read, Ignore):
            return read
        event = read
    event_type, event_id, obj = event.type, event.id, event.data.object

    if event_type == "invoice.payment_failed":
        invoice = _parse(FailedInvoice, obj, "invoice")
        if isinstance(invoice, Ignore):
            return invoice
        subscription_id = invoice.subscription_id()
        if subscription_id is None:
            return Ignore("invoice is not for a subscription")
        if invoice.billing_reason == "subscription_create":
            # The first payment of a new subscription fails while the customer is signing up,
            # on-session: Stripe's checkout handles it. Dunning is for renewals.
            return Ignore("first invoice of a new subscription, not a renewal")
        error = invoice.payment_error()
        payload = PaymentFailed(
            invoice_id=invoice.id,
            amount_due=invoice.amount_due,
            currency=invoice.currency,
            customer_id=invoice.customer,
            subscription_id=subscription_id,
            payment_method_id=error.payment_method or invoice.default_payment_method,
            failure_code=error.code,
            decline_code=error.decline_code,
            advice_code=error.advice_code,
            message=error.message,
            hosted_invoice_url=invoice.hosted_invoice_url,
            occurred_at=event.created,
            event_id=event_id,
        )
        return StartCase(subscription_id, invoice.customer, payload, invoice.requested_policy())

    if event_type in ("invoice.paid", "invoice.payment_succeeded"):
        paid = _parse(InvoiceOfSubscription, obj, "invoice")
        if isinstance(paid, Ignore):
            return paid
        subscription_id = paid.subscription_id()
        if subscription_id is None:
            return Ignore("invoice is not for a subscription")
        return SignalCase(subscription_id, Signal.INVOICE_PAID, InvoicePaid(invoice_id=paid.id, event_id=event_id))

    if event_type == "customer.subscription.deleted":
        deleted = _parse(DeletedSubscription, obj, "subscription")
        if isinstance(deleted, Ignore):
            return deleted
        details = deleted.cancellation_details
        # Stripe's own reason, kept as is: `payment_failed` means Stripe's dunning canceled it.
        stripe_reason = details.reason if details else None
        comment = details.comment if details else None
        return SignalCase(
            deleted.id,
            Signal.SUBSCRIPTION_CANCELED,
            SubscriptionCanceled(
                reason=stripe_reason or comment or "canceled in Stripe",
                event_id=event_id,
                cancellation_reason=stripe_reason,
            ),
        )

    if event_type == "customer.updated":
        customer = _parse(UpdatedCustomer, obj, "customer")
        if isinstance(customer, Ignore):
            return customer
        previous = event.data.previous_attributes or {}
        previous_settings = previous.get("invoice_settings")
        new_default = customer.invoice_settings.default_payment_method if customer.invoice_settings else None
        if isinstance(previous_settings, dict) and "default_payment_method" in previous_settings and new_default:
            payment_method: str | None = new_default
        elif "default_source" in previous and customer.default_source:
            payment_method = customer.default_source
        else:
            return Ignore("the customer's default payment method did not change")
        return SignalCustomerCases(
            customer.id,
            Signal.CARD_UPDATED,
            CardUpdated(payment_method_id=payment_method, event_id=event_id, source=event_type),
        )

    if event_type == "invoice.upcoming":
        upcoming = _parse(UpcomingInvoice, obj, "invoice")
        if isinstance(upcoming, Ignore):
            return upcoming
        subscription_id, renewal_at = upcoming.subscription_id(), upcoming.renewal_at()
        if subscription_id is None:
            return Ignore("invoice is not for a subscription")
        if renewal_at is None:
            return Ignore("the upcoming invoice says no renewal date")
        return pre_dunning.RenewalAhead(
            subscription_id, upcoming.customer, renewal_at, upcoming.requested_policy(), event_id, event_type
        )

    if event_type == "customer.source.expiring":
        source = _parse(ExpiringSource, obj, "card")
        if isinstance(source, Ignore):
            return source
        expiring = RenewalCard(
            payment_method_id=source.id,
            brand=source.brand,
            last4=source.last4,
            exp_month=source.exp_month,
            exp_year=source.exp_year,
        )
        return pre_dunning.SourceExpiring(source.customer, expiring, event_id, event_type)

    if event_type in CARD_EVENTS:
        card = _parse(CardOfCustomer, obj, "payment method")
        if isinstance(card, Ignore):
            return card
        if card.customer is None:
            return Ignore("payment method belongs to no customer")
        return SignalCustomerCases(
            card.customer,
            Signal.CARD_UPDATED,
            CardUpdated(payment_method_id=card.id, event_id=event_id, source=event_type),
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


def _policy_for(action: StartCase, policies: dict[str, Policy], experiments: list[Experiment]) -> Choice:
    """The policy the case pins (and its experiment arm), and the requested name when it is one we
    do not have: the case records the fallback instead of it passing unnoticed."""
    choice = choose(policies, experiments, action.requested_policy, action.subscription_id)
    if choice.unknown_policy:
        log.warning(
            "unknown dunning_policy in the subscription's metadata: using another",
            subscription_id=action.subscription_id,
            requested_policy=action.requested_policy,
            policy=choice.policy.name,
        )
    return choice


@dataclass
class Delivery:
    """What carrying out an action needs: the Temporal client and the app's settings."""

    client: Client
    task_queue: str
    policies: dict[str, Policy]
    timings: Timings
    failure_lookup: FailureLookup | None
    card_readers: CardReaders = field(default_factory=CardReaders)
    experiments: list[Experiment] = field(default_factory=list)


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
            opened_by = await described.memo_value(cases.MEMO_INVOICE, None)
            if opened_by == invoice_id:
                log.info(
                    "redelivered failure of a closed case ignored",
                    workflow_id=wid,
                    invoice_id=invoice_id,
                    run_id=described.run_id,
                )
                return Outcome("ignored", f"case {wid} for {invoice_id} already closed", [wid])

    payload, settled = await _ask_stripe(action, to.failure_lookup)
    if settled is not None:
        log.info("late failure ignored", workflow_id=wid, invoice_id=invoice_id, reason=settled)
        return Outcome("ignored", settled)
    choice = _policy_for(action, to.policies, to.experiments)
    policy = choice.policy
    handle = await cases.open_case(
        client,
        task_queue=to.task_queue,
        payment=payload.model_copy(update={"subscription_id": action.subscription_id, "customer_id": action.customer_id}),
        policy=policy,
        unknown_policy=choice.unknown_policy,
        experiment=choice.experiment,
        arm=choice.arm,
        opened_by=f"Stripe event `{payload.event_id}`",
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


async def _ask_stripe(action: StartCase, lookup: FailureLookup | None) -> tuple[PaymentFailed, str | None]:
    """Asks Stripe, as the case is about to open, what the event cannot say: why the invoice failed
    (so a hard decline is never retried on the same card), and whether the failure still stands:
    events arrive out of order, and a `payment_failed` delivered after the invoice was paid or the
    subscription canceled must not open a case. Returns the payload (with the decline when Stripe
    gave it) and the reason not to open a case, if any.

    Best effort: when Stripe does not answer in time the case opens on the event alone, as the
    workflow re-reads the invoice before every charge and every message."""
    payload = action.payload
    if lookup is None:
        return payload, None
    try:
        async with asyncio.timeout(FAILURE_LOOKUP_SECONDS):
            facts = await lookup(payload.invoice_id, action.subscription_id)
    except Exception as exc:
        log.warning(
            "stripe not asked about the failure; the case opens on the event alone",
            invoice_id=payload.invoice_id,
            error=type(exc).__name__,
        )
        return payload, None
    invoice_status = (facts.invoice_status or "")[:40]
    subscription_status = (facts.subscription_status or "")[:40]
    if invoice_status in SETTLED_INVOICE:
        return payload, f"invoice {payload.invoice_id} is already {invoice_status} in Stripe: no case"
    if subscription_status in ENDED_SUBSCRIPTION:
        return payload, f"subscription {action.subscription_id} is already {subscription_status} in Stripe: no case"
    details = facts.failure
    if details is None or payload.decline_code or payload.failure_code:
        return payload, None
    # Stripe's answer is bounded like the event's own fields before the case stores it.
    error = PaymentError.model_validate(
        {
            "code": details.code,
            "decline_code": details.decline_code,
            "advice_code": details.advice_code,
            "message": details.message,
            "payment_method": details.payment_method_id,
        }
    )
    update = {
        "failure_code": error.code,
        "decline_code": error.decline_code,
        "advice_code": error.advice_code,
        "message": error.message,
        "payment_method_id": error.payment_method or payload.payment_method_id,
    }
    return payload.model_copy(update=update), None


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
    # A card update also ends the customer's pre-dunning reminders (CardExpiryWorkflow).
    query = contract.card_update_targets(action.customer_id)
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


async def _pre_dunning(action: pre_dunning.RenewalAhead | pre_dunning.SourceExpiring, to: Delivery) -> Outcome:
    async def client() -> Client:
        return to.client

    door = pre_dunning.Door(client, to.task_queue, to.policies, to.card_readers, to.timings.rpc_timeout)
    result = await door.deliver(action)
    return Outcome(result.action, result.detail, result.cases)


async def _deliver(
    action: StartCase | SignalCase | SignalCustomerCases | pre_dunning.RenewalAhead | pre_dunning.SourceExpiring,
    to: Delivery,
) -> Outcome:
    if isinstance(action, (pre_dunning.RenewalAhead, pre_dunning.SourceExpiring)):
        return await _pre_dunning(action, to)
    if isinstance(action, StartCase):
        return await _start_case(action, to)
    if isinstance(action, SignalCase):
        return await _signal_case(action, to)
    return await _signal_customer_cases(action, to)


# --- the endpoint -----------------------------------------------------------------------


def _refuse(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"detail": reason}, status_code=status)


@router.post("/webhooks/stripe")
async def stripe_webhook(
    request: Request,
    settings: SettingsDep,
    policies: PoliciesDep,
    experiments: ExperimentsDep,
    gateway: TemporalGatewayDep,
    timings: TimingsDep,
    failure_lookup: FailureLookupDep,
    card_readers: CardReadersDep,
) -> JSONResponse:
    secrets = settings.stripe_webhook_secrets()
    if not secrets:
        log.error("STRIPE_WEBHOOK_SECRET is not set: refusing Stripe webhooks until it is")
        raise ServiceUnavailable("webhook secret not configured")

    body = await request.body()
    problem = signature_problem(
        body, request.headers.get("stripe-signature"), secrets, tolerance=timings.webhook_tolerance_seconds
    )
    if problem is not None:
        log.warning("stripe webhook refused", reason=problem)
        return _refuse(400, problem)

    # Signed by Stripe from here on: a body that is no event is refused (400, Stripe never sends
    # one); an event we cannot use is acknowledged as ignored, since Stripe would retry anything
    # else for three days and it can never become usable.
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return _refuse(400, "body is not UTF-8")
    except (ValueError, RecursionError):  # RecursionError: nested too deep (`[[[[…`)
        return _refuse(400, "body is not JSON")
    if not isinstance(document, dict):
        return _refuse(400, "body is not a JSON object")
    read = read_event(document)
    action = plan(read) if isinstance(read, StripeEvent) else read
    event_id, event_type = (read.id, read.type) if isinstance(read, StripeEvent) else (None, None)
    if isinstance(action, Ignore):
        log.info("stripe event ignored", event_id=event_id, type=event_type, reason=action.reason)
        outcome = Outcome("ignored", action.reason)
    else:
        try:
            # The SDK retries an unreachable server for up to ~10 s whatever the rpc timeout:
            # answer 503 well before Stripe gives up on us (a late success is deduped anyway).
            async with asyncio.timeout(2 * timings.rpc_timeout.total_seconds()):
                to = Delivery(
                    await gateway.client(),
                    settings.dunning_task_queue,
                    policies,
                    timings,
                    failure_lookup,
                    card_readers,
                    experiments,
                )
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
