"""Email suppressions: which SendGrid events stop email and how the case says so (pure), and the
store on SQLite (the same checks run on PostgreSQL in tests/integration/test_email_suppression_postgres.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dunning.email_suppression import SuppressionKind, is_email_suppression, suppresses, suppression_reason
from tests.helpers import suppression_checks
from tests.helpers.database import sqlite_database


@pytest.mark.parametrize(
    ("event", "bounce_type", "reason", "kind"),
    [
        ("bounce", "bounce", "550 5.1.1 unknown user", SuppressionKind.BOUNCE),
        ("bounce", None, None, SuppressionKind.BOUNCE),
        ("bounce", "blocked", "421 try later", None),  # temporary: SendGrid keeps the address too
        ("dropped", None, "Bounced Address", SuppressionKind.DROPPED),
        ("dropped", None, "Invalid", SuppressionKind.DROPPED),
        ("dropped", None, "Spam Content (if spam checker app enabled)", None),  # the content, not the address
        ("spamreport", None, None, SuppressionKind.SPAMREPORT),
        ("unsubscribe", None, None, SuppressionKind.UNSUBSCRIBE),
        ("group_unsubscribe", None, None, SuppressionKind.GROUP_UNSUBSCRIBE),
        ("delivered", None, None, None),
        ("open", None, None, None),
        ("something_new", None, None, None),
    ],
)
def test_which_events_stop_email(event: str, bounce_type: str | None, reason: str | None, kind) -> None:
    assert suppresses(event, bounce_type=bounce_type, reason=reason) == kind


def test_reasons_read_well_and_are_recognised() -> None:
    assert suppression_reason(SuppressionKind.BOUNCE, "550  5.1.1\nunknown") == "email bounced: 550 5.1.1 unknown"
    assert suppression_reason(SuppressionKind.SPAMREPORT, "whatever") == "marked as spam"
    assert suppression_reason(SuppressionKind.UNSUBSCRIBE) == "unsubscribed"
    assert suppression_reason(SuppressionKind.GROUP_UNSUBSCRIBE, "group 42") == "unsubscribed (group 42)"
    for kind in SuppressionKind:
        assert is_email_suppression(suppression_reason(kind, "x"))
    assert not is_email_suppression("no email address")
    assert not is_email_suppression(None)


def test_store_on_sqlite(tmp_path: Path) -> None:
    suppression_checks.check_store(sqlite_database(tmp_path))
