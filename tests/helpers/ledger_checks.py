"""The recovery ledger's store, checked the same way on SQLite (unit tier) and PostgreSQL (integration)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select

from dunning.ledger import CaseFacts, CaseRecord, LedgerEvent
from runtime.consent import DatabaseConsentStore
from runtime.customer_data import export_customer, forget_customer
from runtime.database import Database
from runtime.ledger import DatabaseLedger, ledger_cases, ledger_events
from runtime.links import customer_links

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def facts(case: str = "c1", customer: str = "cus_1", seq: int = 1, **changes: object) -> CaseFacts:
    base: dict[str, object] = {
        "case_id": f"dunning-sub_{case}@20261102T090000Z",
        "workflow_id": f"dunning-sub_{case}",
        "subscription_id": f"sub_{case}",
        "customer_id": customer,
        "policy": "default",
        "opened_at": T0,
        "first_failed_at": T0,
        "currency": "eur",
        "amount": 4900,
        "decline_category": "soft",
        "decline_code": "insufficient_funds",
        "stage": "retrying",
        "seq": seq,
    }
    return CaseFacts.model_validate({**base, **changes})


def event(milestone: str, kind: str = "charge", **changes: object) -> LedgerEvent:
    return LedgerEvent.model_validate({"milestone": milestone, "kind": kind, "at": T0, **changes})


def recovered(case: str = "c1", customer: str = "cus_1", seq: int = 3) -> CaseRecord:
    return CaseRecord(
        facts=facts(
            case, customer, seq, stage="recovered", outcome="recovered", closed_at=T0 + timedelta(days=3),
            recovered_amount=4900, trigger="card_update", hours_to_recover=72.0,
            feedback_reason=None, last_template="reminder", last_channel="email", last_step="step-1",
        ),
        events=[event("charge:in_1:2", status="succeeded"), event("closed", "closed", status="recovered")],
    )  # fmt: skip


def count(database: Database, table: object) -> int:
    return int(database.run(lambda db: db.scalar(select(func.count()).select_from(table))) or 0)


def check_idempotent_and_ordered(database: Database) -> None:
    """A retried record writes once; an older record arriving late never overwrites a newer one."""
    ledger = DatabaseLedger(database)
    opened = CaseRecord(facts=facts(seq=1), events=[event("opened", "opened"), event("charge:in_1:1", status="declined")])

    async def go() -> None:
        await ledger.record(opened)
        await ledger.record(recovered())
        await ledger.record(recovered())  # the activity retried after its write landed
        await ledger.record(opened)  # a late retry of an older record
        # two workers running the same record at once
        await asyncio.gather(*(ledger.record(recovered()) for _ in range(4)))

    asyncio.run(go())
    assert count(database, ledger_cases) == 1
    assert count(database, ledger_events) == 4
    rows = asyncio.run(ledger.report_rows())
    assert [(r.facts.outcome, r.facts.trigger, r.facts.seq) for r in rows] == [("recovered", "card_update", 3)]
    totals = asyncio.run(ledger.totals())
    assert (totals.opened, totals.closed, totals.recovered_amount) == (1, {"recovered": 1}, {"eur": 4900})
    assert totals.charge_attempts == {"declined": 1, "succeeded": 1}


def check_customer_page_join_and_period(database: Database) -> None:
    """A card update after the customer clicked the page's update link reads `customer_page`."""
    ledger = DatabaseLedger(database)
    asyncio.run(ledger.record(recovered("c2", "cus_2")))
    later = facts("c3", "cus_3", opened_at=T0 + timedelta(days=10))
    asyncio.run(ledger.record(CaseRecord(facts=later, events=[event("opened", "opened")])))
    database.run(
        lambda db: db.execute(
            insert(customer_links).values(
                link_id="l2", case_id=facts("c2").case_id, workflow_id="dunning-sub_c2", run_id="r", customer_id="cus_2",
                created_at=T0, last_issued_at=T0, update_clicked_at=T0 + timedelta(days=2),
            )
        )
    )  # fmt: skip
    rows = asyncio.run(ledger.report_rows(T0.date(), T0.date() + timedelta(days=9)))
    assert [(r.facts.customer_id, r.trigger) for r in rows if r.facts.customer_id in ("cus_2", "cus_3")] == [
        ("cus_2", "customer_page")
    ]
    assert len(asyncio.run(ledger.report_rows(T0.date() + timedelta(days=10)))) == 1


def check_export_forget_and_prune(database: Database) -> None:
    ledger = DatabaseLedger(database)
    customer = "cus_gone"
    record = recovered("c9", customer)
    record.facts.feedback_comment = "too pricey"
    asyncio.run(ledger.record(record))
    asyncio.run(DatabaseConsentStore(database).set_sms_opt_out(customer, True, source="sms:STOP"))
    exported = export_customer(database, customer)
    assert exported["customer_id"] == customer
    assert len(exported["tables"]["ledger_cases"]) == 1 and len(exported["tables"]["ledger_events"]) == 2
    assert exported["tables"]["sms_consent"][0]["opted_out"] is True
    assert exported["tables"]["ledger_cases"][0]["feedback_comment"] == "too pricey"

    # Retention: a comment older than the setting is blanked, the reason stays.
    assert ledger.prune_feedback_comments(timedelta(days=30), now=T0 + timedelta(days=10)) == 0
    assert ledger.prune_feedback_comments(timedelta(days=30), now=T0 + timedelta(days=40)) >= 1
    assert export_customer(database, customer)["tables"]["ledger_cases"][0]["feedback_comment"] is None

    gone = forget_customer(database, customer)
    assert gone["ledger_cases"] == 1 and gone["ledger_events"] == 2 and gone["sms_consent"] == 1
    assert all(rows == [] for rows in export_customer(database, customer)["tables"].values())
