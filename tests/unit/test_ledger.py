"""The ledger's facts (pure, from the case's rules) and its store on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from dunning.case import Case
from dunning.ledger import CaseFacts, Trigger
from dunning.models import CancelReason, CardUpdated, ChargeResult, CustomerFeedback, InvoicePaid, SubscriptionCanceled
from dunning.reports import ReportRow, percentile, recovery_report
from runtime import migrations
from runtime.database import Database
from tests.helpers import ledger_checks
from tests.helpers.case_harness import failure, make_policy
from tests.helpers.database import sqlite_database, write_legacy_consent_file

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def opened() -> Case:
    case = Case.open("dunning-sub_1", "sub_1", "cus_1", make_policy(), T0)
    case.payment_failed(failure(occurred_at=T0), T0)
    return case


def charge(case: Case, at: datetime, trigger: str, status: str = "declined") -> None:
    invoice = case.open_invoices()[0]
    request = case.charge_request(invoice)
    result = ChargeResult(invoice_id=invoice.invoice_id, status=status, decline_code="insufficient_funds" if status == "declined" else None)  # type: ignore[arg-type]
    case.record_charge(request, trigger, result, at)


def test_each_milestone_is_recorded_once_in_order() -> None:
    case = opened()
    first = case.ledger_record()
    assert first is not None
    assert [e.milestone for e in first.events] == ["opened", "failure:in_1:0"]
    assert case.ledger_record() is None  # nothing new
    charge(case, T0 + timedelta(days=1), "scheduled retry 1/6")
    second = case.ledger_record()
    assert second is not None and [e.milestone for e in second.events] == ["charge:in_1:1"]
    assert second.facts.seq == first.facts.seq + 1 and second.facts.charge_attempts == 1


def test_what_recovered_the_case() -> None:
    by_retry = opened()
    charge(by_retry, T0 + timedelta(days=1), "scheduled retry 1/6")
    charge(by_retry, T0 + timedelta(days=3), "scheduled retry 2/6", "succeeded")
    by_retry.recovered(T0 + timedelta(days=3))
    record = by_retry.ledger_record()
    assert record is not None
    assert (record.facts.trigger, record.facts.trigger_attempt, record.facts.hours_to_recover) == ("scheduled_retry", 2, 72.0)
    assert record.facts.recovered_amount == 4900 and record.events[-1].milestone == "closed"

    by_card = opened()
    by_card.card_updated(CardUpdated(payment_method_id="pm_new"), T0 + timedelta(hours=5))
    charge(by_card, T0 + timedelta(hours=5), "card updated", "succeeded")
    by_card.recovered(T0 + timedelta(hours=5))
    assert by_card.ledger_record().facts.trigger == Trigger.CARD_UPDATE  # type: ignore[union-attr]

    by_operator = opened()
    charge(by_operator, T0 + timedelta(hours=2), "operator: customer called", "succeeded")
    by_operator.recovered(T0 + timedelta(hours=2))
    assert by_operator.ledger_record().facts.trigger == Trigger.OPERATOR  # type: ignore[union-attr]

    elsewhere = opened()
    elsewhere.invoice_paid(InvoicePaid(invoice_id="in_1"), T0 + timedelta(days=2))
    elsewhere.recovered(T0 + timedelta(days=2))
    assert elsewhere.ledger_record().facts.trigger == Trigger.PAID_ELSEWHERE  # type: ignore[union-attr]


def test_the_customer_leaving_on_their_page_records_the_feedback() -> None:
    case = opened()
    feedback = CustomerFeedback(reason=CancelReason.NOT_USING, comment="we closed the shop")
    case.subscription_canceled(SubscriptionCanceled(source="customer", feedback=feedback), T0 + timedelta(days=1))
    from dunning.models import Stage

    case.close(Stage.CLOSED_BY_CUSTOMER, T0 + timedelta(days=1))
    record = case.ledger_record()
    assert record is not None
    assert [e.milestone for e in record.events][-2:] == ["customer_cancel", "closed"]
    assert (record.facts.feedback_reason, record.facts.feedback_comment) == ("not_using", "we closed the shop")
    assert record.facts.trigger is None


def _row(outcome: str | None, amount: int, currency: str = "eur", hours: float | None = None, **kw: object) -> ReportRow:
    base = ledger_checks.facts(case=f"{outcome}{amount}{hours}", amount=amount, currency=currency).model_dump()
    data = {**base, "outcome": outcome, "recovered_amount": amount if outcome == "recovered" else 0, "hours_to_recover": hours, **kw}
    return ReportRow(CaseFacts.model_validate(data))


def test_rates_by_count_and_amount_keep_open_cases_and_currencies_apart() -> None:
    rows = [
        _row("recovered", 1000, hours=10, trigger="scheduled_retry"),
        _row("recovered", 3000, "usd", hours=30, trigger="card_update"),
        _row("canceled", 5000),
        _row(None, 2000),  # still open: in the denominator
    ]
    report = recovery_report(rows, by="trigger")
    assert (report.cases, report.closed, report.recovered, report.recovery_rate) == (4, 3, 2, 0.5)
    assert report.recovered_amount == {"eur": 1000, "usd": 3000}
    assert report.amount_recovery_rate == {"eur": round(1000 / 8000, 4), "usd": 1.0}
    assert report.median_hours_to_recover == 20 and report.p90_hours_to_recover == 30
    assert list(report.contract_json()) == ["cases", "closed", "recovered", "recovery_rate", "recovered_amount", "median_hours_to_recover", "groups"]
    assert [g.key for g in report.groups] == ["none", "card_update", "scheduled_retry"]
    assert recovery_report([]).recovery_rate == 0.0 and recovery_report([]).median_hours_to_recover is None
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9) == 9


def test_store_on_sqlite(tmp_path: Path) -> None:
    ledger_checks.check_idempotent_and_ordered(sqlite_database(tmp_path, "a.sqlite3"))
    ledger_checks.check_customer_page_join_and_period(sqlite_database(tmp_path, "b.sqlite3"))
    ledger_checks.check_export_forget_and_prune(sqlite_database(tmp_path, "c.sqlite3"))


def test_migrations_from_todays_consent_file_reach_the_ledger(tmp_path: Path) -> None:
    """A deployment of today (consent file, no database yet) upgrades to the ledger in one start."""
    write_legacy_consent_file(tmp_path / "consent.sqlite3")
    database = Database(f"sqlite:///{tmp_path / 'dunning.sqlite3'}")
    assert migrations.upgrade(database, tmp_path) == migrations.head() == "0004"
    assert (tmp_path / "consent.sqlite3.migrated").exists()
    ledger_checks.check_idempotent_and_ordered(database)
