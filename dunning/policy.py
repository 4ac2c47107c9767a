"""Dunning policies: the TOML files that say when to retry, notify, suspend and cancel.

A policy is validated once, when the service starts, and pinned into each case when
the case opens, so editing a file never changes a case already running.
"""

from __future__ import annotations

import json
import re
import tomllib
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

SHIPPED_POLICY_DIR = Path(__file__).resolve().parent / "policies"
#: Beside the policies, and no policy: the experiments (dunning/experiments.py).
EXPERIMENTS_FILE = "experiments.toml"

#: The longest any duration of a policy file may be: a year is already far beyond any sane
#: dunning schedule, and it keeps every date a case computes well inside what `datetime` holds.
MAX_DURATION = timedelta(days=365)

# --- what a policy *file* may say --------------------------------------------------------
#
# The strict checks below run only when a file is loaded (`load_policy_file` validates with
# the context `{FROM_FILE: True}`). A policy that arrives pinned in a case's input (JSON, from
# the data converter) is validated without it: a case already running must always decode,
# whatever a later release thinks of its policy.

FROM_FILE = "policy_file"

_ISO_DURATION = re.compile(
    r"P(?!$)(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?"
)
_CALENDAR_DURATION = re.compile(r"P(?=[^T]*[YM])(?:\d+Y)?(?:\d+M)?(?:\d+W)?(?:\d+D)?(?:T[\d.HMS]*)?")
_LOCAL_TIME = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d")


def _shown(value: Any) -> str:
    """A value about as the file wrote it: strings quoted, booleans lower-case, TOML times as such."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def iso_duration(value: timedelta) -> str:
    """`timedelta(days=1, hours=2)` → `P1DT2H`: how errors and logs speak of durations."""
    days, rest = divmod(value.total_seconds(), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = "".join(f"{int(n)}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    clock += f"{seconds:g}S" if seconds else ""
    if not days and not clock:
        return "PT0S"
    return "P" + (f"{int(days)}D" if days else "") + ("T" + clock if clock else "")


def _file_duration(value: Any, info: ValidationInfo) -> Any:
    """In a policy file a duration is an ISO 8601 string within `MAX_DURATION`, nothing else.

    Without this, pydantic reads `grace = 14` as fourteen *seconds*, and `"P999999999D"` as a
    date no case can compute.
    """
    if not (info.context or {}).get(FROM_FILE):
        return value
    example = '"P14D"' if info.field_name != "min_gap_between_messages" else '"PT20H"'
    match = _ISO_DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        if isinstance(value, str) and _CALENDAR_DURATION.fullmatch(value):
            raise PydanticCustomError(
                "policy_duration",
                "months and years have no fixed length: write days or weeks, such as \"P30D\", not {shown}",
                {"shown": _shown(value)},
            )
        raise PydanticCustomError(
            "policy_duration",
            "must be an ISO 8601 duration string such as {example}, not {shown}",
            {"example": example, "shown": _shown(value)},
        )
    parts = {k: v for k, v in match.groupdict().items() if v is not None}
    seconds = float(parts.pop("seconds", 0))
    units = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60}
    total = sum(int(amount) * units[unit] for unit, amount in parts.items()) + seconds
    if total > MAX_DURATION.total_seconds():
        raise PydanticCustomError(
            "policy_duration",
            "must be at most {limit} (a year), not {shown}",
            {"limit": iso_duration(MAX_DURATION), "shown": _shown(value)},
        )
    return timedelta(seconds=total)


def _file_int(value: Any, info: ValidationInfo) -> Any:
    """In a file an integer is an integer: not `true` (1), not `9.0`, not `"9"`."""
    if (info.context or {}).get(FROM_FILE) and (isinstance(value, bool) or not isinstance(value, int)):
        raise PydanticCustomError("policy_int", "must be a whole number, not {shown}", {"shown": _shown(value)})
    return value


def _file_quiet_hours(value: Any, info: ValidationInfo) -> Any:
    if not (info.context or {}).get(FROM_FILE):
        return value
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, str) and _LOCAL_TIME.fullmatch(v) for v in value)
    ):
        raise PydanticCustomError(
            "policy_quiet_hours",
            'must be two local times as "HH:MM" strings, from and until, such as ["21:00", "08:00"], not {shown}',
            {"shown": _shown(value)},
        )
    return value


#: A duration field: any timedelta in a case's input; an ISO 8601 string within bounds in a file.
Duration = Annotated[timedelta, BeforeValidator(_file_duration)]
FileInt = Annotated[int, BeforeValidator(_file_int)]

LadderEvent = Literal["suspended", "recovered", "canceled", "card_expiring"]
ChannelName = Literal["email", "sms", "in_app"]


class NotifyStep(BaseModel):
    """One rung of the notification ladder: at a time after the first failure, or on an event."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    at: Duration | None = None
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


class PreDunningStep(BaseModel):
    """A reminder before a renewal that the card on file cannot pay, because it expires first:
    sent `before` the renewal (CardExpiryWorkflow), on these channels, with this template."""

    model_config = ConfigDict(extra="forbid")

    before: Duration
    channels: list[ChannelName] = Field(min_length=1)
    template: str = Field(min_length=1, pattern=r"^[a-z0-9_]+$")

    @field_validator("before")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive: a reminder goes some time before the renewal")
        if value > MAX_DURATION:
            raise ValueError(f"must be at most {iso_duration(MAX_DURATION)} (a year)")
        return value


class LadderStep(NamedTuple):
    """A time-based step of the ladder: its position in `notify` and its offset from the first failure."""

    position: int
    at: timedelta
    step: NotifyStep


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    retry_after: list[Duration] = Field(min_length=0)
    retry_local_hour: FileInt | None = Field(9, ge=0, le=23)
    max_attempts_per_card_30d: FileInt = Field(10, ge=1, le=35)
    grace: Duration
    cancel_after_suspension: Duration
    quiet_hours: Annotated[tuple[time, time] | None, BeforeValidator(_file_quiet_hours)] = (time(21, 0), time(8, 0))
    min_gap_between_messages: Duration = timedelta(hours=20)
    # What "I need more time" on the customer's page gives, and how often per case (0: never offered).
    self_service_grace: Duration = timedelta(days=7)
    self_service_grace_limit: FileInt = Field(1, ge=0, le=10)
    notify: list[NotifyStep] = []
    # Reminders before a renewal the card on file can't pay (it expires first); none: pre-dunning is off.
    pre_dunning: list[PreDunningStep] = []
    # After a hard decline, try the customer's other saved, unexpired cards (once each, within
    # their budgets) before asking for a new one.
    try_backup_cards: bool = False

    @field_validator("retry_after")
    @classmethod
    def _ascending(cls, offsets: list[timedelta]) -> list[timedelta]:
        if any(o <= timedelta(0) for o in offsets):
            raise ValueError("every retry offset must be positive")
        if offsets != sorted(set(offsets)):
            raise ValueError("retry offsets must be strictly increasing")
        return offsets

    @field_validator("grace", "cancel_after_suspension", "min_gap_between_messages", "self_service_grace")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @model_serializer(mode="wrap")
    def _pre_dunning_only_when_on(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A policy without pre-dunning serializes as before it existed: cases pinned to it carry
        the same payload, which a worker of the previous release (`extra="forbid"`) still reads
        during a rolling deploy."""
        data = handler(self)
        if isinstance(data, dict) and not self.pre_dunning:
            data.pop("pre_dunning", None)
        if isinstance(data, dict) and not self.try_backup_cards:
            data.pop("try_backup_cards", None)  # the same, for backup cards
        return data

    @property
    def ladder(self) -> list[LadderStep]:
        """Time-based steps with their index, in the order they fall due."""
        timed = [LadderStep(i, s.at, s) for i, s in enumerate(self.notify) if s.at is not None]
        return sorted(timed, key=lambda rung: rung.at)

    def on_event(self, event: str) -> list[NotifyStep]:
        return [s for s in self.notify if s.on == event]


class PolicyError(ValueError):
    """A policy file is unusable; the message names the file, the field and why."""


def policy_problems(policy: Policy) -> list[str]:
    """What makes a well-typed policy still wrong for customers, as `field: why` (empty: none).

    - the customer hears of the failure before access is suspended: some `at` step falls due
      within `grace`;
    - the ladder is written in the order it runs, one step per time;
    - nothing is scheduled after the case is canceled (`grace + cancel_after_suspension`):
      such a retry or step would never happen, so the file does not say what it does;
    - a step names each channel once;
    - pre-dunning: each `before` once, and no in-app banner (the SaaS app's banner shows open
      dunning cases only, so an `in_app` reminder would reach nobody).
    """
    problems: list[str] = []
    end = policy.grace + policy.cancel_after_suspension
    end_text = f"{iso_duration(end)} (grace + cancel_after_suspension)"
    for index, offset in enumerate(policy.retry_after):
        if offset > end:
            problems.append(
                f"retry_after.{index}: {iso_duration(offset)} comes after the case is canceled at {end_text}:"
                " it would never run"
            )
    previous: tuple[int, timedelta] | None = None
    for index, step in enumerate(policy.notify):
        duplicates = sorted({c for c in step.channels if step.channels.count(c) > 1})
        if duplicates:
            problems.append(f"notify.{index}.channels: {', '.join(duplicates)} listed more than once")
        if step.at is None:
            continue
        if step.at > end:
            problems.append(
                f"notify.{index}.at: {iso_duration(step.at)} comes after the case is canceled at {end_text}:"
                " it would never be sent"
            )
        if previous is not None and step.at <= previous[1]:
            problems.append(
                f"notify.{index}.at: {iso_duration(step.at)} is not after notify.{previous[0]}.at"
                f" ({iso_duration(previous[1])}): write the ladder in the order it runs, one step per time"
            )
        previous = (index, step.at)
    befores: dict[timedelta, int] = {}
    for index, reminder in enumerate(policy.pre_dunning):
        duplicates = sorted({c for c in reminder.channels if reminder.channels.count(c) > 1})
        if duplicates:
            problems.append(f"pre_dunning.{index}.channels: {', '.join(duplicates)} listed more than once")
        if "in_app" in reminder.channels:
            problems.append(
                f"pre_dunning.{index}.channels: in_app is not shown before a renewal (the in-app banner"
                " shows open dunning cases only): use email or sms"
            )
        if reminder.before in befores:
            problems.append(
                f"pre_dunning.{index}.before: {iso_duration(reminder.before)} is already"
                f" pre_dunning.{befores[reminder.before]}.before: one reminder per time"
            )
        befores.setdefault(reminder.before, index)
    timed = [step.at for step in policy.notify if step.at is not None]
    if not timed or min(timed) > policy.grace:
        problems.append(
            f"notify: no step with `at` falls due within grace ({iso_duration(policy.grace)}): the customer would"
            ' lose access without hearing that their payment failed; add one, such as at = "PT0S"'
        )
    return problems


def _problem(error: ErrorDetails) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "(file)"
    if error["type"] == "missing" and error["loc"] == ("retry_after",):
        return (
            'retry_after: missing: list the retry offsets, such as ["P1D", "P3D"], or write retry_after = []'
            " for a policy that never retries and only asks for a new card"
        )
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "missing"
    return f"{field}: {message}"


def load_policy_file(path: Path) -> Policy:
    """One policy file, checked as strictly as a file deserves; `PolicyError` names file, field and why."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise PolicyError(f"{path}: cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text: {exc.reason}") from exc
    try:
        policy = Policy.model_validate(raw, context={FROM_FILE: True})
    except ValidationError as exc:
        raise PolicyError(f"{path}: {'; '.join(_problem(err) for err in exc.errors())}") from exc
    if policy.name != path.stem:
        raise PolicyError(f"{path}: name: is {policy.name!r} but the file is named {path.stem!r}")
    problems = policy_problems(policy)
    if problems:
        raise PolicyError(f"{path}: {'; '.join(problems)}")
    return policy


def load_policies(directory: Path | None = None) -> dict[str, Policy]:
    """Every `*.toml` in the folder but `experiments.toml` (dunning/experiments.py), by name;
    there must be a `default`."""
    directory = Path(directory or SHIPPED_POLICY_DIR)
    if not directory.is_dir():
        raise PolicyError(f"{directory}: policy folder does not exist")
    files = sorted(p for p in directory.glob("*.toml") if p.name != EXPERIMENTS_FILE)
    policies = {p.stem: load_policy_file(p) for p in files}
    if "default" not in policies:
        raise PolicyError(f"{directory}/default.toml: missing; every deployment needs a default policy")
    return policies


def choose_policy(policies: dict[str, Policy], requested: str | None) -> Policy:
    """The subscription's `dunning_policy` metadata if it names a known policy, else `default`."""
    if requested and requested in policies:
        return policies[requested]
    return policies["default"]
