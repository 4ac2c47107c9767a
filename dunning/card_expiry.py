"""Pre-dunning: reminders before a renewal that the card on file can't pay, because it expires first.

Pure rules, no I/O and no clock, like `dunning.case`. The API asks `expires_before` at the door
(is there anything to remind of?); `CardExpiry` is the mind of `CardExpiryWorkflow`: which
reminder is due when, what a second event or a card update changes, and when it is over.

- A card is valid through the last day of its expiry month: a renewal from the first day of
  the next month (UTC) can't be paid with it.
- Each `[[pre_dunning]]` step is due at `renewal - before`, once. A step already past when the
  renewal became known is skipped (we learned too late for it), never sent late in a burst.
- An SMS waits out the customer's quiet hours, as the case's do; one that would then go at or
  after the renewal is dropped.
- It ends at a card update (Stripe's automatic one included), or at the renewal itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from pydantic import BaseModel, ConfigDict, Field

from dunning import schedule
from dunning.models import (
    CardUpdated,
    Channel,
    CustomerProfile,
    NotificationRecord,
    NotificationRequest,
    NotificationResult,
    TimelineEntry,
)
from dunning.policy import PreDunningStep, iso_duration

#: Stripe's automatic card update (the card networks' account updater).
AUTOMATIC_UPDATE = "payment_method.automatically_updated"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RenewalCard(_Model):
    """The card the renewal will be charged to, as Stripe describes it (no number, no holder)."""

    payment_method_id: str
    brand: str | None = None
    last4: str | None = None
    exp_month: int = Field(ge=1, le=12)
    exp_year: int = Field(ge=2000, le=2200)


class RenewalUpcoming(_Model):
    """Signal `renewal_upcoming`: Stripe announced a renewal, and the card it will charge expires first."""

    renewal_at: datetime
    card: RenewalCard
    event_id: str | None = None
    source: str | None = Field(None, description="the Stripe event type: invoice.upcoming, customer.source.expiring")


class CardExpiryInput(_Model):
    """Workflow input: the subscription, and the policy's reminders pinned when it starts."""

    subscription_id: str
    customer_id: str
    policy: str
    steps: list[PreDunningStep]
    quiet_hours: tuple[time, time] | None = (time(21, 0), time(8, 0))


class CardExpiryState(_Model):
    reminder_id: str = Field(description="`card-expiry-{subscription}@{start}`: keys the messages and the link")
    subscription_id: str
    customer_id: str
    policy: str
    opened_at: datetime
    renewal_at: datetime | None = None
    card: RenewalCard | None = None
    customer: CustomerProfile | None = None
    done: list[str] = Field([], description="deliveries sent, skipped or dropped: `{before}/{channel}`")
    notifications: list[NotificationRecord] = []
    timeline: list[TimelineEntry] = []
    seen_event_ids: list[str] = []
    ended: str | None = Field(None, description="why no reminder goes any more: new_card, card_auto_updated, renewal, card_outlives_renewal")
    closed_at: datetime | None = None


class CardExpiryStatus(CardExpiryState):
    """The `status` query: the whole story, and what comes next."""

    next_reminder_at: datetime | None = None
    next_reminder: str | None = None


# --- the card ----------------------------------------------------------------------------


def valid_until(exp_month: int, exp_year: int) -> datetime:
    """The first instant the card no longer pays: the start of the month after its expiry month (UTC)."""
    if exp_month == 12:
        return datetime(exp_year + 1, 1, 1, tzinfo=UTC)
    return datetime(exp_year, exp_month + 1, 1, tzinfo=UTC)


def expires_before(card: RenewalCard, renewal_at: datetime) -> bool:
    """True when the renewal falls after the card's last valid day: it would be declined `expired_card`."""
    return renewal_at >= valid_until(card.exp_month, card.exp_year)


def already_expired(card: RenewalCard, now: datetime) -> bool:
    """An expired card is the dunning case's to handle (its decline asks for a new card), not a reminder's."""
    return now >= valid_until(card.exp_month, card.exp_year)


def needs_reminders(card: RenewalCard, renewal_at: datetime, now: datetime) -> str | None:
    """None when this renewal calls for pre-dunning; else why not (for the webhook's answer and log)."""
    if renewal_at <= now:
        return "the renewal is not ahead"
    if already_expired(card, now):
        return "the card has already expired: the renewal's decline opens a dunning case"
    if not expires_before(card, renewal_at):
        return "the card outlives the renewal"
    return None


# --- the reminders -------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One channel of one reminder, and when it goes."""

    key: str
    due_at: datetime
    before: timedelta
    channel: Channel
    template: str
    step_channels: tuple[Channel, ...]


@dataclass(frozen=True)
class Send:
    delivery: Delivery


@dataclass(frozen=True)
class Sleep:
    until: datetime | None
    label: str


@dataclass(frozen=True)
class End:
    reason: str


Action = Send | Sleep | End


def delivery_key(before: timedelta, channel: Channel | str) -> str:
    return f"{iso_duration(before)}/{Channel(channel).value}"


def plan(
    steps: list[PreDunningStep],
    renewal_at: datetime,
    zones: Sequence[str] = (),
    quiet_hours: tuple[time, time] | None = None,
) -> list[Delivery]:
    """Every delivery of the policy's reminders for this renewal, in the order they go (an SMS in
    the daytime of every zone the customer may be in; one that would go at or after the renewal,
    or that finds no shared daytime, is left out)."""
    found: list[Delivery] = []
    for step in steps:
        due = renewal_at - step.before
        channels = tuple(Channel(c) for c in step.channels)
        for channel in channels:
            at = schedule.next_sms_time_everywhere(due, zones, quiet_hours) if channel is Channel.SMS else due
            if at is None or at >= renewal_at:
                continue
            found.append(Delivery(delivery_key(step.before, channel), at, step.before, channel, step.template, channels))
    return sorted(found, key=lambda d: (d.due_at, -d.before.total_seconds(), d.channel.value))


class CardExpiry:
    """The rules of one `card-expiry-{subscription}` workflow over its state."""

    def __init__(self, state: CardExpiryState, steps: list[PreDunningStep], quiet_hours: tuple[time, time] | None) -> None:
        self.state = state
        self.steps = steps
        self.quiet_hours = quiet_hours

    @classmethod
    def open(cls, workflow_id: str, input: CardExpiryInput, now: datetime) -> CardExpiry:
        state = CardExpiryState(
            reminder_id=f"{workflow_id}@{now:%Y%m%dT%H%M%SZ}",
            subscription_id=input.subscription_id,
            customer_id=input.customer_id,
            policy=input.policy,
            opened_at=now,
        )
        return cls(state, input.steps, input.quiet_hours)

    # --- what is known ---------------------------------------------------------------------

    @property
    def has_started(self) -> bool:
        """The start signal arrived (or the reminders already ended)."""
        return self.state.renewal_at is not None or self.state.ended is not None

    @property
    def is_open(self) -> bool:
        return self.state.ended is None

    def zones(self) -> list[str]:
        """The zones the customer may be in (the case's inference); one, or none, when known for sure."""
        customer = self.state.customer
        if customer is None:
            return []
        return list(customer.timezone_candidates) or ([customer.timezone] if customer.timezone else [])

    def log(self, now: datetime, event: str, detail: str = "") -> None:
        self.state.timeline.append(TimelineEntry(at=now, event=event, detail=detail))

    def _seen(self, event_id: str | None) -> bool:
        if event_id is None:
            return False
        if event_id in self.state.seen_event_ids:
            return True
        self.state.seen_event_ids.append(event_id)
        return False

    def _end(self, reason: str, now: datetime, detail: str) -> None:
        self.state.ended = reason
        self.state.closed_at = now
        self.log(now, "ended", detail)

    # --- signals -------------------------------------------------------------------------------

    def renewal_upcoming(self, signal: RenewalUpcoming, now: datetime) -> bool:
        """Stripe announced the renewal. A redelivery (same event id) changes nothing; another event
        for the same subscription updates the renewal date and the card, and reminders already
        sent stay sent. Returns True when something changed."""
        s = self.state
        if self._seen(signal.event_id):
            self.log(now, "duplicate_event", f"{signal.source or 'event'} {signal.event_id} already handled")
            return False
        if not self.is_open:
            self.log(now, "event_ignored", f"{signal.source or 'event'} after the reminders ended ({s.ended})")
            return False
        first = s.renewal_at is None
        changed = first or s.renewal_at != signal.renewal_at or s.card != signal.card
        s.renewal_at, s.card = signal.renewal_at, signal.card
        card = signal.card
        self.log(
            now,
            "renewal_announced" if first else "renewal_updated",
            f"renewal {signal.renewal_at:%Y-%m-%d %H:%M} UTC; {card.brand or 'card'} ···{card.last4 or '?'}"
            f" expires {card.exp_month:02d}/{card.exp_year} (from {signal.source or 'an event'})",
        )
        why_not = needs_reminders(card, signal.renewal_at, now)
        if why_not is not None:
            self._end("card_outlives_renewal" if "outlives" in why_not else "not_needed", now, f"no reminder: {why_not}")
            return True
        for delivery in plan(self.steps, signal.renewal_at, self.zones(), self.quiet_hours):
            if delivery.key not in s.done and delivery.due_at < now:
                s.done.append(delivery.key)
                self.log(
                    now,
                    "reminder_skipped",
                    f"{delivery.channel} '{delivery.template}' {iso_duration(delivery.before)} before the renewal"
                    f" was due {delivery.due_at:%Y-%m-%d %H:%M} UTC, before we heard of the renewal",
                )
        return changed

    def card_updated(self, update: CardUpdated, now: datetime) -> bool:
        """A new card, a new default, or Stripe's automatic update: no reminder any more."""
        if self._seen(update.event_id):
            return False
        if not self.is_open:
            return False
        automatic = update.source == AUTOMATIC_UPDATE
        what = "Stripe updated the card automatically" if automatic else "the customer has a new card"
        source = " ".join(part for part in (update.source, update.payment_method_id) if part)
        self._end(
            "card_auto_updated" if automatic else "new_card",
            now,
            f"{what}{f' ({source})' if source else ''}: no reminder any more",
        )
        return True

    # --- what is due -----------------------------------------------------------------------------

    def customer_known(self, customer: CustomerProfile) -> None:
        self.state.customer = customer

    def customer_lookup_failed(self, reason: str, now: datetime) -> CustomerProfile:
        self.log(now, "customer_lookup_failed", f"{reason}: e-mail only, in English")
        return CustomerProfile(customer_id=self.state.customer_id, has_phone=False)

    def pending(self) -> list[Delivery]:
        s = self.state
        if s.renewal_at is None:
            return []
        return [d for d in plan(self.steps, s.renewal_at, self.zones(), self.quiet_hours) if d.key not in s.done]

    def next_action(self, now: datetime) -> Action:
        s = self.state
        if s.ended is not None:
            return End(s.ended)
        if s.renewal_at is None:
            return Sleep(None, "waiting for the renewal's event")
        if now >= s.renewal_at:
            return End("renewal")
        pending = self.pending()
        if pending and pending[0].due_at <= now:
            return Send(pending[0])
        if pending:
            first = pending[0]
            label = f"{first.channel} '{first.template}' {iso_duration(first.before)} before the renewal"
            return Sleep(first.due_at, label)
        return Sleep(s.renewal_at, f"renewal on {s.renewal_at:%Y-%m-%d}: nothing more to send")

    def renewal_reached(self, now: datetime) -> None:
        self._end("renewal", now, "the renewal is here: no reminder any more (a failed charge opens a dunning case)")

    # --- messages ---------------------------------------------------------------------------------

    def notification_request(self, delivery: Delivery) -> NotificationRequest:
        s = self.state
        card = s.card
        context: dict[str, str | int | float | bool | None] = {
            "card_brand": card.brand.title() if card and card.brand else None,
            "card_last4": card.last4 if card else None,
            "card_exp_month": card.exp_month if card else None,
            "card_exp_year": card.exp_year if card else None,
            "renewal_at": s.renewal_at.isoformat() if s.renewal_at else None,
            "plan_name": s.customer.plan_name if s.customer else None,
            "timezone": self.state.customer.timezone if self.state.customer else None,
        }
        return NotificationRequest(
            case_id=s.reminder_id,
            customer_id=s.customer_id,
            subscription_id=s.subscription_id,
            channel=delivery.channel,
            template=delivery.template,
            idempotency_key=f"{s.reminder_id}/pre-{delivery.key}",
            invoice_ids=[],
            check_invoices_open=False,
            context=context,
        )

    def record_notification(self, delivery: Delivery, result: NotificationResult, now: datetime) -> Delivery | None:
        """Note what happened; the e-mail to send instead when an SMS could not go and the
        reminder had no e-mail of its own."""
        s = self.state
        if delivery.key not in s.done:
            s.done.append(delivery.key)
        step = f"pre-{iso_duration(delivery.before)}"
        s.notifications.append(
            NotificationRecord(
                at=now,
                template=delivery.template,
                channel=delivery.channel,
                status=result.status,
                reason=result.reason,
                step=step,
            )
        )
        self.log(
            now,
            f"reminder_{result.status}",
            f"{delivery.channel} '{delivery.template}' {iso_duration(delivery.before)} before the renewal"
            + (f": {result.reason}" if result.reason else ""),
        )
        fallback = result.fallback_channel
        if fallback is None or fallback in delivery.step_channels or fallback is delivery.channel:
            return None
        key = delivery_key(delivery.before, fallback)
        if key in s.done:
            return None
        return Delivery(key, now, delivery.before, fallback, delivery.template, delivery.step_channels)

    def status(self, action: Action) -> CardExpiryStatus:
        next_at = action.until if isinstance(action, Sleep) else None
        label = action.label if isinstance(action, Sleep) else None
        if isinstance(action, Send):
            next_at, label = action.delivery.due_at, f"{action.delivery.channel} '{action.delivery.template}'"
        return CardExpiryStatus(**self.state.model_dump(), next_reminder_at=next_at, next_reminder=label)

    def details(self, action: Action) -> str:
        """The Temporal UI's current details: the story in two lines."""
        s = self.state
        card = s.card
        head = (
            f"Card ···{card.last4 or '?'} expires {card.exp_month:02d}/{card.exp_year};"
            f" renewal {s.renewal_at:%Y-%m-%d}." if card and s.renewal_at else "Waiting for the renewal's event."
        )
        sent = sum(1 for n in s.notifications if n.status == "sent")
        if s.ended is not None:
            return f"{head}\nEnded: {s.ended}; {sent} reminder(s) sent."
        if isinstance(action, Sleep) and action.until is not None:
            return f"{head}\nNext: {action.label} at {action.until:%Y-%m-%d %H:%M} UTC; {sent} sent so far."
        return f"{head}\n{sent} reminder(s) sent."
