"""A migrated SQLite database in a test's folder, a consent store on it, and a consent file of earlier versions."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from runtime import migrations
from runtime.consent import DatabaseConsentStore
from runtime.database import Database


def sqlite_database(folder: Path, name: str = "dunning.sqlite3") -> Database:
    database = Database(f"sqlite:///{folder / name}")
    migrations.upgrade(database)
    return database


def consent_store(folder: Path) -> DatabaseConsentStore:
    return DatabaseConsentStore(sqlite_database(folder))


#: How earlier versions kept consent, in `$DUNNING_STATE_DIR/consent.sqlite3`.
LEGACY_SCHEMA = """
CREATE TABLE sms_consent (customer_id TEXT PRIMARY KEY, opted_out INTEGER NOT NULL, source TEXT, updated_at TEXT NOT NULL);
CREATE TABLE consent_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id TEXT NOT NULL, opted_out INTEGER NOT NULL, source TEXT, at TEXT NOT NULL
);
CREATE TABLE sms_recipients (
    phone TEXT NOT NULL, customer_id TEXT NOT NULL, last_sent_at TEXT NOT NULL, PRIMARY KEY (phone, customer_id)
);
"""


def write_legacy_consent_file(path: Path) -> None:
    """A consent file as earlier versions left it: cus_out texted STOP, cus_back STOP then START."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(LEGACY_SCHEMA)
        db.executemany(
            "INSERT INTO sms_consent VALUES (?, ?, ?, ?)",
            [
                ("cus_out", 1, "sms:STOP", "2025-03-01T10:00:00+00:00"),
                ("cus_back", 0, "sms:START", "2025-03-02T10:00:00.123456+00:00"),
            ],
        )
        db.executemany(
            "INSERT INTO consent_events (customer_id, opted_out, source, at) VALUES (?, ?, ?, ?)",
            [
                ("cus_out", 1, "sms:STOP", "2025-03-01T10:00:00+00:00"),
                ("cus_back", 1, "sms:STOP", "2025-03-01T11:00:00+00:00"),
                ("cus_back", 0, "sms:START", "2025-03-02T10:00:00.123456+00:00"),
            ],
        )
        db.execute("INSERT INTO sms_recipients VALUES ('+15551234567', 'cus_out', '2025-02-28T09:00:00+00:00')")
