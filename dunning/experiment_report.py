"""Which policy wins: the report of one experiment over the ledger's cases (pure).

Per arm: cases, closed, recovered, the recovery rate by count (the cohort definition of
docs/analytics.md: cases still open stay in the denominator) with its Wilson 95 % interval, and
the lift over the control (the difference of rates, arm − control) with Newcombe's hybrid score
interval. The sample ratio is checked by a chi-square goodness-of-fit test against the weights.

The verdict follows a fixed-horizon design (docs/analytics.md, "Experiments"): the planned sample
per arm comes from the experiment's baseline rate and minimum detectable effect at α = 0.05
(Bonferroni-split over the comparisons with the control) and power 0.8. It is `too_early` until
every arm has that many cases *and* all of them have closed; then it is decided once, on exactly
the first planned cases of each arm (by opening), so looking at the report every day never
changes it (no peeking). `GET /v1/reports/experiments/{name}`, `dunning experiments report` and
the dashboard all call `experiment_report`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from dunning.experiments import Experiment, arm_label
from dunning.reports import ReportRow, rate
from dunning.stats import goodness_of_fit_p, newcombe_difference, planned_per_group, wilson, z_for

Verdict = Literal["too_early", "no_difference", "better", "worse"]
ALPHA = 0.05
POWER = 0.8
#: Below this `sample_ratio_p` the assignment is suspect (cases lost or double-counted in one arm).
SAMPLE_RATIO_ALARM = 0.001

CONTRACT_ARM_KEYS = ("arm", "policy", "cases", "closed", "recovered", "recovery_rate", "ci95", "lift_vs_control", "lift_ci95")


class ArmReport(BaseModel):
    arm: str
    policy: str
    cases: int
    closed: int
    recovered: int
    recovery_rate: float
    ci95: tuple[float, float]
    lift_vs_control: float | None
    lift_ci95: tuple[float, float] | None
    # Beyond the contract (CLI --json, dashboard):
    weight: int = 0
    amount_recovery_rate: dict[str, float] = {}


class ExperimentReport(BaseModel):
    name: str
    arms: list[ArmReport]
    sample_ratio_p: float | None
    verdict: Verdict
    # Beyond the contract:
    applies_to: str = ""
    control: str = ""
    planned_per_arm: int = 0
    settled_in_plan: dict[str, int] = {}
    """Per arm: of its first `planned_per_arm` cases, how many have closed."""
    sample_ratio_mismatch: bool = False
    decided_on: dict[str, tuple[int, int]] = {}
    """Once decided: per arm, (recovered, cases) of the planned sample the verdict was taken on."""
    simulated: bool = False

    def contract_json(self) -> dict[str, Any]:
        """Exactly the contract's JSON (DESIGN.md §2, `GET /v1/reports/experiments/{name}`)."""
        full = self.model_dump(mode="json")
        arms = [{k: arm[k] for k in CONTRACT_ARM_KEYS} for arm in full["arms"]]
        return {"name": full["name"], "arms": arms, "sample_ratio_p": full["sample_ratio_p"], "verdict": full["verdict"]}


def planned_cases_per_arm(experiment: Experiment) -> int:
    """The fixed horizon: cases per arm to find the minimum detectable effect over the baseline
    with power 0.8 at α = 0.05, split (Bonferroni) over the arms compared with the control."""
    comparisons = max(len(experiment.arms) - 1, 1)
    return planned_per_group(experiment.baseline_rate, experiment.minimum_detectable_effect, ALPHA / comparisons, POWER)


@dataclass(frozen=True)
class Tally:
    recovered: int
    cases: int


def decide(experiment: Experiment, planned: dict[str, Tally | None]) -> tuple[Verdict, str | None]:
    """The verdict on the planned samples (None for an arm whose planned sample is not complete
    and settled), and the arm it is about: the best of the other arms against the control."""
    if any(tally is None for tally in planned.values()):
        return "too_early", None
    tallies = {arm: tally for arm, tally in planned.items() if tally is not None}
    control = tallies[experiment.control]
    others = [arm for arm in experiment.arm_names if arm != experiment.control]
    best = max(others, key=lambda arm: (tallies[arm].recovered / tallies[arm].cases, -others.index(arm)))
    z = z_for(ALPHA / max(len(others), 1))
    lower, upper = newcombe_difference(tallies[best].recovered, tallies[best].cases, control.recovered, control.cases, z)
    if lower > 0:
        return "better", best
    if upper < 0:
        return "worse", best
    return "no_difference", best


def experiment_report(experiment: Experiment, rows: Sequence[ReportRow], *, simulated: bool = False) -> ExperimentReport:
    """The report over the experiment's cases among `rows` (those whose arm label is one of its arms)."""
    by_arm: dict[str, list[ReportRow]] = {arm: [] for arm in experiment.arm_names}
    labels = {arm_label(experiment.name, arm): arm for arm in experiment.arm_names}
    for row in rows:
        arm = labels.get(row.facts.arm or "")
        if arm is not None:
            by_arm[arm].append(row)
    control_rows = by_arm[experiment.control]
    control_recovered = sum(1 for r in control_rows if r.recovered)
    arms: list[ArmReport] = []
    for arm in experiment.arm_names:
        members = by_arm[arm]
        recovered = sum(1 for r in members if r.recovered)
        lift: float | None = None
        lift_ci: tuple[float, float] | None = None
        if arm != experiment.control and members and control_rows:
            lift = round(recovered / len(members) - control_recovered / len(control_rows), 4)
            lo, hi = newcombe_difference(recovered, len(members), control_recovered, len(control_rows))
            lift_ci = (round(lo, 4), round(hi, 4))
        lo, hi = wilson(recovered, len(members))
        arms.append(
            ArmReport(
                arm=arm,
                policy=arm,
                cases=len(members),
                closed=sum(1 for r in members if r.closed),
                recovered=recovered,
                recovery_rate=rate(recovered, len(members)),
                ci95=(round(lo, 4), round(hi, 4)),
                lift_vs_control=lift,
                lift_ci95=lift_ci,
                weight=experiment.arms[arm],
                amount_recovery_rate=_amount_rates(members),
            )
        )
    planned_n = planned_cases_per_arm(experiment)
    planned: dict[str, Tally | None] = {}
    settled: dict[str, int] = {}
    for arm, members in by_arm.items():
        first = sorted(members, key=lambda r: (r.facts.opened_at, r.facts.case_id))[:planned_n]
        settled[arm] = sum(1 for r in first if r.closed)
        complete = len(first) == planned_n and settled[arm] == planned_n
        planned[arm] = Tally(sum(1 for r in first if r.recovered), planned_n) if complete else None
    verdict, _ = decide(experiment, planned)
    sample_ratio_p = goodness_of_fit_p([len(by_arm[a]) for a in experiment.arm_names], [experiment.arms[a] for a in experiment.arm_names])
    return ExperimentReport(
        name=experiment.name,
        arms=arms,
        sample_ratio_p=round(sample_ratio_p, 6) if sample_ratio_p is not None else None,
        verdict=verdict,
        applies_to=experiment.applies_to,
        control=experiment.control,
        planned_per_arm=planned_n,
        settled_in_plan=settled,
        sample_ratio_mismatch=sample_ratio_p is not None and sample_ratio_p < SAMPLE_RATIO_ALARM,
        decided_on={a: (t.recovered, t.cases) for a, t in planned.items() if t is not None} if verdict != "too_early" else {},
        simulated=simulated,
    )


def includes_simulated(experiment: Experiment, rows: Sequence[ReportRow]) -> bool:
    """Whether any of the experiment's cases among `rows` is simulated (`dunning simulate`): its
    report is then labelled SIMULATED."""
    labels = {arm_label(experiment.name, arm) for arm in experiment.arms}
    return any(row.simulated and row.facts.arm in labels for row in rows)


def _amount_rates(rows: Sequence[ReportRow]) -> dict[str, float]:
    """Recovery rate by amount, per currency (never across currencies)."""
    opened: Counter[str] = Counter()
    recovered: Counter[str] = Counter()
    for row in rows:
        currency = (row.facts.currency or "").lower()
        if currency:
            opened[currency] += row.facts.amount
            recovered[currency] += row.facts.recovered_amount if row.recovered else 0
    return {c: rate(recovered[c], amount) for c, amount in sorted(opened.items())}
