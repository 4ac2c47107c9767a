"""Pre-dunning on the time-skipping server: CardExpiryWorkflow sends the policy's reminders at
their offsets before the renewal, and none after a card update (Stripe's automatic one
included) or when the card outlives the renewal."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime, timedelta

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.sandbox import SandboxOutbox, SandboxPayments
from dunning import contract
from dunning.card_expiry import CardExpiryInput, CardExpiryStatus, RenewalCard, RenewalUpcoming
from dunning.models import CardUpdated
from dunning.policy import PreDunningStep
from tests.helpers.case_harness import HISTORIES
from tests.helpers.workers import eventually, new_worker

STEPS = [
    PreDunningStep(before=timedelta(days=14), channels=["email"], template="card_expiring"),
    PreDunningStep(before=timedelta(days=3), channels=["email"], template="card_expiring"),
]


def renewal_after(now: datetime) -> datetime:
    """10:00 on the first day of a month at least 16 days ahead: the card of the month before
    expires just before it, and is not expired yet."""
    ahead = now + timedelta(days=16)
    first = (ahead.replace(day=1) + timedelta(days=32)).replace(day=1)
    return first.replace(hour=10, minute=0, second=0, microsecond=0)


def card_expiring_before(renewal: datetime) -> RenewalCard:
    """A card whose last valid month is the one before the renewal's."""
    last_month = renewal.replace(day=1) - timedelta(days=1)
    return RenewalCard(payment_method_id="pm_old", brand="visa", last4="4242", exp_month=last_month.month, exp_year=last_month.year)


async def start(
    env: WorkflowEnvironment, task_queue: str, renewal: datetime, card: RenewalCard, subscription: str | None = None
) -> WorkflowHandle:
    subscription = subscription or f"sub_{uuid.uuid4().hex[:10]}"
    return await env.client.start_workflow(
        contract.CARD_EXPIRY_WORKFLOW_TYPE,
        CardExpiryInput(subscription_id=subscription, customer_id="cus_1", policy="high_value", steps=STEPS),
        id=contract.card_expiry_workflow_id(subscription),
        task_queue=task_queue,
        start_signal=contract.CardExpirySignal.RENEWAL_UPCOMING,
        start_signal_args=[RenewalUpcoming(renewal_at=renewal, card=card, event_id="evt_up_1", source="invoice.upcoming")],
        result_type=CardExpiryStatus,
    )


async def status(handle: WorkflowHandle) -> CardExpiryStatus:
    return await handle.query(contract.QUERY_STATUS, result_type=CardExpiryStatus)


async def asleep(handle: WorkflowHandle) -> CardExpiryStatus:
    """Until the workflow sleeps on its timer (no activity in flight), in real time."""
    while True:
        now = await status(handle)
        if now.next_reminder_at is not None or now.ended is not None:
            return now
        await asyncio.sleep(0.02)


async def asleep_after_first(handle: WorkflowHandle) -> bool:
    now = await status(handle)
    return len(now.notifications) == 1 and now.next_reminder_at is not None


def worker(env: WorkflowEnvironment, outbox: SandboxOutbox):
    payments = SandboxPayments()
    payments.add_customer("cus_1", name="Ada Lovelace", email="ada@example.com", phone="+15555550123")
    return new_worker(env.client, payments=payments, outbox=outbox)


async def test_reminders_go_at_the_policys_offsets_then_it_ends_at_the_renewal(time_env: WorkflowEnvironment) -> None:
    outbox = SandboxOutbox()
    async with worker(time_env, outbox) as w:
        now = await time_env.get_current_time()
        renewal = renewal_after(now)
        handle = await start(time_env, w.task_queue, renewal, card_expiring_before(renewal))
        first = await asleep(handle)
        assert first.next_reminder_at == renewal - timedelta(days=14)
        assert outbox.messages == []
        result: CardExpiryStatus = await handle.result()
        if os.environ.get("DUNNING_RECORD_HISTORIES") == "1":
            # For tests/workflow/test_replay.py: a change to CardExpiryWorkflow must replay it.
            (HISTORIES / "card_expiry_two_reminders.json").write_text((await handle.fetch_history()).to_json())
    sent = [(n.at, n.channel.value, n.template, n.status) for n in result.notifications]
    assert [(round((renewal - at).total_seconds() / 86400, 2), ch, t, st) for at, ch, t, st in sent] == [
        (14.0, "email", "card_expiring", "sent"),
        (3.0, "email", "card_expiring", "sent"),
    ]
    assert result.ended == "renewal"
    assert len(outbox.messages) == 2 and all(m.to == "ada@example.com" for m in outbox.messages)
    assert "4242" in outbox.messages[0].body and "Need more time" not in outbox.messages[0].body


async def test_no_reminder_after_stripe_updated_the_card(time_env: WorkflowEnvironment) -> None:
    outbox = SandboxOutbox()
    async with worker(time_env, outbox) as w:
        now = await time_env.get_current_time()
        renewal = renewal_after(now)
        handle = await start(time_env, w.task_queue, renewal, card_expiring_before(renewal))
        first = await asleep(handle)
        assert first.next_reminder_at is not None
        await time_env.sleep(first.next_reminder_at - now + timedelta(hours=12))  # the P14D reminder has gone
        await eventually(lambda: asleep_after_first(handle), what="the P14D reminder")
        assert len(outbox.messages) == 1
        await handle.signal(
            contract.CardExpirySignal.CARD_UPDATED,
            CardUpdated(payment_method_id="pm_old", event_id="evt_auto", source="payment_method.automatically_updated"),
        )
        result: CardExpiryStatus = await handle.result()
    assert result.ended == "card_auto_updated"
    assert [n.step for n in result.notifications] == ["pre-P14D"]
    assert len(outbox.messages) == 1
    assert result.closed_at is not None and result.closed_at < renewal - timedelta(days=3)


async def test_no_reminder_when_the_card_outlives_the_renewal(time_env: WorkflowEnvironment) -> None:
    outbox = SandboxOutbox()
    async with worker(time_env, outbox) as w:
        now = await time_env.get_current_time()
        renewal = renewal_after(now)
        valid = RenewalCard(payment_method_id="pm_ok", last4="1111", exp_month=12, exp_year=renewal.year + 3)
        handle = await start(time_env, w.task_queue, renewal, valid)
        result: CardExpiryStatus = await handle.result()
    assert result.ended == "card_outlives_renewal"
    assert result.notifications == [] and outbox.messages == []


async def test_a_redelivered_event_sends_nothing_twice(time_env: WorkflowEnvironment) -> None:
    outbox = SandboxOutbox()
    async with worker(time_env, outbox) as w:
        now = await time_env.get_current_time()
        renewal = renewal_after(now)
        card = card_expiring_before(renewal)
        handle = await start(time_env, w.task_queue, renewal, card)
        await asleep(handle)
        subscription = handle.id.removeprefix(contract.CARD_EXPIRY_ID_PREFIX)
        again = await start(time_env, w.task_queue, renewal, card, subscription)  # signal-with-start, same event id
        assert again.id == handle.id
        result: CardExpiryStatus = await handle.result()
    assert [n.step for n in result.notifications] == ["pre-P14D", "pre-P3D"]
    assert [e.event for e in result.timeline].count("duplicate_event") == 1
    assert len(outbox.messages) == 2
