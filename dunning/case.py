"""The case's rules: what a signal does to a case, what is due next, what a result changes.

Pure code over the case's state, its pinned policy and the time passed in: no I/O, no clock,
no Temporal. `workflows/dunning_workflow.py` carries out what `Case` decides (timers,
activities, patches, search attributes) and hands the results back to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from dunning import contract, schedule
from dunning.experiments import arm_label
from dunning.declines import classify_decline, is_retryable_on_same_card
from dunning.email_suppression import is_email_suppression
from dunning.ledger import CaseRecord, new_record
from dunning.models import (
    PAID_ELSEWHERE,
    AccessRequest,
    AccessState,
    AttemptRecord,
    CardBudget,
    CardUpdated,
    CaseState,
    CaseStatus,
    Channel,
    ChargeRequest,
    ChargeResult,
    CustomerProfile,
    DeclineCategory,
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
    RetryNowResult,
    SavedCard,
    Stage,
    SubscriptionCanceled,
    TimelineEntry,
)
from dunning.money import plain_amount
from dunning.policy import NotifyStep, Policy

SEEN_EVENTS_KEPT = 200
FINAL_NOTICE_TEMPLATE = "final_notice"
#: Stripe's `cancellation_details.reason` when its own dunning canceled the subscription
#: (Stripe's word, which happens to be our signal's name too).
STRIPE_DUNNING_CANCELLATION = contract.Signal.PAYMENT_FAILED.value

#: The oldest a failure may be and still set the case's clock. Stripe retries a webhook for three
#: days, so a later delivery keeps its real time (the schedule is already that far along); an
#: older date is a replay or garbage (`created: 1`), and counting from it would fast-forward the
#: case past its first messages or straight into suspension: such a case counts from now.
MAX_FAILURE_AGE = timedelta(days=3)

MessageContext = dict[str, str | int | float | bool | None]


# --- what the case decides to do next -----------------------------------------------


@dataclass(frozen=True)
class CloseCanceled:
    """The subscription was canceled (in Stripe, or by the customer on their page, in which case
    the case cancels it in Stripe first): close the case, send nothing more."""

    reason: str
    by_stripe_dunning: bool
    by_customer_page: bool = False


@dataclass(frozen=True)
class Settle:
    """Nothing is outstanding: recovered if anything was paid, written off if all was voided."""

    recovered: bool
    restore_access: bool


@dataclass(frozen=True)
class ChargeRound:
    """Charge the open invoices oldest first; the first decline ends the round."""

    trigger: str


@dataclass(frozen=True)
class SendStep:
    """A ladder step is due: its channels, SMS held back in the customer's night."""

    step: NotifyStep
    step_id: str


@dataclass(frozen=True)
class SendHeldSms:
    """An SMS held back by quiet hours is due now."""

    sms: PendingSms


@dataclass(frozen=True)
class Suspend:
    """Grace is over: suspend access and tell the customer."""


@dataclass(frozen=True)
class Cancel:
    """Suspended long enough: cancel the subscription and tell the customer."""


@dataclass(frozen=True)
class Wait:
    """Nothing is due: sleep until `until` (None: until a signal), labelled for the UI."""

    until: datetime | None = None
    label: str | None = None


Action = CloseCanceled | Settle | ChargeRound | SendStep | SendHeldSms | Suspend | Cancel | Wait


@dataclass(frozen=True)
class Delivery:
    """One message to send on one channel, as part of a ladder step or an event."""

    channel: Channel
    template: str
    step_id: str
    ladder_channels: tuple[Channel, ...]
    settled: bool = False


class Case:
    """One case's state and pinned policy, with the rules that change it."""

    def __init__(self, state: CaseState, policy: Policy) -> None:
        self.state = state
        self.policy = policy

    @classmethod
    def open(
        cls,
        workflow_id: str,
        subscription_id: str,
        customer_id: str,
        policy: Policy,
        now: datetime,
        *,
        experiment: str | None = None,
        arm: str | None = None,
    ) -> Case:
        state = CaseState(
            case_id=f"{workflow_id}@{now:%Y%m%dT%H%M%SZ}",
            subscription_id=subscription_id,
            customer_id=customer_id,
            opened_at=now,
            anchor=now,
            experiment=experiment,
            arm=arm if experiment else None,
        )
        return cls(state, policy)

    # --- reading the case --------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.state.outcome is None

    @property
    def has_started(self) -> bool:
        """A case starts with its first failure (or closes at once when canceled first)."""
        return bool(self.state.invoices) or self.state.cancel_requested is not None

    def open_invoices(self) -> list[InvoiceState]:
        return [i for i in self.state.invoices if i.status == "open"]

    def amount_due(self) -> int:
        return sum(i.amount_due for i in self.open_invoices())

    def currency(self) -> str | None:
        return self.state.invoices[0].currency if self.state.invoices else None

    def timezone(self) -> str | None:
        return self.state.customer.timezone if self.state.customer else None

    def sms_zones(self) -> list[str]:
        """The zones whose night holds an SMS back: every candidate while several remain, else the
        case's zone (none: UTC). A profile fetched before zones were inferred has no candidates."""
        customer = self.state.customer
        if customer and len(customer.timezone_candidates) > 1:
            return list(customer.timezone_candidates)
        zone = self.timezone()
        return [zone] if zone else []

    def stage(self) -> Stage:
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

    def grace_ends_at(self) -> datetime:
        s = self.state
        return schedule.grace_ends_at(self.policy, s.anchor, s.grace_extension_days) + s.grace_extension

    def cancel_at(self) -> datetime:
        """When the subscription is canceled if nothing is paid by then."""
        return (self.state.suspended_at or self.grace_ends_at()) + self.policy.cancel_after_suspension

    def self_service_grace_left(self) -> int:
        """How often the customer may still take more time on their page: while the case is open,
        not paused and access not yet suspended, up to the policy's limit."""
        s = self.state
        if s.outcome or s.paused or s.access is AccessState.SUSPENDED or not s.invoices:
            return 0
        return max(self.policy.self_service_grace_limit - s.customer_extensions, 0)

    def log(self, at: datetime, event: str, detail: str = "") -> None:
        self.state.timeline.append(TimelineEntry(at=at, event=event, detail=detail))

    # --- the card's budget and the retry schedule -------------------------------------------

    def _card_attempts(self) -> list[datetime]:
        """When the current card was charged (a Stripe answer, not an outage), for its budget."""
        current = self.state.current_card or "default"
        return [
            a.at
            for a in self.state.attempts
            if a.result.status in ("succeeded", "declined") and (a.result.payment_method_id or "default") == current
        ]

    def shared_budget(self) -> CardBudget | None:
        """The current card's budget across every case, as this case's last charge learned it."""
        budget = self.state.card_budget
        if budget is None or budget.payment_method_id not in (None, self.state.current_card or budget.payment_method_id):
            return None
        return budget

    def _shared_budget_spent(self, at: datetime) -> bool:
        budget = self.shared_budget()
        if budget is None:
            return False
        if budget.blocked_code:
            return True
        return budget.left <= 0 and (budget.frees_at is None or at < budget.frees_at)

    def card_budget_left(self, at: datetime) -> bool:
        """Within this case's own count and the card's count across cases (as last learned; the
        charge itself re-checks that one atomically)."""
        own = schedule.can_attempt_now(self._card_attempts(), at, self.policy.max_attempts_per_card_30d)
        return own and not self._shared_budget_spent(at)

    def card_budget_refusal(self, at: datetime) -> str | None:
        """Why the card can't be charged now for its budget, in words, or None."""
        budget = self.shared_budget()
        if budget is not None and budget.blocked_code:
            return f"this card must never be retried ({budget.blocked_code}, declined in {budget.blocked_by or 'another case'})"
        if self._shared_budget_spent(at) and budget is not None:
            return (
                f"this card reached its budget of {budget.limit} attempts in 30 days across cases"
                f" (used by {', '.join(budget.used_by) or 'other cases'})"
            )
        if not schedule.can_attempt_now(self._card_attempts(), at, self.policy.max_attempts_per_card_30d):
            return f"this card reached its budget of {self.policy.max_attempts_per_card_30d} attempts in 30 days"
        return None

    def next_retry(self) -> tuple[int, datetime] | None:
        """The next scheduled retry (offset index and time), or None when none is left."""
        s = self.state
        if s.card_blocked or not self.open_invoices():
            return None
        last = max((a.at for a in s.attempts), default=s.anchor)
        retry = schedule.next_retry(
            self.policy,
            s.anchor,
            self.timezone(),
            max(last, s.anchor),
            self._card_attempts(),
            from_index=s.next_retry_index,
        )
        budget = self.shared_budget()
        if retry and budget is not None and budget.blocked_code:
            return None
        if retry and budget is not None and self._shared_budget_spent(retry[1]) and budget.frees_at:
            # Other cases spent the card's budget: not before their oldest attempt leaves the window.
            return retry[0], budget.frees_at
        return retry

    def _next_ladder_step(self) -> tuple[NotifyStep, datetime] | None:
        s = self.state
        for rung in self.policy.ladder:
            if rung.position not in s.ladder_steps_done:
                due = schedule.message_time(s.anchor + rung.at, s.last_message_at, self.policy.min_gap_between_messages)
                return rung.step, due
        return None

    # --- what is due ---------------------------------------------------------------------

    def next_action(self, now: datetime) -> Action:
        """The most urgent thing due at `now`, claimed (it will not be due again), else a `Wait`.

        Bookkeeping that needs no outside call (a card update over budget, ladder steps
        superseded by a later one) is done here on the way.
        """
        s = self.state
        if s.cancel_requested is not None:
            return CloseCanceled(s.cancel_requested, s.canceled_by_stripe_dunning, s.canceled_by_customer)
        if s.invoices and not self.open_invoices():
            recovered = any(i.status == "paid" for i in s.invoices)
            return Settle(recovered=recovered, restore_access=recovered and s.access is AccessState.SUSPENDED)
        if s.paused:
            return Wait()
        if s.card_update_pending:
            s.card_update_pending = False
            if self.card_budget_left(now):
                return ChargeRound("card updated")
            self.log(now, "retry_skipped", "card updated, but this card reached its 30-day attempt budget")
        retry = self.next_retry()
        if retry and retry[1] <= now:
            s.next_retry_index = retry[0] + 1
            return ChargeRound(f"scheduled retry {retry[0] + 1}/{len(self.policy.retry_after)}")
        step = self._claim_due_ladder_step(now)
        if step:
            return step
        due_sms = [p for p in s.pending_sms if p.due_at <= now]
        if due_sms:
            s.pending_sms.remove(due_sms[0])
            return SendHeldSms(due_sms[0])
        if s.access is not AccessState.SUSPENDED and now >= self.grace_ends_at():
            return Suspend()
        if s.suspended_at and now >= s.suspended_at + self.policy.cancel_after_suspension:
            return Cancel()
        return self.plan()

    def _claim_due_ladder_step(self, now: datetime) -> SendStep | None:
        s = self.state
        due = schedule.due_ladder_steps(self.policy, s.anchor, now, set(s.ladder_steps_done))
        if not due:
            return None
        # After a pause or a long outage several steps may be due: only the latest one speaks.
        for index in due[:-1]:
            s.ladder_steps_done.append(index)
            self.log(now, "message_skipped", f"'{self.policy.notify[index].template}' superseded by a later step")
        index = due[-1]
        if schedule.message_time(now, s.last_message_at, self.policy.min_gap_between_messages) > now:
            return None
        s.ladder_steps_done.append(index)
        return SendStep(self.policy.notify[index], f"step-{index}")

    def plan(self) -> Wait:
        """When the next thing falls due and what it is; no deadline while paused."""
        s = self.state
        if s.paused:
            return Wait()
        candidates: list[tuple[datetime, str]] = []
        retry = self.next_retry()
        if retry:
            candidates.append((retry[1], f"retry the charge ({retry[0] + 1}/{len(self.policy.retry_after)})"))
        step = self._next_ladder_step()
        if step:
            candidates.append((step[1], f"send '{step[0].template}'"))
        for pending in s.pending_sms:
            candidates.append((pending.due_at, f"send the deferred '{pending.template}' SMS"))
        if s.access is not AccessState.SUSPENDED:
            candidates.append((self.grace_ends_at(), "suspend access (grace ends)"))
        elif s.suspended_at:
            candidates.append((s.suspended_at + self.policy.cancel_after_suspension, "cancel the subscription"))
        if not candidates:
            return Wait()
        at, label = min(candidates, key=lambda c: c[0])
        return Wait(at, label)

    # --- charging ------------------------------------------------------------------------

    def charge_request(self, invoice: InvoiceState) -> ChargeRequest:
        """The next attempt on `invoice`. The number only moves on once Stripe answered: a charge
        whose activity gave up (hours of outage) is tried again under the same key."""
        s = self.state
        attempt = invoice.attempts + 1
        return ChargeRequest(
            invoice_id=invoice.invoice_id,
            customer_id=s.customer_id,
            subscription_id=s.subscription_id,
            attempt=attempt,
            idempotency_key=f"{s.case_id}/{invoice.invoice_id}/{attempt}",
            payment_method_id=s.current_card,
        )

    def budgeted_charge_request(self, invoice: InvoiceState) -> ChargeRequest:
        """`charge_request`, reserving the attempt in the card's budget across cases first."""
        request = self.charge_request(invoice)
        return request.model_copy(update={"card_budget_limit": self.policy.max_attempts_per_card_30d})

    def record_charge(self, request: ChargeRequest, trigger: str, result: ChargeResult, now: datetime) -> None:
        s = self.state
        invoice = next(i for i in s.invoices if i.invoice_id == request.invoice_id)
        if result.card_budget is not None:
            s.card_budget = result.card_budget
        if result.status == "refused":
            self._record_refusal(result, now)
            return
        invoice.attempts = request.attempt
        s.attempts.append(
            AttemptRecord(
                at=now,
                invoice_id=invoice.invoice_id,
                attempt=request.attempt,
                trigger=trigger,
                idempotency_key=request.idempotency_key,
                result=result,
            )
        )
        if result.status in ("succeeded", "already_paid"):
            invoice.status = "paid"
            self.log(now, "charged" if result.status == "succeeded" else "already_paid", invoice.invoice_id)
        elif result.status == "voided":
            invoice.status = "voided"
            self.log(now, "voided", f"{invoice.invoice_id} was voided in Stripe")
        else:
            self._record_decline(result, now)

    def _record_refusal(self, result: ChargeResult, now: datetime) -> None:
        """The card's budget stopped the charge before Stripe saw it: not an attempt, not a decline.
        A never-retry decline on the card (in any case) ends this case's retries on it too."""
        s = self.state
        budget = result.card_budget
        if budget is not None and budget.blocked_code:
            s.card_blocked = True
            s.decline_category = DeclineCategory.HARD
            self.log(
                now,
                "charge_refused",
                f"{result.invoice_id}: this card must never be retried ({budget.blocked_code} in"
                f" {budget.blocked_by or 'another case'}): waiting for a new payment method",
            )
            return
        by = f" (used by {', '.join(budget.used_by)})" if budget and budget.used_by else ""
        self.log(now, "charge_refused", f"{result.invoice_id}: {result.message or 'the card reached its 30-day budget'}{by}")

    def backup_card(self, cards: list[SavedCard], now: datetime) -> SavedCard | None:
        """After a hard decline, the customer's next saved card to try (policy `try_backup_cards`):
        another card (another fingerprint than the declined one), unexpired, not tried in this case."""
        s = self.state
        if not self.policy.try_backup_cards or not s.card_blocked or not self.open_invoices():
            return None
        declined = s.last_decline.payment_method_id if s.last_decline else None
        declined_fp = next((c.fingerprint for c in cards if c.payment_method_id in (declined, s.current_card)), None)
        blocked_fp = s.card_budget.fingerprint if s.card_budget and s.card_budget.blocked_code else None
        for card in sorted(cards, key=lambda c: not c.is_default):
            if card.payment_method_id in (declined, s.current_card) or card.payment_method_id in s.cards_tried:
                continue
            if card.fingerprint and card.fingerprint in (declined_fp, blocked_fp):
                continue
            if card.exp_year and card.exp_month and (card.exp_year, card.exp_month) < (now.year, now.month):
                continue
            return card
        return None

    def switch_to_backup(self, card: SavedCard, now: datetime) -> None:
        s = self.state
        s.cards_tried = [*s.cards_tried, card.payment_method_id]
        s.current_card = card.payment_method_id
        s.card_blocked = False
        s.card_budget = None
        self.log(now, "backup_card", f"trying the customer's saved {_card_words(card.brand, card.last4)}")

    def record_charge_error(self, invoice_id: str, reason: str, now: datetime) -> None:
        self.log(now, "charge_error", f"{invoice_id}: could not charge: {reason}")

    def _record_decline(self, result: ChargeResult, now: datetime) -> None:
        s = self.state
        s.last_decline = result
        s.decline_category = result.category or DeclineCategory.UNKNOWN
        if not is_retryable_on_same_card(s.decline_category):
            s.card_blocked = True
        self.log(
            now,
            "declined",
            f"{result.invoice_id}: {result.decline_code or result.code or 'declined'} ({s.decline_category})",
        )

    def retry_now_refusal(self, now: datetime, charging: bool) -> str | None:
        """Why an operator's `retry_now` can't run now, or None when it can."""
        s = self.state
        if s.outcome:
            return f"the case is closed ({s.outcome.value})"
        if s.paused:
            return "the case is paused: resume it first"
        if not self.open_invoices():
            return "nothing is outstanding"
        if s.card_blocked:
            category = s.decline_category or DeclineCategory.UNKNOWN
            article = "an" if category[0] in "aeiou" else "a"
            return f"the card can't be retried after {article} {category} decline: waiting for a new payment method"
        budget_refusal = self.card_budget_refusal(now)
        if budget_refusal:
            return budget_refusal
        if charging:
            return "a charge is already in progress"
        return None

    def retry_now_result(self, results: list[ChargeResult]) -> RetryNowResult:
        """The charges' results and the stage they leave the case in: when nothing is left
        outstanding, the outcome the case is about to settle in, not "retrying"."""
        stage = self.stage()
        if self.is_open and self.state.invoices and not self.open_invoices():
            stage = Stage.RECOVERED if any(i.status == "paid" for i in self.state.invoices) else Stage.WRITTEN_OFF
        return RetryNowResult(results=results, stage=stage)

    # --- messages -----------------------------------------------------------------------

    def hold_sms_if_quiet(self, step: NotifyStep, step_id: str, now: datetime) -> bool:
        """True when the customer's night holds this step's SMS back (sent later, never dropped)."""
        return self._hold_sms(step.template, step_id, [Channel(c) for c in step.channels], now)

    def hold_fallback_sms_if_quiet(self, delivery: Delivery, now: datetime) -> bool:
        """Like a step's SMS, an SMS that stands in for a stopped email waits out the customer's
        night. One after the money is settled (a thank-you) would wake them for nothing: it is
        dropped, and the timeline says so."""
        if delivery.channel is not Channel.SMS:
            return False
        if not delivery.settled:
            return self._hold_sms(delivery.template, delivery.step_id, list(delivery.ladder_channels), now)
        send_at = schedule.next_sms_time_everywhere(now, self.sms_zones(), self.policy.quiet_hours)
        if send_at is None or send_at <= now:
            return False
        self.log(now, "message_skipped", f"{delivery.channel} '{delivery.template}': quiet hours, not worth a late SMS")
        return True

    def _hold_sms(self, template: str, step_id: str, channels: list[Channel], now: datetime) -> bool:
        zones = self.sms_zones()
        send_at = schedule.next_sms_time_everywhere(now, zones, self.policy.quiet_hours)
        if send_at is None or send_at <= now:
            return False  # None: no shared daytime at all; `sms_refusal` sends email instead
        self.state.pending_sms.append(PendingSms(due_at=send_at, template=template, step=step_id, step_channels=channels))
        where = f"quiet hours in one of {len(zones)} possible time zones" if len(zones) > 1 else "quiet hours"
        self.log(now, "sms_deferred", f"'{template}' SMS waits for {send_at:%Y-%m-%d %H:%M} UTC ({where})")
        return True

    def sms_refusal(self, delivery: Delivery, now: datetime) -> str | None:
        """Why this SMS can't go at any hour (email goes instead), or None. While several zones
        remain possible an SMS goes only in hours that are daytime in all of them; when their days
        never overlap there are none."""
        if delivery.channel is not Channel.SMS:
            return None
        zones = self.sms_zones()
        if len(zones) > 1 and schedule.next_sms_time_everywhere(now, zones, self.policy.quiet_hours) is None:
            return (
                f"no hour is daytime in all {len(zones)} time zones the customer may be in"
                f" ({zones[0]} … {zones[-1]}): email instead"
            )
        return None

    def refuse_sms(self, delivery: Delivery, reason: str, now: datetime) -> Delivery | None:
        """Note the refused SMS in the timeline; the email that goes instead, unless the step had one."""
        refused = NotificationResult(channel=Channel.SMS, status="skipped", reason=reason, fallback_channel=Channel.EMAIL)
        return self.record_notification(delivery, refused, now)

    def step_deliveries(self, step: NotifyStep, step_id: str, settled: bool = False) -> list[Delivery]:
        channels = tuple(Channel(c) for c in step.channels)
        return [Delivery(channel, step.template, step_id, channels, settled) for channel in channels]

    def held_sms_delivery(self, sms: PendingSms) -> Delivery:
        return Delivery(Channel.SMS, sms.template, sms.step, tuple(sms.step_channels))

    def event_steps(self, event: str) -> list[NotifyStep]:
        """The policy's steps `on` this event (suspended, recovered, canceled)."""
        return self.policy.on_event(event)

    def message_sent(self, now: datetime) -> None:
        """A step or an event message went out: the gap to the next ladder message starts now."""
        self.state.last_message_at = now

    def paid_before_delivery(self, delivery: Delivery) -> bool:
        """Paid while an earlier channel of this step was being sent: stop the step there."""
        return not delivery.settled and not self.open_invoices()

    def skip_paid(self, delivery: Delivery, now: datetime) -> None:
        self.state.notifications.append(
            NotificationRecord(
                at=now,
                template=delivery.template,
                channel=delivery.channel,
                status="skipped",
                reason=PAID_ELSEWHERE,
                step=delivery.step_id,
            )
        )
        self.log(now, "message_skipped", f"{delivery.channel} '{delivery.template}': invoice already paid")

    def notification_request(self, delivery: Delivery, now: datetime) -> NotificationRequest:
        s = self.state
        if delivery.channel is Channel.IN_APP:
            s.banner_template = delivery.template
        return NotificationRequest(
            case_id=s.case_id,
            customer_id=s.customer_id,
            subscription_id=s.subscription_id,
            channel=delivery.channel,
            template=delivery.template,
            idempotency_key=f"{s.case_id}/{delivery.step_id}/{delivery.channel}",
            invoice_ids=[i.invoice_id for i in self.open_invoices()] if not delivery.settled else [],
            check_invoices_open=not delivery.settled,
            context=self.message_context(now),
        )

    def show_banner(self, delivery: Delivery) -> NotificationResult:
        """The in-app banner is the case's own state (the API serves it from `status`); none
        when Stripe told an earlier channel of this step that the invoice is paid."""
        if any(n.step == delivery.step_id and n.reason == PAID_ELSEWHERE for n in self.state.notifications):
            self.state.banner_template = None
            return NotificationResult(channel=delivery.channel, status="skipped", reason=PAID_ELSEWHERE)
        return NotificationResult(channel=delivery.channel, status="sent", reason="in-app banner updated")

    def record_notification(self, delivery: Delivery, result: NotificationResult, now: datetime) -> Delivery | None:
        """Note what happened; the fallback delivery when the channel failed over (SMS → email)."""
        self.state.notifications.append(
            NotificationRecord(
                at=now,
                template=delivery.template,
                channel=delivery.channel,
                status=result.status,
                reason=result.reason,
                step=delivery.step_id,
            )
        )
        self.log(
            now,
            f"message_{result.status}",
            f"{delivery.channel} '{delivery.template}'" + (f": {result.reason}" if result.reason else ""),
        )
        if result.fallback_channel and result.fallback_channel not in delivery.ladder_channels:
            return Delivery(
                result.fallback_channel,
                delivery.template,
                f"{delivery.step_id}-fallback",
                (*delivery.ladder_channels, result.fallback_channel),
                delivery.settled,
            )
        return None

    def email_stopped(self) -> str | None:
        """Why email to the customer stopped (bounced, spam report, unsubscribed), from the last
        email the case could not send; None while email goes."""
        for n in reversed(self.state.notifications):
            if n.channel is Channel.EMAIL and n.status == "sent":
                return None
            if n.channel is Channel.EMAIL and n.status == "skipped" and is_email_suppression(n.reason):
                return n.reason
        return None

    def customer_was_told(self) -> bool:
        """A thank-you is for a customer we wrote to (an in-app banner is not a message sent)."""
        return any(n.status == "sent" and n.channel is not Channel.IN_APP for n in self.state.notifications)

    def message_context(self, now: datetime) -> MessageContext:
        """What a template may say: amounts, dates and the decline, ready for the customer's locale."""
        s = self.state
        open_invoices = self.open_invoices()
        retry = self.next_retry()
        grace_ends = self.grace_ends_at()
        # The customer sorted it out (a new card; paid elsewhere or on their page: paid without our
        # charge), rather than a scheduled or operator retry simply going through: the thank-you
        # says so only then.
        charged_by = {a.invoice_id: a.trigger for a in s.attempts if a.result.status == "succeeded"}
        customer_acted = any(
            not charged_by.get(i.invoice_id, "").startswith(("scheduled", "operator"))
            for i in s.invoices
            if i.status == "paid"
        )
        return {
            "amount_due": sum(i.amount_due for i in open_invoices),
            "currency": self.currency(),
            "invoice_count": len(open_invoices),
            "hosted_invoice_url": next((i.hosted_invoice_url for i in open_invoices if i.hosted_invoice_url), None),
            "decline_category": s.decline_category.value if s.decline_category else None,
            "decline_code": s.last_decline.decline_code if s.last_decline else None,
            "next_retry_at": retry[1].isoformat() if retry else None,
            "grace_ends_at": grace_ends.isoformat(),
            "cancel_at": self.cancel_at().isoformat(),
            "amount_paid": sum(i.amount_due for i in s.invoices if i.status == "paid") or None,
            "days_left": max((grace_ends - now).days, 0),
            "plan_name": s.customer.plan_name if s.customer else None,
            "access": s.access.value,
            "timezone": self.timezone(),
            "customer_acted": customer_acted,
            **self._paid_with(),
        }

    def _paid_with(self) -> MessageContext:
        """Which card paid (brand, last four), for the thank-you; nothing when none of ours did."""
        paid = [a.result for a in self.state.attempts if a.result.status == "succeeded" and a.result.card_last4]
        if not paid:
            return {}
        return {"paid_with_brand": _brand_name(paid[-1].card_brand), "paid_with_last4": paid[-1].card_last4}

    # --- access and closing ---------------------------------------------------------------

    def access_request(self, reason: str) -> AccessRequest:
        return AccessRequest(customer_id=self.state.customer_id, subscription_id=self.state.subscription_id, reason=reason)

    def suspend(self, now: datetime) -> None:
        self.state.access = AccessState.SUSPENDED
        self.state.suspended_at = now

    def recovered(self, now: datetime) -> None:
        self.state.access = AccessState.ACTIVE
        self.state.banner_template = None
        self.close(Stage.RECOVERED, now)

    def close(self, outcome: Stage, now: datetime) -> None:
        s = self.state
        s.outcome = outcome
        s.closed_at = now
        s.pending_sms.clear()
        if outcome is not Stage.RECOVERED:
            s.banner_template = None
        self.log(now, "outcome", outcome.value)

    def customer_lookup_failed(self, reason: str, now: datetime) -> CustomerProfile:
        self.log(now, "customer_lookup_failed", f"{reason}; using defaults (no time zone, English)")
        return CustomerProfile(customer_id=self.state.customer_id)

    # --- signals: each returns True when the case should look again at what is due ----------

    def _first_time(self, event_id: str | None) -> bool:
        """False for a redelivered webhook event (same Stripe event id)."""
        s = self.state
        if event_id is None:
            return True
        if event_id in s.seen_event_ids:
            return False
        s.seen_event_ids = [*s.seen_event_ids, event_id][-SEEN_EVENTS_KEPT:]
        return True

    def names_another_customer(self, failure: PaymentFailed) -> bool:
        """A case belongs to one customer: a failure naming another is never joined to it."""
        return failure.customer_id is not None and failure.customer_id != self.state.customer_id

    def refuse_other_customer(self, failure: PaymentFailed, now: datetime) -> None:
        if self._first_time(failure.event_id):
            self.log(
                now,
                "failure_refused",
                f"{failure.invoice_id} names customer {failure.customer_id}, but this case is"
                f" {self.state.customer_id}'s: not joined (check the subscription in Stripe)",
            )

    def failure_time_out_of_bounds(self, failure: PaymentFailed, now: datetime) -> bool:
        """Dated in the future, or older than a case may count from."""
        occurred = failure.occurred_at
        return occurred is not None and not now - MAX_FAILURE_AGE <= occurred <= now

    def _failure_time(self, failure: PaymentFailed, now: datetime, clamp: bool) -> datetime:
        occurred = failure.occurred_at
        if occurred is None:
            return now
        if not clamp:
            return min(occurred, now)
        bounded = occurred if now - MAX_FAILURE_AGE <= occurred <= now else now
        if bounded != occurred:
            self.log(
                now,
                "failure_time_clamped",
                f"{failure.invoice_id} is dated {occurred:%Y-%m-%d %H:%M} UTC;"
                f" the case counts from {bounded:%Y-%m-%d %H:%M} UTC",
            )
        return bounded

    def payment_failed(self, failure: PaymentFailed, now: datetime, clamp_time: bool = False) -> bool:
        """A failed invoice joins the case (or opens it); `clamp_time` keeps its date within bounds."""
        s = self.state
        if not self._first_time(failure.event_id):
            return False
        if any(i.invoice_id == failure.invoice_id for i in s.invoices):
            self.log(now, "failure_reported_again", failure.invoice_id)
            return False
        if s.outcome:
            s.late_failures = [*s.late_failures, failure]
            return False
        failed_at = self._failure_time(failure, now, clamp_time)
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
        code = failure.decline_code or failure.failure_code
        amount = plain_amount(failure.amount_due, failure.currency)
        self.log(now, contract.Signal.PAYMENT_FAILED, f"{failure.invoice_id} {amount}: {code or 'declined'}")
        self._record_decline(result, now)
        return True

    def card_updated(self, update: CardUpdated, now: datetime) -> bool:
        s = self.state
        if not self._first_time(update.event_id) or s.outcome:
            return False
        if update.payment_method_id:
            s.current_card = update.payment_method_id
        s.card_blocked = False
        s.card_budget = None  # another card, or the same one: its charge learns its budget afresh
        s.card_update_pending = True
        self.log(now, contract.Signal.CARD_UPDATED, update.source or update.payment_method_id or "payment method changed")
        return True

    def invoice_paid(self, paid: InvoicePaid, now: datetime) -> bool:
        s = self.state
        if not self._first_time(paid.event_id) or s.outcome:
            return False
        invoice = next((i for i in s.invoices if i.invoice_id == paid.invoice_id), None)
        if invoice is None:
            s.settled_before_failure = [*s.settled_before_failure, paid.invoice_id][-SEEN_EVENTS_KEPT:]
            return False
        if invoice.status == "open":
            invoice.status = "paid"
            self.log(now, contract.Signal.INVOICE_PAID, f"{paid.invoice_id} paid outside the case")
        return True

    def subscription_canceled(self, canceled: SubscriptionCanceled, now: datetime) -> bool:
        s = self.state
        if not self._first_time(canceled.event_id) or s.outcome or s.cancel_requested is not None:
            return False
        if canceled.source == "customer":
            s.canceled_by_customer = True
            s.feedback = canceled.feedback
            feedback = canceled.feedback
            said = f"{feedback.reason.value}: {feedback.comment or '(no comment)'}" if feedback else "no reason given"
            self.log(now, "customer_canceled", said)
        s.cancel_requested = canceled.reason or (
            "asked on the customer page" if s.canceled_by_customer else "customer.subscription.deleted"
        )
        s.canceled_by_stripe_dunning = canceled.cancellation_reason == STRIPE_DUNNING_CANCELLATION
        return True

    def pause(self, request: Pause, now: datetime) -> bool:
        s = self.state
        if s.paused or s.outcome:
            return False
        s.paused, s.pause_reason, s.paused_at = True, request.reason, now
        self.log(now, "paused", request.reason)
        return True

    def resume(self, request: Resume, now: datetime) -> bool:
        s = self.state
        if not s.paused or s.outcome or s.paused_at is None:
            return False
        # The whole schedule moves by the time spent paused: nothing piles up at resume.
        paused_for = now - s.paused_at
        s.anchor += paused_for
        if s.suspended_at:
            s.suspended_at += paused_for
        s.pending_sms = [p.model_copy(update={"due_at": p.due_at + paused_for}) for p in s.pending_sms]
        s.paused, s.pause_reason, s.paused_at = False, None, None
        self.log(now, "resumed", request.reason)
        return True

    def extend_grace(self, request: ExtendGrace, now: datetime) -> bool:
        s = self.state
        if s.outcome or not self._first_time(request.request_id):
            return False
        if request.source == "customer":
            if not self.self_service_grace_left():
                self.log(now, "grace_refused", "the customer asked for more time, but none is left to give")
                return False
            s.customer_extensions += 1
        length = request.length(self.policy.self_service_grace)
        s.grace_extension += length
        by = "the customer, on their page" if request.source == "customer" else request.reason
        self.log(now, "grace_extended", f"+{_days_text(length)} by {by}; grace now ends {self.grace_ends_at():%Y-%m-%d %H:%M} UTC")
        return True

    # --- the recovery ledger ---------------------------------------------------------------

    def ledger_record(self) -> CaseRecord | None:
        """The case's facts and the milestones reached since its last record (opened, charges,
        messages, the customer's own actions, suspension, the outcome), or None when nothing is
        new. Marks them recorded: the `record_case` activity that carries them is retried until it
        lands, and writes each milestone once."""
        return new_record(self.state, self.state.ledger, self.policy.name)

    # --- what operators see ----------------------------------------------------------------

    def status(self, next_action: Wait) -> CaseStatus:
        s = self.state
        open_invoices = self.open_invoices()
        return CaseStatus(
            case_id=s.case_id,
            subscription_id=s.subscription_id,
            customer_id=s.customer_id,
            policy=self.policy.name,
            stage=self.stage(),
            outcome=s.outcome,
            access=s.access,
            opened_at=s.opened_at,
            amount_due=sum(i.amount_due for i in open_invoices),
            currency=self.currency(),
            outstanding_invoices=open_invoices,
            invoices=s.invoices,
            decline_category=s.decline_category,
            attempts=s.attempts,
            notifications=s.notifications,
            timeline=s.timeline,
            paused=s.paused,
            pause_reason=s.pause_reason,
            grace_ends_at=self.grace_ends_at() if s.invoices and not s.outcome else None,
            next_action=next_action.label,
            next_action_at=next_action.until,
            banner_template=s.banner_template,
            closed_at=s.closed_at,
            suspended_at=s.suspended_at,
            cancel_at=self.cancel_at() if s.invoices and not s.outcome else None,
            next_retry_at=retry[1] if (retry := self.next_retry()) and not s.outcome else None,
            customer_locale=s.customer.locale if s.customer else None,
            customer_timezone=self.timezone(),
            customer_timezone_source=s.customer.timezone_source if s.customer else None,
            customer_timezone_candidates=list(s.customer.timezone_candidates) if s.customer else [],
            plan_name=s.customer.plan_name if s.customer else None,
            self_service_grace=self.policy.self_service_grace,
            self_service_grace_left=self.self_service_grace_left(),
            customer_extensions=s.customer_extensions,
            feedback=s.feedback,
            card_budget=self.shared_budget(),
            card_budget_note=self.card_budget_line(),
        )

    def search_attributes(self, next_action: Wait) -> dict[str, object]:
        """The contract's search attributes, by name: what operators filter cases by."""
        s = self.state
        return {
            contract.DUNNING_STAGE.name: self.stage().value,
            contract.CUSTOMER_ID.name: s.customer_id,
            contract.SUBSCRIPTION_ID.name: s.subscription_id,
            contract.AMOUNT_DUE.name: self.amount_due(),
            contract.CURRENCY.name: self.currency() or "",
            contract.DECLINE_CATEGORY.name: s.decline_category.value if s.decline_category else "",
            contract.RETRY_ATTEMPTS.name: sum(1 for a in s.attempts if a.attempt > 0),
            contract.NEXT_ACTION_AT.name: next_action.until,
            contract.DUNNING_OUTCOME.name: s.outcome.value if s.outcome else "",
            contract.DUNNING_POLICY.name: self.policy.name,
            contract.EXPERIMENT_ARM.name: arm_label(s.experiment, s.arm) if s.experiment and s.arm else "",
        }

    def details(self, next_action: Wait) -> str:
        """The UI's current details: the case in a few lines of Markdown."""
        s = self.state
        at, label = next_action.until, next_action.label
        lines = [
            f"**{self.stage().value}** · {s.customer_id} · {plain_amount(self.amount_due(), self.currency() or '')}"
            f" · {len(self.open_invoices())} open invoice(s) · policy `{self.policy.name}`"
            + (f" (experiment `{s.experiment}`, arm `{s.arm}`)" if s.experiment else ""),
            f"Next: {label} at {at:%Y-%m-%d %H:%M} UTC" if at and label else "Next: nothing scheduled",
        ]
        if s.paused:
            lines.append(f"Paused: {s.pause_reason}")
        if s.last_decline:
            lines.append(f"Last decline: {s.last_decline.decline_code or s.last_decline.code} ({s.decline_category})")
        budget_line = self.card_budget_line()
        if budget_line:
            lines.append(budget_line)
        lines.append(f"Access: {s.access.value}; grace ends {self.grace_ends_at():%Y-%m-%d %H:%M} UTC")
        if s.customer_extensions:
            lines.append(
                f"The customer took more time on their page ({s.customer_extensions}"
                f" of {self.policy.self_service_grace_limit})"
            )
        stopped = self.email_stopped()
        if stopped:
            lines.append(f"Email stopped ({stopped}): messages go by SMS and the in-app banner")
        if s.canceled_by_customer:
            said = f"{s.feedback.reason.value}: {s.feedback.comment or '(no comment)'}" if s.feedback else "no reason given"
            lines.append(f"The customer canceled on their page ({said})")
        lines.append(self.timezone_line())
        return "\n\n".join(lines)

    def card_budget_line(self) -> str | None:
        """The card's budget across cases, as the UI's details and `status` say it."""
        budget = self.shared_budget()
        if budget is None:
            return None
        cases = ", ".join(budget.used_by) or "no case"
        if budget.blocked_code:
            return f"Card blocked for every case: {budget.blocked_code} in {budget.blocked_by or 'another case'}"
        if budget.left <= 0:
            frees = f"; the next attempt frees {budget.frees_at:%Y-%m-%d %H:%M} UTC" if budget.frees_at else ""
            return f"Card budget spent: {budget.used} of {budget.limit} attempts in 30 days, by {cases}{frees}"
        return f"Card budget: {budget.left} of {budget.limit} attempts left in 30 days (used by {cases})"

    def timezone_line(self) -> str:
        """Which zone the case uses and why, as the UI's details say it."""
        customer = self.state.customer
        zone = self.timezone()
        if customer is None or zone is None:
            return "Time zone: unknown (quiet hours in UTC, retries at their offsets)"
        why = f"from {customer.timezone_source}" if customer.timezone_source else "from Stripe"
        if customer.timezone_narrowed_by:
            why += f", narrowed by {', '.join(customer.timezone_narrowed_by)}"
        line = f"Time zone: {zone} ({why})"
        others = len(customer.timezone_candidates)
        if others > 1:
            line += f"; {others} possible, SMS only when it is daytime in all"
        return line


def _days_text(length: timedelta) -> str:
    """`+7 days`, `+36 hours`: how a grace extension reads in the timeline."""
    if length % timedelta(days=1) == timedelta(0):
        return f"{length.days} days"
    return f"{length / timedelta(hours=1):g} hours"


_BRANDS = {"visa": "Visa", "mastercard": "Mastercard", "amex": "American Express", "discover": "Discover"}


def _brand_name(brand: str | None) -> str | None:
    return _BRANDS.get(brand, brand.title()) if brand else None


def _card_words(brand: str | None, last4: str | None) -> str:
    return f"{_brand_name(brand) or 'card'} ending {last4}" if last4 else "card"


def charge_summary(invoice: InvoiceState, request: ChargeRequest, trigger: str) -> str:
    """How a charge reads in the UI's event history."""
    amount = plain_amount(invoice.amount_due, invoice.currency)
    return f"charge {invoice.invoice_id} {amount} — attempt {request.attempt} ({trigger})"

