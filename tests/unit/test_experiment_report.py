"""The experiment report and its verdict, on drawn outcomes (fixed seeds, no workflows)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from dunning.experiment_report import Tally, decide, experiment_report, planned_cases_per_arm
from dunning.experiments import Experiment, arm_label
from dunning.ledger import CaseFacts
from dunning.reports import ReportRow

AB = Experiment(
    name="ab", applies_to="default", control="default", arms={"default": 1, "gentle": 1},
    baseline_rate=0.5, minimum_detectable_effect=0.1,
)
START = datetime(2025, 1, 6, tzinfo=UTC)


def row(arm: str, n: int, recovered: bool | None, experiment: str = "ab") -> ReportRow:
    outcome = None if recovered is None else ("recovered" if recovered else "canceled")
    facts = CaseFacts(
        case_id=f"dunning-sub_{arm}_{n}@x", workflow_id=f"dunning-sub_{arm}_{n}", subscription_id=f"sub_{arm}_{n}",
        customer_id="cus", policy=arm, arm=arm_label(experiment, arm), opened_at=START + timedelta(minutes=n),
        first_failed_at=START, currency="eur", amount=1000, recovered_amount=1000 if recovered else 0,
        stage=outcome or "retrying", outcome=outcome,
    )
    return ReportRow(facts)


def drawn_rows(rng: random.Random, rates: dict[str, float], per_arm: int) -> list[ReportRow]:
    return [row(arm, i, rng.random() < p) for arm, p in rates.items() for i in range(per_arm)]


def draw(rng: random.Random, p: float, n: int) -> Tally:
    return Tally(sum(1 for _ in range(n) if rng.random() < p), n)


def band(p: float, runs: int, sds: float = 4) -> tuple[float, float]:
    half = sds * math.sqrt(p * (1 - p) / runs)
    return p - half, p + half


def test_the_report_has_the_contract_shape() -> None:
    report = experiment_report(AB, drawn_rows(random.Random(1), {"default": 0.5, "gentle": 0.6}, 50))
    body = report.contract_json()
    assert list(body) == ["name", "arms", "sample_ratio_p", "verdict"]
    assert [a["arm"] for a in body["arms"]] == ["default", "gentle"]  # the control first
    assert list(body["arms"][1]) == ["arm", "policy", "cases", "closed", "recovered", "recovery_rate", "ci95", "lift_vs_control", "lift_ci95"]
    control, gentle = body["arms"]
    assert control["lift_vs_control"] is None and gentle["lift_vs_control"] == round(gentle["recovery_rate"] - control["recovery_rate"], 4)
    assert gentle["ci95"][0] < gentle["recovery_rate"] < gentle["ci95"][1]
    assert body["sample_ratio_p"] == 1.0 and body["verdict"] == "too_early"


def test_a_true_difference_is_better_at_the_planned_sample_and_too_early_below_it() -> None:
    n = planned_cases_per_arm(AB)
    assert n == 388
    rows = drawn_rows(random.Random(7), {"default": 0.5, "gentle": 0.65}, n)
    assert experiment_report(AB, rows).verdict == "better"
    short = [r for r in rows if int(r.facts.subscription_id.rsplit("_", 1)[1]) < n - 1]
    assert experiment_report(AB, short).verdict == "too_early"
    # Every planned case must have closed: one still open holds the verdict back.
    still_open = [*rows[:-1], row("gentle", n - 1, None)]
    assert experiment_report(AB, still_open).verdict == "too_early"
    # Cases beyond the planned sample never change a verdict taken (no peeking).
    later = drawn_rows(random.Random(8), {"default": 0.9, "gentle": 0.1}, 2 * n)[n:]
    extra = [row(r.facts.policy, int(r.facts.subscription_id.rsplit("_", 1)[1]) + n, r.recovered) for r in later]
    assert experiment_report(AB, rows + extra).verdict == "better"


def test_power_at_the_minimum_detectable_effect_is_about_80_percent() -> None:
    rng, runs, n = random.Random(11), 300, planned_cases_per_arm(AB)
    found = sum(decide(AB, {"default": draw(rng, 0.5, n), "gentle": draw(rng, 0.6, n)})[0] == "better" for _ in range(runs))
    low, high = band(0.8, runs)
    assert low <= found / runs <= high, found / runs


def test_a_and_a_experiments_come_out_different_at_about_alpha() -> None:
    rng, runs, n = random.Random(3), 2000, planned_cases_per_arm(AB)
    verdicts = [decide(AB, {"default": draw(rng, 0.5, n), "gentle": draw(rng, 0.5, n)})[0] for _ in range(runs)]
    wrong = sum(v in ("better", "worse") for v in verdicts) / runs
    low, high = band(0.05, runs)
    assert low <= wrong <= high, wrong
    assert {"better", "worse", "no_difference"} >= set(verdicts)


def test_a_sample_ratio_mismatch_shows() -> None:
    rows = drawn_rows(random.Random(5), {"default": 0.5}, 600) + drawn_rows(random.Random(6), {"gentle": 0.5}, 400)
    report = experiment_report(AB, rows)
    assert report.sample_ratio_p is not None and report.sample_ratio_p < 0.001 and report.sample_ratio_mismatch


def test_only_this_experiments_arms_count() -> None:
    rows = drawn_rows(random.Random(1), {"default": 0.5, "gentle": 0.6}, 10) + [row("default", 99, True, experiment="other")]
    report = experiment_report(AB, rows)
    assert [a.cases for a in report.arms] == [10, 10]
    assert report.arms[0].amount_recovery_rate["eur"] == report.arms[0].recovery_rate
