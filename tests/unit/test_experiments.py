"""experiments.toml: checked at start like a policy file; assignment deterministic and weighted."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from activities.policy_check import load_checked_policies
from dunning.experiments import Experiment, assign_arm, choose, load_experiments
from dunning.policy import SHIPPED_POLICY_DIR, PolicyError, load_policies

GOOD = """
[[experiment]]
name = "gentle-q1"
applies_to = "default"
control = "default"
arms = { default = 45, high_value = 45, minimal = 10 }
"""


def folder(tmp_path: Path, text: str) -> Path:
    for policy in ("default", "high_value", "minimal"):
        shutil.copy(SHIPPED_POLICY_DIR / f"{policy}.toml", tmp_path)
    (tmp_path / "experiments.toml").write_text(text)
    return tmp_path


def test_experiments_toml_is_no_policy_and_loads_beside_them(tmp_path: Path) -> None:
    directory = folder(tmp_path, GOOD)
    policies = load_policies(directory)
    assert "experiments" not in policies
    (experiment,) = load_experiments(directory, policies)
    assert experiment.arm_names == ["default", "high_value", "minimal"] and experiment.total_weight == 100
    assert load_checked_policies(directory).keys() == policies.keys()  # the start-up check reads it too


def test_no_file_no_experiments() -> None:
    assert load_experiments(SHIPPED_POLICY_DIR, load_policies()) == []


def test_the_minimal_holdout_ships_and_passes_the_policy_checks() -> None:
    minimal = load_checked_policies()["minimal"]
    assert {c for step in minimal.notify for c in step.channels} == {"email"}
    assert [d.days for d in minimal.retry_after] == [3, 8, 15]
    assert minimal.self_service_grace_limit == 0


@pytest.mark.parametrize(
    ("arms", "where", "why"),
    [
        ("{ default = 45, gentle = 55 }", "experiment.0.arms.gentle", "no policy 'gentle'"),
        ("{ default = 0, minimal = 10 }", "experiment.0.arms.default", "positive whole number"),
        ("{ default = 4.5, minimal = 10 }", "experiment.0.arms.default", "positive whole number"),
        ("{ default = true, minimal = 10 }", "experiment.0.arms.default", "positive whole number"),
        ("{ default = -3, minimal = 10 }", "experiment.0.arms.default", "positive whole number"),
        ("{ high_value = 5, minimal = 10 }", "experiment.0.control", "not one of the arms"),
        ("{ default = 5 }", "experiment.0.arms", "at least two arms"),
    ],
)
def test_a_bad_experiment_names_the_file_the_field_and_why(tmp_path: Path, arms: str, where: str, why: str) -> None:
    text = f'[[experiment]]\nname = "x"\napplies_to = "default"\ncontrol = "default"\narms = {arms}\n'
    with pytest.raises(PolicyError) as raised:
        load_checked_policies(folder(tmp_path, text))
    message = str(raised.value)
    assert str(tmp_path / "experiments.toml") in message and where in message and why in message


def test_two_experiments_on_one_policy_overlap(tmp_path: Path) -> None:
    second = GOOD.replace("gentle-q1", "gentle-q2")
    with pytest.raises(PolicyError, match=r"experiment\.1\.applies_to: 'default' is already taken by experiment\.0"):
        load_experiments(folder(tmp_path, GOOD + second), load_policies(tmp_path))


def test_unknown_applies_to_and_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"experiment\.0\.applies_to: no policy 'gold'"):
        load_experiments(folder(tmp_path, GOOD.replace('applies_to = "default"', 'applies_to = "gold"')), load_policies(tmp_path))
    with pytest.raises(PolicyError, match=r"experiment\.0\.weights"):
        load_experiments(folder(tmp_path, GOOD + "weights = 3\n"), load_policies(tmp_path))


EXPERIMENT = Experiment(name="gentle-q1", applies_to="default", control="default", arms={"default": 45, "gentle": 45, "holdout": 10})


def test_assignment_is_a_function_of_the_name_and_the_subscription() -> None:
    arms = [assign_arm(EXPERIMENT, f"sub_{n}") for n in range(200)]
    assert arms == [assign_arm(EXPERIMENT, f"sub_{n}") for n in range(200)]  # a redelivery, a second failure
    renamed = EXPERIMENT.model_copy(update={"name": "gentle-q2"})
    assert arms != [assign_arm(renamed, f"sub_{n}") for n in range(200)]  # a new experiment reshuffles
    assert assign_arm(EXPERIMENT, "sub_K1") == "gentle"  # pinned: a release must never move anyone


def test_weights_hold_within_binomial_bounds_over_10000_ids() -> None:
    n = 10_000
    counts = {arm: 0 for arm in EXPERIMENT.arms}
    for i in range(n):
        counts[assign_arm(EXPERIMENT, f"sub_{i:06d}")] += 1
    for arm, weight in EXPERIMENT.arms.items():
        p = weight / EXPERIMENT.total_weight
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts[arm] - n * p) < 4 * sd, (arm, counts)


def test_explicit_metadata_wins_over_the_experiment() -> None:
    policies = load_policies()
    experiment = Experiment(name="e", applies_to="default", control="default", arms={"default": 1, "minimal": 1})
    assert choose(policies, [experiment], "high_value", "sub_1").experiment is None
    chosen = choose(policies, [experiment], None, "sub_1")
    assert chosen.experiment == "e" and chosen.policy.name == chosen.arm
    unknown = choose(policies, [experiment], "gold", "sub_1")
    assert unknown.unknown_policy == "gold" and unknown.experiment == "e"  # falls back to default, which is in the experiment
    other = Experiment(name="e", applies_to="high_value", control="high_value", arms={"high_value": 1, "minimal": 1})
    assert choose(policies, [other], None, "sub_1").policy.name == "default"
