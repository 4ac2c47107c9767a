"""Where the customer probably is (dunning.timezones), and when an SMS may reach them wherever
that is (dunning.schedule), without Temporal."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from dunning import schedule
from dunning.case import Case, Delivery, SendStep
from dunning.models import Channel, CustomerProfile, PaymentFailed
from dunning.timezones import Place, TimezoneHints, country_zones, infer_timezone, middle_zone
from tests.helpers.case_harness import make_policy

AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # winter in the north: New York is UTC-5, Los Angeles UTC-8
NIGHT = (time(21, 0), time(8, 0))


# --- the inference -------------------------------------------------------------------------


def test_a_new_york_phone_and_nothing_else_is_new_york() -> None:
    guess = infer_timezone(TimezoneHints(phone="+1 212-555-0100"), AT)
    assert (guess.candidates, guess.source, guess.chosen) == (("America/New_York",), "phone", "America/New_York")


def test_a_us_address_in_california_is_pacific_time() -> None:
    guess = infer_timezone(TimezoneHints(address=Place("US", "CA")), AT)
    assert (guess.candidates, guess.source) == (("America/Los_Angeles",), "address")
    # The state by name too, and a two-zone state keeps both.
    assert infer_timezone(TimezoneHints(address=Place("us", "California")), AT).chosen == "America/Los_Angeles"
    texas = infer_timezone(TimezoneHints(address=Place("US", "TX")), AT)
    assert texas.candidates == ("America/Chicago", "America/Denver")
    assert texas.chosen == "America/Denver"  # of two offsets, the western one


def test_a_german_locale_and_nothing_else_is_germany() -> None:
    guess = infer_timezone(TimezoneHints(locale="de-DE", phone=None), AT)
    assert guess.source == "locale" and guess.chosen == "Europe/Berlin"
    assert set(guess.candidates) == set(country_zones()["DE"])  # Berlin, and Büsingen on the Rhine
    # A language alone names no country.
    assert infer_timezone(TimezoneHints(locale="de"), AT).source is None


def test_a_toll_free_number_says_nothing() -> None:
    guess = infer_timezone(TimezoneHints(phone="+1 800 555 0100"), AT)
    assert (guess.candidates, guess.source, guess.chosen) == ((), None, None)
    # …so the next hint decides.
    assert infer_timezone(TimezoneHints(phone="+18005550100", locale="fr-FR"), AT).chosen == "Europe/Paris"


def test_fictional_and_unparseable_numbers_say_nothing() -> None:
    for phone in ("+15555550100", "not a number", "", "+999"):
        assert infer_timezone(TimezoneHints(phone=phone), AT).source is None


def test_conflicting_hints_the_more_trusted_one_wins() -> None:
    guess = infer_timezone(
        TimezoneHints(address=Place("US", "CA"), phone="+12125550100", shipping=Place("GB"), locale="de-DE"), AT
    )
    assert (guess.candidates, guess.source, guess.narrowed_by) == (("America/Los_Angeles",), "address", ())
    assert any(note.startswith("phone") for note in guess.ignored)


def test_metadata_wins_and_a_bad_zone_in_it_is_ignored() -> None:
    hints = TimezoneHints(metadata="Asia/Tokyo", address=Place("US", "CA"))
    assert infer_timezone(hints, AT).candidates == ("Asia/Tokyo",)
    bad = infer_timezone(TimezoneHints(metadata="Mars/Olympus_Mons", address=Place("US", "CA")), AT)
    assert (bad.source, bad.chosen) == ("address", "America/Los_Angeles")
    assert infer_timezone(TimezoneHints(metadata="../../etc/passwd"), AT).source is None


def test_an_agreeing_later_hint_narrows_a_country_to_a_zone() -> None:
    guess = infer_timezone(TimezoneHints(address=Place("US"), phone="+12125550100"), AT)
    assert (guess.candidates, guess.source, guess.narrowed_by) == (("America/New_York",), "address", ("phone",))


def test_a_country_without_province_data_keeps_every_zone() -> None:
    guess = infer_timezone(TimezoneHints(address=Place("CA", "QC")), AT)
    assert guess.candidates == country_zones()["CA"] and len(guess.candidates) > 10
    assert guess.chosen in guess.candidates


def test_shipping_then_tax_location() -> None:
    assert infer_timezone(TimezoneHints(shipping=Place("JP")), AT).source == "shipping"
    assert infer_timezone(TimezoneHints(tax_location=Place("US", "NY")), AT).chosen == "America/New_York"


def test_the_middle_zone_by_offset() -> None:
    zones = ["America/New_York", "America/Los_Angeles", "America/Chicago", "America/Denver"]
    assert middle_zone(zones, AT) == "America/Denver"  # -8 -7 | -6 -5: the western of the two middles
    assert middle_zone([], AT) is None


# --- the SMS window --------------------------------------------------------------------------

ZONES = sorted({z for zones in country_zones().values() for z in zones})


@settings(max_examples=300, deadline=None)
@given(
    zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=5, unique=True),
    at=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)),
    start=st.integers(18, 23),
    end=st.integers(6, 10),
)
def test_never_an_sms_outside_the_daytime_of_every_candidate_zone(zones: list[str], at: datetime, start: int, end: int) -> None:
    quiet = (time(start), time(end))
    send_at = schedule.next_sms_time_everywhere(at, zones, quiet)
    if send_at is None:
        # No shared daytime: then truly none in the next two days, at a quarter-hour's grain.
        assert len(zones) > 1
        assert all(schedule.quiet_anywhere(at + timedelta(minutes=15 * i), zones, quiet) for i in range(2 * 96))
        return
    assert send_at >= at
    for zone in zones:
        assert not schedule.in_quiet_hours(send_at, zone, quiet), (zone, send_at.astimezone(ZoneInfo(zone)))
    # …and held no longer than needed.
    step = timedelta(minutes=15)
    probe = at + step
    while probe < send_at - step:
        assert schedule.quiet_anywhere(probe, zones, quiet), probe
        probe += step


def test_one_zone_is_held_exactly_as_before() -> None:
    for zone in ("America/Los_Angeles", "Europe/Berlin", None):
        for hours in range(0, 48, 5):
            at = AT + timedelta(hours=hours)
            zones = [zone] if zone else []
            assert schedule.next_sms_time_everywhere(at, zones, NIGHT) == schedule.next_sms_time(at, zone, NIGHT)


# --- the case's SMS decisions -----------------------------------------------------------------


def _case(**profile: object) -> Case:
    policy = make_policy(quiet_hours=["21:00", "08:00"])
    case = Case.open("dunning-sub_1", "sub_1", "cus_1", policy, AT)
    case.payment_failed(PaymentFailed(invoice_id="in_1", amount_due=4900, currency="usd"), AT)
    case.state.customer = CustomerProfile(customer_id="cus_1", **profile)  # type: ignore[arg-type]
    return case


def _sms_step(case: Case) -> SendStep:
    step = next(s for s in case.policy.notify if "sms" in s.channels) if any(
        "sms" in s.channels for s in case.policy.notify
    ) else case.policy.notify[0].model_copy(update={"channels": ["email", "sms"]})
    return SendStep(step, "step-1")


def test_several_zones_hold_the_sms_until_it_is_day_in_all() -> None:
    zones = ["America/Los_Angeles", "America/New_York"]
    case = _case(timezone="America/Los_Angeles", timezone_candidates=zones, timezone_source="address")
    now = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)  # 08:00 in New York, 05:00 in Los Angeles
    action = _sms_step(case)
    assert case.hold_sms_if_quiet(action.step, action.step_id, now)
    assert case.state.pending_sms[0].due_at == datetime(2026, 3, 2, 16, 0, tzinfo=UTC)  # 08:00 in Los Angeles
    assert "one of 2 possible time zones" in case.state.timeline[-1].detail


def test_no_shared_daytime_means_email_instead_and_says_why() -> None:
    # Los Angeles is awake 16-05 UTC, Berlin 07-20, Tokyo 23-12: never all three at once.
    zones = ["America/Los_Angeles", "Asia/Tokyo", "Europe/Berlin"]
    case = _case(timezone="America/Los_Angeles", timezone_candidates=zones, timezone_source="address")
    sms = Delivery(Channel.SMS, "reminder", "step-1", (Channel.SMS,))
    reason = case.sms_refusal(sms, AT)
    assert reason and "no hour is daytime in all 3 time zones" in reason
    assert not case.hold_sms_if_quiet(_sms_step(case).step, "step-1", AT)  # never held forever
    fallback = case.refuse_sms(sms, reason, AT)
    assert fallback is not None and fallback.channel is Channel.EMAIL
    assert case.state.notifications[-1].status == "skipped"
    assert case.state.timeline[-1].event == "message_skipped" and "email instead" in case.state.timeline[-1].detail
    # The step's own email is enough: no second one.
    assert case.refuse_sms(Delivery(Channel.SMS, "reminder", "step-1", (Channel.EMAIL, Channel.SMS)), reason, AT) is None
    assert case.sms_refusal(Delivery(Channel.EMAIL, "reminder", "step-1", (Channel.EMAIL,)), AT) is None


def test_a_profile_from_before_inference_behaves_as_before() -> None:
    case = _case(timezone="Europe/Berlin")  # no candidates, no source
    assert case.sms_zones() == ["Europe/Berlin"]
    assert case.sms_refusal(Delivery(Channel.SMS, "reminder", "step-1", (Channel.SMS,)), AT) is None
    assert _case().sms_zones() == []


def test_status_and_details_say_which_zone_and_why() -> None:
    zones = list(country_zones()["US"])
    case = _case(timezone="America/Los_Angeles", timezone_candidates=zones, timezone_source="address")
    status = case.status(case.plan())
    assert (status.customer_timezone, status.customer_timezone_source) == ("America/Los_Angeles", "address")
    assert status.customer_timezone_candidates == zones
    assert f"Time zone: America/Los_Angeles (from address); {len(zones)} possible" in case.details(case.plan())
    narrowed = _case(
        timezone="America/New_York",
        timezone_candidates=["America/New_York"],
        timezone_source="address",
        timezone_narrowed_by=["phone"],
    )
    assert "Time zone: America/New_York (from address, narrowed by phone)" in narrowed.details(narrowed.plan())
    assert "Time zone: unknown" in _case().details(_case().plan())
