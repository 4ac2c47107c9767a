"""What a customer reads: every template, channel and language, rendered and compared to snapshots.

The snapshots under tests/snapshots/messages/<language>/ are the review copy: read them to see
exactly what goes out. After an intended wording change, regenerate them with

    UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/unit/test_messages.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from activities.messages import (
    LANGUAGES,
    TEMPLATES,
    UnknownTemplate,
    format_money,
    language_for,
    render_banner,
    render_message,
    sms_length,
    sms_segments,
)
from dunning.models import Channel

SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots" / "messages"
UPDATE = os.environ.get("UPDATE_SNAPSHOTS") == "1"

# One customer per language, as the workflow and send_notification pass them.
CUSTOMERS = {
    "en": {
        "locale": "en-US",
        "context": {
            "customer_name": "Anna Smith",
            "plan_name": "Pro",
            "amount_due": 4900,
            "currency": "usd",
            "timezone": "America/New_York",
            "company_name": "Acme",
            "support_email": "help@acme.example",
        },
    },
    "de": {
        "locale": "de-DE",
        "context": {
            "customer_name": "Jonas Becker",
            "plan_name": "Pro",
            "amount_due": 1990,
            "currency": "eur",
            "timezone": "Europe/Berlin",
            "company_name": "Acme",
            "support_email": "hilfe@acme.example",
        },
    },
}
CASE = {
    "update_url": "https://pay.acme.example/u/cus_Q8x2",
    "next_retry_at": "2026-11-24T14:00:00+00:00",
    "grace_ends_at": "2026-12-05T14:00:00+00:00",
    "cancel_at": "2027-01-04T14:00:00+00:00",
    "days_left": 11,
    "decline_category": "soft",
    "decline_code": "insufficient_funds",
    "card_brand": "Visa",
    "card_last4": "4242",
    "card_exp_month": 12,
    "card_exp_year": 2026,
}
DECLINE_VARIANTS = {
    "": {},  # soft decline: insufficient funds, the retry date is mentioned
    "expired_card": {"decline_category": "hard", "decline_code": "expired_card"},
    "authentication": {"decline_category": "authentication", "decline_code": "authentication_required"},
}
LADDER = ("payment_failed", "reminder", "final_notice")


def examples() -> list[tuple[str, str, str, dict, str]]:
    """(language, file stem, template, context, locale) for every example we keep."""
    cases = []
    for language in LANGUAGES:
        customer = CUSTOMERS[language]
        for template in TEMPLATES:
            variants = DECLINE_VARIANTS if template in LADDER else {"": {}}
            for variant, extra in variants.items():
                stem = f"{template}.{variant}" if variant else template
                context = {**customer["context"], **CASE, **extra}
                cases.append((language, stem, template, context, customer["locale"]))
        jpy = {**customer["context"], **CASE, "amount_due": 1200, "currency": "jpy"}
        cases.append((language, "payment_failed.jpy", "payment_failed", jpy, customer["locale"]))
    return cases


def rendered_files(template: str, context: dict, locale: str) -> dict[str, str]:
    email = render_message(template, Channel.EMAIL, context, locale)
    sms = render_message(template, Channel.SMS, context, locale)
    encoding, length = sms_length(sms.text)
    return {
        "email.txt": f"Subject: {email.subject}\n\n{email.text}",
        "email.html": email.html or "",
        "sms.txt": f"{sms.text}\n\n[{length} characters, {encoding}, {sms_segments(sms.text)} segment(s)]\n",
        "in_app.txt": render_banner(template, context, locale) + "\n",
    }


@pytest.mark.parametrize(
    ("language", "stem", "template", "context", "locale"),
    examples(),
    ids=[f"{lang}-{stem}" for lang, stem, *_ in examples()],
)
def test_snapshot(language: str, stem: str, template: str, context: dict, locale: str) -> None:
    for suffix, content in rendered_files(template, context, locale).items():
        path = SNAPSHOTS / language / f"{stem}.{suffix}"
        if UPDATE or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            if not UPDATE:
                pytest.fail(f"{path} was missing and has been written: review and commit it")
        assert content == path.read_text(encoding="utf-8"), (
            f"{path} differs from the rendering; UPDATE_SNAPSHOTS=1 if the change is intended"
        )


@pytest.mark.parametrize(("language", "stem", "template", "context", "locale"), examples())
def test_sms_fits_one_gsm7_segment(language: str, stem: str, template: str, context: dict, locale: str) -> None:
    text = render_message(template, Channel.SMS, context, locale).text
    assert sms_length(text)[0] == "gsm7", text
    assert sms_segments(text) == 1, (len(text), text)
    assert context["update_url"] in text
    assert text.endswith("Reply STOP to opt out" if language == "en" else "Abmelden: STOP")


def test_long_plan_name_falls_back_to_compact_wording() -> None:
    context = {**CUSTOMERS["en"]["context"], **CASE, "plan_name": "Enterprise Analytics Suite (annual)"}
    text = render_message("reminder", Channel.SMS, context, "en").text
    assert sms_segments(text) == 1
    assert "Enterprise" not in text and "Nov 24" in text


def test_every_template_has_every_file_in_every_language() -> None:
    base = Path(__file__).resolve().parents[2] / "activities" / "templates"
    for language in LANGUAGES:
        for template in TEMPLATES:
            for part in ("email.subject.txt", "email.txt", "email.html", "sms.txt", "in_app.txt"):
                assert (base / language / f"{template}.{part}").is_file(), f"{language}/{template}.{part}"


def test_money_uses_the_currency_decimals_and_locale() -> None:
    assert format_money(1200, "jpy", "en") == "¥1,200"
    assert format_money(1990, "EUR", "de_DE") == "19,90\xa0€"
    assert format_money(4900, "usd", "en_US") == "$49.00"
    assert format_money(1000, "KWD", "en").endswith("1.000")  # three decimals


def test_locale_choice_falls_back_to_english() -> None:
    assert language_for("de-AT") == "de"
    assert language_for("de_CH") == "de"
    assert language_for("fr-FR") == "en"
    assert language_for("not a locale") == "en"
    assert language_for(None) == "en"
    context = {**CASE, "amount_due": 1990, "currency": "eur"}
    # Swiss German: German words, Swiss number format.
    banner = render_banner("payment_failed", context, "de-CH")
    assert banner.startswith("Ihre letzte Zahlung") and "19.90" in banner


def test_dates_are_in_the_customer_time_zone() -> None:
    # 02:00 UTC on Nov 24 is still Nov 23 in New York.
    context = {**CASE, "next_retry_at": "2026-11-24T02:00:00Z", "timezone": "America/New_York"}
    assert "November 23, 2026" in render_banner("payment_failed", context, "en-US")


def test_html_escapes_customer_data_but_text_keeps_it() -> None:
    context = {**CASE, "customer_name": "<script>alert(1)</script>", "plan_name": "R&D <Team>"}
    message = render_message("payment_failed", Channel.EMAIL, context, "en")
    assert "<script>" not in message.html and "&lt;script&gt;" in message.html
    assert "R&amp;D &lt;Team&gt;" in message.html
    assert "R&D <Team>" in message.text and "&amp;" not in message.text


def test_missing_values_degrade_gracefully() -> None:
    minimal = {"update_url": "https://pay.example/u"}
    for language in LANGUAGES:
        for template in TEMPLATES:
            for channel in Channel:
                text = render_message(template, channel, minimal, language).text
                assert "None" not in text and "{{" not in text, (language, template, channel, text)


def test_unknown_template_is_a_clear_error() -> None:
    with pytest.raises(UnknownTemplate):
        render_message("no_such_step", Channel.EMAIL, {"update_url": "https://x"}, "en")


def test_tone_is_never_threatening() -> None:
    words = ("legal", "collection agency", "debt", "inkasso", "anwalt", "mahnung", "lawyer", "failure to pay")
    for language, _stem, template, context, locale in examples():
        for content in rendered_files(template, context, locale).values():
            lowered = content.lower()
            assert not any(w in lowered for w in words), (language, template)
