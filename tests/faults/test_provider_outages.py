"""Provider outages lasting hours of virtual time (time-skipping server): retried with backoff,
never counted as attempts, the case keeps its schedule, and the operator sees why meanwhile."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import activity
from temporalio.client import WorkflowExecutionDescription

from activities.backends import ProviderUnavailable
from activities.sandbox import SandboxOutbox, SandboxPayments
from dunning.models import ChargeRequest, ChargeResult, Stage
from tests.helpers.case_harness import CaseRunner


@dataclass
class Window:
    start: datetime | None = None
    end: datetime | None = None
    calls: int = 0

    def hit(self, what: str) -> None:
        now = activity.info().current_attempt_scheduled_time
        if self.start and self.start <= now < self.end:
            self.calls += 1
            raise ProviderUnavailable(f"{what} 503: service unavailable (outage since {self.start:%H:%M} UTC)")


class StripeDown(SandboxPayments):
    def __init__(self) -> None:
        super().__init__()
        self.outage = Window()

    async def charge_invoice(self, request: ChargeRequest) -> ChargeResult:
        self.outage.hit("Stripe")
        return await super().charge_invoice(request)


class SendGridDown(SandboxOutbox):
    def __init__(self) -> None:
        super().__init__()
        self.outage = Window()

    async def send_email(self, **kw) -> str:
        self.outage.hit("SendGrid")
        return await super().send_email(**kw)


def pending_charge(description: WorkflowExecutionDescription):
    return [p for p in description.raw_description.pending_activities if p.activity_type.name == "charge_invoice"]


async def test_stripe_down_for_five_hours_at_the_retry(time_env):
    payments = StripeDown()
    async with CaseRunner(time_env, payments=payments) as runner:
        case = await runner.open()
        day1 = case.opened_at + timedelta(days=1)
        payments.outage.start, payments.outage.end = day1 - timedelta(minutes=1), day1 + timedelta(hours=5)

        await case.wait_days(1 + 2 / 24)  # two hours into the outage
        # The operator sees why the retry has not happened: the charge is being retried, and why.
        pending = pending_charge(await case.handle.describe())
        assert len(pending) == 1 and pending[0].attempt > 1
        assert "Stripe 503" in pending[0].last_failure.message
        assert (await case.status()).attempts[-1].attempt == 0  # no attempt counted for an outage

        status = await asyncio.wait_for(case.result(), timeout=30)

    assert status.stage is Stage.RECOVERED
    ours = [(a.attempt, a.result.status) for a in status.attempts if a.attempt >= 1]
    assert ours == [(1, "succeeded")]  # one attempt, after the outage, with attempt 1's key
    assert payments.outage.calls >= 5  # backoff: retried many times, not hammered (<= 10 min apart)
    (charge,) = payments.successful_charges
    assert charge.idempotency_key.endswith("/in_1/1")
    assert timedelta(hours=5) <= charge.at - day1 <= timedelta(hours=5, minutes=11)


class OutboxRunner(CaseRunner):
    """A CaseRunner whose e-mail and SMS go through the given outbox."""

    def __init__(self, env, outbox: SandboxOutbox) -> None:  # noqa: D107 - mirrors CaseRunner's
        super().__init__(env, outbox=outbox)


async def test_sendgrid_down_for_eight_hours_the_reminder_fails_visibly_the_schedule_holds(time_env):
    outbox = SendGridDown()
    async with OutboxRunner(time_env, outbox) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds", "insufficient_funds", None])
        case = await runner.open()
        day3 = case.opened_at + timedelta(days=3)
        outbox.outage.start, outbox.outage.end = day3 - timedelta(minutes=1), day3 + timedelta(hours=8)
        status = await asyncio.wait_for(case.result(), timeout=30)

    assert status.stage is Stage.RECOVERED
    reminder = {n.channel.value: (n.status, n.reason) for n in status.notifications if n.template == "reminder"}
    # The e-mail gave up after its 6-hour window and says why; the SMS of the step still went.
    assert reminder["email"][0] == "failed" and "SendGrid 503" in (reminder["email"][1] or ""), reminder
    assert reminder["sms"] == ("sent", None), reminder
    # The retries kept their days.
    assert [round(case.day(a.at), 2) for a in status.attempts if a.attempt >= 1] == [1.0, 3.0, 5.0]
