"""DunningWorkflow: one durable case per failed subscription.

The case's rules live in `dunning.case.Case`; this class carries out what it decides. The
loop asks the case for the next due action, does it (activities, with UI summaries), and
when nothing is due sleeps on a labelled timer until the next one. Signals and the
`retry_now` update only change the case and wake the loop, so every decision is taken in
one place, in order, and replays identically.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError

from workflows.activity_calls import (
    ACCESS_WINDOW,
    CALL_TIMEOUT,
    CHARGE_WINDOW,
    CUSTOMER_WINDOW,
    MESSAGE_WINDOW,
    call,
    cause,
)

with workflow.unsafe.imports_passed_through():
    from dunning import contract
    from dunning.case import (
        Action,
        Cancel,
        Case,
        ChargeRound,
        CloseCanceled,
        Delivery,
        SendHeldSms,
        SendStep,
        Settle,
        Suspend,
        Wait,
        charge_summary,
    )
    from dunning.contract import ActivityDef
    from dunning.models import (
        CardUpdated,
        CaseStatus,
        Channel,
        ChargeResult,
        CustomerProfile,
        DunningInput,
        ExtendGrace,
        InvoicePaid,
        NotificationResult,
        Pause,
        PaymentFailed,
        Resume,
        RetryNow,
        RetryNowResult,
        Stage,
        SubscriptionCanceled,
    )

#: The ledger may be down this long; the case goes on meanwhile and waits for its records only
#: before it completes or continues as new.
LEDGER_WINDOW = timedelta(days=7)
LEDGER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=10)
)

# Patches: each guards a change to the command sequence of cases already running.
#: In-app banners are recorded by the workflow itself, no `send_notification` activity.
IN_APP_WITHOUT_ACTIVITY = "in-app-banner-without-activity"
#: A ladder step stops at the channel where the invoice turned out to be paid.
NO_LADDER_MESSAGE_ONCE_PAID = "no-ladder-message-once-paid"
#: A thank-you only to a customer we wrote to.
THANKS_ONLY_AFTER_A_MESSAGE = "thanks-only-after-a-message"
#: Search attributes (DunningStage first) in the first workflow task, before any activity.
PUBLISH_AT_START = "search-attributes-at-start"
#: A subscription Stripe's own dunning canceled closes the case `canceled`, not `closed_by_customer`.
STRIPE_DUNNING_CANCEL_IS_CANCELED = "stripe-dunning-cancel-is-canceled"

#: A failure naming another customer than the case's is refused, never joined.
ONE_CUSTOMER_PER_CASE = "one-customer-per-case"
#: A failure dated in the future or more than MAX_FAILURE_AGE back counts from now, never a fast-forward.
FAILURE_TIME_WITHIN_BOUNDS = "failure-time-within-bounds"
#: A customer who cancels on their page: the case cancels the subscription in Stripe, then closes.
CUSTOMER_CANCELS_ON_PAGE = "customer-cancels-on-page"
#: While several time zones remain possible and no hour is daytime in all of them, email instead of SMS.
SMS_ONLY_IN_SHARED_DAYTIME = "sms-only-in-shared-daytime"
#: The case writes its facts to the recovery ledger (`record_case`) at its milestones.
RECORD_TO_LEDGER = "record-case-to-ledger"
#: An SMS standing in for a stopped email (bounced, spam, unsubscribed) waits out quiet hours.
EMAIL_STOPPED_SMS_WAITS_FOR_DAYTIME = "email-stopped-sms-waits-for-daytime"
#: The pinned policy and experiment arm published as `DunningPolicy` and `ExperimentArm`.
PUBLISH_POLICY_AND_ARM = "publish-policy-and-arm"
#: A charge reserves its attempt in the card's budget across every case (the card's fingerprint)
#: and may be refused; the case learns the card's budget from each charge.
CARD_BUDGET_ACROSS_CASES = "card-budget-across-cases"
#: After a hard decline the case tries the customer's other saved cards (policy `try_backup_cards`).
BACKUP_CARDS = "backup-cards"

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")


@workflow.defn(name=contract.WORKFLOW_TYPE)
class DunningWorkflow:
    @workflow.init
    def __init__(self, input: DunningInput) -> None:
        now = workflow.now()
        if input.state is not None:
            self.case = Case(input.state, input.policy)
        else:
            self.case = Case.open(
                workflow.info().workflow_id,
                input.subscription_id,
                input.customer_id,
                input.policy,
                now,
                experiment=input.experiment,
                arm=input.arm,
            )
            if input.requested_policy:
                self.case.log(
                    now,
                    "policy_unknown",
                    f"the subscription asked for policy '{input.requested_policy}', which does not exist;"
                    f" using '{input.policy.name}'",
                )
        self.history_event_limit = input.history_event_limit
        self.charging = asyncio.Lock()
        self.wake = False
        self.next_action = Wait()
        self.published_attributes: dict[str, object] = {}
        self.publish_pinning = False
        self.ledger_on = False
        self.records: list[workflow.ActivityHandle[None]] = []
        for failure in input.carried_failures:
            self.payment_failed(failure)

    # --- the loop -------------------------------------------------------------------

    @workflow.run
    async def run(self, input: DunningInput) -> CaseStatus:
        case = self.case
        await workflow.wait_condition(lambda: case.has_started)
        self.ledger_on = workflow.patched(RECORD_TO_LEDGER)
        self.publish_pinning = workflow.patched(PUBLISH_POLICY_AND_ARM)
        if workflow.patched(PUBLISH_AT_START):
            # Before any activity: a case is in the stage filters even while Stripe is down.
            self._publish(first=True)
        if case.state.customer is None:
            case.state.customer = await self._get_customer()
        while case.is_open:
            action = case.next_action(workflow.now())
            if not isinstance(action, Wait):
                await self._carry_out(action)
                continue
            self._record()
            if self._history_too_long():
                await workflow.wait_condition(workflow.all_handlers_finished)
                await self._records_landed()
                workflow.continue_as_new(
                    DunningInput(
                        subscription_id=case.state.subscription_id,
                        customer_id=case.state.customer_id,
                        policy=case.policy,
                        state=case.state,
                        history_event_limit=self.history_event_limit,
                        experiment=case.state.experiment,
                        arm=case.state.arm,
                    )
                )
            self.next_action = action
            self._publish()
            self.wake = False
            timeout = max(action.until - workflow.now(), timedelta(0)) if action.until else None
            try:
                await workflow.wait_condition(lambda: self.wake, timeout=timeout, timeout_summary=action.label)
            except TimeoutError:
                pass
        self.next_action = Wait()
        self._publish()
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._record()
        await self._records_landed()
        if case.state.late_failures:
            # A new invoice failed while this case was closing: it opens the next case (a new run).
            workflow.continue_as_new(
                DunningInput(
                    subscription_id=case.state.subscription_id,
                    customer_id=case.state.customer_id,
                    policy=case.policy,
                    carried_failures=case.state.late_failures,
                    history_event_limit=self.history_event_limit,
                    # The next case of the subscription stays in its arm (the same as a new assignment gives).
                    experiment=case.state.experiment,
                    arm=case.state.arm,
                )
            )
        return case.status(self.next_action)

    async def _carry_out(self, action: Action) -> None:
        match action:
            case CloseCanceled():
                await self._close_canceled(action)
            case Settle():
                await self._settle(action)
            case ChargeRound():
                await self._charge_round(action.trigger)
            case SendStep():
                await self._send_step(action)
            case SendHeldSms():
                await self._deliver(self.case.held_sms_delivery(action.sms))
            case Suspend():
                await self._suspend()
            case Cancel():
                await self._cancel()

    # --- charging ---------------------------------------------------------------------

    async def _charge_round(self, trigger: str) -> list[ChargeResult]:
        """Charge the open invoices oldest first; the first decline ends the round. After a hard
        decline, the customer's other saved cards are tried first (policy `try_backup_cards`)."""
        case, results = self.case, []
        async with self.charging:
            budgeted = workflow.patched(CARD_BUDGET_ACROSS_CASES)
            results = await self._charge_invoices(trigger, budgeted)
            while (
                budgeted
                and case.state.card_blocked
                and case.policy.try_backup_cards
                and case.open_invoices()
                and workflow.patched(BACKUP_CARDS)
                and await self._switch_to_backup_card()
            ):
                results += await self._charge_invoices("backup card", budgeted)
        self.wake = True
        return results

    async def _switch_to_backup_card(self) -> bool:
        case = self.case
        customer_id = case.state.customer_id
        try:
            cards = await self._call(
                contract.LIST_SAVED_CARDS,
                customer_id,
                window=CUSTOMER_WINDOW,
                summary=f"list the saved cards of {customer_id}",
            )
        except ActivityError as err:
            case.log(workflow.now(), "backup_cards_unavailable", cause(err))
            return False
        card = case.backup_card(cards, workflow.now())
        if card is None:
            case.log(workflow.now(), "no_backup_card", "no other saved, unexpired card to try: asking for a new one")
            return False
        case.switch_to_backup(card, workflow.now())
        return True

    async def _charge_invoices(self, trigger: str, budgeted: bool) -> list[ChargeResult]:
        case, results = self.case, []
        for invoice in case.open_invoices():
            if not case.card_budget_left(workflow.now()):
                case.log(workflow.now(), "retry_skipped", "this card reached its 30-day attempt budget")
                break
            request = case.budgeted_charge_request(invoice) if budgeted else case.charge_request(invoice)
            try:
                result = await self._call(
                    contract.CHARGE_INVOICE,
                    request,
                    window=CHARGE_WINDOW,
                    summary=charge_summary(invoice, request, trigger),
                )
            except ActivityError as err:
                case.record_charge_error(invoice.invoice_id, cause(err), workflow.now())
                break
            case.record_charge(request, trigger, result, workflow.now())
            results.append(result)
            if result.status in ("declined", "refused"):
                break
        return results

    # --- messages ---------------------------------------------------------------------

    async def _send_step(self, action: SendStep) -> None:
        now = workflow.now()
        for delivery in self.case.step_deliveries(action.step, action.step_id):
            if (
                delivery.channel is Channel.SMS
                and self._sms_refusal(delivery) is None
                and self.case.hold_sms_if_quiet(action.step, action.step_id, now)
            ):
                continue
            await self._deliver(delivery)
        self.case.message_sent(now)

    async def _send_event(self, event: str, settled: bool = False) -> None:
        """Event messages (suspended, recovered, canceled) go at the event: what the customer must know."""
        for step in self.case.event_steps(event):
            for delivery in self.case.step_deliveries(step, f"on-{event}", settled):
                await self._deliver(delivery)
            self.case.message_sent(workflow.now())

    async def _deliver(self, delivery: Delivery) -> None:
        case = self.case
        if case.paid_before_delivery(delivery) and workflow.patched(NO_LADDER_MESSAGE_ONCE_PAID):
            # invoice.paid between the e-mail and the SMS: no invoice left for the activity to re-check.
            case.skip_paid(delivery, workflow.now())
            return
        refusal = self._sms_refusal(delivery)
        if refusal:
            fallback = case.refuse_sms(delivery, refusal, workflow.now())
            if fallback:
                await self._deliver(fallback)
            return
        request = case.notification_request(delivery, workflow.now())
        result: NotificationResult
        if delivery.channel is Channel.IN_APP and workflow.patched(IN_APP_WITHOUT_ACTIVITY):
            # The banner is the case's own state, served by the API from `status` (docs/performance.md).
            result = case.show_banner(delivery)
        else:
            try:
                result = await self._call(
                    contract.SEND_NOTIFICATION,
                    request,
                    window=MESSAGE_WINDOW,
                    summary=f"{delivery.channel} '{delivery.template}'",
                )
            except ActivityError as err:
                result = NotificationResult(channel=delivery.channel, status="failed", reason=cause(err))
        fallback = case.record_notification(delivery, result, workflow.now())
        if fallback:
            if (
                fallback.channel is Channel.SMS  # email stopped: SendGrid said bounced, spam or unsubscribed
                and workflow.patched(EMAIL_STOPPED_SMS_WAITS_FOR_DAYTIME)
                and self._sms_refusal(fallback) is None
                and case.hold_fallback_sms_if_quiet(fallback, workflow.now())
            ):
                return
            await self._deliver(fallback)

    def _sms_refusal(self, delivery: Delivery) -> str | None:
        """Why this SMS goes by email instead (no hour is daytime in every zone the customer may be
        in), or None. Only profiles fetched since zones are inferred have several zones."""
        refusal = self.case.sms_refusal(delivery, workflow.now())
        return refusal if refusal and workflow.patched(SMS_ONLY_IN_SHARED_DAYTIME) else None

    # --- access and closing -----------------------------------------------------------

    async def _access_call(self, activity: ActivityDef[Any, None], reason: str) -> None:
        try:
            await self._call(activity, self.case.access_request(reason), window=ACCESS_WINDOW, summary=reason)
        except ActivityError as err:
            self.case.log(workflow.now(), f"{activity.name}_failed", cause(err))

    async def _suspend(self) -> None:
        self.case.suspend(workflow.now())
        await self._access_call(contract.SUSPEND_ACCESS, "suspend access: grace period ended")
        self.case.log(workflow.now(), "suspended", "grace period ended without payment")
        await self._send_event("suspended")

    async def _settle(self, action: Settle) -> None:
        case = self.case
        if not action.recovered:
            case.close(Stage.WRITTEN_OFF, workflow.now())
            return
        if action.restore_access:
            await self._access_call(contract.RESTORE_ACCESS, "restore access: payment recovered")
        case.recovered(workflow.now())
        # Events come out of order (the invoice paid by hand before Stripe's older
        # `payment_failed` reached us): then nothing was sent, and no thank-you should be.
        if case.customer_was_told() or not workflow.patched(THANKS_ONLY_AFTER_A_MESSAGE):
            await self._send_event("recovered", settled=True)
        else:
            case.log(workflow.now(), "message_skipped", "recovered: the customer had not been told of a problem")

    async def _cancel(self) -> None:
        await self._access_call(contract.CANCEL_SUBSCRIPTION, "cancel the subscription: no payment after suspension")
        self.case.close(Stage.CANCELED, workflow.now())
        await self._send_event("canceled", settled=True)

    async def _close_canceled(self, action: CloseCanceled) -> None:
        now = workflow.now()
        if action.by_customer_page and workflow.patched(CUSTOMER_CANCELS_ON_PAGE):
            await self._access_call(contract.CANCEL_SUBSCRIPTION, "cancel the subscription: the customer asked")
            self.case.log(workflow.now(), "closed", "subscription canceled at the customer's request on their page")
            self.case.close(Stage.CLOSED_BY_CUSTOMER, workflow.now())
        elif action.by_stripe_dunning and workflow.patched(STRIPE_DUNNING_CANCEL_IS_CANCELED):
            self.case.log(now, "closed", f"subscription canceled by Stripe after failed payments: {action.reason}")
            self.case.close(Stage.CANCELED, now)
        else:
            self.case.log(now, "closed", f"subscription canceled by the customer: {action.reason}")
            self.case.close(Stage.CLOSED_BY_CUSTOMER, now)

    # --- signals, update, query -------------------------------------------------------

    def _wake_if(self, changed: bool) -> None:
        if changed:
            self.wake = True

    @workflow.signal(name=contract.Signal.PAYMENT_FAILED.value)
    def payment_failed(self, failure: PaymentFailed) -> None:
        case, now = self.case, workflow.now()
        if case.names_another_customer(failure) and workflow.patched(ONE_CUSTOMER_PER_CASE):
            case.refuse_other_customer(failure, now)
            return
        clamp = case.failure_time_out_of_bounds(failure, now) and workflow.patched(FAILURE_TIME_WITHIN_BOUNDS)
        self._wake_if(case.payment_failed(failure, now, clamp_time=clamp))

    @workflow.signal(name=contract.Signal.CARD_UPDATED.value)
    def card_updated(self, update: CardUpdated) -> None:
        self._wake_if(self.case.card_updated(update, workflow.now()))

    @workflow.signal(name=contract.Signal.INVOICE_PAID.value)
    def invoice_paid(self, paid: InvoicePaid) -> None:
        self._wake_if(self.case.invoice_paid(paid, workflow.now()))

    @workflow.signal(name=contract.Signal.SUBSCRIPTION_CANCELED.value)
    def subscription_canceled(self, canceled: SubscriptionCanceled) -> None:
        self._wake_if(self.case.subscription_canceled(canceled, workflow.now()))

    @workflow.signal(name=contract.Signal.PAUSE.value)
    def pause(self, request: Pause) -> None:
        self._wake_if(self.case.pause(request, workflow.now()))

    @workflow.signal(name=contract.Signal.RESUME.value)
    def resume(self, request: Resume) -> None:
        self._wake_if(self.case.resume(request, workflow.now()))

    @workflow.signal(name=contract.Signal.EXTEND_GRACE.value)
    def extend_grace(self, request: ExtendGrace) -> None:
        self._wake_if(self.case.extend_grace(request, workflow.now()))

    @workflow.update(name=contract.UPDATE_RETRY_NOW)
    async def retry_now(self, request: RetryNow) -> RetryNowResult:
        self.case.log(workflow.now(), contract.UPDATE_RETRY_NOW, request.reason)
        results = await self._charge_round(f"operator: {request.reason}")
        return self.case.retry_now_result(results)

    @retry_now.validator
    def _validate_retry_now(self, request: RetryNow) -> None:
        refusal = self.case.retry_now_refusal(workflow.now(), charging=self.charging.locked())
        if refusal:
            raise ValueError(refusal)

    @workflow.query(name=contract.QUERY_STATUS)
    def status(self) -> CaseStatus:
        return self.case.status(self.next_action)

    # --- Temporal plumbing --------------------------------------------------------------

    async def _call(self, activity: ActivityDef[ArgT, ResultT], arg: ArgT, *, window: timedelta, summary: str) -> ResultT:
        return await call(activity, arg, window=window, summary=summary)

    async def _get_customer(self) -> CustomerProfile:
        customer_id = self.case.state.customer_id
        try:
            return await self._call(
                contract.GET_CUSTOMER, customer_id, window=CUSTOMER_WINDOW, summary=f"look up customer {customer_id}"
            )
        except ActivityError as err:
            return self.case.customer_lookup_failed(cause(err), workflow.now())

    def _record(self) -> None:
        """Hand the milestones reached since the last record to the ledger, without waiting: a
        ledger outage never holds the case up (the activity retries for LEDGER_WINDOW)."""
        if not self.ledger_on:
            return
        self._note_failed_records(done_only=True)
        record = self.case.ledger_record()
        if record is None:
            return
        self.records.append(
            workflow.start_activity(
                contract.RECORD_CASE.name,
                record,
                result_type=contract.RECORD_CASE.result_type,
                start_to_close_timeout=CALL_TIMEOUT,
                schedule_to_close_timeout=LEDGER_WINDOW,
                retry_policy=LEDGER_RETRY,
                summary=record.summary(),
            )
        )

    async def _records_landed(self) -> None:
        """Before the case completes or continues as new: its records have landed (or given up)."""
        if self.records:
            await workflow.wait(self.records)
            self._note_failed_records(done_only=False)

    def _note_failed_records(self, *, done_only: bool) -> None:
        for handle in [h for h in self.records if h.done() or not done_only]:
            self.records.remove(handle)
            error = handle.exception()
            if error is not None:
                detail = cause(error) if isinstance(error, ActivityError) else str(error)
                self.case.log(workflow.now(), "ledger_failed", detail)

    def _history_too_long(self) -> bool:
        info = workflow.info()
        return info.get_current_history_length() > self.history_event_limit or info.is_continue_as_new_suggested()

    def _publish(self, first: bool = False) -> None:
        """Keep search attributes and the UI's current details in step with the case.

        The `first` publish sets only what the case knows; there is nothing to unset yet."""
        values = self.case.search_attributes(self.next_action)
        if not self.publish_pinning:
            values.pop(contract.DUNNING_POLICY.name)
            values.pop(contract.EXPERIMENT_ARM.name)
        if values != self.published_attributes:
            keys: dict[str, SearchAttributeKey[Any]] = {key.name: key for key in contract.SEARCH_ATTRIBUTES}
            workflow.upsert_search_attributes(
                [
                    keys[name].value_unset() if value in (None, "") else keys[name].value_set(value)
                    for name, value in values.items()
                    if self.published_attributes.get(name, ...) != value and not (first and value in (None, ""))
                ]
            )
            self.published_attributes = values
        workflow.set_current_details(self.case.details(self.next_action))
