"""SMS consent in one place, lasting across cases and restarts.

`SqliteConsentStore` keeps opt-outs in a small SQLite file (by default
`$DUNNING_STATE_DIR/consent.sqlite3`), shared by the worker (which checks it before every SMS)
and the API (whose Twilio webhook writes it when a customer texts STOP or START). It also keeps
an audit trail of every change and remembers which customer we texted at which number, so an
inbound STOP from that number finds its customer (`PhoneDirectory`).

With several hosts, put the file on a shared volume, or mirror opt-outs into the payment
provider (e.g. Stripe customer metadata `sms_opt_out=true`) and read them in `get_customer`.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterable, Mapping
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sms_consent (
    customer_id TEXT PRIMARY KEY,
    opted_out INTEGER NOT NULL,
    source TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS consent_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id TEXT NOT NULL,
    opted_out INTEGER NOT NULL,
    source TEXT,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sms_recipients (
    phone TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    last_sent_at TEXT NOT NULL,
    PRIMARY KEY (phone, customer_id)
);
"""


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


class SqliteConsentStore:
    """`ConsentStore` and `PhoneDirectory` on one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    # --- ConsentStore ----------------------------------------------------------------

    async def sms_opted_out(self, customer_id: str) -> bool:
        return await asyncio.to_thread(self._opted_out, customer_id)

    async def set_sms_opt_out(self, customer_id: str, opted_out: bool, source: str | None = None) -> None:
        await asyncio.to_thread(self._set, customer_id, opted_out, source)

    # --- PhoneDirectory --------------------------------------------------------------

    async def remember_sms_recipient(self, customer_id: str, phone: str) -> None:
        """Called after every SMS we send: that number may answer STOP later."""
        await asyncio.to_thread(self._remember, customer_id, normalize_phone(phone))

    async def customers_for_phone(self, phone: str) -> list[str]:
        return await asyncio.to_thread(self._customers, normalize_phone(phone))

    async def history(self, customer_id: str) -> list[tuple[bool, str | None, str]]:
        """Every consent change of a customer: (opted_out, source, at), oldest first."""
        return await asyncio.to_thread(self._history, customer_id)

    # --- sync parts ------------------------------------------------------------------

    def _opted_out(self, customer_id: str) -> bool:
        with closing(self._connect()) as db:
            row = db.execute("SELECT opted_out FROM sms_consent WHERE customer_id = ?", (customer_id,)).fetchone()
        return bool(row and row[0])

    def _set(self, customer_id: str, opted_out: bool, source: str | None) -> None:
        now = datetime.now(UTC).isoformat()
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO sms_consent (customer_id, opted_out, source, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(customer_id) DO UPDATE SET opted_out = excluded.opted_out, "
                "source = excluded.source, updated_at = excluded.updated_at",
                (customer_id, int(opted_out), source, now),
            )
            db.execute(
                "INSERT INTO consent_events (customer_id, opted_out, source, at) VALUES (?, ?, ?, ?)",
                (customer_id, int(opted_out), source, now),
            )

    def _remember(self, customer_id: str, phone: str) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO sms_recipients (phone, customer_id, last_sent_at) VALUES (?, ?, ?) "
                "ON CONFLICT(phone, customer_id) DO UPDATE SET last_sent_at = excluded.last_sent_at",
                (phone, customer_id, datetime.now(UTC).isoformat()),
            )

    def _customers(self, phone: str) -> list[str]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT customer_id FROM sms_recipients WHERE phone = ? ORDER BY last_sent_at DESC", (phone,)
            ).fetchall()
        return [r[0] for r in rows]

    def _history(self, customer_id: str) -> list[tuple[bool, str | None, str]]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT opted_out, source, at FROM consent_events WHERE customer_id = ? ORDER BY id", (customer_id,)
            ).fetchall()
        return [(bool(r[0]), r[1], r[2]) for r in rows]


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
