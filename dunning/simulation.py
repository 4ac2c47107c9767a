"""Synthetic customers for `dunning simulate`: the population file and the deterministic draws (pure).

A population file (TOML, `dunning/simulations/example.toml` is the documented example) says how
many cases, which declines open them, what they owe, where the customers live, and how likely
each customer is, on each day of the case, to act. The behaviour model (docs/analytics.md,
"Simulating a policy"), kept simple on purpose:

- The card on file declined with a code drawn from `declines`. Each *scheduled retry* of a soft
  decline succeeds with chance `retry_success` (independently); hard and authentication declines
  never pay on that card (the case does not retry them anyway).
- Each day `d` of the case (day 0 starts at the failure, in the case's time), the customer first
  reads a message with chance `daily.read_message` *if the policy's ladder sends one that day*
  (its `at` steps; event messages and SMS held for quiet hours are not modelled). Then exactly
  one of: updates the card (chance `daily.card_update`, or `daily.card_update_when_read` on a day
  they read a message), pays the invoice elsewhere (`daily.paid_elsewhere`), cancels on the
  customer page (`daily.cancel`), or nothing. The first action ends the customer's part; it lands
  at a drawn hour of that day. A new card always pays.
- Every draw comes from a generator seeded with `(seed, case number)`, three uniforms a day
  whatever happens, so a seed gives the same customers, the same cards and the same actions, and
  a different policy or arm changes only what the ladder's days change.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from dunning.declines import AUTHENTICATION_CODES, HARD_DECLINE_CODES, SOFT_DECLINE_CODES, classify_decline
from dunning.ledger import SIMULATED_PREFIX
from dunning.models import MAX_AMOUNT, DeclineCategory
from dunning.policy import Policy

__all__ = [
    "Action",
    "Customer",
    "Population",
    "PopulationError",
    "draw_customer",
    "draw_population",
    "ladder_days",
    "load_population",
]

#: The shipped, documented example.
EXAMPLE = Path(__file__).with_name("simulations") / "example.toml"
#: More retries than any policy may make on one card: a card scripted like this never pays.
NEVER_PAYS = 400


class PopulationError(ValueError):
    """A population file that can't be used: names the file, the field and why."""


def _weight(value: Any, info: ValidationInfo) -> Any:
    """A weight is a positive whole number, as written (like an experiment's arms)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PydanticCustomError("weight", "must be a positive whole number, not {shown}", {"shown": repr(value)})
    return value


Weight = Annotated[int, BeforeValidator(_weight)]
Chance = Annotated[float, Field(ge=0, le=1)]


class Amount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: int = Field(gt=0, le=MAX_AMOUNT, description="minor units (4900 = 49.00)")
    currency: str = Field(pattern=r"^[a-z]{3}$", description="ISO 4217, lower case as Stripe writes it")
    weight: Weight = 1


class Daily(BaseModel):
    """Each day of the case, the chance that the customer…"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    card_update: Chance = 0.03
    card_update_when_read: Chance = 0.15
    paid_elsewhere: Chance = 0.01
    cancel: Chance = 0.005
    read_message: Chance = 0.4

    @model_validator(mode="after")
    def _one_action_a_day(self) -> Daily:
        for update in ("card_update", "card_update_when_read"):
            total = getattr(self, update) + self.paid_elsewhere + self.cancel
            if total > 1:
                raise ValueError(f"{update} + paid_elsewhere + cancel is {total:g}: one action a day, so at most 1")
        return self


class Population(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cases: int = Field(gt=0, le=100_000, description="how many failed renewals")
    open_over_days: float = Field(0, ge=0, le=365, description="cases open spread evenly at random over this many days")
    declines: dict[str, Weight] = Field(min_length=1, description="decline code → weight")
    retry_success: Chance = Field(0.2, description="chance that a scheduled retry of a soft decline pays")
    amounts: list[Amount] = Field(min_length=1)
    timezones: dict[str, Weight] = Field(min_length=1, description="IANA zone → weight")
    daily: Daily = Daily()

    @field_validator("declines")
    @classmethod
    def _known_declines(cls, declines: dict[str, int]) -> dict[str, int]:
        known = HARD_DECLINE_CODES | SOFT_DECLINE_CODES | AUTHENTICATION_CODES
        unknown = sorted(set(declines) - known)
        if unknown:
            raise ValueError(
                f"{', '.join(map(repr, unknown))}: not a decline code the classifier knows (dunning/declines.py),"
                " so its category (soft, hard, authentication) would be a guess"
            )
        return declines

    @field_validator("timezones")
    @classmethod
    def _real_zones(cls, zones: dict[str, int]) -> dict[str, int]:
        for zone in zones:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{zone!r} is not an IANA time zone (e.g. \"Europe/Berlin\")") from None
        return zones


def load_population(path: Path) -> Population:
    """The file, checked: a bad one raises `PopulationError` naming the file, the field and why."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PopulationError(f"{path}: not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PopulationError(f"{path}: cannot be read: {exc}") from exc
    return parse_population(raw, str(path))


def parse_population(raw: Mapping[str, Any], where: str = "population") -> Population:
    try:
        return Population.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(part) for part in err["loc"]) or "(file)"
            message = "missing" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
            problems.append(f"{loc}: {message}")
        raise PopulationError(f"{where}: {'; '.join(problems)}") from exc


# --- the draws --------------------------------------------------------------------------------


class ActionKind(StrEnum):
    CARD_UPDATE = "card_update"
    PAID_ELSEWHERE = "paid_elsewhere"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    after: timedelta
    """From the case's opening."""
    read_message: bool
    """The customer read a message that day (the update chance was the higher one)."""


@dataclass(frozen=True)
class Customer:
    number: int
    subscription_id: str
    customer_id: str
    decline_code: str
    category: DeclineCategory
    amount: int
    currency: str
    timezone: str
    opens_after: timedelta
    """From the start of the simulation."""
    retry_declines: int
    """Scheduled retries on the card on file that decline before one pays (`NEVER_PAYS`: none pays)."""


def _pick(rng: random.Random, weights: Mapping[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def subscription_id(seed: int, number: int) -> str:
    """`sim_…`: never a Stripe id (those start `sub_`), which is how reports tell simulated cases apart."""
    return f"{SIMULATED_PREFIX}{seed}_{number:06d}"


def draw_customer(population: Population, seed: int, number: int) -> Customer:
    """Who the customer is: the same for a seed and number whatever the policy."""
    rng = random.Random(f"customer:{seed}:{number}")
    code = _pick(rng, population.declines)
    category = classify_decline(decline_code=code, code="authentication_required" if code in AUTHENTICATION_CODES else "card_declined")
    amount = rng.choices(population.amounts, weights=[a.weight for a in population.amounts])[0]
    zone = _pick(rng, population.timezones)
    opens_after = timedelta(days=rng.uniform(0, population.open_over_days)) if population.open_over_days else timedelta(0)
    declines = NEVER_PAYS
    if category == DeclineCategory.SOFT:
        declines = 0
        while declines < NEVER_PAYS and rng.random() >= population.retry_success:
            declines += 1
    sub = subscription_id(seed, number)
    return Customer(
        number=number,
        subscription_id=sub,
        customer_id=f"cus_{sub}",
        decline_code=code,
        category=category,
        amount=amount.amount,
        currency=amount.currency,
        timezone=zone,
        opens_after=opens_after,
        retry_declines=declines,
    )


def draw_population(population: Population, seed: int, cases: int | None = None) -> list[Customer]:
    return [draw_customer(population, seed, n) for n in range(cases if cases is not None else population.cases)]


def ladder_days(policy: Policy) -> frozenset[int]:
    """The days of the case on which the policy's ladder writes (its `at` steps)."""
    return frozenset(int(step.at.total_seconds() // 86400) for step in policy.notify if step.at is not None)


def horizon_days(policy: Policy) -> int:
    """The case's longest life: grace, then cancellation after suspension."""
    return int((policy.grace + policy.cancel_after_suspension).total_seconds() // 86400) + 1


def draw_action(population: Population, seed: int, number: int, message_days: frozenset[int], horizon: int) -> Action | None:
    """What the customer does and when, over `horizon` days; None: nothing at all."""
    rng = random.Random(f"behaviour:{seed}:{number}")
    daily = population.daily
    for day in range(horizon):
        read_draw, act_draw, hour_draw = rng.random(), rng.random(), rng.random()
        read = day in message_days and read_draw < daily.read_message
        update = daily.card_update_when_read if read else daily.card_update
        kind: ActionKind | None = None
        if act_draw < update:
            kind = ActionKind.CARD_UPDATE
        elif act_draw < update + daily.paid_elsewhere:
            kind = ActionKind.PAID_ELSEWHERE
        elif act_draw < update + daily.paid_elsewhere + daily.cancel:
            kind = ActionKind.CANCEL
        if kind is not None:
            # Within the day, after the opening (day 0) and never exactly on a ladder step.
            return Action(kind, timedelta(days=day, hours=1 + hour_draw * 22), read)
    return None
