"""The population file and the simulator's draws: checked like a policy file, the same for a seed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dunning.experiments import Experiment, arm_label, assign_arm
from dunning.ledger import CaseFacts, CaseRecord, LedgerEvent
from dunning.models import DeclineCategory
from dunning.policy import load_policies
from dunning.reports import ReportRow, recovery_report
from dunning.simulation import (
    EXAMPLE,
    NEVER_PAYS,
    ActionKind,
    PopulationError,
    draw_action,
    draw_customer,
    draw_population,
    horizon_days,
    ladder_days,
    load_population,
    parse_population,
)
from runtime.ledger import DatabaseLedger, MemoryLedger, totals_of
from starter.cli.simulate import plan_cases
from tests.helpers.database import sqlite_database

MINIMAL = {"cases": 10, "declines": {"insufficient_funds": 1}, "amounts": [{"amount": 4900, "currency": "eur"}], "timezones": {"UTC": 1}}
POLICIES = load_policies(EXAMPLE.parents[1] / "policies")


def problems(**changes: object) -> str:
    with pytest.raises(PopulationError) as caught:
        parse_population({**MINIMAL, **changes}, "pop.toml")
    return str(caught.value)


def test_the_shipped_example_is_valid_and_documents_every_field() -> None:
    population = load_population(EXAMPLE)
    text = EXAMPLE.read_text()
    assert population.cases > 0 and population.open_over_days == 30
    for name in ("cases", "open_over_days", "retry_success", "[declines]", "[[amounts]]", "[timezones]", "[daily]", "read_message"):
        assert name in text


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"declines": {"insuficient_funds": 3}}, "pop.toml: declines: 'insuficient_funds': not a decline code the classifier knows"),
        ({"declines": {"insufficient_funds": 0}}, "declines.insufficient_funds: must be a positive whole number, not 0"),
        ({"timezones": {"Mars/Olympus": 1}}, "timezones: 'Mars/Olympus' is not an IANA time zone"),
        ({"amounts": [{"amount": 4900, "currency": "EUR"}]}, "amounts.0.currency: String should match pattern"),
        ({"amounts": [{"amount": 0, "currency": "eur"}]}, "amounts.0.amount: Input should be greater than 0"),
        ({"daily": {"card_update_when_read": 0.9, "paid_elsewhere": 0.2}}, "daily: card_update_when_read + paid_elsewhere + cancel is 1.1"),
        ({"daily": {"read_message": 1.5}}, "daily.read_message: Input should be less than or equal to 1"),
        ({"retry_succes": 0.2}, "retry_succes: Extra inputs are not permitted"),
        ({"cases": 0}, "cases: Input should be greater than 0"),
    ],
)
def test_a_bad_population_names_the_field_and_why(changes: dict[str, object], expected: str) -> None:
    assert expected in problems(**changes)


def test_a_missing_field_and_a_broken_file_are_named(tmp_path: Path) -> None:
    raw = dict(MINIMAL)
    del raw["declines"]
    with pytest.raises(PopulationError, match="pop.toml: declines: missing"):
        parse_population(raw, "pop.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("cases = \n")
    with pytest.raises(PopulationError, match="broken.toml: not valid TOML"):
        load_population(broken)


def test_draws_are_the_same_for_a_seed_and_differ_between_seeds() -> None:
    population = load_population(EXAMPLE)
    assert draw_population(population, 7, 30) == draw_population(population, 7, 30)
    assert draw_population(population, 7, 30) != draw_population(population, 8, 30)
    days = ladder_days(POLICIES["default"])
    actions = [draw_action(population, 7, n, days, 45) for n in range(30)]
    assert actions == [draw_action(population, 7, n, days, 45) for n in range(30)]
    # A customer is who they are whatever the case count asked.
    assert draw_population(population, 7, 5) == draw_population(population, 7, 30)[:5]


def test_customers_follow_the_mix_and_carry_the_simulation_tag() -> None:
    population = parse_population({**MINIMAL, "declines": {"insufficient_funds": 1, "expired_card": 1, "authentication_required": 1}})
    customers = draw_population(population, 1, 300)
    categories = {c.category for c in customers}
    assert categories == {DeclineCategory.SOFT, DeclineCategory.HARD, DeclineCategory.AUTHENTICATION}
    assert all(c.subscription_id.startswith("sim_") and c.customer_id == f"cus_{c.subscription_id}" for c in customers)
    assert len({c.subscription_id for c in customers}) == 300
    # Hard and authentication declines never pay on the card on file; soft ones pay after a few retries.
    assert all(c.retry_declines == NEVER_PAYS for c in customers if c.category != DeclineCategory.SOFT)
    soft = [c.retry_declines for c in customers if c.category == DeclineCategory.SOFT]
    assert 0 in soft and max(soft) < NEVER_PAYS


def test_reading_a_message_raises_the_update_chance_that_day() -> None:
    reader = parse_population({**MINIMAL, "daily": {"card_update": 0, "card_update_when_read": 1, "read_message": 1, "paid_elsewhere": 0, "cancel": 0}})
    action = draw_action(reader, 1, 0, frozenset({3, 10}), 45)
    assert action is not None and action.kind == ActionKind.CARD_UPDATE and action.read_message
    assert timedelta(days=3) < action.after < timedelta(days=4)
    # Nobody reads: nobody updates, since the update chance without a message is 0.
    assert draw_action(reader.model_copy(update={"daily": reader.daily.model_copy(update={"read_message": 0})}), 1, 0, frozenset({3}), 45) is None
    # No message day within the horizon: nothing either.
    assert draw_action(reader, 1, 0, frozenset({50}), 45) is None


def test_the_policy_gives_the_days_it_writes_and_the_horizon() -> None:
    default = POLICIES["default"]
    assert 0 in ladder_days(default)
    assert horizon_days(default) == 45  # grace P14D + P30D before cancellation, and the last day


def test_experiment_arms_come_from_the_real_assignment() -> None:
    experiment = Experiment(name="holdout", applies_to="default", control="default", arms={"default": 1, "minimal": 1})
    plans = plan_cases(load_population(EXAMPLE), POLICIES, seed=3, cases=40, experiment=experiment)
    assert {p.arm for p in plans} == {"default", "minimal"}
    for plan in plans:
        assert plan.arm == assign_arm(experiment, plan.customer.subscription_id) == plan.policy.name
        assert plan.experiment == "holdout"
    assert all(p.policy.name == "high_value" for p in plan_cases(load_population(EXAMPLE), POLICIES, seed=3, cases=5, policy="high_value"))


T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def facts(subscription_id: str, outcome: str | None = "recovered") -> CaseFacts:
    return CaseFacts(
        case_id=f"dunning-{subscription_id}@1",
        workflow_id=f"dunning-{subscription_id}",
        subscription_id=subscription_id,
        customer_id=f"cus_{subscription_id}",
        policy="default",
        arm=arm_label("holdout", "default"),
        opened_at=T0,
        first_failed_at=T0,
        currency="eur",
        amount=4900,
        recovered_amount=4900 if outcome == "recovered" else 0,
        stage=outcome or "retrying",
        outcome=outcome,
        seq=1,
    )


def charge(subscription_id: str) -> LedgerEvent:
    return LedgerEvent(milestone="charge/1", kind="charge", at=T0, status="succeeded")


@pytest.mark.parametrize("where", ["memory", "sqlite"])
def test_reports_and_totals_leave_simulated_cases_out_unless_asked(where: str, tmp_path: Path) -> None:
    ledger = MemoryLedger() if where == "memory" else DatabaseLedger(sqlite_database(tmp_path))

    async def fill() -> None:
        for sub in ("sub_real", "sim_1_000000", "sim_1_000001"):
            await ledger.record(CaseRecord(facts=facts(sub), events=[charge(sub)]))

    asyncio.run(fill())
    real = asyncio.run(ledger.report_rows())
    every = asyncio.run(ledger.report_rows(include_simulated=True))
    assert [r.facts.subscription_id for r in real] == ["sub_real"]
    assert len(every) == 3 and sum(r.simulated for r in every) == 2
    assert recovery_report(every).simulated_cases == 2 and recovery_report(real).simulated_cases == 0
    assert asyncio.run(ledger.totals()).opened == 1
    everything = asyncio.run(ledger.totals(include_simulated=True))
    assert everything.opened == 3 and everything.charge_attempts == {"succeeded": 3}
    assert asyncio.run(ledger.totals()).charge_attempts == {"succeeded": 1}
    if isinstance(ledger, DatabaseLedger):
        assert ledger.database.run(totals_of).opened == 1
        # `_` in `sim_` is literal: a subscription `simX…` is not simulated.
        asyncio.run(ledger.record(CaseRecord(facts=facts("simX1"), events=[])))
        assert len(asyncio.run(ledger.report_rows())) == 2


def test_a_report_row_knows_a_simulated_case() -> None:
    assert ReportRow(facts("sim_1_000000")).simulated and not ReportRow(facts("sub_1")).simulated


def test_an_experiment_is_labelled_simulated_only_by_its_own_simulated_cases() -> None:
    from dunning.experiment_report import includes_simulated

    experiment = Experiment(name="holdout", applies_to="default", control="default", arms={"default": 1, "minimal": 1})
    other = facts("sim_1_000000").model_copy(update={"arm": "other:default"})
    assert not includes_simulated(experiment, [ReportRow(facts("sub_1")), ReportRow(other)])
    assert includes_simulated(experiment, [ReportRow(facts("sim_1_000001"))])
