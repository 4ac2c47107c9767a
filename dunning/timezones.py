"""Where the customer probably is: candidate time zones from what Stripe knows of them.

Pure (no network, no clock; the zone tables are package data read once): the Stripe backend
passes the raw hints, this module says which IANA zones remain possible and where that came
from. Hints are read in order of trust, and the first that names a place decides:

1. `metadata`: the customer's `timezone` metadata, when it names a real zone (then nothing else counts);
2. `address`: the billing address's country, narrowed to its state where a US state is given;
3. `phone`: the number's area (`phonenumbers`' prefix data); toll-free, premium-rate, VoIP and
   other non-geographic numbers say nothing and are skipped;
4. `shipping`: the shipping address, like the billing one;
5. `tax_location`: Stripe's `tax.location` (country, state), as Stripe Tax located the customer;
6. `locale`: the preferred locale's territory (`de-DE`, `fr_CA`); a language alone (`de`) names no
   country and is skipped.

A later hint that agrees with the deciding one (shares some of its zones) narrows the candidates
to the shared ones: a US address without a state and a New York phone number give New York. A
later hint that disagrees is ignored: the earlier one is trusted more.

Data: countries' zones from the IANA tz database's `zone.tab` (shipped by `tzdata`), US states'
from the `us` package, phone numbers' from `phonenumbers`. No country's provinces are covered
beyond US states: such a country keeps all its zones (Canada, Australia, Brazil…), and the case
only texts in the hours that are daytime in all of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import us
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as phone_timezones

Source = Literal["metadata", "address", "phone", "shipping", "tax_location", "locale"]
SOURCES: tuple[Source, ...] = ("metadata", "address", "phone", "shipping", "tax_location", "locale")

#: Numbers that are not tied to a place: they say nothing about the customer's zone.
NON_GEOGRAPHIC = frozenset(
    {
        PhoneNumberType.TOLL_FREE,
        PhoneNumberType.PREMIUM_RATE,
        PhoneNumberType.SHARED_COST,
        PhoneNumberType.VOIP,
        PhoneNumberType.PERSONAL_NUMBER,
        PhoneNumberType.UAN,
        PhoneNumberType.PAGER,
        PhoneNumberType.VOICEMAIL,
    }
)
_UNKNOWN_ZONE = "Etc/Unknown"
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")


@dataclass(frozen=True)
class Place:
    """An address as far as zones go: ISO 3166-1 alpha-2 country, and state or province."""

    country: str | None = None
    state: str | None = None


@dataclass(frozen=True)
class TimezoneHints:
    """What Stripe knows of the customer, raw."""

    metadata: str | None = None
    address: Place | None = None
    phone: str | None = None
    shipping: Place | None = None
    tax_location: Place | None = None
    locale: str | None = None


@dataclass(frozen=True)
class TimezoneGuess:
    """The zones the customer may be in (sorted by name), where they came from, and the one the
    case uses for its mornings (`chosen`: the candidate in the middle by UTC offset)."""

    candidates: tuple[str, ...] = ()
    source: Source | None = None
    narrowed_by: tuple[Source, ...] = ()
    chosen: str | None = None
    ignored: tuple[str, ...] = field(default=(), compare=False)


def is_zone(name: str) -> bool:
    """A zone name `zoneinfo` can load (IANA names, not `EST5EDT`-style abbreviations' typos)."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


@cache
def country_zones() -> dict[str, tuple[str, ...]]:
    """ISO country code → its zones, from the tz database's `zone.tab` (one line per country and zone)."""
    text = resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text(encoding="utf-8")
    zones: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) >= 3:
            zones.setdefault(parts[0].upper(), []).append(parts[2])
    return {country: tuple(sorted(names)) for country, names in zones.items()}


def _state_zones(state: str) -> tuple[str, ...]:
    """A US state's zones (by postal abbreviation or name), `()` when it is not one."""
    wanted = state.strip().casefold()
    for entry in us.states.STATES_AND_TERRITORIES:
        if wanted in (entry.abbr.casefold(), entry.name.casefold()):
            return tuple(entry.time_zones)
    return ()


def place_zones(place: Place | None) -> tuple[str, ...]:
    """The zones of a country, narrowed by its state where the data covers it."""
    if place is None or not place.country or not _COUNTRY.match(place.country.strip()):
        return ()
    country = place.country.strip().upper()
    zones = country_zones().get(country, ())
    if country == "US" and place.state:
        in_state = set(_state_zones(place.state))
        # The `us` package also names old links (America/Indianapolis); keep the canonical zones.
        narrowed = tuple(z for z in zones if z in in_state)
        if narrowed:
            return narrowed
    return zones


def phone_zones(phone: str | None, region: str | None = None) -> tuple[str, ...]:
    """The zones of a phone number's area; `()` for a number that names no place."""
    if not phone:
        return ()
    try:
        number = phonenumbers.parse(phone, region.upper() if region else None)
    except phonenumbers.NumberParseException:
        return ()
    if not phonenumbers.is_valid_number(number) or phonenumbers.number_type(number) in NON_GEOGRAPHIC:
        return ()
    return tuple(sorted(z for z in phone_timezones.time_zones_for_number(number) if z != _UNKNOWN_ZONE))


def locale_zones(locale: str | None) -> tuple[str, ...]:
    """The zones of a locale's territory (`de-DE` → Germany); `()` for a language alone."""
    if not locale:
        return ()
    for part in re.split(r"[-_]", locale.strip())[1:]:
        if _COUNTRY.match(part):
            return place_zones(Place(country=part))
    return ()


def utc_offset(zone: str, at: datetime) -> timedelta:
    return at.astimezone(ZoneInfo(zone)).utcoffset() or timedelta(0)


def middle_zone(zones: Iterable[str], at: datetime) -> str | None:
    """The zone in the middle by UTC offset at `at`: the middle of the distinct offsets (the
    western one of two), and the first zone by name at that offset. None for no zones."""
    by_offset: dict[timedelta, list[str]] = {}
    for zone in zones:
        by_offset.setdefault(utc_offset(zone, at), []).append(zone)
    if not by_offset:
        return None
    offsets = sorted(by_offset)
    return sorted(by_offset[offsets[(len(offsets) - 1) // 2]])[0]


def infer_timezone(hints: TimezoneHints, at: datetime) -> TimezoneGuess:
    """The customer's candidate zones from `hints` (see the module's docstring for the order);
    `at` only decides which zone is in the middle (UTC offsets change with summer time)."""
    ignored: list[str] = []
    if hints.metadata:
        if is_zone(hints.metadata.strip()):
            zone = hints.metadata.strip()
            return TimezoneGuess((zone,), "metadata", (), zone)
        ignored.append(f"metadata {hints.metadata!r} is not a time zone")
    region = next(
        (p.country for p in (hints.address, hints.shipping, hints.tax_location) if p and p.country), None
    )
    found: Sequence[tuple[Source, tuple[str, ...]]] = [
        ("address", place_zones(hints.address)),
        ("phone", phone_zones(hints.phone, region)),
        ("shipping", place_zones(hints.shipping)),
        ("tax_location", place_zones(hints.tax_location)),
        ("locale", locale_zones(hints.locale)),
    ]
    candidates: set[str] = set()
    source: Source | None = None
    narrowed_by: list[Source] = []
    for name, zones in found:
        if not zones:
            continue
        if source is None:
            source, candidates = name, set(zones)
            continue
        shared = candidates & set(zones)
        if shared and shared != candidates:
            candidates = shared
            narrowed_by.append(name)
        elif not shared:
            ignored.append(f"{name} ({', '.join(zones[:3])}{'…' if len(zones) > 3 else ''}) disagrees with {source}")
    ordered = tuple(sorted(candidates))
    return TimezoneGuess(ordered, source, tuple(narrowed_by), middle_zone(ordered, at), tuple(ignored))
