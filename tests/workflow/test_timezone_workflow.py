"""The customer's time zone inferred when Stripe has no `timezone` metadata, end to end on the
time-skipping server: a Pacific phone number holds an SMS until 08:00 in Los Angeles, and a
country whose zones share no daytime gets email instead of SMS."""

from __future__ import annotations

from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

from tests.helpers.case_harness import CaseRunner, make_policy
from tests.workflow.test_notify_workflow import advance_to_local

PACIFIC = ZoneInfo("America/Los_Angeles")


async def test_an_sms_due_at_1300_utc_waits_for_8am_pacific_when_only_the_phone_says_where(time_env) -> None:
    policy = make_policy(quiet_hours=["21:00", "08:00"], retry_after=["P20D"])
    async with CaseRunner(time_env) as runner:
        runner.payments.add_customer(
            "cus_sf", name="Sam", email="sam@example.com", phone="+1 415 555 0100", locale="en"
        )  # no timezone metadata, no address: only the phone's area code (San Francisco)
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 5)
        await advance_to_local(time_env, 13, 0, ZoneInfo("UTC"))
        case = await runner.open(policy=policy, customer_id="cus_sf")
        await case.idle()
        status = await case.status()
        assert (status.customer_timezone, status.customer_timezone_source) == ("America/Los_Angeles", "phone")
        assert status.customer_timezone_candidates == ["America/Los_Angeles"]

        await case.wait_days(3.05)  # the reminder fell due at 13:00 UTC: 05:00 or 06:00 in Los Angeles
        assert [m.channel for m in runner.outbox.messages] == ["email", "email"]
        deferred = [t for t in (await case.status()).timeline if t.event == "sms_deferred"]
        assert len(deferred) == 1

        await case.wait_days(0.5)
        sms = [m for m in runner.outbox.messages if m.channel == "sms"]
        assert len(sms) == 1
        local = sms[0].at.astimezone(PACIFIC)
        assert (local.hour, local.minute) == (8, 0)
        assert sms[0].at.astimezone(UTC).hour in (15, 16)  # 08:00 PDT or PST, not 13:00 UTC
        assert case.opened_at + timedelta(days=3) < sms[0].at < case.opened_at + timedelta(days=3, hours=4)
        await case.signal("invoice_paid", {"invoice_id": "in_1"})
        await case.result()


async def test_no_hour_of_daytime_in_every_zone_means_email_instead_of_sms(time_env) -> None:
    # Nine hours of day (11:00-20:00) cannot be day in Kaliningrad and Kamchatka (ten hours apart) at once.
    policy = make_policy(quiet_hours=["20:00", "11:00"], retry_after=["P20D"])
    async with CaseRunner(time_env) as runner:
        runner.payments.add_customer(
            "cus_ru", name="Ivan", email="ivan@example.com", phone="+15555550123", locale="ru", country="RU"
        )
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 5)
        case = await runner.open(policy=policy, customer_id="cus_ru", record_as="sms_by_email_without_shared_daytime")
        await case.idle()
        status = await case.status()
        assert status.customer_timezone_source == "address" and len(status.customer_timezone_candidates) > 10

        await case.wait_days(3.1)
        status = await case.status()
        assert [m.channel for m in runner.outbox.messages] == ["email", "email"]  # no SMS, and not held
        assert not any(t.event == "sms_deferred" for t in status.timeline)
        skipped = [n for n in status.notifications if n.channel == "sms"]
        assert [(n.status, n.template) for n in skipped] == [("skipped", "reminder")]
        assert "no hour is daytime in all" in (skipped[0].reason or "")
        await case.signal("invoice_paid", {"invoice_id": "in_1"})
        await case.result()
