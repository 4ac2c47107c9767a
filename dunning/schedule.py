"""When to retry and when a message may go out: plain functions over times and a policy.

All times are timezone-aware UTC datetimes; the customer's time zone (an IANA name,
or None when unknown) only decides local mornings and local nights.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dunning.policy import Policy

CARD_BUDGET_WINDOW = timedelta(days=30)


def _zone(tz: str | None) -> ZoneInfo:
    """The customer's zone; UTC when unknown (quiet hours still apply, in UTC)."""
    return ZoneInfo(tz) if tz else ZoneInfo("UTC")


def retry_time(anchor: datetime, offset: timedelta, tz: str | None, local_hour: int | None) -> datetime:
    """`anchor + offset`, moved to `local_hour` o'clock of that local day when the zone is known.

    A retry in the customer's morning finds salaries paid and limits reset. If the morning of
    that day is not after the anchor (very short offsets), the raw time is kept.
    """
    raw = anchor + offset
    if tz is None or local_hour is None:
        return raw
    local = raw.astimezone(ZoneInfo(tz))
    morning = local.replace(hour=local_hour, minute=0, second=0, microsecond=0).astimezone(UTC)
    return morning if morning > anchor else raw


def attempts_within_window(attempts: list[datetime], at: datetime) -> int:
    """Attempts on one card in the 30 days up to and including `at`."""
    return sum(1 for a in attempts if at - CARD_BUDGET_WINDOW < a <= at)


def earliest_within_budget(attempts: list[datetime], at: datetime, cap: int) -> datetime:
    """The first moment at or after `at` when one more attempt keeps the card under `cap`."""
    ordered = sorted(attempts)
    while attempts_within_window(ordered, at) >= cap:
        in_window = [a for a in ordered if at - CARD_BUDGET_WINDOW < a <= at]
        at = in_window[0] + CARD_BUDGET_WINDOW + timedelta(seconds=1)
    return at


def can_attempt_now(attempts: list[datetime], now: datetime, cap: int) -> bool:
    return attempts_within_window(attempts, now) < cap


def next_retry(
    policy: Policy,
    anchor: datetime,
    tz: str | None,
    after: datetime,
    card_attempts: list[datetime],
    from_index: int = 0,
) -> tuple[int, datetime] | None:
    """The next scheduled soft retry strictly after `after`, pushed out to respect the card budget.

    Offsets before `from_index` were already used (they stay used when a pause moves the anchor).
    Returns the index of the schedule offset and the time, or None when the schedule is spent.
    """
    for index, offset in enumerate(policy.retry_after[from_index:], start=from_index):
        at = retry_time(anchor, offset, tz, policy.retry_local_hour)
        if at > after:
            return index, earliest_within_budget(card_attempts, at, policy.max_attempts_per_card_30d)
    return None


def in_quiet_hours(at: datetime, tz: str | None, quiet: tuple[time, time] | None) -> bool:
    if quiet is None:
        return False
    start, end = quiet
    local = at.astimezone(_zone(tz)).time()
    if start <= end:
        return start <= local < end
    return local >= start or local < end


def next_sms_time(at: datetime, tz: str | None, quiet: tuple[time, time] | None) -> datetime:
    """`at` itself when SMS is allowed then, else the end of that local night."""
    if not in_quiet_hours(at, tz, quiet):
        return at
    assert quiet is not None
    zone = _zone(tz)
    local = at.astimezone(zone)
    end = quiet[1]
    candidate = datetime.combine(local.date(), end, tzinfo=zone)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), end, tzinfo=zone)
    # Across a DST change the wall-clock end may not exist; step forward until allowed.
    result = candidate.astimezone(UTC)
    while in_quiet_hours(result, tz, quiet):
        result += timedelta(minutes=15)
    return result


def quiet_anywhere(at: datetime, zones: Sequence[str], quiet: tuple[time, time] | None) -> bool:
    """Night in at least one of the zones the customer may be in (UTC when none is known)."""
    if not zones:
        return in_quiet_hours(at, None, quiet)
    return any(in_quiet_hours(at, zone, quiet) for zone in zones)


def next_sms_time_everywhere(at: datetime, zones: Sequence[str], quiet: tuple[time, time] | None) -> datetime | None:
    """The first moment at or after `at` that is daytime (outside `quiet`) in every one of `zones`;
    None when their days never overlap (then no SMS can go: email instead).

    With one zone or none this is `next_sms_time` itself, so a case that knows one zone (or none)
    is held exactly as before. With several, the shared daytime begins where the last of them
    wakes up: at `at` itself or at one zone's end of night, so those are the only moments to try.
    """
    if len(zones) <= 1:
        return next_sms_time(at, zones[0] if zones else None, quiet)
    if not quiet_anywhere(at, zones, quiet):
        return at
    assert quiet is not None
    wake_ups = sorted(
        datetime.combine(at.astimezone(ZoneInfo(zone)).date() + timedelta(days=day), quiet[1], tzinfo=ZoneInfo(zone)).astimezone(UTC)
        for zone in zones
        for day in range(3)
    )
    return next((t for t in wake_ups if t > at and not quiet_anywhere(t, zones, quiet)), None)


def message_time(due: datetime, last_message_at: datetime | None, gap: timedelta) -> datetime:
    """A ladder message goes at its due time, or later if the previous one was too recent."""
    if last_message_at is None:
        return due
    return max(due, last_message_at + gap)


def due_ladder_steps(policy: Policy, anchor: datetime, now: datetime, done: set[int]) -> list[int]:
    """Indexes of time-based ladder steps that are due and not yet handled, oldest first."""
    return [rung.position for rung in policy.ladder if rung.position not in done and anchor + rung.at <= now]


def grace_ends_at(policy: Policy, anchor: datetime, extension_days: int) -> datetime:
    return anchor + policy.grace + timedelta(days=extension_days)
