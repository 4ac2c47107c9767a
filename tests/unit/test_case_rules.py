"""The case's rules (dunning.case), without Temporal: what a signal does, what falls due when.

The policy in these tests (tests/helpers/case_harness.py TEST_POLICY): soft retries 1, 3, 5, 7,
10 and 14 days after the first failure, 14 days of grace, cancellation 30 days after
suspension, e-mails at day 0, 3 and 10 (the last one the final notice), 20 hours between
ladder messages, no quiet hours unless a test sets them.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from dunning.case import (
    Cancel,
    Case,
    ChargeRound,
    CloseCanceled,
    SendHeldSms,
    SendStep,
    Settle,
    Suspend,
    Wait,
)
from dunning.models import (
    AccessState,
    CardUpdated,
    Channel,
    ChargeResult,
    CustomerProfile,
    DeclineCategory,
    ExtendGrace,
    InvoicePaid,
    NotificationResult,
    Pause,
    PaymentFailed,
    Resume,
    Stage,
    SubscriptionCanceled,
)
from dunning.policy import Policy
from tests.helpers.case_harness import make_policy

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CARD = "pm_card_customer"


def failure(invoice_id: str = "in_1", decline_code: str = "insufficient_funds", **kw: object) -> PaymentFailed:
    fields: dict[str, object] = {
        "amount_due": 4900,
        "currency": "eur",
        "decline_code": decline_code,
        "failure_code": "card_declined",
        "payment_method_id": CARD,
        "event_id": f"evt_failed_{invoice_id}",
        **kw,
    }
    return PaymentFailed(invoice_id=invoice_id, **fields)  # type: ignore[arg-type]


def opened(policy: Policy | None = None, first: PaymentFailed | None = None, timezone: str | None = None) -> Case:
    """A case as the workflow has it after its first failure and the customer lookup."""
    case = Case.open("dunning-sub_1", "sub_1", "cus_1", policy or make_policy(), T0)
    assert case.payment_failed(first or failure(), T0)
    case.state.customer = CustomerProfile(customer_id="cus_1", timezone=timezone)
    return case


def after_first_email(case: Case) -> Case:
    action = case.next_action(T0)
    assert action == SendStep(case.policy.notify[0], "step-0")
    case.message_sent(T0)
    return case


def declined(invoice_id: str = "in_1", code: str = "insufficient_funds") -> ChargeResult:
    category = DeclineCategory.HARD if code in ("stolen_card", "expired_card") else DeclineCategory.SOFT
    return ChargeResult(
        invoice_id=invoice_id, status="declined", decline_code=code, category=category, payment_method_id=CARD
    )


def succeeded(invoice_id: str = "in_1") -> ChargeResult:
    return ChargeResult(invoice_id=invoice_id, status="succeeded", payment_method_id=CARD)


def charge(case: Case, at: datetime, result: ChargeResult, trigger: str = "scheduled retry") -> None:
    invoice = next(i for i in case.open_invoices() if i.invoice_id == result.invoice_id)
    case.record_charge(case.charge_request(invoice), trigger, result, at)


# --- opening --------------------------------------------------------------------------


def test_a_soft_decline_opens_retrying_and_the_first_email_goes_at_once() -> None:
    case = opened()
    assert case.stage() is Stage.RETRYING
    assert case.next_action(T0) == SendStep(case.policy.notify[0], "step-0")


def test_then_the_case_sleeps_until_the_first_retry_a_day_later() -> None:
    case = after_first_email(opened())
    assert case.next_action(T0) == Wait(T0 + DAY, "retry the charge (1/6)")
    assert case.next_action(T0 + DAY) == ChargeRound("scheduled retry 1/6")
    assert case.plan() == Wait(T0 + 3 * DAY, "retry the charge (2/6)")  # the slot is used


def test_a_hard_decline_asks_for_a_new_card_and_plans_no_retry() -> None:
    case = after_first_email(opened(first=failure(decline_code="stolen_card")))
    assert case.stage() is Stage.AWAITING_PAYMENT_METHOD
    assert case.next_retry() is None
    assert case.plan() == Wait(T0 + 3 * DAY, "send 'reminder'")


# --- card updates -----------------------------------------------------------------------


def test_a_card_update_before_the_first_retry_slot_charges_at_that_moment() -> None:
    case = after_first_email(opened())
    two_hours = T0 + timedelta(hours=2)
    assert case.card_updated(CardUpdated(payment_method_id="pm_new", event_id="evt_card"), two_hours)
    assert case.next_action(two_hours) == ChargeRound("card updated")
    assert case.charge_request(case.open_invoices()[0]).payment_method_id == "pm_new"
    # The first slot is still there for a decline of the new card.
    assert case.plan() == Wait(T0 + DAY, "retry the charge (1/6)")


def test_a_card_update_unblocks_a_hard_decline() -> None:
    case = after_first_email(opened(first=failure(decline_code="expired_card")))
    case.card_updated(CardUpdated(payment_method_id="pm_new"), T0 + 2 * DAY)
    assert case.stage() is Stage.RETRYING
    assert case.next_action(T0 + 2 * DAY) == ChargeRound("card updated")


# --- pause ------------------------------------------------------------------------------


def test_signals_during_a_pause_charge_and_send_nothing_until_resume_then_the_charge_is_at_once() -> None:
    case = after_first_email(opened())
    assert case.pause(Pause(reason="disputed"), T0 + 2 * DAY)
    assert case.stage() is Stage.PAUSED
    assert case.card_updated(CardUpdated(payment_method_id="pm_new"), T0 + 3 * DAY)
    assert case.extend_grace(ExtendGrace(days=7), T0 + 3 * DAY)
    for later in (T0 + 3 * DAY, T0 + 4 * DAY, T0 + 40 * DAY):  # past retries, ladder, grace, cancel
        assert case.next_action(later) == Wait()
    assert case.resume(Resume(), T0 + 5 * DAY)
    assert case.next_action(T0 + 5 * DAY) == ChargeRound("card updated")
    # The schedule moved by the three paused days; the extension adds its seven.
    assert case.grace_ends_at() == T0 + (14 + 3 + 7) * DAY


def test_pause_twice_and_resume_when_running_change_nothing() -> None:
    case = opened()
    assert not case.resume(Resume(), T0)
    assert case.pause(Pause(), T0)
    assert not case.pause(Pause(reason="again"), T0 + DAY)
    assert case.state.pause_reason == "paused by operator"


def test_resume_moves_held_sms_by_the_paused_time() -> None:
    case = after_first_email(opened(policy=_quiet_sms_policy(), timezone="Europe/Berlin"))
    night = datetime(2026, 11, 5, 22, 0, tzinfo=UTC)  # 23:00 in Berlin
    assert case.hold_sms_if_quiet(case.policy.notify[1], "step-1", night)
    held = case.state.pending_sms[0].due_at
    case.pause(Pause(), night + timedelta(hours=1))
    case.resume(Resume(), night + timedelta(hours=3))
    assert case.state.pending_sms[0].due_at == held + timedelta(hours=2)


# --- redelivered webhooks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "payload"),
    [
        ("payment_failed", failure("in_2", event_id="evt_dup")),
        ("card_updated", CardUpdated(payment_method_id="pm_new", event_id="evt_dup")),
        ("invoice_paid", InvoicePaid(invoice_id="in_1", event_id="evt_dup")),
        ("subscription_canceled", SubscriptionCanceled(reason="left", event_id="evt_dup")),
    ],
)
def test_a_redelivered_event_changes_nothing(signal: str, payload: object) -> None:
    case = after_first_email(opened())

    def apply() -> bool:
        handler = getattr(case, signal)
        return bool(handler(payload, T0 + DAY))

    assert apply()
    before = case.state.model_copy(deep=True)
    assert not apply()
    assert case.state == before


def test_the_same_invoice_failing_again_under_a_new_event_is_noted_once() -> None:
    case = opened()
    assert not case.payment_failed(failure("in_1", event_id="evt_other"), T0 + DAY)
    assert len(case.state.invoices) == 1
    assert case.state.timeline[-1].event == "failure_reported_again"


# --- the card's budget ------------------------------------------------------------------------


def test_the_card_budget_is_spent_exactly_at_its_cap_and_frees_30_days_after_the_oldest_attempt() -> None:
    case = after_first_email(opened(policy=make_policy(max_attempts_per_card_30d=3)))
    charge(case, T0 + DAY, declined())  # the failure itself was attempt one: two of three now
    assert case.card_budget_left(T0 + DAY)
    assert case.retry_now_refusal(T0 + DAY, charging=False) is None
    charge(case, T0 + 3 * DAY, declined())  # three of three
    assert not case.card_budget_left(T0 + 3 * DAY)
    assert case.retry_now_refusal(T0 + 3 * DAY, charging=False) == (
        "this card reached its budget of 3 attempts in 30 days"
    )
    assert not case.card_budget_left(T0 + 30 * DAY - timedelta(seconds=1))
    assert case.card_budget_left(T0 + 30 * DAY)
    # The next retry waits until the budget frees, whatever the schedule says.
    retry = case.next_retry()
    assert retry is not None and retry[1] > T0 + 30 * DAY


def test_a_card_update_over_budget_is_noted_and_charges_nothing() -> None:
    case = after_first_email(opened(policy=make_policy(max_attempts_per_card_30d=2)))
    charge(case, T0 + DAY, declined())
    case.card_updated(CardUpdated(), T0 + 2 * DAY)  # same card: a new default, not a new card
    assert isinstance(case.next_action(T0 + 2 * DAY), Wait)
    assert case.state.timeline[-1].event == "retry_skipped"


def test_attempts_on_another_card_do_not_count_against_the_new_one() -> None:
    case = after_first_email(opened(policy=make_policy(max_attempts_per_card_30d=2)))
    charge(case, T0 + DAY, declined())
    assert not case.card_budget_left(T0 + DAY)
    case.card_updated(CardUpdated(payment_method_id="pm_new"), T0 + 2 * DAY)
    assert case.card_budget_left(T0 + 2 * DAY)


# --- charges --------------------------------------------------------------------------------


def test_idempotency_keys_name_the_case_the_invoice_and_the_attempt() -> None:
    case = opened()
    first = case.charge_request(case.open_invoices()[0])
    assert (first.attempt, first.idempotency_key) == (1, f"{case.state.case_id}/in_1/1")
    case.record_charge_error("in_1", "Stripe 503", T0 + DAY)  # no answer: the same key next time
    assert case.charge_request(case.open_invoices()[0]).idempotency_key == first.idempotency_key
    charge(case, T0 + DAY, declined())
    assert case.charge_request(case.open_invoices()[0]).idempotency_key == f"{case.state.case_id}/in_1/2"


def test_a_successful_charge_settles_the_case_as_recovered() -> None:
    case = after_first_email(opened())
    charge(case, T0 + DAY, succeeded())
    assert case.next_action(T0 + DAY) == Settle(recovered=True, restore_access=False)
    case.recovered(T0 + DAY)
    assert (case.stage(), case.state.access) == (Stage.RECOVERED, AccessState.ACTIVE)


def test_a_voided_invoice_alone_is_written_off() -> None:
    case = opened()
    charge(case, T0 + DAY, ChargeResult(invoice_id="in_1", status="voided"))
    assert case.next_action(T0 + DAY) == Settle(recovered=False, restore_access=False)


def test_a_hard_decline_on_a_retry_blocks_the_card() -> None:
    case = after_first_email(opened())
    charge(case, T0 + DAY, declined(code="stolen_card"))
    assert case.stage() is Stage.AWAITING_PAYMENT_METHOD
    assert case.retry_now_refusal(T0 + DAY, charging=False) == (
        "the card can't be retried after a hard decline: waiting for a new payment method"
    )


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda c: c.close(Stage.CANCELED, T0), "the case is closed (canceled)"),
        (lambda c: c.pause(Pause(), T0), "the case is paused: resume it first"),
        (lambda c: c.invoice_paid(InvoicePaid(invoice_id="in_1"), T0), "nothing is outstanding"),
    ],
)
def test_retry_now_says_why_it_is_refused(setup: object, reason: str) -> None:
    case = opened()
    setup(case)  # type: ignore[operator]
    assert case.retry_now_refusal(T0, charging=False) == reason


def test_retry_now_that_pays_reports_the_case_recovered() -> None:
    case = after_first_email(opened())
    charge(case, T0 + DAY, succeeded(), trigger="operator: customer called")
    assert case.retry_now_result([succeeded()]).stage is Stage.RECOVERED
    declined_case = after_first_email(opened())
    charge(declined_case, T0 + DAY, declined())
    assert declined_case.retry_now_result([declined()]).stage is Stage.RETRYING


def test_retry_now_is_refused_while_a_charge_runs() -> None:
    assert opened().retry_now_refusal(T0, charging=True) == "a charge is already in progress"


# --- the ladder -----------------------------------------------------------------------------


def test_the_final_notice_moves_the_stage() -> None:
    case = after_first_email(opened(policy=make_policy(retry_after=[])))
    assert case.next_action(T0 + 3 * DAY) == SendStep(case.policy.notify[1], "step-1")
    case.message_sent(T0 + 3 * DAY)
    assert case.next_action(T0 + 10 * DAY) == SendStep(case.policy.notify[2], "step-2")
    assert case.stage() is Stage.FINAL_NOTICE


def test_after_a_long_pause_only_the_latest_due_step_speaks() -> None:
    case = after_first_email(opened(policy=make_policy(retry_after=[])))
    assert case.next_action(T0 + 11 * DAY) == SendStep(case.policy.notify[2], "step-2")
    assert [e.event for e in case.state.timeline][-1] == "message_skipped"  # the reminder, superseded


def test_a_ladder_step_waits_for_the_gap_after_the_last_message() -> None:
    case = after_first_email(opened(policy=make_policy(retry_after=[])))
    case.message_sent(T0 + 3 * DAY - timedelta(hours=2))  # e.g. an event message just went
    assert isinstance(case.next_action(T0 + 3 * DAY), Wait)
    assert case.plan() == Wait(T0 + 3 * DAY + timedelta(hours=18), "send 'reminder'")


def _quiet_sms_policy() -> Policy:
    return make_policy(
        retry_after=[],
        quiet_hours=[time(21, 0), time(8, 0)],
        notify=[
            {"at": "PT0S", "channels": ["email"], "template": "payment_failed"},
            {"at": "P3D", "channels": ["email", "sms"], "template": "reminder"},
        ],
    )


def test_an_sms_in_the_customers_night_is_held_until_8_local_then_sent() -> None:
    case = after_first_email(opened(policy=_quiet_sms_policy(), timezone="America/New_York"))
    due = T0 + 3 * DAY  # 05:00 in New York
    step = case.next_action(due)
    assert step == SendStep(case.policy.notify[1], "step-1")
    assert case.hold_sms_if_quiet(step.step, step.step_id, due)
    morning = datetime(2026, 11, 5, 13, 0, tzinfo=UTC)  # 08:00 in New York
    assert case.state.pending_sms[0].due_at == morning
    case.message_sent(due)
    assert case.plan() == Wait(morning, "send the deferred 'reminder' SMS")
    action = case.next_action(morning)
    assert isinstance(action, SendHeldSms)
    assert case.held_sms_delivery(action.sms).channel is Channel.SMS


def test_an_sms_failure_falls_back_to_email_only_when_the_step_had_no_email() -> None:
    case = opened()
    sms_step = make_policy(notify=[{"at": "P3D", "channels": ["sms"], "template": "reminder"}]).notify[0]
    sms_only = case.step_deliveries(sms_step, "step-1")[0]
    failed = NotificationResult(channel=Channel.SMS, status="failed", fallback_channel=Channel.EMAIL)
    fallback = case.record_notification(sms_only, failed, T0)
    assert fallback is not None and (fallback.channel, fallback.step_id) == (Channel.EMAIL, "step-1-fallback")
    both = case.step_deliveries(case.policy.notify[1], "step-1")[1]
    assert case.record_notification(both, failed, T0) is None


def test_a_step_stops_at_the_channel_where_the_invoice_turned_out_paid() -> None:
    case = opened()
    email, sms = case.step_deliveries(case.policy.notify[1], "step-1")
    case.invoice_paid(InvoicePaid(invoice_id="in_1"), T0)
    assert case.paid_before_delivery(sms)
    settled = case.step_deliveries(case.policy.notify[4], "on-recovered", settled=True)[0]
    assert not case.paid_before_delivery(settled)


# --- grace, suspension, cancellation, closing --------------------------------------------------


def test_grace_ends_in_suspension_and_30_days_later_in_cancellation() -> None:
    case = opened(policy=make_policy(retry_after=[], notify=[]))
    assert case.next_action(T0) == Wait(T0 + 14 * DAY, "suspend access (grace ends)")
    assert case.next_action(T0 + 14 * DAY) == Suspend()
    case.suspend(T0 + 14 * DAY)
    assert case.stage() is Stage.SUSPENDED
    assert case.plan() == Wait(T0 + 44 * DAY, "cancel the subscription")
    assert case.next_action(T0 + 44 * DAY) == Cancel()


def test_a_payment_after_suspension_restores_access() -> None:
    case = opened(policy=make_policy(retry_after=[], notify=[]))
    case.suspend(T0 + 14 * DAY)
    case.invoice_paid(InvoicePaid(invoice_id="in_1"), T0 + 15 * DAY)
    assert case.next_action(T0 + 15 * DAY) == Settle(recovered=True, restore_access=True)


def test_a_subscription_canceled_by_the_customer_or_by_stripes_dunning() -> None:
    by_customer = opened()
    by_customer.subscription_canceled(SubscriptionCanceled(reason="customer left"), T0)
    assert by_customer.next_action(T0) == CloseCanceled("customer left", by_stripe_dunning=False)
    by_stripe = opened()
    by_stripe.subscription_canceled(SubscriptionCanceled(cancellation_reason="payment_failed"), T0)
    assert by_stripe.next_action(T0) == CloseCanceled("customer.subscription.deleted", by_stripe_dunning=True)


def test_a_failure_after_the_case_closed_waits_for_the_next_case() -> None:
    case = opened()
    case.close(Stage.RECOVERED, T0 + DAY)
    assert not case.payment_failed(failure("in_2"), T0 + 2 * DAY)
    assert [f.invoice_id for f in case.state.late_failures] == ["in_2"]


def test_an_invoice_paid_before_its_failure_arrived_opens_it_as_paid() -> None:
    case = Case.open("dunning-sub_1", "sub_1", "cus_1", make_policy(), T0)
    assert not case.invoice_paid(InvoicePaid(invoice_id="in_1"), T0)
    case.payment_failed(failure(), T0)
    assert case.next_action(T0) == Settle(recovered=True, restore_access=False)


# --- what operators see ------------------------------------------------------------------------


def test_search_attributes_and_status_tell_the_stage_and_the_next_action() -> None:
    case = after_first_email(opened())
    nxt = case.plan()
    attributes = case.search_attributes(nxt)
    assert attributes["DunningStage"] == "retrying" and attributes["AmountDue"] == 4900
    assert attributes["NextActionAt"] == T0 + DAY and attributes["DunningOutcome"] == ""
    status = case.status(nxt)
    assert (status.next_action, status.grace_ends_at) == ("retry the charge (1/6)", T0 + 14 * DAY)
    assert "Next: retry the charge (1/6) at 2026-11-03 10:00 UTC" in case.details(nxt)


def test_the_message_context_counts_only_open_invoices() -> None:
    case = opened()
    case.payment_failed(failure("in_2", amount_due=2500), T0 + DAY)
    case.invoice_paid(InvoicePaid(invoice_id="in_1"), T0 + DAY)
    context = case.message_context(T0 + 2 * DAY)
    assert (context["amount_due"], context["invoice_count"], context["amount_paid"]) == (2500, 1, 4900)
    assert context["days_left"] == 12


# --- what the case accepts from an event ------------------------------------------------------


def test_a_failure_naming_another_customer_is_refused_once_and_noted() -> None:
    case = opened()
    intruder = failure("in_9", customer_id="cus_other", event_id="evt_other")
    assert case.names_another_customer(intruder)
    assert not case.names_another_customer(failure("in_2", customer_id="cus_1"))
    case.refuse_other_customer(intruder, T0 + DAY)
    case.refuse_other_customer(intruder, T0 + DAY)  # redelivered
    assert [e.event for e in case.state.timeline].count("failure_refused") == 1
    assert [i.invoice_id for i in case.state.invoices] == ["in_1"]


@pytest.mark.parametrize(
    ("occurred_at", "counts_from"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), T0),  # garbage or a replay: the case starts now
        (T0 - 4 * DAY, T0),  # older than Stripe's 3-day retry window: now
        (T0 + 365 * DAY, T0),  # from the future: now
        (T0 - 2 * DAY, T0 - 2 * DAY),  # a late webhook within Stripe's retry window keeps its time
    ],
)
def test_a_failure_keeps_its_own_time_within_bounds(occurred_at: datetime, counts_from: datetime) -> None:
    case = Case.open("dunning-sub_1", "sub_1", "cus_1", make_policy(), T0)
    dated = failure(occurred_at=occurred_at)
    clamp = case.failure_time_out_of_bounds(dated, T0)
    assert clamp is (occurred_at != counts_from)
    case.payment_failed(dated, T0, clamp_time=clamp)
    assert case.state.anchor == counts_from
    assert ("failure_time_clamped" in [e.event for e in case.state.timeline]) is clamp
    action = case.next_action(T0)
    if clamp:  # never a fast-forward: the first message speaks first
        assert action == SendStep(case.policy.notify[0], "step-0")
    else:  # a late delivery: the schedule is as far along as the failure is old
        assert action == ChargeRound("scheduled retry 1/6")


# --- the customer's page: more time, and leaving ---------------------------------------------


def test_an_operator_extends_by_days_or_an_iso_duration() -> None:
    from dunning.models import ExtendGrace

    case = opened()
    base = case.grace_ends_at()
    assert case.extend_grace(ExtendGrace(days=2), T0 + DAY)
    assert case.extend_grace(ExtendGrace(duration="PT36H"), T0 + DAY)  # type: ignore[arg-type]
    assert case.grace_ends_at() == base + 2 * DAY + timedelta(hours=36)
    assert case.state.timeline[-1].detail.startswith("+36 hours by grace extended by operator")


@pytest.mark.parametrize(
    "payload, why",
    [
        ({}, "give `days` or an ISO 8601 `duration`"),
        ({"days": 1, "duration": "P1D"}, "give `days` or an ISO 8601 `duration`"),
        ({"duration": "P400D"}, "at most P365D"),
        ({"duration": "-P1D"}, "positive"),
        ({"source": "customer", "days": 30}, "the policy's self_service_grace"),
        ({"days": 3, "source": "stranger"}, "source"),
    ],
)
def test_an_extension_payload_that_says_nothing_clear_is_refused(payload: dict[str, object], why: str) -> None:
    from pydantic import ValidationError

    from dunning.models import ExtendGrace

    with pytest.raises(ValidationError, match=why):
        ExtendGrace.model_validate(payload)


def test_the_customer_gets_the_policys_time_up_to_its_limit_once_per_request() -> None:
    from dunning.models import ExtendGrace

    case = opened(policy=make_policy(self_service_grace=timedelta(days=5), self_service_grace_limit=2))
    base = case.grace_ends_at()
    first = ExtendGrace(source="customer", request_id="page:l:1")
    assert case.extend_grace(first, T0 + DAY)
    assert not case.extend_grace(first, T0 + DAY)  # the same request again
    assert case.extend_grace(ExtendGrace(source="customer", request_id="page:l:2"), T0 + DAY)
    assert not case.extend_grace(ExtendGrace(source="customer", request_id="page:l:3"), T0 + DAY)
    assert case.grace_ends_at() == base + 10 * DAY
    assert case.self_service_grace_left() == 0
    assert case.state.timeline[-1].event == "grace_refused"


def test_no_self_service_time_once_suspended_paused_or_closed() -> None:
    case = opened()
    assert case.self_service_grace_left() == 1
    case.suspend(T0 + 14 * DAY)
    assert case.self_service_grace_left() == 0


def test_a_customer_who_cancels_on_the_page_is_canceled_by_the_case_with_the_feedback() -> None:
    from dunning.models import CancelReason, CustomerFeedback

    case = opened()
    feedback = CustomerFeedback(reason=CancelReason.TOO_EXPENSIVE, comment=None)
    assert case.subscription_canceled(SubscriptionCanceled(source="customer", feedback=feedback), T0 + DAY)
    assert case.next_action(T0 + DAY) == CloseCanceled("asked on the customer page", False, by_customer_page=True)
    assert case.status(case.plan()).feedback == feedback
    # Stripe's `customer.subscription.deleted` that follows changes nothing more.
    assert not case.subscription_canceled(SubscriptionCanceled(reason="customer.subscription.deleted"), T0 + DAY)


def test_the_ui_details_say_what_the_customer_did_on_their_page() -> None:
    from dunning.models import CancelReason, CustomerFeedback, ExtendGrace

    case = opened()
    case.extend_grace(ExtendGrace(source="customer", request_id="page:l:1"), T0 + DAY)
    assert "The customer took more time on their page (1 of 1)" in case.details(case.plan())
    case.subscription_canceled(
        SubscriptionCanceled(source="customer", feedback=CustomerFeedback(reason=CancelReason.NOT_USING)), T0 + DAY
    )
    assert "The customer canceled on their page (not_using: (no comment))" in case.details(case.plan())
