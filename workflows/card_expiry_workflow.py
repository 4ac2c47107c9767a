"""CardExpiryWorkflow (`card-expiry-{subscription}`): pre-dunning reminders before a renewal that
the card on file can't pay, because it expires first.

Started by the API (signal-with-start `renewal_upcoming`) only when Stripe's `invoice.upcoming`
(or `customer.source.expiring`) names a renewal the card will not see. The rules live in
`dunning.card_expiry.CardExpiry`; this class carries them out: it looks the customer up, sends
each due reminder with `send_notification`, and sleeps on a labelled timer until the next one.
It ends at a card update (`card_updated`, Stripe's automatic update included) or at the renewal.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from dunning import contract
    from dunning.contract import ActivityDef
    from dunning.card_expiry import (
        CardExpiry,
        CardExpiryInput,
        CardExpiryStatus,
        Delivery,
        End,
        RenewalUpcoming,
        Send,
        Sleep,
    )
    from dunning.models import CardUpdated, Channel, CustomerProfile, NotificationResult

# The cases' provider retries, windows and error reading: a reminder is a message like theirs.
from workflows.activity_calls import CUSTOMER_WINDOW, MESSAGE_WINDOW, call, cause

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")


@workflow.defn(name=contract.CARD_EXPIRY_WORKFLOW_TYPE)
class CardExpiryWorkflow:
    @workflow.init
    def __init__(self, input: CardExpiryInput) -> None:
        self.reminders = CardExpiry.open(workflow.info().workflow_id, input, workflow.now())
        self.wake = False
        self.action: Send | Sleep | End = Sleep(None, "waiting for the renewal's event")

    @workflow.run
    async def run(self, input: CardExpiryInput) -> CardExpiryStatus:
        reminders = self.reminders
        await workflow.wait_condition(lambda: reminders.has_started)
        if reminders.is_open:
            reminders.customer_known(await self._get_customer())
        while True:
            action = reminders.next_action(workflow.now())
            self.action = action
            workflow.set_current_details(reminders.details(action))
            if isinstance(action, End):
                if reminders.is_open:
                    reminders.renewal_reached(workflow.now())
                break
            if isinstance(action, Send):
                await self._deliver(action.delivery)
                continue
            self.wake = False
            timeout = max(action.until - workflow.now(), timedelta(0)) if action.until else None
            try:
                await workflow.wait_condition(lambda: self.wake, timeout=timeout, timeout_summary=action.label)
            except TimeoutError:
                pass
        workflow.set_current_details(reminders.details(self.action))
        await workflow.wait_condition(workflow.all_handlers_finished)
        return reminders.status(self.action)

    async def _deliver(self, delivery: Delivery) -> None:
        reminders = self.reminders
        result: NotificationResult
        if delivery.channel is Channel.IN_APP:
            # The in-app banner shows dunning cases only (the policy check refuses in_app here).
            result = NotificationResult(channel=delivery.channel, status="skipped", reason="no in-app banner before a renewal")
        else:
            try:
                result = await self._call(
                    contract.SEND_NOTIFICATION,
                    reminders.notification_request(delivery),
                    window=MESSAGE_WINDOW,
                    summary=f"{delivery.channel} '{delivery.template}' before the renewal",
                )
            except ActivityError as err:
                result = NotificationResult(channel=delivery.channel, status="failed", reason=cause(err))
        fallback = reminders.record_notification(delivery, result, workflow.now())
        if fallback is not None and reminders.is_open:
            await self._deliver(fallback)

    async def _get_customer(self) -> CustomerProfile:
        customer_id = self.reminders.state.customer_id
        try:
            profile = await self._call(
                contract.GET_CUSTOMER, customer_id, window=CUSTOMER_WINDOW, summary=f"look up customer {customer_id}"
            )
        except ActivityError as err:
            return self.reminders.customer_lookup_failed(cause(err), workflow.now())
        return profile

    async def _call(self, activity: ActivityDef[ArgT, ResultT], arg: ArgT, *, window: timedelta, summary: str) -> ResultT:
        return await call(activity, arg, window=window, summary=summary)

    # --- signals and query -------------------------------------------------------------------

    @workflow.signal(name=contract.CardExpirySignal.RENEWAL_UPCOMING.value)
    def renewal_upcoming(self, signal: RenewalUpcoming) -> None:
        if self.reminders.renewal_upcoming(signal, workflow.now()):
            self.wake = True

    @workflow.signal(name=contract.CardExpirySignal.CARD_UPDATED.value)
    def card_updated(self, update: CardUpdated) -> None:
        if self.reminders.card_updated(update, workflow.now()):
            self.wake = True

    @workflow.query(name=contract.QUERY_STATUS)
    def status(self) -> CardExpiryStatus:
        return self.reminders.status(self.action)

