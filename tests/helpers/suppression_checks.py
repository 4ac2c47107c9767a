"""What the email suppression store must do, on any database (SQLite in unit tests, PostgreSQL in
integration): each event once, the newest reason wins, addresses compare case-insensitively, and
the rows come out with `dunning customer export` and go with `forget`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from dunning.email_suppression import SuppressionKind, suppression_reason
from runtime.customer_data import export_customer, forget_customer
from runtime.database import Database
from runtime.email_suppression import DatabaseEmailSuppressions, SuppressionEvent

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def event(event_id: str, kind: SuppressionKind = SuppressionKind.BOUNCE, *, email: str = "Anna@Example.com",
          at: datetime = T0, customer_id: str | None = "cus_1", detail: str | None = "550 5.1.1 unknown user") -> SuppressionEvent:  # fmt: skip
    return SuppressionEvent(event_id, email, kind, suppression_reason(kind, detail), at, customer_id, "dunning-sub_1@x")


def check_store(database: Database) -> None:
    asyncio.run(_check_store(database))


async def _check_store(database: Database) -> None:
    store = DatabaseEmailSuppressions(database)
    assert await store.suppression_for("anna@example.com") is None

    first = [event("ev-1"), event("ev-1")]  # the same event twice in a batch
    assert [e.event_id for e in await store.record(first)] == ["ev-1"]
    assert await store.record(first) == []  # SendGrid redelivers the batch: nothing new
    found = await store.suppression_for(" ANNA@example.COM ")
    assert found is not None
    assert (found.kind, found.reason, found.event_id, found.customer_id) == (
        SuppressionKind.BOUNCE, "email bounced: 550 5.1.1 unknown user", "ev-1", "cus_1"
    )  # fmt: skip
    assert found.suppressed_at == T0

    # A newer event says why; an older one arriving late records its event but changes nothing.
    await store.record([event("ev-2", SuppressionKind.SPAMREPORT, at=T0 + timedelta(hours=1))])
    await store.record([event("ev-0", SuppressionKind.UNSUBSCRIBE, at=T0 - timedelta(hours=1))])
    found = await store.suppression_for("anna@example.com")
    assert found is not None and (found.kind, found.reason) == (SuppressionKind.SPAMREPORT, "marked as spam")

    # An address whose message carried no customer (sent before custom args) is still suppressed.
    await store.record([event("ev-9", email="ghost@example.com", customer_id=None)])
    assert await store.suppression_for("ghost@example.com") is not None

    exported = export_customer(database, "cus_1")["tables"]
    assert [r["email"] for r in exported["email_suppressions"]] == ["anna@example.com"]
    assert sorted(r["event_id"] for r in exported["email_events"]) == ["ev-0", "ev-1", "ev-2"]
    deleted = forget_customer(database, "cus_1")
    assert (deleted["email_suppressions"], deleted["email_events"]) == (1, 3)
    assert await store.suppression_for("anna@example.com") is None
    assert await store.suppression_for("ghost@example.com") is not None

    assert await store.lift("ghost@example.com")
    assert await store.suppression_for("ghost@example.com") is None
