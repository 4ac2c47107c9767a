"""A bounced address on the time-skipping server: the reminder goes by SMS instead of email, a step
that has SMS already sends it once, and a stand-in SMS waits out the customer's night."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from dunning.email_suppression import SuppressionKind, suppression_reason
from runtime.email_suppression import DatabaseEmailSuppressions, SuppressionEvent
from tests.helpers.case_harness import CaseRunner, make_policy
from tests.helpers.database import sqlite_database
from tests.workflow.test_notify_workflow import advance_to_local

BOUNCED = suppression_reason(SuppressionKind.BOUNCE, "550 5.1.1 The email account does not exist")
LADDER = [
    {"at": "PT0S", "channels": ["email", "in_app"], "template": "payment_failed"},
    {"at": "P3D", "channels": ["email"], "template": "reminder"},
    {"at": "P10D", "channels": ["email", "sms"], "template": "final_notice"},
]


async def bounce(store: DatabaseEmailSuppressions, email: str = "ada@example.com") -> None:
    """What the SendGrid webhook records on a bounce of the first email (no case is signalled)."""
    event = SuppressionEvent("ev-bounce-1", email, SuppressionKind.BOUNCE, BOUNCED, datetime.now(UTC), "cus_1")
    assert await store.record([event])


async def test_a_bounced_address_makes_the_reminder_go_by_sms(time_env, tmp_path: Path) -> None:
    store = DatabaseEmailSuppressions(sqlite_database(tmp_path))
    policy = make_policy(notify=LADDER, retry_after=["P20D"])
    async with CaseRunner(time_env, suppressions=store) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 5)
        case = await runner.open(policy=policy, record_as="reminder_by_sms_after_a_bounce")
        await case.idle()
        assert [(m.channel, m.to) for m in runner.outbox.messages] == [("email", "ada@example.com")]
        await bounce(store)

        await case.wait_days(3.1)
        messages = await case.messages()
        assert [(c, t, s) for _, c, t, s in messages] == [
            ("email", "payment_failed", "sent"),
            ("in_app", "payment_failed", "sent"),
            ("email", "reminder", "skipped"),
            ("sms", "reminder", "sent"),
        ]
        status = await case.status()
        assert [n.reason for n in status.notifications if n.channel == "email"][1] == BOUNCED
        assert [(m.channel, m.to) for m in runner.outbox.messages][1:] == [("sms", "+15555550123")]

        await case.wait_days(7)  # the final notice has SMS already: sent once, not twice
        assert [(c, t, s) for _, c, t, s in await case.messages()][4:] == [
            ("email", "final_notice", "skipped"),
            ("sms", "final_notice", "sent"),
        ]
        assert [m.channel for m in runner.outbox.messages].count("sms") == 2
        await case.signal("invoice_paid", {"invoice_id": "in_1"})
        await case.result()


async def test_the_sms_instead_of_a_bounced_email_waits_for_the_morning(time_env, tmp_path: Path) -> None:
    store = DatabaseEmailSuppressions(sqlite_database(tmp_path))
    policy = make_policy(notify=LADDER, retry_after=["P20D"], quiet_hours=["21:00", "08:00"])
    berlin = ZoneInfo("Europe/Berlin")
    async with CaseRunner(time_env, suppressions=store) as runner:
        runner.payments.add_customer(
            "cus_1", name="Ada", email="ada@example.com", phone="+4915112345678", locale="de-DE", timezone="Europe/Berlin"
        )
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 5)
        await advance_to_local(time_env, 23, 0, berlin)  # the reminder falls due at 23:00 in Berlin
        case = await runner.open(policy=policy)
        await case.idle()
        await bounce(store)

        await case.wait_days(3.05)
        assert [m.channel for m in runner.outbox.messages] == ["email"]  # no SMS at night
        assert any(t.event == "sms_deferred" for t in (await case.status()).timeline)
        await case.wait_days(0.5)
        sms = [m for m in runner.outbox.messages if m.channel == "sms"]
        assert len(sms) == 1 and sms[0].at.astimezone(berlin).hour == 8
        await case.signal("invoice_paid", {"invoice_id": "in_1"})
        await case.result()
