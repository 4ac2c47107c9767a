"""DunningWorkflow: one durable case per failed subscription.

The case sleeps until the next thing is due (a retry, a ladder message, a deferred
SMS, the end of grace, cancellation), does it, and plans again. Signals and the
`retry_now` update only change state and wake the loop, so every decision is taken
in one place, in order, and replays identically.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from dunning import schedule
    from dunning.declines import classify_decline, is_retryable_on_same_card
    from dunning.models import (
        PAID_ELSEWHERE,
        AccessRequest,
        AccessState,
        AttemptRecord,
        CardUpdated,
        CaseState,
        CaseStatus,
        Channel,
        ChargeRequest,
        ChargeResult,
        CustomerProfile,
        DeclineCategory,
        DunningInput,
        ExtendGrace,
        InvoicePaid,
        InvoiceState,
        NotificationRecord,
        NotificationRequest,
        NotificationResult,
        Pause,
        PaymentFailed,
        PendingSms,
        Resume,
        RetryNow,
        RetryNowResult,
        Stage,
        SubscriptionCanceled,
        TimelineEntry,
    )
    from dunning.money import plain_amount
    from dunning.policy import NotifyStep, Policy
    from dunning import contract as sa

# Provider outages are retried with backoff for as long as these windows allow; a decline is
# a result and never reaches this policy.
PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    non_retryable_error_types=["ProviderRejected"],
)
CHARGE_WINDOW = timedelta(hours=12)
MESSAGE_WINDOW = timedelta(hours=6)
ACCESS_WINDOW = timedelta(days=1)
CALL_TIMEOUT = timedelta(seconds=60)
SEEN_EVENTS_KEPT = 200
FINAL_NOTICE_TEMPLATE = "final_notice"
#: Patch: in-app banners are recorded by the workflow itself, no `send_notification` activity.
IN_APP_WITHOUT_ACTIVITY = "in-app-banner-without-activity"


@workflow.defn(name="DunningWorkflow")
class DunningWorkflow:
    @workflow.init
    def __init__(self, input: DunningInput) -> None:
        now = workflow.now()
        self.policy: Policy = input.policy
        self.history_event_limit = input.history_event_limit
        self.state: CaseState = input.state or CaseState(
            case_id=f"{workflow.info().workflow_id}@{now:%Y%m%dT%H%M%SZ}",
            subscription_id=input.subscription_id,
            customer_id=input.customer_id,
            opened_at=now,
            anchor=now,
        )
        self.charging = asyncio.Lock()
        self.wake = False
        self.next_action: tuple[datetime | None, str | None] = (None, None)
        self.published_attributes: dict[str, object] = {}
        for failure in input.carried_failures:
            self.payment_failed(failure)

    # --- the loop -------------------------------------------------------------------

    @workflow.run
    async def run(self, input: DunningInput) -> CaseStatus:
        s = self.state
        await workflow.wait_condition(lambda: bool(s.invoices) or s.cancel_requested is not None)
        if s.customer is None:
            s.customer = await self._get_customer()
        while s.outcome is None:
            if await self._act_on_what_is_due():
                continue
            if self._history_too_long():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    DunningInput(
                        subscription_id=s.subscription_id,
                        customer_id=s.customer_id,
                        policy=self.policy,
                        state=s,
                        history_event_limit=self.history_event_limit,
                    )
                )
            at, label = self.next_action = self._plan()
            self._publish()
            self.wake = False
            timeout = max(at - workflow.now(), timedelta(0)) if at else None
            try:
                await workflow.wait_condition(lambda: self.wake, timeout=timeout, timeout_summary=label)
            except TimeoutError:
                pass
        self.next_action = (None, None)
        self._publish()
        await workflow.wait_condition(workflow.all_handlers_finished)
        if s.late_failures:
            # A new invoice failed while this case was closing: it opens the next case (a new run).
            workflow.continue_as_new(
                DunningInput(
                    subscription_id=s.subscription_id,
                    customer_id=s.customer_id,
                    policy=self.policy,
                    carried_failures=s.late_failures,
                    history_event_limit=self.history_event_limit,
                )
            )
        return self.status()

    async def _act_on_what_is_due(self) -> bool:
        """Do the most urgent due thing, if any. True when something was done (plan again)."""
        s, now = self.state, workflow.now()
        if s.cancel_requested is not None:
            self._log("closed", f"subscription canceled by the customer: {s.cancel_requested}")
            await self._close(Stage.CLOSED_BY_CUSTOMER)
            return True
        if s.invoices and not self._open_invoices():
            await self._settle()
            return True
        if s.paused:
            return False
        if s.card_update_pending:
            s.card_update_pending = False
            if self._card_budget_left(now):
                await self._charge_round("card updated")
            else:
                self._log("retry_skipped", "card updated, but this card reached its 30-day attempt budget")
            return True
        retry = self._next_retry()
        if retry and retry[1] <= now:
            s.next_retry_index = retry[0] + 1
            await self._charge_round(f"scheduled retry {retry[0] + 1}/{len(self.policy.retry_after)}")
            return True
        if await self._send_due_ladder_step(now):
            return True
        due_sms = [p for p in s.pending_sms if p.due_at <= now]
        if due_sms:
            s.pending_sms.remove(due_sms[0])
            await self._notify(Channel.SMS, due_sms[0].template, due_sms[0].step, due_sms[0].step_channels)
            return True
        if s.access is not AccessState.SUSPENDED and now >= self._grace_ends_at():
            await self._suspend()
            return True
        if s.suspended_at and now >= s.suspended_at + self.policy.cancel_after_suspension:
            await self._cancel()
            return True
        return False

    def _plan(self) -> tuple[datetime | None, str | None]:
        """The next thing due and when; None while paused (only a signal wakes the case)."""
        s = self.state
        if s.paused:
            return None, None
        candidates: list[tuple[datetime, str]] = []
        retry = self._next_retry()
        if retry:
            candidates.append((retry[1], f"retry the charge ({retry[0] + 1}/{len(self.policy.retry_after)})"))
        step = self._next_ladder_step()
        if step:
            candidates.append((step[1], f"send '{step[0].template}'"))
        for pending in s.pending_sms:
            candidates.append((pending.due_at, f"send the deferred '{pending.template}' SMS"))
        if s.access is not AccessState.SUSPENDED:
            candidates.append((self._grace_ends_at(), "suspend access (grace ends)"))
        elif s.suspended_at:
            candidates.append((s.suspended_at + self.policy.cancel_after_suspension, "cancel the subscription"))
        if not candidates:
            return None, None
        return min(candidates, key=lambda c: c[0])

    # --- charging ---------------------------------------------------------------------

    def _card_key(self, card: str | None) -> str:
        return card or "default"

    def _card_attempts(self) -> list[datetime]:
        current = self._card_key(self.state.current_card)
        return [
            a.at
            for a in self.state.attempts
            if a.result.status in ("succeeded", "declined") and self._card_key(a.result.payment_method_id) == current
        ]

    def _card_budget_left(self, at: datetime) -> bool:
        return schedule.can_attempt_now(self._card_attempts(), at, self.policy.max_attempts_per_card_30d)

    def _next_retry(self) -> tuple[int, datetime] | None:
        s = self.state
        if s.card_blocked or not self._open_invoices():
            return None
        last = max((a.at for a in s.attempts), default=s.anchor)
        retry = schedule.next_retry(
            self.policy,
            s.anchor,
            self._timezone(),
            max(last, s.anchor),
            self._card_attempts(),
            from_index=s.next_retry_index,
        )
        return retry

    async def _charge_round(self, trigger: str) -> list[ChargeResult]:
        """Charge the open invoices oldest first; the first decline ends the round."""
        results: list[ChargeResult] = []
        async with self.charging:
            for invoice in self._open_invoices():
                if not self._card_budget_left(workflow.now()):
                    self._log("retry_skipped", "this card reached its 30-day attempt budget")
                    break
                result = await self._charge(invoice, trigger)
                if result is None:
                    break
                results.append(result)
                if result.status == "declined":
                    break
        self.wake = True
        return results

    async def _charge(self, invoice: InvoiceState, trigger: str) -> ChargeResult | None:
        s = self.state
        # The attempt number only moves on once Stripe answered: a charge whose activity gave up
        # (hours of outage) is tried again under the same key, so it can never be paid twice.
        attempt = invoice.attempts + 1
        key = f"{s.case_id}/{invoice.invoice_id}/{attempt}"
        request = ChargeRequest(
            invoice_id=invoice.invoice_id,
            customer_id=s.customer_id,
            subscription_id=s.subscription_id,
            attempt=attempt,
            idempotency_key=key,
            payment_method_id=s.current_card,
        )
        try:
            result = await workflow.execute_activity(
                "charge_invoice",
                request,
                result_type=ChargeResult,
                start_to_close_timeout=CALL_TIMEOUT,
                schedule_to_close_timeout=CHARGE_WINDOW,
                retry_policy=PROVIDER_RETRY,
                summary=f"charge {invoice.invoice_id} {plain_amount(invoice.amount_due, invoice.currency)}"
                f" — attempt {attempt} ({trigger})",
            )
        except ActivityError as err:
            self._log("charge_error", f"{invoice.invoice_id}: could not charge: {_cause(err)}")
            return None
        invoice.attempts = attempt
        s.attempts.append(
            AttemptRecord(
                at=workflow.now(),
                invoice_id=invoice.invoice_id,
                attempt=attempt,
                trigger=trigger,
                idempotency_key=key,
                result=result,
            )
        )
        if result.status in ("succeeded", "already_paid"):
            invoice.status = "paid"
            self._log("charged" if result.status == "succeeded" else "already_paid", invoice.invoice_id)
        elif result.status == "voided":
            invoice.status = "voided"
            self._log("voided", f"{invoice.invoice_id} was voided in Stripe")
        else:
            self._record_decline(result)
        return result

    def _record_decline(self, result: ChargeResult) -> None:
        s = self.state
        s.last_decline = result
        s.decline_category = result.category or DeclineCategory.UNKNOWN
        if not is_retryable_on_same_card(s.decline_category):
            s.card_blocked = True
        self._log(
            "declined",
            f"{result.invoice_id}: {result.decline_code or result.code or 'declined'} ({s.decline_category})",
        )

    # --- messages ---------------------------------------------------------------------

    def _next_ladder_step(self) -> tuple[NotifyStep, datetime, int] | None:
        s = self.state
        for index, step in self.policy.ladder:
            if index not in s.ladder_steps_done:
                due = schedule.message_time(s.anchor + step.at, s.last_message_at, self.policy.min_gap_between_messages)
                return step, due, index
        return None

    async def _send_due_ladder_step(self, now: datetime) -> bool:
        s = self.state
        due = schedule.due_ladder_steps(self.policy, s.anchor, now, set(s.ladder_steps_done))
        if not due:
            return False
        # After a pause or a long outage several steps may be due: only the latest one speaks.
        for index in due[:-1]:
            s.ladder_steps_done.append(index)
            self._log("message_skipped", f"'{self.policy.notify[index].template}' superseded by a later step")
        index = due[-1]
        step = self.policy.notify[index]
        if schedule.message_time(now, s.last_message_at, self.policy.min_gap_between_messages) > now:
            return False
        s.ladder_steps_done.append(index)
        await self._send_step(step, f"step-{index}")
        return True

    async def _send_step(self, step: NotifyStep, step_id: str) -> None:
        s, now = self.state, workflow.now()
        channels = [Channel(c) for c in step.channels]
        for channel in channels:
            if channel is Channel.SMS:
                send_at = schedule.next_sms_time(now, self._timezone(), self.policy.quiet_hours)
                if send_at > now:
                    s.pending_sms.append(
                        PendingSms(due_at=send_at, template=step.template, step=step_id, step_channels=channels)
                    )
                    self._log(
                        "sms_deferred", f"'{step.template}' SMS waits for {send_at:%Y-%m-%d %H:%M} UTC (quiet hours)"
                    )
                    continue
            await self._notify(channel, step.template, step_id, ladder_channels=channels)
        s.last_message_at = now

    async def _notify(
        self, channel: Channel, template: str, step_id: str, ladder_channels: list[Channel], settled: bool = False
    ) -> None:
        s = self.state
        if not settled and not self._open_invoices() and workflow.patched("no-ladder-message-once-paid"):
            # Paid while an earlier channel of this step was being sent (invoice.paid between the
            # e-mail and the SMS): the activity would get no invoice to re-check, so stop here.
            s.notifications.append(
                NotificationRecord(
                    at=workflow.now(),
                    template=template,
                    channel=channel,
                    status="skipped",
                    reason=PAID_ELSEWHERE,
                    step=step_id,
                )
            )
            self._log("message_skipped", f"{channel} '{template}': invoice already paid")
            return
        if channel is Channel.IN_APP:
            s.banner_template = template
        request = NotificationRequest(
            case_id=s.case_id,
            customer_id=s.customer_id,
            subscription_id=s.subscription_id,
            channel=channel,
            template=template,
            idempotency_key=f"{s.case_id}/{step_id}/{channel}",
            invoice_ids=[i.invoice_id for i in self._open_invoices()] if not settled else [],
            check_invoices_open=not settled,
            context=self._message_context(),
        )
        if channel is Channel.IN_APP and workflow.patched(IN_APP_WITHOUT_ACTIVITY):
            # The banner is the case's own state (set above, served by the API from `status`):
            # an activity only re-read the invoice and answered "sent", for 3 events and a
            # workflow task per banner (docs/performance.md).
            # Stripe told an earlier channel of this step that the invoice is paid: no banner either.
            if any(n.step == step_id and n.reason == PAID_ELSEWHERE for n in s.notifications):
                result = NotificationResult(channel=channel, status="skipped", reason=PAID_ELSEWHERE)
                s.banner_template = None
            else:
                result = NotificationResult(channel=channel, status="sent", reason="in-app banner updated")
        else:
            try:
                result = await workflow.execute_activity(
                    "send_notification",
                    request,
                    result_type=NotificationResult,
                    start_to_close_timeout=CALL_TIMEOUT,
                    schedule_to_close_timeout=MESSAGE_WINDOW,
                    retry_policy=PROVIDER_RETRY,
                    summary=f"{channel} '{template}'",
                )
            except ActivityError as err:
                result = NotificationResult(channel=channel, status="failed", reason=_cause(err))
        s.notifications.append(
            NotificationRecord(
                at=workflow.now(),
                template=template,
                channel=channel,
                status=result.status,
                reason=result.reason,
                step=step_id,
            )
        )
        self._log(
            f"message_{result.status}", f"{channel} '{template}'" + (f": {result.reason}" if result.reason else "")
        )
        if result.fallback_channel and result.fallback_channel not in ladder_channels:
            await self._notify(
                result.fallback_channel,
                template,
                f"{step_id}-fallback",
                [*ladder_channels, result.fallback_channel],
                settled,
            )

    async def _send_event(self, event: str, settled: bool = False) -> None:
        for step in self.policy.on_event(event):
            channels = [Channel(c) for c in step.channels]
            for channel in channels:
                await self._notify(channel, step.template, f"on-{event}", channels, settled)
            self.state.last_message_at = workflow.now()

    def _message_context(self) -> dict[str, str | int | float | bool | None]:
        s = self.state
        open_invoices = self._open_invoices()
        retry = self._next_retry()
        grace_ends = self._grace_ends_at()
        return {
            "amount_due": sum(i.amount_due for i in open_invoices),
            "currency": self._currency(),
            "invoice_count": len(open_invoices),
            "hosted_invoice_url": next((i.hosted_invoice_url for i in open_invoices if i.hosted_invoice_url), None),
            "decline_category": s.decline_category.value if s.decline_category else None,
            "decline_code": s.last_decline.decline_code if s.last_decline else None,
            "next_retry_at": retry[1].isoformat() if retry else None,
            "grace_ends_at": grace_ends.isoformat(),
            "cancel_at": ((s.suspended_at or grace_ends) + self.policy.cancel_after_suspension).isoformat(),
            "amount_paid": sum(i.amount_due for i in s.invoices if i.status == "paid") or None,
            "days_left": max((grace_ends - workflow.now()).days, 0),
            "plan_name": s.customer.plan_name if s.customer else None,
            "access": s.access.value,
            "timezone": self._timezone(),
        }

    # --- access and closing -----------------------------------------------------------

    def _grace_ends_at(self) -> datetime:
        return schedule.grace_ends_at(self.policy, self.state.anchor, self.state.grace_extension_days)

    async def _access_call(self, activity_name: str, reason: str) -> bool:
        s = self.state
        try:
            await workflow.execute_activity(
                activity_name,
                AccessRequest(customer_id=s.customer_id, subscription_id=s.subscription_id, reason=reason),
                start_to_close_timeout=CALL_TIMEOUT,
                schedule_to_close_timeout=ACCESS_WINDOW,
                retry_policy=PROVIDER_RETRY,
                summary=reason,
            )
        except ActivityError as err:
            self._log(f"{activity_name}_failed", _cause(err))
            return False
        return True

    async def _suspend(self) -> None:
        s = self.state
        s.access = AccessState.SUSPENDED
        s.suspended_at = workflow.now()
        await self._access_call("suspend_access", "suspend access: grace period ended")
        self._log("suspended", "grace period ended without payment")
        await self._send_event("suspended")

    async def _settle(self) -> None:
        """Nothing is outstanding: recovered if anything was paid, written off if all was voided."""
        s = self.state
        if any(i.status == "paid" for i in s.invoices):
            if s.access is AccessState.SUSPENDED:
                await self._access_call("restore_access", "restore access: payment recovered")
            s.access = AccessState.ACTIVE
            s.banner_template = None
            await self._close(Stage.RECOVERED)
            # A thank-you is for a customer we wrote to. Events come out of order (the invoice paid
            # by hand before Stripe's older `payment_failed` reached us): then nothing was sent,
            # and nothing should be.
            # An in-app banner is the case's own state, not something the customer was sent.
            told = any(n.status == "sent" and n.channel is not Channel.IN_APP for n in s.notifications)
            if told or not workflow.patched("thanks-only-after-a-message"):
                await self._send_event("recovered", settled=True)
            else:
                self._log("message_skipped", "recovered: the customer had not been told of a problem")
        else:
            await self._close(Stage.WRITTEN_OFF)

    async def _cancel(self) -> None:
        await self._access_call("cancel_subscription", "cancel the subscription: no payment after suspension")
        await self._close(Stage.CANCELED)
        await self._send_event("canceled", settled=True)

    async def _close(self, outcome: Stage) -> None:
        s = self.state
        s.outcome = outcome
        s.pending_sms.clear()
        if outcome is not Stage.RECOVERED:
            s.banner_template = None
        self._log("outcome", outcome.value)

    # --- signals, update, query -------------------------------------------------------

    def _first_time(self, event_id: str | None) -> bool:
        """False for a redelivered webhook event (same Stripe event id)."""
        s = self.state
        if event_id is None:
            return True
        if event_id in s.seen_event_ids:
            return False
        s.seen_event_ids = [*s.seen_event_ids, event_id][-SEEN_EVENTS_KEPT:]
        return True

    @workflow.signal(name="payment_failed")
    def payment_failed(self, failure: PaymentFailed) -> None:
        s = self.state
        if not self._first_time(failure.event_id):
            return
        if any(i.invoice_id == failure.invoice_id for i in s.invoices):
            self._log("failure_reported_again", failure.invoice_id)
            return
        if s.outcome:
            s.late_failures = [*s.late_failures, failure]
            return
        now = workflow.now()
        failed_at = min(failure.occurred_at, now) if failure.occurred_at else now
        if not s.invoices:
            s.anchor = failed_at
        invoice = InvoiceState(
            invoice_id=failure.invoice_id,
            amount_due=failure.amount_due,
            currency=failure.currency.lower(),
            failed_at=failed_at,
            hosted_invoice_url=failure.hosted_invoice_url,
        )
        if failure.invoice_id in s.settled_before_failure:
            invoice.status = "paid"
        s.invoices = sorted([*s.invoices, invoice], key=lambda i: i.failed_at)
        if failure.payment_method_id:
            s.current_card = failure.payment_method_id
        code = failure.decline_code or failure.failure_code
        result = ChargeResult(
            invoice_id=failure.invoice_id,
            status="declined",
            category=classify_decline(failure.decline_code, failure.failure_code, failure.advice_code),
            code=failure.failure_code,
            decline_code=failure.decline_code,
            advice_code=failure.advice_code,
            message=failure.message,
            payment_method_id=failure.payment_method_id,
        )
        s.attempts.append(
            AttemptRecord(at=failed_at, invoice_id=failure.invoice_id, attempt=0, trigger="stripe", result=result)
        )
        self._log(
            "payment_failed",
            f"{failure.invoice_id} {plain_amount(failure.amount_due, failure.currency)}: {code or 'declined'}",
        )
        self._record_decline(result)
        self.wake = True

    @workflow.signal(name="card_updated")
    def card_updated(self, update: CardUpdated) -> None:
        s = self.state
        if not self._first_time(update.event_id) or s.outcome:
            return
        if update.payment_method_id:
            s.current_card = update.payment_method_id
        s.card_blocked = False
        s.card_update_pending = True
        self._log("card_updated", update.source or update.payment_method_id or "payment method changed")
        self.wake = True

    @workflow.signal(name="invoice_paid")
    def invoice_paid(self, paid: InvoicePaid) -> None:
        s = self.state
        if not self._first_time(paid.event_id) or s.outcome:
            return
        invoice = next((i for i in s.invoices if i.invoice_id == paid.invoice_id), None)
        if invoice is None:
            s.settled_before_failure = [*s.settled_before_failure, paid.invoice_id][-SEEN_EVENTS_KEPT:]
            return
        if invoice.status == "open":
            invoice.status = "paid"
            self._log("invoice_paid", f"{paid.invoice_id} paid outside the case")
        self.wake = True

    @workflow.signal(name="subscription_canceled")
    def subscription_canceled(self, canceled: SubscriptionCanceled) -> None:
        s = self.state
        if not self._first_time(canceled.event_id) or s.outcome:
            return
        s.cancel_requested = canceled.reason or "customer.subscription.deleted"
        self.wake = True

    @workflow.signal(name="pause")
    def pause(self, request: Pause) -> None:
        s = self.state
        if s.paused or s.outcome:
            return
        s.paused, s.pause_reason, s.paused_at = True, request.reason, workflow.now()
        self._log("paused", request.reason)
        self.wake = True

    @workflow.signal(name="resume")
    def resume(self, request: Resume) -> None:
        s = self.state
        if not s.paused or s.outcome:
            return
        # The whole schedule moves by the time spent paused: nothing piles up at resume.
        assert s.paused_at is not None
        s.anchor += workflow.now() - s.paused_at
        if s.suspended_at:
            s.suspended_at += workflow.now() - s.paused_at
        s.pending_sms = [
            p.model_copy(update={"due_at": p.due_at + (workflow.now() - s.paused_at)}) for p in s.pending_sms
        ]
        s.paused, s.pause_reason, s.paused_at = False, None, None
        self._log("resumed", request.reason)
        self.wake = True

    @workflow.signal(name="extend_grace")
    def extend_grace(self, request: ExtendGrace) -> None:
        s = self.state
        if s.outcome:
            return
        s.grace_extension_days += request.days
        self._log("grace_extended", f"+{request.days} days: {request.reason}")
        self.wake = True

    @workflow.update(name="retry_now")
    async def retry_now(self, request: RetryNow) -> RetryNowResult:
        self._log("retry_now", request.reason)
        results = await self._charge_round(f"operator: {request.reason}")
        return RetryNowResult(results=results, stage=self._stage())

    @retry_now.validator
    def _validate_retry_now(self, request: RetryNow) -> None:
        s = self.state
        if s.outcome:
            raise ValueError(f"the case is closed ({s.outcome.value})")
        if s.paused:
            raise ValueError("the case is paused: resume it first")
        if not self._open_invoices():
            raise ValueError("nothing is outstanding")
        if s.card_blocked:
            raise ValueError(
                f"the card can't be retried after a {s.decline_category} decline: waiting for a new payment method"
            )
        if not self._card_budget_left(workflow.now()):
            raise ValueError(
                f"this card reached its budget of {self.policy.max_attempts_per_card_30d} attempts in 30 days"
            )
        if self.charging.locked():
            raise ValueError("a charge is already in progress")

    @workflow.query(name="status")
    def status(self) -> CaseStatus:
        s = self.state
        open_invoices = self._open_invoices()
        at, label = self.next_action
        return CaseStatus(
            case_id=s.case_id,
            subscription_id=s.subscription_id,
            customer_id=s.customer_id,
            policy=self.policy.name,
            stage=self._stage(),
            outcome=s.outcome,
            access=s.access,
            opened_at=s.opened_at,
            amount_due=sum(i.amount_due for i in open_invoices),
            currency=self._currency(),
            outstanding_invoices=open_invoices,
            invoices=s.invoices,
            decline_category=s.decline_category,
            attempts=s.attempts,
            notifications=s.notifications,
            timeline=s.timeline,
            paused=s.paused,
            pause_reason=s.pause_reason,
            grace_ends_at=self._grace_ends_at() if s.invoices and not s.outcome else None,
            next_action=label,
            next_action_at=at,
            banner_template=s.banner_template,
        )

    # --- helpers ----------------------------------------------------------------------

    def _stage(self) -> Stage:
        s = self.state
        if s.outcome:
            return s.outcome
        if s.paused:
            return Stage.PAUSED
        if s.access is AccessState.SUSPENDED:
            return Stage.SUSPENDED
        if any(self.policy.notify[i].template == FINAL_NOTICE_TEMPLATE for i in s.ladder_steps_done):
            return Stage.FINAL_NOTICE
        if s.card_blocked:
            return Stage.AWAITING_PAYMENT_METHOD
        return Stage.RETRYING

    def _open_invoices(self) -> list[InvoiceState]:
        return [i for i in self.state.invoices if i.status == "open"]

    def _currency(self) -> str | None:
        return self.state.invoices[0].currency if self.state.invoices else None

    def _timezone(self) -> str | None:
        return self.state.customer.timezone if self.state.customer else None

    def _log(self, event: str, detail: str = "") -> None:
        self.state.timeline.append(TimelineEntry(at=workflow.now(), event=event, detail=detail))

    def _history_too_long(self) -> bool:
        info = workflow.info()
        return info.get_current_history_length() > self.history_event_limit or info.is_continue_as_new_suggested()

    async def _get_customer(self) -> CustomerProfile:
        try:
            return await workflow.execute_activity(
                "get_customer",
                self.state.customer_id,
                result_type=CustomerProfile,
                start_to_close_timeout=CALL_TIMEOUT,
                schedule_to_close_timeout=timedelta(hours=1),
                retry_policy=PROVIDER_RETRY,
                summary=f"look up customer {self.state.customer_id}",
            )
        except ActivityError as err:
            self._log("customer_lookup_failed", f"{_cause(err)}; using defaults (no time zone, English)")
            return CustomerProfile(customer_id=self.state.customer_id)

    def _publish(self) -> None:
        """Keep search attributes and the UI's current details in step with the case."""
        s = self.state
        stage = self._stage()
        at, label = self.next_action
        values: dict[str, object] = {
            sa.DUNNING_STAGE.name: stage.value,
            sa.CUSTOMER_ID.name: s.customer_id,
            sa.SUBSCRIPTION_ID.name: s.subscription_id,
            sa.AMOUNT_DUE.name: sum(i.amount_due for i in self._open_invoices()),
            sa.CURRENCY.name: self._currency() or "",
            sa.DECLINE_CATEGORY.name: s.decline_category.value if s.decline_category else "",
            sa.RETRY_ATTEMPTS.name: sum(1 for a in s.attempts if a.attempt > 0),
            sa.NEXT_ACTION_AT.name: at,
            sa.DUNNING_OUTCOME.name: s.outcome.value if s.outcome else "",
        }
        if values != self.published_attributes:
            keys = {k.name: k for k in sa.SEARCH_ATTRIBUTES}
            updates = [
                keys[name].value_unset() if value in (None, "") else keys[name].value_set(value)  # type: ignore[arg-type]
                for name, value in values.items()
                if self.published_attributes.get(name, ...) != value
            ]
            workflow.upsert_search_attributes(updates)
            self.published_attributes = values
        amount = sum(i.amount_due for i in self._open_invoices())
        lines = [
            f"**{stage.value}** · {s.customer_id} · {plain_amount(amount, self._currency() or '')}"
            f" · {len(self._open_invoices())} open invoice(s) · policy `{self.policy.name}`",
            f"Next: {label} at {at:%Y-%m-%d %H:%M} UTC" if at and label else "Next: nothing scheduled",
        ]
        if s.paused:
            lines.append(f"Paused: {s.pause_reason}")
        if s.last_decline:
            lines.append(f"Last decline: {s.last_decline.decline_code or s.last_decline.code} ({s.decline_category})")
        lines.append(f"Access: {s.access.value}; grace ends {self._grace_ends_at():%Y-%m-%d %H:%M} UTC")
        workflow.set_current_details("\n\n".join(lines))


def _cause(err: ActivityError) -> str:
    cause = err.cause
    while cause is not None and getattr(cause, "cause", None) is not None:
        cause = cause.cause
    return str(cause or err)
