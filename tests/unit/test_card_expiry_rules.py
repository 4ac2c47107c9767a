"""Pre-dunning's rules without Temporal: which card needs reminders, which reminder goes when,
and what ends them (dunning/card_expiry.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from dunning.card_expiry import (
    CardExpiry,
    CardExpiryInput,
    End,
    RenewalCard,
    RenewalUpcoming,
    Send,
    Sleep,
    expires_before,
    needs_reminders,
    plan,
    valid_until,
)
from dunning.models import CardUpdated, Channel, CustomerProfile, NotificationResult
from dunning.policy import PreDunningStep

RENEWAL = datetime(2027, 1, 1, 10, 0, tzinfo=UTC)
EXPIRING = RenewalCard(payment_method_id="pm_old", brand="visa", last4="4242", exp_month=12, exp_year=2026)
STEPS = [
    PreDunningStep(before=timedelta(days=14), channels=["email"], template="card_expiring"),
    PreDunningStep(before=timedelta(days=3), channels=["email", "sms"], template="card_expiring"),
]


def card(month: int, year: int) -> RenewalCard:
    return EXPIRING.model_copy(update={"exp_month": month, "exp_year": year})


def reminders(steps: list[PreDunningStep] = STEPS, quiet: tuple[time, time] | None = None) -> CardExpiry:
    input = CardExpiryInput(subscription_id="sub_1", customer_id="cus_1", policy="high_value", steps=steps, quiet_hours=quiet)
    return CardExpiry.open("card-expiry-sub_1", input, RENEWAL - timedelta(days=20))


def announce(r: CardExpiry, now: datetime, event_id: str = "evt_up_1", renewal: datetime = RENEWAL, c: RenewalCard = EXPIRING) -> bool:
    return r.renewal_upcoming(RenewalUpcoming(renewal_at=renewal, card=c, event_id=event_id, source="invoice.upcoming"), now)


# --- the card --------------------------------------------------------------------------------


def test_a_card_is_valid_through_the_last_day_of_its_month() -> None:
    assert valid_until(12, 2026) == datetime(2027, 1, 1, tzinfo=UTC)
    assert valid_until(2, 2027) == datetime(2027, 3, 1, tzinfo=UTC)
    assert not expires_before(card(1, 2027), datetime(2027, 1, 31, 23, 59, tzinfo=UTC))
    assert expires_before(card(1, 2027), datetime(2027, 2, 1, tzinfo=UTC))


def test_only_a_card_that_expires_between_now_and_the_renewal_needs_reminders() -> None:
    now = RENEWAL - timedelta(days=15)
    assert needs_reminders(EXPIRING, RENEWAL, now) is None
    assert needs_reminders(card(1, 2027), RENEWAL, now) == "the card outlives the renewal"
    assert needs_reminders(card(8, 2030), RENEWAL, now) == "the card outlives the renewal"
    assert "already expired" in (needs_reminders(card(11, 2026), RENEWAL, datetime(2026, 12, 2, tzinfo=UTC)) or "")
    assert needs_reminders(EXPIRING, RENEWAL, RENEWAL) == "the renewal is not ahead"


# --- when each reminder goes --------------------------------------------------------------------


def test_each_step_goes_its_offset_before_the_renewal_each_channel_once() -> None:
    assert [(d.due_at, d.channel) for d in plan(STEPS, RENEWAL)] == [
        (RENEWAL - timedelta(days=14), Channel.EMAIL),
        (RENEWAL - timedelta(days=3), Channel.EMAIL),
        (RENEWAL - timedelta(days=3), Channel.SMS),
    ]


def test_an_sms_waits_out_the_quiet_hours_and_is_dropped_if_that_reaches_the_renewal() -> None:
    night = datetime(2027, 1, 1, 23, 0, tzinfo=UTC)  # renewal at 23:00: P3D falls at 23:00, in the night
    deliveries = plan(STEPS, night, ["UTC"], (time(21, 0), time(8, 0)))
    sms = [d for d in deliveries if d.channel is Channel.SMS]
    assert [d.due_at for d in sms] == [datetime(2026, 12, 30, 8, 0, tzinfo=UTC)]
    late = [PreDunningStep(before=timedelta(hours=2), channels=["sms"], template="card_expiring")]
    assert plan(late, night, ["UTC"], (time(21, 0), time(8, 0))) == []


def test_the_workflow_sends_each_reminder_at_its_time_and_ends_at_the_renewal() -> None:
    r = reminders()
    assert isinstance(r.next_action(RENEWAL - timedelta(days=20)), Sleep)
    announce(r, RENEWAL - timedelta(days=15))
    r.customer_known(CustomerProfile(customer_id="cus_1", has_phone=True))
    action = r.next_action(RENEWAL - timedelta(days=15))
    assert isinstance(action, Sleep) and action.until == RENEWAL - timedelta(days=14)
    due = r.next_action(RENEWAL - timedelta(days=14))
    assert isinstance(due, Send) and due.delivery.channel is Channel.EMAIL
    request = r.notification_request(due.delivery)
    assert request.context["card_last4"] == "4242" and request.context["card_exp_month"] == 12
    assert request.idempotency_key.endswith("/pre-P14D/email") and request.check_invoices_open is False
    r.record_notification(due.delivery, NotificationResult(channel=Channel.EMAIL, status="sent"), RENEWAL - timedelta(days=14))
    action = r.next_action(RENEWAL - timedelta(days=14))
    assert isinstance(action, Sleep) and action.until == RENEWAL - timedelta(days=3)
    assert isinstance(r.next_action(RENEWAL), End)


def test_steps_already_past_when_the_renewal_becomes_known_are_skipped_not_sent() -> None:
    r = reminders()
    announce(r, RENEWAL - timedelta(days=10))
    action = r.next_action(RENEWAL - timedelta(days=10))
    assert isinstance(action, Sleep) and action.until == RENEWAL - timedelta(days=3)
    assert [e.event for e in r.state.timeline].count("reminder_skipped") == 1


def test_a_card_that_outlives_the_renewal_ends_at_once_without_a_reminder() -> None:
    r = reminders()
    announce(r, RENEWAL - timedelta(days=15), c=card(8, 2030))
    assert r.state.ended == "card_outlives_renewal"
    assert isinstance(r.next_action(RENEWAL - timedelta(days=14)), End)


def test_a_redelivered_event_changes_nothing_and_a_new_one_keeps_what_was_sent() -> None:
    r = reminders()
    assert announce(r, RENEWAL - timedelta(days=15))
    before = r.state.model_copy(deep=True)
    assert not announce(r, RENEWAL - timedelta(days=15), event_id="evt_up_1")
    assert r.state.renewal_at == before.renewal_at and r.state.done == before.done
    # customer.source.expiring for the same renewal: same schedule, nothing sent twice
    sent = r.next_action(RENEWAL - timedelta(days=14))
    assert isinstance(sent, Send)
    r.record_notification(sent.delivery, NotificationResult(channel=Channel.EMAIL, status="sent"), RENEWAL - timedelta(days=14))
    announce(r, RENEWAL - timedelta(days=13), event_id="evt_src_1")
    action = r.next_action(RENEWAL - timedelta(days=13))
    assert isinstance(action, Sleep) and action.until == RENEWAL - timedelta(days=3)


def test_a_card_update_of_any_kind_ends_the_reminders() -> None:
    for source, reason in (("payment_method.automatically_updated", "card_auto_updated"), ("payment_method.attached", "new_card")):
        r = reminders()
        announce(r, RENEWAL - timedelta(days=15))
        assert r.card_updated(CardUpdated(payment_method_id="pm_new", event_id="evt_c", source=source), RENEWAL - timedelta(days=5))
        assert r.state.ended == reason
        assert isinstance(r.next_action(RENEWAL - timedelta(days=3)), End)
        # a renewal event after that is recorded and ignored
        assert not announce(r, RENEWAL - timedelta(days=4), event_id="evt_late")
        assert r.state.ended == reason


def test_an_sms_that_cannot_go_falls_back_to_email_only_when_the_step_had_none() -> None:
    sms_only = [PreDunningStep(before=timedelta(days=3), channels=["sms"], template="card_expiring")]
    r = reminders(sms_only)
    announce(r, RENEWAL - timedelta(days=15))
    due = r.next_action(RENEWAL - timedelta(days=3))
    assert isinstance(due, Send)
    fallback = r.record_notification(
        due.delivery,
        NotificationResult(channel=Channel.SMS, status="skipped", reason="no phone number", fallback_channel=Channel.EMAIL),
        RENEWAL - timedelta(days=3),
    )
    assert fallback is not None and fallback.channel is Channel.EMAIL
    r2 = reminders()
    announce(r2, RENEWAL - timedelta(days=15))
    sms = next(d for d in r2.pending() if d.channel is Channel.SMS)
    skipped = NotificationResult(channel=Channel.SMS, status="skipped", fallback_channel=Channel.EMAIL)
    assert r2.record_notification(sms, skipped, RENEWAL - timedelta(days=3)) is None


def test_a_reminder_sms_goes_in_the_daytime_of_every_zone_the_customer_may_be_in() -> None:
    """A customer in New York or Los Angeles: the SMS due at 13:00 UTC waits for 08:00 in Los
    Angeles; with zones that share no daytime it is left out (a step's email still goes)."""
    sms = [PreDunningStep(before=timedelta(days=3), channels=["sms"], template="card_expiring")]
    renewal = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
    zones = ["America/New_York", "America/Los_Angeles"]
    [delivery] = plan(sms, renewal, zones, (time(21, 0), time(8, 0)))
    assert delivery.due_at == datetime(2026, 11, 28, 16, 0, tzinfo=UTC)  # 08:00 in Los Angeles, 11:00 in New York
    never = ["Europe/Berlin", "Pacific/Auckland"]  # no hour is daytime in both with these quiet hours
    assert plan(sms, renewal, never, (time(18, 0), time(10, 0))) == []
