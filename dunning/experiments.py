"""Experiments: which policy wins, measured on live cases with a hold-out (pure code).

`experiments.toml`, beside the policies, lists the running experiments (DESIGN.md §2):

```toml
[[experiment]]
name = "gentle-q1"
applies_to = "default"                        # subscriptions that would get this policy
control = "default"                           # the arm the others are compared with
arms = { default = 45, gentle = 45, holdout = 10 }   # arm = a policy name, and its weight
```

A subscription's arm is a deterministic function of the experiment's name and the subscription
id (`assign_arm`): SHA-256 of `"{experiment}:{subscription}"`, read as a number, falls into a
bucket of the weights. A redelivered webhook, `dunning reconcile` and a second failure after the
case closed all land the subscription in the same arm, with no table to keep. A subscription's
explicit `dunning_policy` metadata wins over every experiment (`choose`).

The arm is pinned into the case (`DunningInput.experiment`/`arm`), published as the search
attributes `DunningPolicy` and `ExperimentArm`, and written to the ledger's `arm` column as
`"{experiment}:{arm}"` (`arm_label`), which tells the arms of different experiments apart.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from dunning.policy import EXPERIMENTS_FILE, Policy, PolicyError, choose_policy

__all__ = ["EXPERIMENTS_FILE", "Choice", "Experiment", "arm_label", "assign_arm", "choose", "load_experiments"]
#: Between an experiment's name and an arm in `ExperimentArm` and the ledger's `arm` column.
ARM_SEPARATOR = ":"
_NAME = r"^[A-Za-z0-9_.-]+$"


def _weight(value: Any, info: ValidationInfo) -> Any:
    """A weight is a positive whole number, as written: not `true`, not `4.5`, not `"45"`."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PydanticCustomError("experiment_weight", "must be a positive whole number, not {shown}", {"shown": repr(value)})
    return value


Weight = Annotated[int, BeforeValidator(_weight)]


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=60, pattern=_NAME)
    applies_to: str = Field(min_length=1, description="subscriptions that would get this policy")
    control: str = Field(min_length=1, description="the arm the others are compared with")
    arms: dict[str, Weight] = Field(description="arm (a policy name) → weight")
    #: The planned sample: the control's recovery rate expected, and the smallest lift worth
    #: finding (absolute, in points of rate); `planned_cases_per_arm` turns them into cases.
    baseline_rate: float = Field(0.5, gt=0, lt=1)
    minimum_detectable_effect: float = Field(0.05, gt=0, lt=1)

    @model_validator(mode="after")
    def _arms(self) -> Experiment:
        if len(self.arms) < 2:
            raise ValueError("arms: an experiment needs at least two arms (the control and another)")
        if self.control not in self.arms:
            raise ValueError(f"control: {self.control!r} is not one of the arms ({', '.join(self.arms)})")
        if self.baseline_rate + self.minimum_detectable_effect >= 1:
            raise ValueError("baseline_rate + minimum_detectable_effect must stay below 1")
        return self

    @property
    def arm_names(self) -> list[str]:
        """The control first, then the others as written."""
        return [self.control, *(a for a in self.arms if a != self.control)]

    @property
    def total_weight(self) -> int:
        return sum(self.arms.values())

    def share(self, arm: str) -> float:
        return self.arms[arm] / self.total_weight


class ExperimentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment: list[Experiment] = []


def bucket(experiment: str, subscription_id: str, total_weight: int) -> int:
    """0 ≤ bucket < total_weight, uniform and fixed for the pair (64 bits of SHA-256; the modulo
    bias is below 2⁻⁵⁰ for any sane total)."""
    digest = hashlib.sha256(f"{experiment}{ARM_SEPARATOR}{subscription_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % total_weight


def assign_arm(experiment: Experiment, subscription_id: str) -> str:
    """The subscription's arm: a deterministic function of the experiment's name and the id."""
    point = bucket(experiment.name, subscription_id, experiment.total_weight)
    for arm, weight in experiment.arms.items():
        if point < weight:
            return arm
        point -= weight
    raise AssertionError("unreachable: the bucket is below the total weight")


def arm_label(experiment: str, arm: str) -> str:
    """How the ledger and `ExperimentArm` name an arm: `gentle-q1:gentle`."""
    return f"{experiment}{ARM_SEPARATOR}{arm}"


def split_label(label: str | None) -> tuple[str, str] | None:
    """`gentle-q1:gentle` → ("gentle-q1", "gentle"); None outside experiments."""
    if not label or ARM_SEPARATOR not in label:
        return None
    experiment, arm = label.split(ARM_SEPARATOR, 1)
    return experiment, arm


@dataclass(frozen=True)
class Choice:
    """The policy a new case pins, and its experiment and arm (None outside experiments)."""

    policy: Policy
    experiment: str | None = None
    arm: str | None = None
    unknown_policy: str | None = None
    """The `dunning_policy` metadata when it named a policy we do not have."""


def choose(
    policies: Mapping[str, Policy],
    experiments: Sequence[Experiment],
    requested: str | None,
    subscription_id: str,
) -> Choice:
    """The subscription's explicit `dunning_policy` metadata, when it names a known policy, wins;
    otherwise the policy it would get (`default`) and, when an experiment applies to that policy,
    the experiment's arm for this subscription."""
    if requested and requested in policies:
        return Choice(policies[requested])
    unknown = requested or None
    base = choose_policy(dict(policies), None)
    for experiment in experiments:
        if experiment.applies_to == base.name:
            arm = assign_arm(experiment, subscription_id)
            return Choice(policies[arm], experiment.name, arm, unknown)
    return Choice(base, None, None, unknown)


# --- the file ---------------------------------------------------------------------------------


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(file)"


def load_experiments(directory: Path, policies: Mapping[str, Policy]) -> list[Experiment]:
    """`experiments.toml` of the policy folder (none: no experiments), checked like a policy file:
    a bad file raises `PolicyError` naming the file, the field and why."""
    path = Path(directory) / EXPERIMENTS_FILE
    if not path.exists():
        return []
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot be read: {exc}") from exc
    try:
        parsed = ExperimentsFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            loc = err["loc"]
            if message.split(":", 1)[0] in ("arms", "control"):  # the model validator names its field
                field, _, message = message.partition(": ")
                loc = (*loc, field)
            problems.append(f"{_where(loc)}: {'missing' if err['type'] == 'missing' else message}")
        raise PolicyError(f"{path}: {'; '.join(problems)}") from exc
    problems = experiment_problems(parsed.experiment, policies)
    if problems:
        raise PolicyError(f"{path}: {'; '.join(problems)}")
    return parsed.experiment


def experiment_problems(experiments: Sequence[Experiment], policies: Mapping[str, Policy]) -> list[str]:
    """`experiment.N.field: why` for what the types cannot see: unknown policies, a name used
    twice, and two experiments on one `applies_to` (a subscription can be in one experiment only)."""
    problems: list[str] = []
    known = ", ".join(sorted(policies))
    seen_names: dict[str, int] = {}
    seen_applies: dict[str, int] = {}
    for index, experiment in enumerate(experiments):
        where = f"experiment.{index}"
        if experiment.name in seen_names:
            problems.append(f"{where}.name: {experiment.name!r} is already experiment.{seen_names[experiment.name]}.name")
        seen_names.setdefault(experiment.name, index)
        if experiment.applies_to not in policies:
            problems.append(f"{where}.applies_to: no policy {experiment.applies_to!r} (policies: {known})")
        for arm in experiment.arms:
            if arm not in policies:
                problems.append(f"{where}.arms.{arm}: no policy {arm!r}: an arm is a policy name (policies: {known})")
        if experiment.applies_to in seen_applies:
            other = seen_applies[experiment.applies_to]
            problems.append(
                f"{where}.applies_to: {experiment.applies_to!r} is already taken by experiment.{other}"
                f" ({experiments[other].name!r}): experiments on one policy would overlap, and a subscription"
                " can be in one experiment only; end one, or give them different policies"
            )
        seen_applies.setdefault(experiment.applies_to, index)
    return problems
