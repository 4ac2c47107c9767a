"""A small simulation on the shared time-skipping server: the real workflow, the real ledger.

The report the simulator prints is read back from the ledger rows its cases wrote; the normal
reports leave those rows out and show them only when asked.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from dunning.experiments import Experiment
from dunning.policy import load_policies
from dunning.reports import recovery_report
from dunning.simulation import EXAMPLE, load_population
from runtime.ledger import DatabaseLedger, MemoryLedger
from runtime.settings import Settings
from starter.cli.simulate import plan_cases, run_simulation
from tests.helpers.database import sqlite_database

POLICIES = load_policies(EXAMPLE.parents[1] / "policies")


async def test_a_small_simulation_reports_exactly_its_ledger_rows(time_env: WorkflowEnvironment, tmp_path: Path) -> None:
    population = load_population(EXAMPLE).model_copy(update={"open_over_days": 3})
    plans = plan_cases(population, POLICIES, seed=11, cases=24)
    ledger = DatabaseLedger(sqlite_database(tmp_path))
    seen: list[tuple[float, float]] = []
    result = await run_simulation(
        plans, ledger, Settings(), env=time_env, task_queue=f"sim-{uuid.uuid4().hex[:8]}", progress=lambda d, t: seen.append((d, t))
    )

    assert not result.failed
    every = await ledger.report_rows(include_simulated=True)
    assert len(every) == len(plans) == result.report.cases
    assert {r.facts.subscription_id for r in every} == {p.customer.subscription_id for p in plans}
    assert result.report.recovered == sum(1 for r in every if r.recovered)
    assert result.report.closed == sum(1 for r in every if r.closed) == len(plans)  # every case ran to its end
    assert result.report.simulated_cases == len(plans)
    assert result.report.model_dump() == recovery_report(every, "decline_category").model_dump()
    # What the customers did is what moved their cases: a card update or a payment elsewhere is
    # the trigger only of a customer who did that, and only a customer who canceled closed it.
    by_plan = {p.customer.subscription_id: p for p in plans}
    for row in every:
        action = by_plan[row.facts.subscription_id].action
        kind = action.kind.value if action else None
        if row.facts.trigger in ("card_update", "paid_elsewhere"):
            assert kind == row.facts.trigger, row.facts
        if row.facts.outcome == "closed_by_customer":
            assert kind == "cancel", row.facts
    assert any(r.facts.trigger == "scheduled_retry" for r in every)

    # Normal reports and totals leave them out; asked, they are there and labelled.
    assert await ledger.report_rows() == []
    assert (await ledger.totals()).opened == 0
    assert (await ledger.totals(include_simulated=True)).opened == len(plans)
    assert recovery_report(every).simulated_cases == len(plans)

    assert result.cases_per_minute > 0 and result.wall_seconds > 0
    assert seen and seen[-1][0] >= seen[-1][1] - 1  # the progress reached the end


async def test_an_experiment_simulation_splits_by_the_real_arms(time_env: WorkflowEnvironment) -> None:
    experiment = Experiment(name="holdout-sim", applies_to="default", control="default", arms={"default": 1, "minimal": 1})
    plans = plan_cases(load_population(EXAMPLE), POLICIES, seed=5, cases=20, experiment=experiment)
    result = await run_simulation(
        plans, MemoryLedger(), Settings(), env=time_env, task_queue=f"sim-{uuid.uuid4().hex[:8]}", experiment=experiment
    )
    report = result.experiment_report
    assert report is not None and report.simulated
    assert {a.arm: a.cases for a in report.arms} == {
        arm: sum(1 for p in plans if p.arm == arm) for arm in ("default", "minimal")
    }
    assert sum(a.cases for a in report.arms) == 20
    assert {g.key for g in result.report.groups} <= {"holdout-sim:default", "holdout-sim:minimal"}
