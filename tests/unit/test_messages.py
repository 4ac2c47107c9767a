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
            "company_address": "1 Main Street, Springfield, IL 62701, USA",
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
            "company_address": "Acme GmbH\nMusterstraße 1\n10115 Berlin",
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
    "declined": {"decline_category": "hard", "decline_code": "stolen_card"},
}
#: The messages whose wording follows the decline (every channel, the short ones too).
BY_DECLINE = ("payment_failed", "reminder", "final_notice", "suspended")
#: What else changes the wording: the recovered message after a scheduled retry went through
#: (plain thanks) or after the customer acted; a case with one invoice paid and one open.
EXTRA_VARIANTS = {
    "recovered": {
        "": {"amount_due": 0, "amount_paid": "{paid}", "customer_acted": False},
        "customer_acted": {"amount_due": 0, "amount_paid": "{paid}", "customer_acted": True},
        # a backup card paid after a hard decline on the card on file: the thanks says which
        "backup_card": {
            "amount_due": 0,
            "amount_paid": "{paid}",
            "customer_acted": False,
            "paid_with_brand": "Visa",
            "paid_with_last4": "4242",
        },
    },
    "reminder": {"partly_paid": {"amount_paid": 999_999}},
}


def examples() -> list[tuple[str, str, str, dict, str]]:
    """(language, file stem, template, context, locale) for every example we keep."""
    cases = []
    for language in LANGUAGES:
        customer = CUSTOMERS[language]
        for template in TEMPLATES:
            variants = dict(DECLINE_VARIANTS) if template in BY_DECLINE else {"": {}}
            variants.update(EXTRA_VARIANTS.get(template, {}))
            for variant, extra in variants.items():
                stem = f"{template}.{variant}" if variant else template
                context = {**customer["context"], **CASE, **extra}
                if context.get("amount_paid") == "{paid}":
                    context["amount_paid"] = customer["context"]["amount_due"]
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
    assert "Enterprise" not in text and "$49.00" in text


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


# --- SMS length with real links and worst-case values -------------------------------------------

#: The customer's page link as it really is: `{DUNNING_PUBLIC_URL}/c/` and a 32-character token,
#: locally and behind a production-like host name.
REAL_LINKS = {
    "local": "http://127.0.0.1:8000/c/" + "x" * 32,
    "production": "https://billing.example-company.com/c/" + "x" * 32,
}
#: The longest values a customer realistically gets: a five-figure amount, September dates (the
#: longest short month names: "Sep 30", "30. Sept."), a long plan name, and a sender name of
#: 14 characters (the budget the templates are written for; README in activities/templates).
WORST_CASE = {
    "en": {
        "customer_name": "Maximilian Alexander",
        "plan_name": "Enterprise Analytics Suite (annual)",
        "amount_due": 1_234_567,
        "amount_paid": 1_234_567,
        "currency": "usd",
        "timezone": "America/New_York",
        "company_name": "Acme Analytics",
    },
    "de": {
        "customer_name": "Maximilian Alexander",
        "plan_name": "Enterprise Analytics Suite (jährlich)",
        "amount_due": 1_234_567,
        "amount_paid": 1_234_567,
        "currency": "eur",
        "timezone": "Europe/Berlin",
        "company_name": "Acme Analytics",
    },
}
WORST_DATES = {
    "next_retry_at": "2026-09-30T14:00:00+00:00",
    "grace_ends_at": "2026-09-30T14:00:00+00:00",
    "cancel_at": "2026-09-30T14:00:00+00:00",
    "days_left": 14,
    "card_brand": "American Express",
    "card_last4": "0005",
    "card_exp_month": 9,
    "card_exp_year": 2026,
}
ALL_DECLINES = {
    "soft": {"decline_category": "soft", "decline_code": "insufficient_funds"},
    "hard": {"decline_category": "hard", "decline_code": "stolen_card"},
    "expired": {"decline_category": "hard", "decline_code": "expired_card"},
    "authentication": {"decline_category": "authentication", "decline_code": "authentication_required"},
    "unknown": {},
}


@pytest.mark.parametrize("link", REAL_LINKS)
@pytest.mark.parametrize("decline", ALL_DECLINES)
@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_sms_fits_one_segment_with_a_real_link_and_worst_case_values(
    language: str, template: str, decline: str, link: str
) -> None:
    locale = {"en": "en-US", "de": "de-DE"}[language]
    context = {**WORST_CASE[language], **WORST_DATES, **ALL_DECLINES[decline], "update_url": REAL_LINKS[link]}
    text = render_message(template, Channel.SMS, context, locale).text
    encoding, length = sms_length(text)
    assert (encoding, sms_segments(text)) == ("gsm7", 1), f"{length} characters: {text}"
    assert REAL_LINKS[link] in text and text.startswith("Acme Analytics: ")
    assert text.endswith("Reply STOP to opt out" if language == "en" else "Abmelden: STOP")


@pytest.mark.parametrize("language", LANGUAGES)
def test_short_channels_name_the_dates_that_matter(language: str) -> None:
    """The final notice says when access pauses, the suspension when the subscription ends,
    however short the SMS has to be."""
    locale = {"en": "en-US", "de": "de-DE"}[language]
    for link in REAL_LINKS.values():
        for decline in ALL_DECLINES.values():
            context = {**WORST_CASE[language], **WORST_DATES, **decline, "update_url": link}
            final = render_message("final_notice", Channel.SMS, context, locale).text
            assert ("Sep 30" if language == "en" else "30. Sept.") in final, final
    context = {**CUSTOMERS[language]["context"], **CASE}
    banner = render_banner("suspended", context, CUSTOMERS[language]["locale"])
    assert ("January 4, 2027" if language == "en" else "4. Januar 2027") in banner


@pytest.mark.parametrize("language", LANGUAGES)
def test_short_channels_follow_the_decline(language: str) -> None:
    locale = CUSTOMERS[language]["locale"]
    for template in ("final_notice", "suspended"):
        for channel in (Channel.SMS, Channel.IN_APP):
            texts = {
                name: render_message(template, channel, {**CUSTOMERS[language]["context"], **CASE, **extra}, locale).text
                for name, extra in ALL_DECLINES.items()
            }
            # a confirmation, a new card and a soft decline's options each ask for something else
            assert len({texts["authentication"], texts["hard"], texts["soft"]}) == 3, (template, channel, texts)
            if channel is Channel.IN_APP:  # room enough to tell an expired card from a declined one
                assert texts["expired"] != texts["hard"], (template, texts)


def test_only_the_recovered_message_speaks_of_the_paid_amount() -> None:
    # One invoice of $9,999.99 paid, $49.00 still open: the reminder asks for $49.00.
    context = {**CUSTOMERS["en"]["context"], **CASE, "amount_due": 4900, "amount_paid": 999_999}
    for template in ("payment_failed", "reminder", "final_notice", "suspended", "canceled"):
        for channel in Channel:
            text = render_message(template, channel, context, "en-US").text
            assert "9,999.99" not in text, (template, channel, text)
    recovered = {**context, "amount_due": 0}
    assert "$9,999.99" in render_message("recovered", Channel.EMAIL, recovered, "en-US").text


@pytest.mark.parametrize("language", LANGUAGES)
def test_thanks_for_sorting_it_out_only_when_the_customer_acted(language: str) -> None:
    sorted_out = "Thank you for sorting this out!" if language == "en" else "dass Sie sich darum gekümmert haben"
    context = {**CUSTOMERS[language]["context"], **CASE, "amount_due": 0, "amount_paid": 4900}
    locale = CUSTOMERS[language]["locale"]
    for channel_text in (
        render_message("recovered", Channel.EMAIL, {**context, "customer_acted": False}, locale).text,
        render_message("recovered", Channel.EMAIL, {**context, "customer_acted": False}, locale).html,
    ):
        assert sorted_out not in (channel_text or "")
    acted = render_message("recovered", Channel.EMAIL, {**context, "customer_acted": True}, locale)
    assert sorted_out in acted.text and sorted_out in (acted.html or "")


def test_every_email_carries_the_legal_footer() -> None:
    for language in LANGUAGES:
        context = {**CUSTOMERS[language]["context"], **CASE}
        for template in TEMPLATES:
            email = render_message(template, Channel.EMAIL, context, CUSTOMERS[language]["locale"])
            line = (
                "Acme, 1 Main Street, Springfield, IL 62701, USA"
                if language == "en"
                else "Acme GmbH, Musterstraße 1, 10115 Berlin"  # the name is not repeated
            )
            assert email.text.rstrip().endswith(line), (language, template)
            assert line in (email.html or ""), (language, template)


def test_the_legal_footer_escapes_html_and_is_left_out_without_an_address() -> None:
    context = {**CASE, "company_name": "R&D <Labs>", "company_address": "1 <b>Main</b> St"}
    html = render_message("reminder", Channel.EMAIL, context, "en").html or ""
    assert "R&amp;D &lt;Labs&gt;, 1 &lt;b&gt;Main&lt;/b&gt; St" in html
    text = render_message("reminder", Channel.EMAIL, {**CASE, "company_name": "Acme"}, "en").text
    assert text.rstrip().endswith("with Acme.")
