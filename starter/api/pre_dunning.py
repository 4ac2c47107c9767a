"""Pre-dunning at the door: does Stripe's renewal event call for reminders, and if so start them.

`invoice.upcoming` arrives for every renewal of every subscription (days ahead, as set in
Stripe's "Upcoming renewal events"); `customer.source.expiring` for a legacy card that expires
this month. The check lives here, at the door, not in the workflow:

- almost every renewal's card outlives it: checking here starts no workflow for those (one
  Temporal execution, its history and its visibility row per renewal of every customer, to end
  a second later), and only the few subscriptions whose card expires first get one;
- the check reads the card as it is when the event arrives, so a redelivery after the customer
  (or Stripe's updater) replaced the card finds the new card and starts nothing;
- it is as durable as a workflow's first activity would be: while Stripe can't be read the
  webhook answers 503 and Stripe delivers the event again (for three days; it is sent weeks
  before the renewal).

The check itself is pure (`dunning.card_expiry.needs_reminders`); Stripe is read through the
payments backend (`StripePayments.renewal_card`, `subscriptions_charging`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import structlog
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from activities.backends import ProviderRejected
from dunning import contract
from dunning.card_expiry import CardExpiryInput, RenewalCard, RenewalUpcoming, needs_reminders
from dunning.policy import Policy, choose_policy, iso_duration
from starter.api.deps import CardReaders, ServiceUnavailable

log = structlog.get_logger("dunning.webhooks.pre_dunning")
T = TypeVar("T")

#: How long the door waits for Stripe before answering 503 (Stripe then delivers again).
STRIPE_SECONDS = 5.0
MEMO_EVENT = "opened_by_event"


@dataclass
class RenewalAhead:
    """`invoice.upcoming`: a renewal of this subscription; which card it charges is asked of Stripe."""

    subscription_id: str
    customer_id: str
    renewal_at: datetime
    requested_policy: str | None
    event_id: str
    source: str


@dataclass
class SourceExpiring:
    """`customer.source.expiring`: this card expires this month; which renewals it pays is asked of Stripe."""

    customer_id: str
    card: RenewalCard
    event_id: str
    source: str


@dataclass
class Result:
    action: str
    detail: str
    cases: list[str]


async def _ask_stripe(what: str, call: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(STRIPE_SECONDS):
            return await call
    except ProviderRejected:
        raise
    except Exception as exc:  # an outage or a timeout: Stripe delivers the event again
        log.warning("stripe not read for pre-dunning: stripe will retry", what=what, error=type(exc).__name__)
        raise ServiceUnavailable("Stripe unavailable: the card could not be read, retry later") from None


def _policy(policies: dict[str, Policy], requested: str | None) -> Policy | None:
    policy = choose_policy(policies, requested)
    return policy if policy.pre_dunning else None


@dataclass
class Door:
    """What starting reminders needs: Temporal (connected on first use), the task queue, the
    policies, how to read Stripe, and the patience for Temporal calls."""

    client_for: Callable[[], Awaitable[Client]]
    task_queue: str
    policies: dict[str, Policy]
    readers: CardReaders
    rpc_timeout: timedelta

    async def deliver(self, event: RenewalAhead | SourceExpiring) -> Result:
        if isinstance(event, RenewalAhead):
            return await self.renewal_ahead(event)
        return await self.source_expiring(event)

    async def renewal_ahead(self, event: RenewalAhead) -> Result:
        """`invoice.upcoming`: start reminders when the card the renewal charges expires before it."""
        policy = _policy(self.policies, event.requested_policy)
        if policy is None:
            return Result("ignored", "pre-dunning is off in this subscription's policy", [])
        if self.readers.renewal_card is None:
            return Result("ignored", "the card is not read: the payments backend is not Stripe", [])
        try:
            card = await _ask_stripe("renewal card", self.readers.renewal_card(event.subscription_id, event.customer_id))
        except ProviderRejected as exc:
            log.warning("card not read for pre-dunning", subscription_id=event.subscription_id, error=str(exc)[:300])
            return Result("ignored", "Stripe refused to tell the card of the renewal", [])
        if card is None:
            return Result("ignored", "no card on file for the renewal", [])
        why_not = needs_reminders(card, event.renewal_at, datetime.now(UTC))
        if why_not is not None:
            return Result("ignored", f"no pre-dunning: {why_not}", [])
        signal = RenewalUpcoming(renewal_at=event.renewal_at, card=card, event_id=event.event_id, source=event.source)
        return await self._start(event.subscription_id, event.customer_id, policy, signal)

    async def source_expiring(self, event: SourceExpiring) -> Result:
        """`customer.source.expiring`: start reminders for each renewal this card pays and won't see."""
        if self.readers.subscriptions_charging is None:
            return Result("ignored", "subscriptions are not read: the payments backend is not Stripe", [])
        try:
            renewing = await _ask_stripe(
                "subscriptions", self.readers.subscriptions_charging(event.customer_id, event.card.payment_method_id)
            )
        except ProviderRejected as exc:
            log.warning("subscriptions not read for pre-dunning", customer_id=event.customer_id, error=str(exc)[:300])
            return Result("ignored", "Stripe refused to list the customer's subscriptions", [])
        started: list[str] = []
        now = datetime.now(UTC)
        for subscription in renewing:
            policy = _policy(self.policies, subscription.requested_policy)
            if policy is None or needs_reminders(event.card, subscription.renewal_at, now) is not None:
                continue
            signal = RenewalUpcoming(
                renewal_at=subscription.renewal_at, card=event.card, event_id=event.event_id, source=event.source
            )
            result = await self._start(subscription.subscription_id, event.customer_id, policy, signal)
            started.extend(result.cases if result.action != "ignored" else [])
        if not started:
            return Result("ignored", "no renewal of this card needs pre-dunning", [])
        return Result("signal_with_start", f"pre-dunning for {len(started)} subscription(s)", started)

    async def _start(self, subscription_id: str, customer_id: str, policy: Policy, signal: RenewalUpcoming) -> Result:
        """Signal-with-start `renewal_upcoming` on `card-expiry-{subscription}`."""
        client, rpc_timeout = await self.client_for(), self.rpc_timeout
        wid = contract.card_expiry_workflow_id(subscription_id)
        # A redelivered event whose reminders already ended (a card update, the renewal) starts nothing.
        try:
            described = await client.get_workflow_handle(wid).describe(rpc_timeout=rpc_timeout)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        else:
            if described.status != WorkflowExecutionStatus.RUNNING:
                if await described.memo_value(MEMO_EVENT, None) == signal.event_id:
                    return Result("ignored", f"{wid} for {signal.event_id} already ended", [wid])
        card = signal.card
        await client.start_workflow(
            contract.CARD_EXPIRY_WORKFLOW_TYPE,
            CardExpiryInput(
                subscription_id=subscription_id,
                customer_id=customer_id,
                policy=policy.name,
                steps=policy.pre_dunning,
                quiet_hours=policy.quiet_hours,
            ),
            id=wid,
            task_queue=self.task_queue,
            start_signal=contract.CardExpirySignal.RENEWAL_UPCOMING,
            start_signal_args=[signal],
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(contract.CUSTOMER_ID, customer_id),
                    SearchAttributePair(contract.SUBSCRIPTION_ID, subscription_id),
                ]
            ),
            memo={MEMO_EVENT: signal.event_id},
            static_summary=f"{customer_id} · card ···{card.last4 or '?'} expires before {signal.renewal_at:%Y-%m-%d} · {subscription_id}",
            static_details=(
                f"Pre-dunning, started by Stripe event `{signal.event_id}` ({signal.source}).\n"
                f"Policy `{policy.name}`: reminders {', '.join(iso_duration(s.before) for s in policy.pre_dunning)}"
                " before the renewal."
            ),
            rpc_timeout=rpc_timeout,
        )
        log.info("pre-dunning started", workflow_id=wid, event_id=signal.event_id, policy=policy.name)
        return Result("signal_with_start", f"{contract.CardExpirySignal.RENEWAL_UPCOMING} → {wid} (policy {policy.name})", [wid])
