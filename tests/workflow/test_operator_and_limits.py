"""Operator controls and the limits a case must respect whatever happens."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from dunning.models import CardUpdated, InvoicePaid, Pause, RetryNow, RetryNowResult, Stage
from tests.helpers.case_harness import CaseRunner, failure, make_policy


async def test_retry_now_charges_at_once_and_returns_the_result(time_env):
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds", None])
        case = await runner.open()
        await case.wait_days(0.25)
        declined = await case.handle.execute_update(
            "retry_now", RetryNow(reason="customer on the phone"), result_type=RetryNowResult
        )
        assert [r.status for r in declined.results] == ["declined"] and declined.stage is Stage.RETRYING
        paid = await case.handle.execute_update("retry_now", RetryNow(), result_type=RetryNowResult)
        assert [r.status for r in paid.results] == ["succeeded"]
        status = await case.result()
        assert status.stage is Stage.RECOVERED
        assert [(d, st) for d, _, _, st in case.charges()] == [(0.25, "declined"), (0.25, "succeeded")]
        assert [a.trigger for a in status.attempts] == [
            "stripe",
            "operator: customer on the phone",
            "operator: retry requested by operator",
        ]


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("paused", "paused"),
        ("hard", "new payment method"),
    ],
)
async def test_retry_now_is_rejected_when_it_must_not_charge(time_env, setup, reason):
    async with CaseRunner(time_env) as runner:
        case = await runner.open(failure(decline_code="stolen_card" if setup == "hard" else "insufficient_funds"))
        if setup == "paused":
            await case.signal("pause", Pause(reason="disputed"))
        await case.wait_days(0.1)
        with pytest.raises(WorkflowUpdateFailedError) as rejected:
            await case.handle.execute_update("retry_now", RetryNow(), result_type=RetryNowResult)
        assert reason in str(rejected.value.cause)
        assert case.charges() == []


async def test_retry_now_on_a_closed_case_is_refused(time_env):
    async with CaseRunner(time_env) as runner:
        case = await runner.open()
        runner.payments.paid_invoices.add("in_1")
        await case.signal("invoice_paid", InvoicePaid(invoice_id="in_1"))
        await case.result()
        with pytest.raises(RPCError, match="not found|completed"):
            await case.handle.execute_update("retry_now", RetryNow(), result_type=RetryNowResult)
        assert case.charges() == []


async def test_card_budget_caps_attempts_even_when_cards_updates_keep_coming(time_env):
    policy = make_policy(max_attempts_per_card_30d=3, retry_after=["P1D", "P2D", "P3D", "P4D"])
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 20)
        case = await runner.open(policy=policy)
        await case.wait_days(1.5)
        for n in range(3):  # the same card re-attached again and again
            await case.signal("card_updated", CardUpdated(payment_method_id="pm_card_customer", event_id=f"evt_{n}"))
            await case.wait_days(0.1)
        await case.wait_days(5)
        # the original failure + 2 of ours = 3 in 30 days; nothing more on this card
        assert len(case.charges()) == 2
        status = await case.status()
        assert any(e.event == "retry_skipped" for e in status.timeline)


async def test_redelivered_events_change_nothing(time_env):
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 3)
        case = await runner.open()
        await case.wait_days(1.5)
        for _ in range(3):
            await case.signal("payment_failed", failure())
            await case.signal("card_updated", CardUpdated(payment_method_id="pm_card_customer", event_id="evt_same"))
        await case.wait_days(0.2)
        status = await case.status()
        assert len(status.invoices) == 1
        assert [d for d, *_ in case.charges()] == [1.0, 1.5]  # one card update, one charge


async def test_sms_waits_for_the_end_of_the_customers_night(time_env):
    """A reminder due at night in Tokyo goes by email at once and by SMS at 08:00 Tokyo time."""
    policy = make_policy(quiet_hours=["21:00", "08:00"])
    async with CaseRunner(time_env) as runner:
        now = await time_env.get_current_time()  # virtual time: earlier tests moved it on
        # choose the zone whose local time is now 23:xx, so the 3-day reminder falls at night
        offset = (23 - now.hour) % 24
        zone = f"Etc/GMT{'-' if offset <= 12 else '+'}{offset if offset <= 12 else 24 - offset}"
        runner.payments.add_customer("cus_tz", name="Kenji", email="k@example.com", phone="+8155555555", timezone=zone)
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 10)
        case = await runner.open(policy=policy, customer_id="cus_tz")
        await case.wait_days(4)
        sent = [(c, t, d) for d, c, t in await case.sent() if t == "reminder"]
        email_day = next(d for c, t, d in sent if c == "email")
        sms_day = next(d for c, t, d in sent if c == "sms")
        assert email_day == 3.0
        assert 3.0 < sms_day < 3.5
        sms = next(n for n in (await case.status()).notifications if n.channel.value == "sms")
        from zoneinfo import ZoneInfo

        local = sms.at.astimezone(ZoneInfo(zone))
        assert (local.hour, local.minute) == (8, 0)


async def test_a_long_case_continues_as_new_without_losing_anything(time_env):
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 4)
        case = await runner.open(history_event_limit=40)
        status = await case.result()
        assert status.stage is Stage.RECOVERED
        assert [d for d, *_ in case.charges()] == [1.0, 3.0, 5.0, 7.0, 10.0]
        assert len({key for _, _, key, _ in case.charges()}) == 5
        first_run = time_env.client.get_workflow_handle(case.handle.id, run_id=case.handle.result_run_id)
        last_event = (await first_run.fetch_history()).events[-1]
        assert last_event.HasField("workflow_execution_continued_as_new_event_attributes")
        assert [a.attempt for a in status.attempts] == [0, 1, 2, 3, 4, 5]  # history carried over
