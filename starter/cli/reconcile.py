"""`dunning reconcile`: open the cases whose `invoice.payment_failed` webhook never arrived.

Stripe retries a webhook for three days, then gives up; and a service installed today never
heard of the renewals that failed yesterday. Stripe still knows: its open, automatically
charged invoices of a subscription that were attempted and failed. For each of them this
looks at the case `dunning-{subscription}`:

- running: the case already has it (or will get it with its next webhook): left alone;
- closed, opened by this very invoice: handled before (recovered, canceled, …): left alone;
- otherwise missing: opened with the same signal-with-start as the webhook (`starter.cases`),
  with the subscription's `dunning_policy`, only with `--apply` (dry run by default).

Running it twice opens nothing the second time: the first run's cases are running.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.stripe_backend import StripePayments
from dunning import contract
from dunning.experiments import Experiment, choose
from dunning.policy import Policy
from runtime.settings import Settings
from starter import cases
from starter.cli.render import money

RPC_TIMEOUT = timedelta(seconds=10)
PAGE = 100


@dataclass
class Finding:
    invoice_id: str
    subscription_id: str
    customer_id: str
    amount_due: int
    currency: str
    state: str  # open | handled | missing | opened | failed
    detail: str = ""


def is_ours(invoice: dict[str, Any]) -> bool:
    """A renewal of a subscription whose automatic payment was attempted and failed."""
    subscription_id, _ = cases.invoice_subscription(invoice)
    return (
        subscription_id is not None
        and invoice.get("status") == "open"
        and invoice.get("collection_method") == "charge_automatically"
        and (invoice.get("attempt_count") or 0) > 0
        and invoice.get("billing_reason") != "subscription_create"  # sign-up, on-session: not dunning
        and (invoice.get("amount_remaining", invoice.get("amount_due")) or 0) > 0
    )


async def open_failed_invoices(stripe: StripePayments) -> AsyncIterator[dict[str, Any]]:
    """Stripe's open, automatically charged invoices, every page (`GET /v1/invoices`)."""
    after: str | None = None
    while True:
        params: dict[str, Any] = {"status": "open", "collection_method": "charge_automatically", "limit": PAGE}
        if after:
            params["starting_after"] = after
        # Plain JSON through the backend's one error translation (outage / refused key).
        page = await stripe._get("listing open invoices", "/v1/invoices", **params)  # noqa: SLF001
        data = page.get("data") or []
        for invoice in data:
            yield invoice
        if not page.get("has_more") or not data:
            return
        after = data[-1]["id"]


async def _state(client: Client, subscription_id: str, invoice_id: str) -> tuple[str, str]:
    handle = client.get_workflow_handle(contract.workflow_id(subscription_id))
    try:
        desc = await handle.describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return "missing", "no case"
        raise
    if desc.status == WorkflowExecutionStatus.RUNNING:
        return "open", f"case {handle.id} is open"
    if await desc.memo_value(cases.MEMO_INVOICE, None) == invoice_id:
        outcome = desc.typed_search_attributes.get(contract.DUNNING_OUTCOME) or (desc.status.name.lower() if desc.status else "closed")
        return "handled", f"case for this invoice closed ({outcome})"
    return "missing", "the last case was for another invoice"


async def _open(
    client: Client,
    stripe: StripePayments,
    invoice: dict[str, Any],
    settings: Settings,
    policies: dict[str, Policy],
    experiments: Sequence[Experiment] = (),
) -> str:
    _, metadata = cases.invoice_subscription(invoice)
    requested = cases.requested_policy(metadata)
    subscription_id, _ = cases.invoice_subscription(invoice)
    # The same choice as the webhook's: a failure reconciled lands in the arm its webhook would have.
    choice = choose(policies, experiments, requested, subscription_id or "")
    policy, unknown = choice.policy, choice.unknown_policy
    # The same event id for the same failed attempt: reconciling twice (or a late webhook)
    # is a redelivery to the case, not a new failure.
    payment = cases.payment_failed(
        invoice,
        event_id=f"reconcile_{invoice['id']}_{invoice.get('attempt_count') or 0}",
        occurred_at=cases.created_at(invoice),
    )
    try:  # why it failed, so that a hard decline is not retried on the same card (best effort)
        details = await stripe.failure_details(payment.invoice_id)
    except Exception:  # noqa: BLE001 - the case opens without it, as with the webhook
        details = None
    if details is not None:
        payment = payment.model_copy(
            update={
                "failure_code": details.code,
                "decline_code": details.decline_code,
                "advice_code": details.advice_code,
                "message": details.message,
                "payment_method_id": details.payment_method_id or payment.payment_method_id,
            }
        )
    await cases.open_case(
        client,
        task_queue=settings.dunning_task_queue,
        payment=payment,
        policy=policy,
        unknown_policy=unknown,
        experiment=choice.experiment,
        arm=choice.arm,
        opened_by="`dunning reconcile` (no webhook arrived)",
        rpc_timeout=RPC_TIMEOUT,
    )
    return f"policy {policy.name}" + (f" ({unknown!r} unknown)" if unknown else "")


async def reconcile(
    client: Client,
    settings: Settings,
    policies: dict[str, Policy],
    *,
    apply: bool,
    console: Console,
    stripe: StripePayments | None = None,
    experiments: Sequence[Experiment] = (),
) -> list[Finding]:
    """Every failed subscription invoice on Stripe and what reconciling did (or would do) with it."""
    stripe = stripe or StripePayments.from_settings(settings)
    findings: list[Finding] = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        listing = progress.add_task("reading Stripe's open invoices", total=None)
        invoices = []
        async for invoice in open_failed_invoices(stripe):
            progress.advance(listing)
            if is_ours(invoice):
                invoices.append(invoice)
        progress.update(listing, total=progress.tasks[listing].completed)
        checking = progress.add_task("opening missing cases" if apply else "checking cases", total=len(invoices))
        for invoice in invoices:
            subscription_id, _ = cases.invoice_subscription(invoice)
            assert subscription_id is not None
            finding = Finding(
                invoice_id=invoice["id"],
                subscription_id=subscription_id,
                customer_id=cases.stripe_id(invoice.get("customer")) or "—",
                amount_due=invoice.get("amount_remaining", invoice.get("amount_due")) or 0,
                currency=invoice.get("currency") or "",
                state="",
            )
            finding.state, finding.detail = await _state(client, subscription_id, finding.invoice_id)
            if finding.state == "missing" and apply:
                try:
                    finding.detail = await _open(client, stripe, invoice, settings, policies, experiments)
                    finding.state = "opened"
                except (RPCError, KeyError, ValidationError) as err:
                    finding.state, finding.detail = "failed", " ".join(str(err).split())[:200]
            findings.append(finding)
            progress.advance(checking)
    await stripe.aclose()
    return findings


STATE_STYLE = {"open": "dim", "handled": "dim", "missing": "yellow", "opened": "green", "failed": "red"}


def findings_table(findings: list[Finding], apply: bool) -> Table:
    counts = {s: sum(1 for f in findings if f.state == s) for s in STATE_STYLE}
    title = (
        f"{len(findings)} failed subscription invoice(s) on Stripe: "
        f"{counts['open'] + counts['handled']} with a case, "
        + (f"{counts['opened']} opened, {counts['failed']} failed" if apply else f"{counts['missing']} missing")
    )
    caption = None if apply else "dry run: --apply opens the missing ones"
    table = Table(title=title, title_justify="left", caption=caption)
    for column in ("invoice", "subscription", "owed", "case"):
        table.add_column(column, no_wrap=column != "case")
    for f in findings:
        label = "would open" if f.state == "missing" else f.state
        table.add_row(
            f.invoice_id,
            f.subscription_id,
            money(f.amount_due, f.currency),
            Text(f"{label}: {f.detail}" if f.detail else label, style=STATE_STYLE.get(f.state, "")),
        )
    return table
