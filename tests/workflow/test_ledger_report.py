"""The recovery ledger and its report over a known population of whole cases (time-skipping server).

Seven cases, each played out like Stripe, the customer and time would play it, written by the
real `record_case` activity into a migrated SQLite database, then reported on: exact counts,
rates, amounts, times and what recovered each one.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from dunning.ledger import CaseRecord
from dunning.models import CancelReason, CardUpdated, CustomerFeedback, InvoicePaid, Stage, SubscriptionCanceled
from dunning.reports import recovery_report
from runtime.database import DatabaseUnavailable
from runtime.ledger import DatabaseLedger, ledger_events
from runtime.links import customer_links
from tests.helpers.case_harness import CaseRunner, failure
from tests.helpers.database import sqlite_database
from tests.helpers.workers import eventually


async def _recorded(ledger: DatabaseLedger, case_id: str, milestone: str) -> bool:
    return any(e.milestone == milestone for e in await ledger.events(case_id))


async def test_report_over_a_known_population_of_cases(time_env, tmp_path):
    database = sqlite_database(tmp_path)
    ledger = DatabaseLedger(database)
    async with CaseRunner(time_env, ledger=ledger) as runner:
        pay = runner.payments
        # A: two scheduled retries fail, then the customer puts in a new card: card_update.
        pay.script_card("pm_a", ["insufficient_funds", "insufficient_funds"])
        a = await runner.open(failure("in_a", 4900, "eur", payment_method_id="pm_a"), customer_id="cus_a")
        # B: paid by hand in Stripe on day 2: paid_elsewhere.
        pay.script_card("pm_b", ["insufficient_funds"] * 10)
        b = await runner.open(failure("in_b", 2000, "eur", payment_method_id="pm_b"), customer_id="cus_b")
        # C: nothing ever works: suspended on day 14, canceled on day 44.
        pay.script_card("pm_c", ["insufficient_funds"] * 10)
        c = await runner.open(failure("in_c", 9900, "eur", payment_method_id="pm_c"), customer_id="cus_c")
        # E: hard decline; the customer clicks the update link on their page, then a new card: customer_page.
        e = await runner.open(
            failure("in_e", 3000, "usd", payment_method_id="pm_e", decline_code="expired_card"), customer_id="cus_e"
        )
        # F: the second scheduled retry succeeds: scheduled_retry, attempt 2.
        pay.script_card("pm_f", ["insufficient_funds", None])
        f = await runner.open(failure("in_f", 1200, "eur", payment_method_id="pm_f"), customer_id="cus_f")
        # G: the customer cancels on their page and says why: closed_by_customer.
        pay.script_card("pm_g", ["insufficient_funds"] * 10)
        g = await runner.open(failure("in_g", 5000, "eur", payment_method_id="pm_g"), customer_id="cus_g")

        await a.wait_days(1.5)  # every case's first retry (day 1) failed, F's too
        e_status = await e.status()
        clicked = e_status.opened_at + timedelta(days=1, hours=12)
        database.run(
            lambda db: db.execute(
                insert(customer_links).values(
                    link_id="link_e", case_id=e_status.case_id, workflow_id=e.handle.id, run_id="r",
                    customer_id="cus_e", created_at=e_status.opened_at, last_issued_at=clicked, update_clicked_at=clicked,
                )
            )
        )
        await e.signal("card_updated", CardUpdated(payment_method_id="pm_e_new", event_id="evt_e_card"))
        await g.signal(
            "subscription_canceled",
            SubscriptionCanceled(
                source="customer",
                event_id="evt_g_cancel",
                feedback=CustomerFeedback(reason=CancelReason.TOO_EXPENSIVE, comment="cheaper elsewhere"),
            ),
        )
        await b.wait_days(0.5)  # day 2
        await b.signal("invoice_paid", InvoicePaid(invoice_id="in_b", event_id="evt_b_paid"))
        await a.wait_days(2)  # day 4: A's second retry (day 3) failed too
        await a.signal("card_updated", CardUpdated(payment_method_id="pm_a_new", event_id="evt_a_card"))

        results = {name: await case.result() for name, case in {"a": a, "b": b, "e": e, "f": f, "g": g}.items()}
        results["c"] = await c.result()
        assert {n: s.stage for n, s in results.items()} == {
            "a": Stage.RECOVERED, "b": Stage.RECOVERED, "c": Stage.CANCELED, "e": Stage.RECOVERED,
            "f": Stage.RECOVERED, "g": Stage.CLOSED_BY_CUSTOMER,
        }  # fmt: skip
        # D: opened last, still open when the report runs.
        pay.script_card("pm_d", ["insufficient_funds"] * 10)
        d = await runner.open(failure("in_d", 1500, "usd", payment_method_id="pm_d"), customer_id="cus_d")
        d_status = await d.status()
        assert d_status.outcome is None
        await eventually(lambda: _recorded(ledger, d_status.case_id, "opened"), what="the open case's record")

    rows = await ledger.report_rows()
    report = recovery_report(rows, by="trigger")
    assert report.contract_json() == {
        "cases": 7,
        "closed": 6,
        "recovered": 4,
        "recovery_rate": 0.5714,
        "recovered_amount": {"eur": 4900 + 2000 + 1200, "usd": 3000},
        "median_hours_to_recover": report.median_hours_to_recover,
        "groups": [
            {"key": "none", "cases": 3, "closed": 2, "recovered": 0, "recovery_rate": 0.0, "recovered_amount": {}},
            {"key": "card_update", "cases": 1, "closed": 1, "recovered": 1, "recovery_rate": 1.0, "recovered_amount": {"eur": 4900}},
            {"key": "customer_page", "cases": 1, "closed": 1, "recovered": 1, "recovery_rate": 1.0, "recovered_amount": {"usd": 3000}},
            {"key": "paid_elsewhere", "cases": 1, "closed": 1, "recovered": 1, "recovery_rate": 1.0, "recovered_amount": {"eur": 2000}},
            {"key": "scheduled_retry", "cases": 1, "closed": 1, "recovered": 1, "recovery_rate": 1.0, "recovered_amount": {"eur": 1200}},
        ],
    }  # fmt: skip
    # Hours from the first failure: E 36, B 48, F 72 (retry 2 on day 3), A 96 (card on day 4).
    hours = sorted(r.facts.hours_to_recover for r in rows if r.recovered)
    assert hours == pytest.approx([36, 48, 72, 96], abs=0.1)
    assert report.median_hours_to_recover == pytest.approx(60, abs=0.1)
    assert report.p90_hours_to_recover == pytest.approx(96, abs=0.1)
    assert report.amount_recovery_rate == {"eur": round(8100 / (4900 + 2000 + 9900 + 1200 + 5000), 4), "usd": round(3000 / 4500, 4)}
    assert report.outcomes == {"canceled": 1, "closed_by_customer": 1, "open": 1, "recovered": 4}
    assert (report.involuntary_churn, report.closed_by_customer) == (1, 1)
    assert report.feedback == {"too_expensive": 1} and report.comments == ["cheaper elsewhere"]

    facts = {r.facts.customer_id: r.facts for r in rows}
    assert (facts["cus_a"].charge_attempts, facts["cus_a"].trigger) == (3, "card_update")
    assert (facts["cus_f"].trigger, facts["cus_f"].trigger_attempt) == ("scheduled_retry", 2)
    assert facts["cus_e"].decline_category == "hard" and facts["cus_a"].decline_category == "soft"
    # The last message before recovery: A heard the day-3 reminder by SMS (after the email).
    assert (facts["cus_a"].last_template, facts["cus_a"].last_channel) == ("reminder", "sms")
    assert (facts["cus_b"].last_template, facts["cus_b"].last_channel) == ("payment_failed", "email")
    assert facts["cus_d"].stage == "retrying" and facts["cus_d"].outcome is None

    by_step = {g.key: (g.cases, g.recovered) for g in recovery_report(rows, by="step").groups}
    assert by_step == {"payment_failed": (5, 3), "reminder": (1, 1), "suspended": (1, 0)}
    by_decline = {g.key: (g.cases, g.recovered) for g in recovery_report(rows, by="decline_category").groups}
    assert by_decline == {"soft": (6, 3), "hard": (1, 1)}

    # Every milestone once: C's six charges, nine messages, suspension and outcome.
    c_events = await ledger.events(results["c"].case_id)
    kinds = [ev.kind for ev in c_events]
    assert kinds.count("charge") == 6 and kinds.count("message") == 9
    assert kinds.count("suspended") == 1 and kinds.count("closed") == 1 and kinds.count("opened") == 1
    totals = await ledger.totals()
    assert totals.opened == 7
    assert totals.closed == {"recovered": 4, "canceled": 1, "closed_by_customer": 1}
    assert totals.recovered_amount == {"eur": 8100, "usd": 3000}


class FlakyLedger:
    """Fails the first `fail_first` writes (an outage), and writes but then fails the next
    `lose_answers` (the answer lost: the activity is retried after its write landed)."""

    def __init__(self, ledger: DatabaseLedger, fail_first: int = 0, lose_answers: int = 0) -> None:
        self.ledger, self.fail_first, self.lose_answers = ledger, fail_first, lose_answers
        self.calls = 0
        self.seen: list[int] = []

    async def record(self, record: CaseRecord) -> None:
        self.calls += 1
        self.seen.append(record.facts.seq)
        if self.fail_first > 0:
            self.fail_first -= 1
            raise DatabaseUnavailable("database unavailable: connection refused")
        await self.ledger.record(record)
        if self.lose_answers > 0:
            self.lose_answers -= 1
            raise DatabaseUnavailable("database unavailable: server closed the connection")


async def test_a_ledger_outage_never_holds_the_case_and_retries_write_each_fact_once(time_env, tmp_path):
    ledger = DatabaseLedger(sqlite_database(tmp_path))
    # The time-skipping server waits out an activity's retry backoff in real time: keep it short.
    flaky = FlakyLedger(ledger, fail_first=1, lose_answers=1)
    async with CaseRunner(time_env, ledger=flaky) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds", "insufficient_funds", None])
        case = await runner.open()
        status = await case.result()
    assert status.stage is Stage.RECOVERED
    # The case kept its schedule through the outage: retries on days 1, 3 and 5.
    assert [day for day, *_ in case.charges()] == [1.0, 3.0, 5.0]
    assert flaky.calls == len(set(flaky.seen)) + 2
    events = await ledger.events(status.case_id)
    milestones = [e.milestone for e in events]
    assert len(milestones) == len(set(milestones))
    assert milestones.count("closed") == 1 and sum(1 for e in events if e.kind == "charge") == 3
    rows = await ledger.report_rows()
    assert [(r.facts.outcome, r.facts.trigger, r.facts.trigger_attempt) for r in rows] == [("recovered", "scheduled_retry", 3)]
    assert not [t for t in status.timeline if t.event == "ledger_failed"]
    count = ledger.database.run(lambda db: len(db.execute(select(ledger_events.c.milestone)).all()))
    assert count == len(milestones)
