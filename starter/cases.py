"""How a case is opened, for everything in starter/ that opens one.

The webhook opens a case when Stripe tells it that a renewal failed; `dunning reconcile` opens
the ones whose webhook never arrived (Stripe gives up after three days, and a service installed
today never heard of yesterday's failures). Both must open the same case: the same workflow id,
signal-with-start `payment_failed`, search attributes, memo (the invoice that opened it, which
tells a redelivery from a new failure), summary and details. This module is that one place.
It reads Stripe invoices as plain dicts (webhook bodies and API answers have the same shape).

(The webhook router, starter/api/routes/stripe_webhook.py, still has its own copy of the start;
it can call `open_case` and `invoice_subscription` instead.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy

from dunning import contract
from dunning.contract import Signal
from dunning.models import DunningInput, PaymentFailed
from dunning.money import format_money
from dunning.policy import Policy

MEMO_INVOICE = "invoice_id"
MEMO_EVENT = "opened_by_event"


def stripe_id(value: Any) -> str | None:
    """A Stripe reference that may be an id or an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def invoice_subscription(invoice: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The invoice's subscription and that subscription's metadata, current API first."""
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") if isinstance(parent, dict) else None
    if isinstance(details, dict) and details.get("subscription"):
        return stripe_id(details["subscription"]), details.get("metadata") or {}
    legacy = invoice.get("subscription_details")
    metadata = legacy.get("metadata") if isinstance(legacy, dict) else None
    return stripe_id(invoice.get("subscription")), metadata or {}


def requested_policy(metadata: dict[str, Any]) -> str | None:
    """The subscription's `dunning_policy` metadata (Stripe metadata values are strings)."""
    value = metadata.get("dunning_policy") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) and value else None


def payment_failed(invoice: dict[str, Any], *, event_id: str, occurred_at: datetime | None = None) -> PaymentFailed:
    """`PaymentFailed` for a failed subscription invoice (KeyError / ValidationError when unusable)."""
    subscription_id, _ = invoice_subscription(invoice)
    intent = invoice.get("payment_intent")
    error = intent.get("last_payment_error") if isinstance(intent, dict) else None
    error = error if isinstance(error, dict) else {}
    return PaymentFailed(
        invoice_id=invoice["id"],
        amount_due=invoice["amount_due"],
        currency=invoice["currency"],
        customer_id=stripe_id(invoice.get("customer")) or "",
        subscription_id=subscription_id or "",
        payment_method_id=stripe_id(error.get("payment_method")) or stripe_id(invoice.get("default_payment_method")),
        failure_code=error.get("code"),
        decline_code=error.get("decline_code"),
        advice_code=error.get("advice_code"),
        message=error.get("message"),
        hosted_invoice_url=invoice.get("hosted_invoice_url"),
        occurred_at=occurred_at,
        event_id=event_id,
    )


async def open_case(
    client: Client,
    *,
    task_queue: str,
    payment: PaymentFailed,
    policy: Policy,
    unknown_policy: str | None = None,
    experiment: str | None = None,
    arm: str | None = None,
    opened_by: str,
    rpc_timeout: timedelta | None = None,
) -> WorkflowHandle[Any, Any]:
    """Signal-with-start `payment_failed` on `dunning-{subscription}`: opens the case, or adds the
    invoice to the open one. `opened_by` says where it came from, for the case's details."""
    subscription_id, customer_id = payment.subscription_id, payment.customer_id
    if subscription_id is None or customer_id is None:
        raise ValueError(f"{payment.invoice_id}: a case needs the invoice's subscription and customer")
    summary = f"{customer_id} · {format_money(payment.amount_due, payment.currency)} · {subscription_id}"
    return await client.start_workflow(
        contract.WORKFLOW_TYPE,
        DunningInput(
            subscription_id=subscription_id,
            customer_id=customer_id,
            policy=policy,
            requested_policy=unknown_policy,
            experiment=experiment,
            arm=arm,
        ),
        id=contract.workflow_id(subscription_id),
        task_queue=task_queue,
        start_signal=Signal.PAYMENT_FAILED,
        start_signal_args=[payment],
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(contract.CUSTOMER_ID, customer_id),
                SearchAttributePair(contract.SUBSCRIPTION_ID, subscription_id),
                SearchAttributePair(contract.AMOUNT_DUE, payment.amount_due),
                SearchAttributePair(contract.CURRENCY, payment.currency.lower()),
            ]
        ),
        memo={MEMO_INVOICE: payment.invoice_id, MEMO_EVENT: payment.event_id},
        static_summary=summary,
        static_details=f"Opened by {opened_by}: invoice `{payment.invoice_id}` failed.\nPolicy `{policy.name}`."
        + (f" Experiment `{experiment}`, arm `{arm}`." if experiment else ""),
        rpc_timeout=rpc_timeout,
    )


def created_at(invoice: dict[str, Any]) -> datetime | None:
    created = invoice.get("created")
    return datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None
