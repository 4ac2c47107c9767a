"""Email addresses we no longer write to, in the service's database (`DUNNING_DATABASE_URL`).

The API's SendGrid Event Webhook records each suppressing event once (`sg_event_id`: SendGrid
retries a delivery until it gets a 2xx) in `email_events`, and the address's current suppression
in `email_suppressions` (the newest event wins). The worker's `send_notification` asks
`suppression_for(address)` before every email. The customer and case come from the message's
`custom_args` (activities/sendgrid_backend.py sets them), so `dunning customer export|forget`
finds the rows; an address suppressed before it carried them has no customer.

Each batch of events is one transaction, so a redelivered batch (or two replicas racing on it)
records every event once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, Connection, DateTime, MetaData, String, Table, Text, select

from dunning.email_suppression import SuppressionKind
from runtime.database import Database

# The tables of migration 0005, as the store queries them.
_metadata = MetaData()
email_suppressions = Table(
    "email_suppressions",
    _metadata,
    Column("email", String(320), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("customer_id", String(255)),
    Column("case_id", String(255)),
    Column("suppressed_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)
email_events = Table(
    "email_events",
    _metadata,
    Column("event_id", String(255), primary_key=True),
    Column("email", String(320), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("customer_id", String(255)),
    Column("case_id", String(255)),
    Column("at", DateTime(timezone=True), nullable=False),
)


def normalize_email(email: str) -> str:
    """Addresses compare case-insensitively here (SendGrid's suppression lists do too)."""
    return email.strip().lower()


@dataclass(frozen=True)
class SuppressionEvent:
    """One suppressing event, as the webhook read it."""

    event_id: str
    email: str
    kind: SuppressionKind
    reason: str
    at: datetime
    customer_id: str | None = None
    case_id: str | None = None


@dataclass(frozen=True)
class Suppression:
    """Why an address gets no more email."""

    email: str
    kind: SuppressionKind
    reason: str
    event_id: str
    suppressed_at: datetime
    customer_id: str | None = None
    case_id: str | None = None


class DatabaseEmailSuppressions:
    """The store on the service's database (migrated by the caller). Every method raises
    `DatabaseUnavailable` while the database cannot be reached."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def suppression_for(self, email: str) -> Suppression | None:
        return await asyncio.to_thread(self.database.run, lambda db: _suppression(db, normalize_email(email)))

    async def record(self, events: Sequence[SuppressionEvent]) -> list[SuppressionEvent]:
        """Records the events not seen before (one transaction); returns those."""
        if not events:
            return []
        now = datetime.now(UTC)
        return await asyncio.to_thread(self.database.run, lambda db: self._record(db, events, now))

    def _record(self, db: Connection, events: Sequence[SuppressionEvent], now: datetime) -> list[SuppressionEvent]:
        new: list[SuppressionEvent] = []
        seen_ids: set[str] = set()
        for event in events:
            if event.event_id in seen_ids:
                continue  # the same event twice in one batch
            seen_ids.add(event.event_id)
            email = normalize_email(event.email)
            inserted = db.execute(
                self.database.insert(email_events)
                .values(
                    event_id=event.event_id,
                    email=email,
                    kind=event.kind.value,
                    reason=event.reason,
                    customer_id=event.customer_id,
                    case_id=event.case_id,
                    at=event.at,
                )
                .on_conflict_do_nothing(index_elements=[email_events.c.event_id])
                .returning(email_events.c.event_id)  # rowcount is not reliable here on psycopg
            )
            if inserted.first() is None:
                continue  # a redelivery: already recorded
            new.append(event)
            upsert = self.database.insert(email_suppressions).values(
                email=email,
                kind=event.kind.value,
                reason=event.reason,
                event_id=event.event_id,
                customer_id=event.customer_id,
                case_id=event.case_id,
                suppressed_at=event.at,
                recorded_at=now,
            )
            db.execute(
                upsert.on_conflict_do_update(
                    index_elements=[email_suppressions.c.email],
                    set_={
                        c: upsert.excluded[c]
                        for c in ("kind", "reason", "event_id", "customer_id", "case_id", "suppressed_at", "recorded_at")
                    },
                    # The newest event says why; an older one arriving late changes nothing.
                    where=email_suppressions.c.suppressed_at <= upsert.excluded.suppressed_at,
                )
            )
        return new

    async def lift(self, email: str) -> bool:
        """Email this address again (an operator's decision, e.g. after the customer fixed their mailbox)."""
        address = normalize_email(email)
        return await asyncio.to_thread(
            self.database.run,
            lambda db: bool(db.execute(email_suppressions.delete().where(email_suppressions.c.email == address)).rowcount),
        )


def _suppression(db: Connection, email: str) -> Suppression | None:
    row = db.execute(select(email_suppressions).where(email_suppressions.c.email == email)).mappings().first()
    if row is None:
        return None
    at = row["suppressed_at"]
    return Suppression(
        email=row["email"],
        kind=SuppressionKind(row["kind"]),
        reason=row["reason"],
        event_id=row["event_id"],
        suppressed_at=at if at.tzinfo else at.replace(tzinfo=UTC),
        customer_id=row["customer_id"],
        case_id=row["case_id"],
    )
