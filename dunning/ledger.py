"""The recovery ledger's facts: what a case records at its milestones, derived from its state.

Pure code. `Case.ledger_record` asks `new_record` for what happened since the case last recorded;
the workflow hands that to the `record_case` activity, which upserts it into the service's
database (`runtime/ledger.py`), keyed by the case and the milestone, so that a replayed or
retried activity writes each fact once. The reports (`dunning/reports.py`) read these facts back.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dunning.experiments import arm_label
from dunning.models import CaseState, Channel, LedgerProgress, NotificationRecord, Stage


#: Simulated cases (`dunning simulate`) are told apart by their subscription id alone: Stripe's
#: subscription ids always start `sub_`, so `sim_…` can never be a real one, and the tag needs no
#: new column (no migration). The arm column keeps the real `{experiment}:{arm}` label, so the
#: experiment report reads simulated arms exactly as live ones.
SIMULATED_PREFIX = "sim_"


def is_simulated(subscription_id: str) -> bool:
    return subscription_id.startswith(SIMULATED_PREFIX)


class Trigger(StrEnum):
    """The one event that made a recovered case's successful payment (DESIGN.md §2)."""

    SCHEDULED_RETRY = "scheduled_retry"
    CARD_UPDATE = "card_update"
    CUSTOMER_PAGE = "customer_page"
    PAID_ELSEWHERE = "paid_elsewhere"
    OPERATOR = "operator"


#: How `Case` and the workflow name a charge's trigger (AttemptRecord.trigger), by prefix.
_SCHEDULED = re.compile(r"^scheduled retry (\d+)")
_CARD_UPDATED = "card updated"
_OPERATOR = "operator"

#: Event messages that follow the outcome: never "the last message before recovery".
_AFTER_OUTCOME_STEPS = ("on-recovered", "on-canceled")


class _Fact(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaseFacts(_Fact):
    """The case as the ledger keeps it: one row per case, overwritten by later records (`seq`)."""

    case_id: str
    workflow_id: str
    subscription_id: str
    customer_id: str
    policy: str
    arm: str | None = Field(None, description="`{experiment}:{arm}` (dunning/experiments.py); None outside experiments")
    opened_at: datetime
    first_failed_at: datetime | None
    currency: str | None
    amount: int = Field(description="every invoice of the case, minor units")
    recovered_amount: int = Field(0, description="paid invoices of a recovered case, minor units")
    decline_category: str | None = Field(None, description="of the failure that opened the case")
    decline_code: str | None = None
    stage: str
    outcome: str | None = None
    closed_at: datetime | None = None
    trigger: str | None = Field(None, description="what recovered it: a Trigger (card_update before the page join)")
    trigger_attempt: int | None = Field(None, description="the retry's number when a scheduled retry recovered it")
    hours_to_recover: float | None = Field(None, description="first failure to recovery, in hours")
    last_template: str | None = Field(None, description="last message before recovery (or so far)")
    last_channel: str | None = None
    last_step: str | None = None
    charge_attempts: int = 0
    messages_sent: int = 0
    customer_extensions: int = 0
    feedback_reason: str | None = None
    feedback_comment: str | None = None
    seq: int = Field(0, description="the case's record number: a late retry never overwrites a newer row")


EventKind = Literal["opened", "failure", "charge", "message", "self_service", "suspended", "closed"]


class LedgerEvent(_Fact):
    """One milestone, written once per case and `milestone` key."""

    milestone: str
    kind: EventKind
    at: datetime
    status: str | None = Field(None, description="a charge's result, a message's status, the outcome")
    channel: str | None = None
    template: str | None = None
    step: str | None = None
    invoice_id: str | None = None
    attempt: int | None = None
    amount: int | None = None
    currency: str | None = None
    decline_code: str | None = None
    trigger: str | None = None
    detail: str | None = None


class CaseRecord(_Fact):
    """The `record_case` activity's argument: the case's facts now and its milestones since the last record."""

    facts: CaseFacts
    events: list[LedgerEvent] = []

    def summary(self) -> str:
        """How the record reads in the UI's event history."""
        kinds = [e.milestone for e in self.events]
        shown = ", ".join(kinds[:4]) + (f" +{len(kinds) - 4}" if len(kinds) > 4 else "")
        return f"ledger: {shown or 'case facts'}"


# --- derived facts ---------------------------------------------------------------------------


def recovery_trigger(state: CaseState) -> tuple[Trigger | None, int | None]:
    """What recovered the case (and the retry's number): the last successful charge's trigger;
    no successful charge of ours means the invoice was paid elsewhere."""
    if state.outcome is not Stage.RECOVERED:
        return None, None
    paid = [a for a in state.attempts if a.attempt > 0 and a.result.status == "succeeded"]
    if not paid:
        return Trigger.PAID_ELSEWHERE, None
    trigger = paid[-1].trigger
    if trigger.startswith(_OPERATOR):
        return Trigger.OPERATOR, None
    if trigger.startswith(_CARD_UPDATED):
        return Trigger.CARD_UPDATE, None
    scheduled = _SCHEDULED.match(trigger)
    return Trigger.SCHEDULED_RETRY, int(scheduled.group(1)) if scheduled else paid[-1].attempt


def last_message(state: CaseState) -> NotificationRecord | None:
    """The last message that reached the customer before the outcome (or so far): the last one
    sent by email or SMS, else the last in-app banner; event messages after the outcome don't count."""
    sent = [n for n in state.notifications if n.status == "sent" and n.step not in _AFTER_OUTCOME_STEPS]
    spoken = [n for n in sent if n.channel is not Channel.IN_APP]
    chosen = spoken or sent
    return chosen[-1] if chosen else None


def case_facts(state: CaseState, policy: str, seq: int) -> CaseFacts:
    first = state.invoices[0] if state.invoices else None
    opening = next((a for a in state.attempts if a.attempt == 0), None)
    trigger, trigger_attempt = recovery_trigger(state)
    last = last_message(state)
    recovered = state.outcome is Stage.RECOVERED
    hours = None
    if recovered and first is not None and state.closed_at is not None:
        hours = round((state.closed_at - first.failed_at).total_seconds() / 3600, 3)
    feedback = state.feedback
    return CaseFacts(
        case_id=state.case_id,
        workflow_id=state.case_id.split("@", 1)[0],
        subscription_id=state.subscription_id,
        customer_id=state.customer_id,
        policy=policy,
        arm=arm_label(state.experiment, state.arm) if state.experiment and state.arm else None,
        opened_at=state.opened_at,
        first_failed_at=first.failed_at if first else None,
        currency=first.currency if first else None,
        amount=sum(i.amount_due for i in state.invoices),
        recovered_amount=sum(i.amount_due for i in state.invoices if i.status == "paid") if recovered else 0,
        decline_category=opening.result.category.value if opening and opening.result.category else None,
        decline_code=(opening.result.decline_code or opening.result.code) if opening else None,
        stage=_stage(state),
        outcome=state.outcome.value if state.outcome else None,
        closed_at=state.closed_at,
        trigger=trigger.value if trigger else None,
        trigger_attempt=trigger_attempt,
        hours_to_recover=hours,
        last_template=last.template if last else None,
        last_channel=last.channel.value if last else None,
        last_step=last.step if last else None,
        charge_attempts=sum(1 for a in state.attempts if a.attempt > 0),
        messages_sent=sum(1 for n in state.notifications if n.status == "sent"),
        customer_extensions=state.customer_extensions,
        feedback_reason=feedback.reason.value if feedback else None,
        feedback_comment=feedback.comment if feedback else None,
        seq=seq,
    )


def _stage(state: CaseState) -> str:
    """The stage as far as the ledger tells it (the case's own `stage()` needs the policy)."""
    if state.outcome:
        return state.outcome.value
    if state.paused:
        return Stage.PAUSED.value
    if state.suspended_at:
        return Stage.SUSPENDED.value
    return Stage.AWAITING_PAYMENT_METHOD.value if state.card_blocked else Stage.RETRYING.value


def new_record(state: CaseState, progress: LedgerProgress, policy: str) -> CaseRecord | None:
    """The milestones reached since `progress`, which it moves on; None when there is nothing new."""
    if not state.invoices:
        return None
    events: list[LedgerEvent] = []
    if not progress.opened:
        events.append(LedgerEvent(milestone="opened", kind="opened", at=state.opened_at))
        progress.opened = True
    for attempt in state.attempts[progress.attempts :]:
        result = attempt.result
        invoice = next((i for i in state.invoices if i.invoice_id == attempt.invoice_id), None)
        first = attempt.attempt == 0
        events.append(
            LedgerEvent(
                milestone=f"{'failure' if first else 'charge'}:{attempt.invoice_id}:{attempt.attempt}",
                kind="failure" if first else "charge",
                at=attempt.at,
                status=result.status,
                invoice_id=attempt.invoice_id,
                attempt=attempt.attempt,
                amount=invoice.amount_due if invoice else None,
                currency=invoice.currency if invoice else None,
                decline_code=result.decline_code or result.code,
                trigger=attempt.trigger,
            )
        )
    progress.attempts = len(state.attempts)
    for index, note in enumerate(state.notifications[progress.notifications :], start=progress.notifications):
        events.append(
            LedgerEvent(
                milestone=f"message:{index}",
                kind="message",
                at=note.at,
                status=note.status,
                channel=note.channel.value,
                template=note.template,
                step=note.step,
                detail=note.reason,
            )
        )
    progress.notifications = len(state.notifications)
    for number in range(progress.extensions + 1, state.customer_extensions + 1):
        at = _last_timeline(state, "grace_extended") or state.opened_at
        events.append(LedgerEvent(milestone=f"more_time:{number}", kind="self_service", at=at, status="more_time"))
    progress.extensions = state.customer_extensions
    if state.suspended_at and not progress.suspended:
        events.append(LedgerEvent(milestone="suspended", kind="suspended", at=state.suspended_at))
        progress.suspended = True
    if state.outcome and state.closed_at and not progress.closed:
        if state.canceled_by_customer:
            feedback = state.feedback
            events.append(
                LedgerEvent(
                    milestone="customer_cancel",
                    kind="self_service",
                    at=state.closed_at,
                    status="cancel",
                    detail=feedback.reason.value if feedback else None,
                )
            )
        trigger, _ = recovery_trigger(state)
        events.append(
            LedgerEvent(
                milestone="closed",
                kind="closed",
                at=state.closed_at,
                status=state.outcome.value,
                trigger=trigger.value if trigger else None,
            )
        )
        progress.closed = True
    if not events:
        return None
    progress.seq += 1
    return CaseRecord(facts=case_facts(state, policy, progress.seq), events=events)


def _last_timeline(state: CaseState, event: str) -> datetime | None:
    return next((e.at for e in reversed(state.timeline) if e.event == event), None)
