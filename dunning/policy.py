"""Dunning policies: the TOML files that say when to retry, notify, suspend and cancel.

A policy is validated once, when the service starts, and pinned into each case when
the case opens, so editing a file never changes a case already running.
"""

from __future__ import annotations

import tomllib
from datetime import time, timedelta
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SHIPPED_POLICY_DIR = Path(__file__).resolve().parent / "policies"

LadderEvent = Literal["suspended", "recovered", "canceled", "card_expiring"]
ChannelName = Literal["email", "sms", "in_app"]


class NotifyStep(BaseModel):
    """One rung of the notification ladder: at a time after the first failure, or on an event."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    at: timedelta | None = None
    on: LadderEvent | None = None
    channels: list[ChannelName] = Field(min_length=1)
    template: str = Field(min_length=1, pattern=r"^[a-z0-9_]+$")

    @model_validator(mode="after")
    def _exactly_one_trigger(self) -> NotifyStep:
        if (self.at is None) == (self.on is None):
            raise ValueError("a notify step needs exactly one of `at` (a duration) or `on` (an event)")
        if self.at is not None and self.at < timedelta(0):
            raise ValueError("`at` must not be negative")
        return self


class LadderStep(NamedTuple):
    """A time-based step of the ladder: its position in `notify` and its offset from the first failure."""

    position: int
    at: timedelta
    step: NotifyStep


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    retry_after: list[timedelta] = Field(min_length=0)
    retry_local_hour: int | None = Field(9, ge=0, le=23)
    max_attempts_per_card_30d: int = Field(10, ge=1, le=35)
    grace: timedelta
    cancel_after_suspension: timedelta
    quiet_hours: tuple[time, time] | None = (time(21, 0), time(8, 0))
    min_gap_between_messages: timedelta = timedelta(hours=20)
    notify: list[NotifyStep] = []

    @field_validator("retry_after")
    @classmethod
    def _ascending(cls, offsets: list[timedelta]) -> list[timedelta]:
        if any(o <= timedelta(0) for o in offsets):
            raise ValueError("every retry offset must be positive")
        if offsets != sorted(set(offsets)):
            raise ValueError("retry offsets must be strictly increasing")
        return offsets

    @field_validator("grace", "cancel_after_suspension", "min_gap_between_messages")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @property
    def ladder(self) -> list[LadderStep]:
        """Time-based steps with their index, in the order they fall due."""
        timed = [LadderStep(i, s.at, s) for i, s in enumerate(self.notify) if s.at is not None]
        return sorted(timed, key=lambda rung: rung.at)

    def on_event(self, event: str) -> list[NotifyStep]:
        return [s for s in self.notify if s.on == event]


class PolicyError(ValueError):
    """A policy file is unusable; the message names the file, the field and why."""


def load_policy_file(path: Path) -> Policy:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise PolicyError(f"{path}: cannot be read: {exc.strerror}") from exc
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}" for err in exc.errors()
        )
        raise PolicyError(f"{path}: {problems}") from exc
    if policy.name != path.stem:
        raise PolicyError(f"{path}: name: is {policy.name!r} but the file is named {path.stem!r}")
    return policy


def load_policies(directory: Path | None = None) -> dict[str, Policy]:
    """Every `*.toml` in the folder, by name; there must be a `default`."""
    directory = Path(directory or SHIPPED_POLICY_DIR)
    if not directory.is_dir():
        raise PolicyError(f"{directory}: policy folder does not exist")
    policies = {p.stem: load_policy_file(p) for p in sorted(directory.glob("*.toml"))}
    if "default" not in policies:
        raise PolicyError(f"{directory}/default.toml: missing; every deployment needs a default policy")
    return policies


def choose_policy(policies: dict[str, Policy], requested: str | None) -> Policy:
    """The subscription's `dunning_policy` metadata if it names a known policy, else `default`."""
    if requested and requested in policies:
        return policies[requested]
    return policies["default"]
