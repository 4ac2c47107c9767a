"""SMS consent in one place, lasting across cases, restarts and hosts.

`DatabaseConsentStore` keeps opt-outs in the service's database (`DUNNING_DATABASE_URL`), shared
by every worker (which checks it before every SMS) and every API replica (whose Twilio webhook
writes it when a customer texts STOP or START). It also keeps an audit trail of every change and
remembers which customer we texted at which number, so an inbound STOP from that number finds its
customer (`PhoneDirectory`). Each change is one transaction, so concurrent writers never lose one.

Before the database, consent lived in `$DUNNING_STATE_DIR/consent.sqlite3`;
`import_legacy_file` copies such a file in once (at start, under the migration lock).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterable, Mapping
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Boolean, Column, Connection, DateTime, Integer, MetaData, String, Table, Text, select

from runtime.database import Database

#: The consent file of earlier versions, in `DUNNING_STATE_DIR`; renamed `.migrated` once copied.
LEGACY_FILE = "consent.sqlite3"

# The tables of migration 0001, as the store queries them.
_metadata = MetaData()
sms_consent = Table(
    "sms_consent",
    _metadata,
    Column("customer_id", String(255), primary_key=True),
    Column("opted_out", Boolean, nullable=False),
    Column("source", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
consent_events = Table(
    "consent_events",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("customer_id", String(255), nullable=False),
    Column("opted_out", Boolean, nullable=False),
    Column("source", Text),
    Column("at", DateTime(timezone=True), nullable=False),
)
sms_recipients = Table(
    "sms_recipients",
    _metadata,
    Column("phone", String(32), primary_key=True),
    Column("customer_id", String(255), primary_key=True),
    Column("last_sent_at", DateTime(timezone=True), nullable=False),
)


def normalize_phone(phone: str) -> str:
    """`+1 (555) 123-4567` → `+15551234567`: the form Twilio uses in `From`/`To`."""
    raw = phone.strip()
    digits = re.sub(r"\D", "", raw)
    if raw.startswith("00"):
        digits = digits[2:]
    return f"+{digits}"


class PhoneDirectory(Protocol):
    """Which customers a phone number belongs to (an inbound STOP names a number, not a customer)."""

    async def customers_for_phone(self, phone: str) -> list[str]: ...


class DatabaseConsentStore:
    """`ConsentStore` and `PhoneDirectory` on the service's database (migrated by the caller).

    Every method raises `DatabaseUnavailable` while the database cannot be reached."""

    def __init__(self, database: Database) -> None:
        self.database = database

    # --- ConsentStore ----------------------------------------------------------------

    async def sms_opted_out(self, customer_id: str) -> bool:
        return await asyncio.to_thread(self.database.run, lambda db: _opted_out(db, customer_id))

    async def set_sms_opt_out(self, customer_id: str, opted_out: bool, source: str | None = None) -> None:
        now = datetime.now(UTC)
        await asyncio.to_thread(self.database.run, lambda db: self._set(db, customer_id, opted_out, source, now))

    # --- PhoneDirectory --------------------------------------------------------------

    async def remember_sms_recipient(self, customer_id: str, phone: str) -> None:
        """Called after every SMS we send: that number may answer STOP later."""
        row = {"phone": normalize_phone(phone), "customer_id": customer_id, "last_sent_at": datetime.now(UTC)}
        await asyncio.to_thread(self.database.run, lambda db: self._remember(db, [row]))

    async def customers_for_phone(self, phone: str) -> list[str]:
        query = (
            select(sms_recipients.c.customer_id)
            .where(sms_recipients.c.phone == normalize_phone(phone))
            .order_by(sms_recipients.c.last_sent_at.desc())
        )
        return await asyncio.to_thread(self.database.run, lambda db: list(db.scalars(query)))

    async def history(self, customer_id: str) -> list[tuple[bool, str | None, str]]:
        """Every consent change of a customer: (opted_out, source, ISO time), oldest first."""
        query = (
            select(consent_events.c.opted_out, consent_events.c.source, consent_events.c.at)
            .where(consent_events.c.customer_id == customer_id)
            .order_by(consent_events.c.id)
        )
        rows = await asyncio.to_thread(self.database.run, lambda db: db.execute(query).all())
        return [(bool(opted), source, _utc(at).isoformat()) for opted, source, at in rows]

    # --- one transaction each ----------------------------------------------------------

    def _set(self, db: Connection, customer_id: str, opted_out: bool, source: str | None, at: datetime) -> None:
        self._upsert_consent(db, [{"customer_id": customer_id, "opted_out": opted_out, "source": source, "updated_at": at}])
        db.execute(consent_events.insert().values(customer_id=customer_id, opted_out=opted_out, source=source, at=at))

    def _upsert_consent(self, db: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert or overwrite, but never with an older change (the legacy import may be late)."""
        insert = self.database.insert(sms_consent).values(rows)
        db.execute(
            insert.on_conflict_do_update(
                index_elements=[sms_consent.c.customer_id],
                set_={c: insert.excluded[c] for c in ("opted_out", "source", "updated_at")},
                where=sms_consent.c.updated_at <= insert.excluded.updated_at,
            )
        )

    def _remember(self, db: Connection, rows: list[dict[str, Any]]) -> None:
        insert = self.database.insert(sms_recipients).values(rows)
        db.execute(
            insert.on_conflict_do_update(
                index_elements=[sms_recipients.c.phone, sms_recipients.c.customer_id],
                set_={"last_sent_at": insert.excluded.last_sent_at},
                where=sms_recipients.c.last_sent_at < insert.excluded.last_sent_at,
            )
        )

    # --- the consent file of earlier versions -------------------------------------------

    def import_legacy_file(self, path: Path) -> int:
        """Copies a `consent.sqlite3` of earlier versions in, then renames it `.migrated`.

        Idempotent (a crash before the rename repeats nothing): a customer's newer consent in the
        database wins, an event already copied is not copied again. Returns the events copied.
        Called at start under the migration lock, so replicas sharing the file copy it once."""
        if not path.is_file():
            return 0
        with closing(sqlite3.connect(path)) as legacy:
            consent = legacy.execute("SELECT customer_id, opted_out, source, updated_at FROM sms_consent").fetchall()
            events = legacy.execute("SELECT customer_id, opted_out, source, at FROM consent_events ORDER BY id").fetchall()
            texted = legacy.execute("SELECT phone, customer_id, last_sent_at FROM sms_recipients").fetchall()

        def copy(db: Connection) -> int:
            if consent:
                self._upsert_consent(
                    db,
                    [{"customer_id": c, "opted_out": bool(o), "source": s, "updated_at": _parse(u)} for c, o, s, u in consent],
                )
            if texted:
                self._remember(db, [{"phone": p, "customer_id": c, "last_sent_at": _parse(t)} for p, c, t in texted])
            customers = {row[0] for row in events}
            seen = {
                (c, bool(o), s, _utc(a))
                for c, o, s, a in db.execute(
                    select(consent_events.c.customer_id, consent_events.c.opted_out, consent_events.c.source, consent_events.c.at)
                    .where(consent_events.c.customer_id.in_(customers))
                )
            }
            new = [
                {"customer_id": c, "opted_out": bool(o), "source": s, "at": _parse(a)}
                for c, o, s, a in events
                if (c, bool(o), s, _parse(a)) not in seen
            ]
            if new:
                db.execute(consent_events.insert(), new)
            return len(new)

        copied = self.database.run(copy)
        path.rename(path.with_name(path.name + ".migrated"))
        return copied


def _opted_out(db: Connection, customer_id: str) -> bool:
    return bool(db.scalar(select(sms_consent.c.opted_out).where(sms_consent.c.customer_id == customer_id)))


def _utc(at: datetime) -> datetime:
    """SQLite hands back naive times; everything here is written in UTC."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _parse(iso: str) -> datetime:
    return _utc(datetime.fromisoformat(iso))


class StaticPhoneDirectory:
    """A fixed number → customers map (tests, the demo, or a CRM export)."""

    def __init__(self, numbers: Mapping[str, str | Iterable[str]]) -> None:
        self._numbers: dict[str, list[str]] = {}
        for phone, customers in numbers.items():
            ids = [customers] if isinstance(customers, str) else list(customers)
            self._numbers.setdefault(normalize_phone(phone), []).extend(ids)

    async def customers_for_phone(self, phone: str) -> list[str]:
        return list(self._numbers.get(normalize_phone(phone), []))


class ChainedPhoneDirectory:
    """Asks each directory in turn and merges the answers (e.g. texted numbers, then the CRM)."""

    def __init__(self, *directories: PhoneDirectory) -> None:
        self.directories = directories

    async def customers_for_phone(self, phone: str) -> list[str]:
        found: list[str] = []
        for directory in self.directories:
            for customer_id in await directory.customers_for_phone(phone):
                if customer_id not in found:
                    found.append(customer_id)
        return found
