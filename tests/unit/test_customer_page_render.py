"""The customer's page in every state and both languages, rendered from a hand-built `status`
and compared to snapshots (no Temporal, no database: `case_view` is pure).

The snapshots under tests/snapshots/page/<language>/<state>.html are the review copy: read them
to see exactly what a customer gets. After an intended change to the page or its texts,
regenerate them with

    UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/unit/test_customer_page_render.py

and read the diff before committing it.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dunning.card_expiry import CardExpiryStatus, RenewalCard
from dunning.models import (
    AccessState,
    CustomerProfile,
    CancelReason,
    CaseStatus,
    CustomerFeedback,
    DeclineCategory,
    Stage,
    TimelineEntry,
)
from runtime.links import LinkSigner
from starter.api.page_texts import TEXTS
from starter.api.routes.customer_page import case_view, message_view, reminder_view, render_page

SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots" / "page"
UPDATE = os.environ.get("UPDATE_SNAPSHOTS") == "1"
SIGNER = LinkSigner([b"snapshot-link-key-not-secret"])
TOKEN = "T" * 32
OPENED = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
COMPANY, SUPPORT = "Acme", "billing@acme.example"
LOCALES = {"en": "en-US", "de": "de-DE"}
ZONES = {"en": "America/New_York", "de": "Europe/Berlin"}


def status(lang: str, **changes: Any) -> CaseStatus:
    """An open case: a soft decline, retry on March 5, access until March 16, ends April 15."""
    base: dict[str, Any] = dict(
        case_id="case-1",
        subscription_id="sub_1",
        customer_id="cus_1",
        policy="default",
        stage=Stage.RETRYING,
        outcome=None,
        access=AccessState.GRACE,
        opened_at=OPENED,
        amount_due=4900,
        currency="eur",
        outstanding_invoices=[],
        invoices=[],
        decline_category=DeclineCategory.SOFT,
        attempts=[],
        notifications=[],
        timeline=[],
        paused=False,
        pause_reason=None,
        grace_ends_at=OPENED + timedelta(days=14),
        next_action="retry",
        next_action_at=OPENED + timedelta(days=3),
        next_retry_at=OPENED + timedelta(days=3),
        cancel_at=OPENED + timedelta(days=44),
        customer_locale=LOCALES[lang],
        customer_timezone=ZONES[lang],
        plan_name="Pro",
        self_service_grace=timedelta(days=7),
        self_service_grace_left=1,
        customer_extensions=0,
    )
    base.update(changes)
    return CaseStatus(**base)


CLOSED = OPENED + timedelta(days=5)
FEEDBACK = CustomerFeedback(reason=CancelReason.TOO_EXPENSIVE, comment="Budget cuts")

#: state → (changes to the open case, notice)
CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    "open": ({}, None),
    "open-authentication": ({"decline_category": DeclineCategory.AUTHENTICATION, "next_retry_at": None}, None),
    "open-hard": ({"decline_category": DeclineCategory.HARD, "stage": Stage.AWAITING_PAYMENT_METHOD,
                   "next_retry_at": None}, None),
    "grace-extended": (
        {"grace_ends_at": OPENED + timedelta(days=21), "customer_extensions": 1, "self_service_grace_left": 0},
        "more-time",
    ),
    "card-returned": ({}, "card"),  # back from the billing portal, the charge not yet done
    # A paused or suspended case gives no more time (Case.self_service_grace_left is 0 then).
    "paused": ({"paused": True, "pause_reason": "disputed", "stage": Stage.PAUSED, "next_retry_at": None,
                "self_service_grace_left": 0}, None),
    "suspended": (
        {"stage": Stage.SUSPENDED, "access": AccessState.SUSPENDED, "suspended_at": OPENED + timedelta(days=14),
         "next_retry_at": None, "self_service_grace_left": 0},
        None,
    ),
    "recovered": ({"stage": Stage.RECOVERED, "outcome": Stage.RECOVERED, "access": AccessState.ACTIVE,
                   "amount_due": 0, "closed_at": CLOSED}, None),
    "canceled": ({"stage": Stage.CANCELED, "outcome": Stage.CANCELED, "closed_at": OPENED + timedelta(days=44)}, None),
    "closed_by_customer": ({"stage": Stage.CLOSED_BY_CUSTOMER, "outcome": Stage.CLOSED_BY_CUSTOMER,
                            "closed_at": CLOSED, "feedback": FEEDBACK}, None),
    "canceling": ({"feedback": FEEDBACK, "timeline": [TimelineEntry(at=CLOSED, event="customer_canceled")]}, None),
    "written_off": ({"stage": Stage.WRITTEN_OFF, "outcome": Stage.WRITTEN_OFF, "closed_at": CLOSED}, None),
}
MESSAGES = ["not_found", "expired", "closed", "ended", "goodbye_kept", "busy", "too_many"]


def reminder(lang: str, **changes: Any) -> CardExpiryStatus:
    """A pre-dunning reminder: the Visa ending 4242 expires in March, the renewal is on April 2."""
    base: dict[str, Any] = dict(
        reminder_id="card-expiry-sub_1@20260302T080000Z",
        subscription_id="sub_1",
        customer_id="cus_1",
        policy="high_value",
        opened_at=OPENED,
        renewal_at=OPENED + timedelta(days=31),
        card=RenewalCard(payment_method_id="pm_1", brand="visa", last4="4242", exp_month=3, exp_year=2026),
        customer=CustomerProfile(customer_id="cus_1", locale=LOCALES[lang]),
    )
    base.update(changes)
    return CardExpiryStatus(**base)


REMINDERS: dict[str, dict[str, Any]] = {
    "card-expiring": {},
    "card-expiring-done": {"ended": "card_auto_updated", "closed_at": CLOSED},
}


def rendered(lang: str, state: str) -> str:
    if state in REMINDERS:
        values = reminder_view(reminder(lang, **REMINDERS[state]), token=TOKEN, company=COMPANY, support_email=SUPPORT)
        return render_page("case.html", **values)
    if state in CASES:
        changes, notice = CASES[state]
        values = case_view(
            status(lang, **changes), token=TOKEN, link_id="L" * 16, signer=SIGNER,
            company=COMPANY, support_email=SUPPORT, notice_key=notice,
        )
        return render_page("case.html", **values)
    return render_page("message.html", **message_view(state, lang, COMPANY, SUPPORT))


EXAMPLES = [(lang, state) for lang in TEXTS for state in [*CASES, *REMINDERS, *MESSAGES]]


@pytest.mark.parametrize(("lang", "state"), EXAMPLES, ids=[f"{lang}-{state}" for lang, state in EXAMPLES])
def test_snapshot(lang: str, state: str) -> None:
    content = rendered(lang, state)
    path = SNAPSHOTS / lang / f"{state}.html"
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"{path} was missing and has been written: review and commit it")
    assert content == path.read_text(encoding="utf-8"), (
        f"{path} differs from the rendering; UPDATE_SNAPSHOTS=1 if the change is intended"
    )


@pytest.mark.parametrize(("lang", "state"), EXAMPLES, ids=[f"{lang}-{state}" for lang, state in EXAMPLES])
def test_every_placeholder_is_filled_and_the_language_is_declared(lang: str, state: str) -> None:
    content = rendered(lang, state)
    assert f'<html lang="{lang}">' in content
    assert not re.search(r"\{[a-z_]+\}", content), "an unfilled {placeholder}"
    assert "None" not in content
    assert "<script" not in content


@pytest.mark.parametrize("state", MESSAGES)
def test_pages_without_a_case_show_no_customer_data(state: str) -> None:
    content = rendered("en", state)
    assert "€" not in content and "Pro" not in content and TOKEN not in content


def test_the_texts_have_the_same_keys_in_every_language() -> None:
    keys = {lang: set(texts) for lang, texts in TEXTS.items()}
    assert all(k == keys["en"] for k in keys.values()), {lang: k ^ keys["en"] for lang, k in keys.items()}
