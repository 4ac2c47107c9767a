"""Rendering a ladder step into what the customer reads, per channel and locale.

Templates are Jinja2 files under `activities/templates/<language>/` (see the README there
for every file and every variable). Money and dates are formatted here with Babel, in the
customer's locale, so templates only place ready-made strings and never do arithmetic.

- `render_message(template, channel, context, locale)` is what `send_notification` calls.
- `render_banner(template, context, locale)` is the short in-app text for the SaaS app.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_skeleton
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape
from markupsafe import escape
from pydantic import BaseModel

from dunning import money
from dunning.models import Channel

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
LANGUAGES = ("en", "de")
DEFAULT_LANGUAGE = "en"
TEMPLATES = (
    "payment_failed",
    "reminder",
    "final_notice",
    "suspended",
    "recovered",
    "canceled",
    "card_expiring",
)
SMS_SEGMENT_LIMIT = 160  # one GSM-7 segment
#: The files that make one template: every channel, since a step's SMS can fall back to email
#: and every case shows its banner in-app.
TEMPLATE_FILES = ("email.subject.txt", "email.txt", "email.html", "sms.txt", "in_app.txt")


class RenderedMessage(BaseModel):
    subject: str | None = None
    text: str
    html: str | None = None


class UnknownTemplate(LookupError):
    """No template by that name: a policy names a template nobody wrote."""


_env = Environment(
    loader=FileSystemLoader(TEMPLATE_DIR),
    undefined=StrictUndefined,
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)


# --- locale --------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _parse_locale(locale: str | None) -> Locale:
    try:
        return Locale.parse((locale or DEFAULT_LANGUAGE).replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError):
        return Locale.parse(DEFAULT_LANGUAGE)


def language_for(locale: str | None) -> str:
    """The template language for a customer locale (`de-AT` → `de`); English when we have none."""
    language = _parse_locale(locale).language
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


# --- formatting ----------------------------------------------------------------------


def format_money(amount_minor: int, currency: str, locale: str | None) -> str:
    """Minor units → an amount in the customer's locale, with the currency's own decimals."""
    return money.format_money(amount_minor, currency, _parse_locale(locale))


def _to_date(value: Any, tz: str | None) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return value
    else:
        text = str(value)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return date.fromisoformat(text[:10])
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if tz:
        try:
            moment = moment.astimezone(ZoneInfo(tz))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return moment.date()


def _long_date(value: Any, tz: str | None, locale: Locale) -> str | None:
    day = _to_date(value, tz)
    return format_date(day, "long", locale=locale) if day else None


def _short_date(value: Any, tz: str | None, locale: Locale) -> str | None:
    day = _to_date(value, tz)
    return format_skeleton("MMMd", day, locale=locale) if day else None


def _first_name(name: Any) -> str | None:
    if not name or not str(name).strip():
        return None
    return str(name).strip().split()[0]


def _int_or_none(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _money_or_none(amount_minor: Any, currency: Any, locale: str | None) -> str | None:
    minor = _int_or_none(amount_minor)
    return format_money(minor, str(currency), locale) if minor and currency else None


def _address(value: Any) -> str | None:
    """The postal address on one line: `DUNNING_COMPANY_ADDRESS` may separate its lines with
    newlines (or a literal `\\n`, as an env file writes it) or commas."""
    if not value or not str(value).strip():
        return None
    lines = [line.strip() for line in re.split(r"\n|\\n", str(value)) if line.strip()]
    return ", ".join(lines)


def _legal_line(company: Any, address: str | None) -> str | None:
    """Who sends the email and where, for its footer: "Acme GmbH, Musterstraße 1, 10115 Berlin".
    Only with an address (the name alone is already in the footer's sentence); the name is not
    repeated when the address starts with it."""
    if not address:
        return None
    name = str(company or "").strip()
    return address if not name or address.startswith(name) else f"{name}, {address}"


def build_view(context: Mapping[str, Any], locale: str | None) -> dict[str, Any]:
    """The variables every template sees: context values, formatted for the customer."""
    loc = _parse_locale(locale)
    tz = context.get("timezone") or None
    currency = context.get("currency")
    # What is outstanding. A case with one paid and one open invoice asks only for the open one;
    # what was paid (`amount_paid`) is for the `recovered` message alone. Never say "0.00".
    amount = _money_or_none(context.get("amount_due"), currency, locale)
    amount_paid = _money_or_none(context.get("amount_paid"), currency, locale)
    decline = context.get("decline_category") or "unknown"
    decline_code = context.get("decline_code") or None
    days_left = _int_or_none(context.get("days_left"))
    card_expiry = None
    exp_month, exp_year = _int_or_none(context.get("card_exp_month")), _int_or_none(context.get("card_exp_year"))
    if exp_month and exp_year:
        card_expiry = format_skeleton("yMMMM", date(exp_year, exp_month, 1), locale=loc)
    update_url = context.get("update_url")
    if not update_url:
        raise ValueError("every message needs `update_url`: the one-click link to fix the payment")
    return {
        "name": _first_name(context.get("customer_name")),
        "company": context.get("company_name") or None,
        "plan": context.get("plan_name") or None,
        "amount": amount,
        "amount_paid": amount_paid,
        # Thank the customer for sorting it out only when they did (card update, paid elsewhere
        # or on their page); a scheduled retry that went through gets a plain thank-you.
        "customer_acted": bool(context.get("customer_acted")),
        "decline": decline if decline in ("hard", "soft", "authentication") else "unknown",
        "expired": decline_code == "expired_card",
        "retry_date": _long_date(context.get("next_retry_at"), tz, loc),
        "retry_date_short": _short_date(context.get("next_retry_at"), tz, loc),
        "grace_date": _long_date(context.get("grace_ends_at"), tz, loc),
        "grace_date_short": _short_date(context.get("grace_ends_at"), tz, loc),
        "cancel_date": _long_date(context.get("cancel_at"), tz, loc),
        "cancel_date_short": _short_date(context.get("cancel_at"), tz, loc),
        "days_left": days_left,
        "update_url": str(update_url),
        "support_email": context.get("support_email") or None,
        "legal_line": _legal_line(context.get("company_name"), _address(context.get("company_address"))),
        "card_last4": context.get("card_last4") or None,
        "card_brand": context.get("card_brand") or None,
        "card_expiry": card_expiry,
        # The card that paid (a backup card after a hard decline, or a new one): the thank-you says which.
        "paid_with_brand": context.get("paid_with_brand") or None,
        "paid_with_last4": context.get("paid_with_last4") or None,
        "compact": False,
        "minimal": False,
    }


# --- SMS length ----------------------------------------------------------------------

_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")
_SMS_SAFE = str.maketrans(
    {
        "\u00a0": " ",
        "\u202f": " ",
        "\u2009": " ",
        "\u2019": "'",
        "\u2018": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
    }
)


def sms_safe(text: str) -> str:
    """Typography that would force UCS-2 (70 chars a segment) → its GSM-7 equivalent."""
    return re.sub(r"\s+", " ", text.translate(_SMS_SAFE)).strip()


def sms_length(text: str) -> tuple[str, int]:
    """(`gsm7` or `ucs2`, length in that encoding's units: GSM-7 extension characters count twice)."""
    if all(c in _GSM7_BASIC or c in _GSM7_EXTENDED for c in text):
        return "gsm7", sum(2 if c in _GSM7_EXTENDED else 1 for c in text)
    return "ucs2", len(text.encode("utf-16-le")) // 2


def sms_segments(text: str) -> int:
    encoding, length = sms_length(text)
    single, multi = (160, 153) if encoding == "gsm7" else (70, 67)
    return 1 if length <= single else -(-length // multi)


# --- rendering -----------------------------------------------------------------------


def _render(path: str, view: Mapping[str, Any]) -> str:
    return _env.get_template(path).render(**view).strip()


def missing_templates(names: Iterable[str]) -> list[str]:
    """The template files a set of names lacks, as `<language>/<file>` (empty: all there).

    A template is usable only when it has every channel's file in every language: a missing one
    would otherwise surface as `UnknownTemplate` at the first customer who needs it. Policies are
    checked with this at every start (`activities/policy_check.py`).
    """
    return [
        f"{language}/{name}.{suffix}"
        for name in dict.fromkeys(names)
        for language in LANGUAGES
        for suffix in TEMPLATE_FILES
        if not (TEMPLATE_DIR / language / f"{name}.{suffix}").is_file()
    ]


def _template_path(language: str, template: str, suffix: str) -> str:
    if template not in TEMPLATES and not (TEMPLATE_DIR / language / f"{template}.{suffix}").exists():
        raise UnknownTemplate(f"no template {template!r} (have: {', '.join(TEMPLATES)})")
    return f"{language}/{template}.{suffix}"


def _tidy(text: str) -> str:
    """Collapse the blank lines conditional blocks leave behind; keep paragraphs."""
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def render_message(template: str, channel: Channel, context: Mapping[str, Any], locale: str = "en") -> RenderedMessage:
    """What the customer reads for one ladder step on one channel, in their language."""
    language = language_for(locale)
    view = build_view(context, locale)
    try:
        if channel is Channel.SMS:
            return RenderedMessage(text=_render_sms(language, template, view))
        if channel is Channel.IN_APP:
            return RenderedMessage(text=sms_free(_render(_template_path(language, template, "in_app.txt"), view)))
        subject = " ".join(_render(_template_path(language, template, "email.subject.txt"), view).split())
        text = _tidy(_render(_template_path(language, template, "email.txt"), view))
        # Macros shared with the text version are compiled without autoescaping, so escape the
        # values themselves: customer data is Markup-safe before any template sees it.
        html_view = {k: escape(v) if isinstance(v, str) else v for k, v in view.items()}
        html = _render(_template_path(language, template, "email.html"), {**html_view, "subject": subject})
    except TemplateNotFound as exc:
        raise UnknownTemplate(f"template {template!r} has no {channel} version ({exc.name})") from exc
    return RenderedMessage(subject=subject, text=text + "\n", html=html + "\n")


def sms_free(text: str) -> str:
    return " ".join(text.split())


#: The wordings an SMS template offers, longest first: `compact` drops the plan (and what else the
#: template can spare), `minimal` keeps only what the customer must know and the link.
SMS_WORDINGS = ({"compact": False, "minimal": False}, {"compact": True, "minimal": False}, {"compact": True, "minimal": True})


def _render_sms(language: str, template: str, view: dict[str, Any]) -> str:
    """One GSM-7 segment where it can be: the first wording that fits, else the shortest."""
    path = _template_path(language, template, "sms.txt")
    text = ""
    for wording in SMS_WORDINGS:
        text = sms_safe(_render(path, {**view, **wording}))
        if sms_segments(text) == 1:
            break
    # Without a company prefix ("Acme: your payment…") the text starts a sentence.
    return text[:1].upper() + text[1:]


def render_banner(template: str, context: Mapping[str, Any], locale: str = "en") -> str:
    """The short in-app banner text for the SaaS app (one or two sentences, no link markup)."""
    return render_message(template, Channel.IN_APP, context, locale).text
