"""The pure domain core: policies, decline rules, schedules and quiet hours, without Temporal."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning import schedule
from dunning.declines import classify_decline
from dunning.models import DeclineCategory
from dunning.policy import PolicyError, choose_policy, load_policies, load_policy_file
from tests.helpers.case_harness import make_policy

# --- policies -------------------------------------------------------------------------


def test_shipped_policies_load_and_default_matches_the_contract():
    policies = load_policies()
    assert {"default", "high_value"} <= set(policies)
    default = policies["default"]
    assert default.retry_after == [timedelta(days=d) for d in (1, 3, 5, 7, 10, 14)]
    assert default.grace == timedelta(days=14) and default.cancel_after_suspension == timedelta(days=30)
    assert default.quiet_hours == (time(21), time(8))
    assert [rung.step.template for rung in default.ladder] == ["payment_failed", "reminder", "final_notice"]
    assert [s.template for s in default.on_event("suspended")] == ["suspended"]


def test_policy_is_chosen_by_subscription_metadata_else_default():
    policies = load_policies()
    assert choose_policy(policies, "high_value").name == "high_value"
    assert choose_policy(policies, "no_such_policy").name == "default"
    assert choose_policy(policies, None).name == "default"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('name = "bad"\nretry_after = ["P1D"]\ngrace = "fortnight"\ncancel_after_suspension = "P30D"\n', "grace"),
        (
            'name = "bad"\nretry_after = ["P3D", "P1D"]\ngrace = "P1D"\ncancel_after_suspension = "P30D"\n',
            "retry_after",
        ),
        (
            'name = "bad"\nretry_after = []\ngrace = "P1D"\ncancel_after_suspension = "P1D"\n'
            '[[notify]]\nat = "P1D"\non = "suspended"\nchannels = ["email"]\ntemplate = "x"\n',
            "notify.0",
        ),
        (
            'name = "bad"\nretry_after = []\ngrace = "P1D"\ncancel_after_suspension = "P1D"\n'
            '[[notify]]\nat = "P1D"\nchannels = ["fax"]\ntemplate = "x"\n',
            "notify.0.channels.0",
        ),
        ('name = "bad"\nretry_after = []\ngrace = "P1D"\ncancel_after_suspension = "P1D"\ntypo = 1\n', "typo"),
        ('name = "bad"\nretry_after = [\n', "not valid TOML"),
        ('name = "other"\nretry_after = []\ngrace = "P1D"\ncancel_after_suspension = "P1D"\n', "file is named"),
    ],
)
def test_a_bad_policy_file_names_the_file_and_the_field(tmp_path: Path, content: str, expected: str):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(PolicyError) as error:
        load_policy_file(path)
    assert str(path) in str(error.value) and expected in str(error.value)


def test_a_policy_folder_without_default_is_refused(tmp_path: Path):
    with pytest.raises(PolicyError, match="default.toml"):
        load_policies(tmp_path)


# --- declines -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decline_code", "code", "advice", "category"),
    [
        ("insufficient_funds", "card_declined", None, DeclineCategory.SOFT),
        ("generic_decline", "card_declined", None, DeclineCategory.SOFT),
        ("try_again_later", "card_declined", None, DeclineCategory.SOFT),
        ("processing_error", None, None, DeclineCategory.SOFT),
        ("stolen_card", "card_declined", None, DeclineCategory.HARD),
        ("lost_card", "card_declined", None, DeclineCategory.HARD),
        ("pickup_card", "card_declined", None, DeclineCategory.HARD),
        ("incorrect_number", None, None, DeclineCategory.HARD),
        ("expired_card", "expired_card", None, DeclineCategory.HARD),
        ("do_not_try_again", "card_declined", None, DeclineCategory.HARD),
        ("generic_decline", "card_declined", "do_not_try_again", DeclineCategory.HARD),
        ("do_not_honor", "card_declined", "try_again_later", DeclineCategory.SOFT),
        (None, "authentication_required", None, DeclineCategory.AUTHENTICATION),
        ("authentication_required", "card_declined", None, DeclineCategory.AUTHENTICATION),
        ("something_new", "card_declined", None, DeclineCategory.UNKNOWN),
    ],
)
def test_declines_are_classified_like_stripe_documents_them(decline_code, code, advice, category):
    assert classify_decline(decline_code, code, advice) is category


# --- schedules ------------------------------------------------------------------------

ANCHOR = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)


def test_retries_move_to_the_customers_morning():
    policy = make_policy(retry_local_hour=9)
    first = schedule.next_retry(policy, ANCHOR, "America/New_York", ANCHOR, [ANCHOR])
    assert first is not None
    index, at = first
    local = at.astimezone(ZoneInfo("America/New_York"))
    assert index == 0 and (local.date().isoformat(), local.hour) == ("2026-03-11", 9)


def test_without_a_time_zone_retries_keep_the_raw_offsets():
    policy = make_policy(retry_local_hour=9)
    assert schedule.next_retry(policy, ANCHOR, None, ANCHOR, [ANCHOR]) == (0, ANCHOR + timedelta(days=1))


def test_card_budget_pushes_a_retry_past_the_30_day_window():
    attempts = [ANCHOR + timedelta(days=d) for d in range(3)]
    assert schedule.earliest_within_budget(attempts, ANCHOR + timedelta(days=3), cap=3) == ANCHOR + timedelta(
        days=30, seconds=1
    )


def test_quiet_hours_wrap_midnight_in_the_customers_zone():
    quiet = (time(21), time(8))
    tokyo_night = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)  # 23:00 in Tokyo
    assert schedule.in_quiet_hours(tokyo_night, "Asia/Tokyo", quiet)
    assert not schedule.in_quiet_hours(tokyo_night, "Europe/London", quiet)
    morning = schedule.next_sms_time(tokyo_night, "Asia/Tokyo", quiet)
    assert morning.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M") == "2026-03-11 08:00"


offsets = st.lists(st.integers(min_value=1, max_value=60 * 24 * 40), min_size=1, max_size=25, unique=True).map(
    lambda minutes: [f"PT{m}M" for m in sorted(minutes)]
)
zones = st.sampled_from([None, "UTC", "America/New_York", "Asia/Tokyo", "Europe/Berlin", "Pacific/Chatham"])
instants = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))


@settings(max_examples=200, deadline=None)
@given(
    retry_after=offsets,
    cap=st.integers(min_value=1, max_value=15),
    tz=zones,
    anchor=instants,
    local_hour=st.one_of(st.none(), st.integers(0, 23)),
)
def test_never_more_attempts_on_a_card_than_its_budget(retry_after, cap, tz, anchor, local_hour):
    """Driving the schedule to its end never puts more than `cap` attempts in any 30 days."""
    policy = make_policy(retry_after=retry_after, max_attempts_per_card_30d=cap, retry_local_hour=local_hour)
    attempts = [anchor]  # the failure that opened the case
    index = 0
    while (retry := schedule.next_retry(policy, anchor, tz, attempts[-1], attempts, from_index=index)) is not None:
        index, at = retry[0] + 1, retry[1]
        assert at > attempts[-1]
        attempts.append(at)
    for at in attempts:
        assert schedule.attempts_within_window(attempts, at) <= cap


@settings(max_examples=200, deadline=None)
@given(
    ladder=st.lists(st.integers(min_value=0, max_value=60 * 24 * 20), min_size=1, max_size=8, unique=True),
    gap_hours=st.integers(min_value=0, max_value=72),
    tz=zones,
    anchor=instants,
    quiet=st.sampled_from([None, ("21:00", "08:00"), ("22:30", "07:15"), ("01:00", "05:00")]),
)
def test_messages_respect_the_gap_and_sms_never_lands_in_quiet_hours(ladder, gap_hours, tz, anchor, quiet):
    """Sending the ladder the way the workflow does keeps the gap and keeps SMS out of the night."""
    policy = make_policy(
        min_gap_between_messages=f"PT{gap_hours}H",
        quiet_hours=quiet,
        notify=[{"at": f"PT{m}M", "channels": ["email", "sms"], "template": f"t{i}"} for i, m in enumerate(ladder)],
    )
    gap = timedelta(hours=gap_hours)
    sent_at: list[datetime] = []
    done: set[int] = set()
    last: datetime | None = None
    for rung in policy.ladder:
        at = schedule.message_time(anchor + rung.at, last, gap)
        done.add(rung.position)
        sms_at = schedule.next_sms_time(at, tz, policy.quiet_hours)
        assert not schedule.in_quiet_hours(sms_at, tz, policy.quiet_hours)
        assert sms_at >= at and sms_at - at <= timedelta(hours=24)
        sent_at.append(at)
        last = at
    for earlier, later in itertools.pairwise(sent_at):
        assert later - earlier >= gap


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "shown"),
    [
        (4900, "eur", "en", "€49.00"),
        (4900, "jpy", "en", "¥4,900"),
        (4900, "eur", "de_DE", "49,00\xa0€"),
        (12345, "kwd", "en", "KWD12.345"),
    ],
)
def test_money_uses_the_currencys_own_decimals(amount, currency, locale, shown):
    from dunning.money import format_money, plain_amount

    assert format_money(amount, currency, locale) == shown
    assert plain_amount(amount, currency).split()[1] == currency.upper()


@pytest.mark.parametrize(
    "field, value",
    [("amount_due", 2**63), ("amount_due", 10**12), ("amount_due", -1), ("currency", "€€€"), ("currency", "eu")],
)
def test_a_payment_failure_with_an_impossible_amount_or_currency_is_refused(field, value):
    """Found by fuzzing the webhook: 2**63 reached the AmountDue search attribute (a 500), and a
    three-character non-ISO currency opened a case."""
    from pydantic import ValidationError

    from dunning.models import PaymentFailed

    with pytest.raises(ValidationError):
        PaymentFailed(**{"invoice_id": "in_1", "amount_due": 4900, "currency": "eur", field: value})
    assert PaymentFailed(invoice_id="in_1", amount_due=10**12 - 1, currency="JPY").amount_due == 10**12 - 1


def test_worker_cache_size_comes_from_the_environment(monkeypatch):
    from runtime.settings import Settings

    monkeypatch.setenv("DUNNING_MAX_CACHED_CASES", "250")
    assert Settings().dunning_max_cached_cases == 250
    monkeypatch.setenv("DUNNING_MAX_CACHED_CASES", "-1")
    with pytest.raises(ValueError, match="dunning_max_cached_cases"):
        Settings()
