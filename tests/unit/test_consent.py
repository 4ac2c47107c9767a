"""Consent lasts: across store instances (restarts, the API and the worker), across cases, with an
audit trail; the consent file of earlier versions is copied in once, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import migrations
from runtime.consent import ChainedPhoneDirectory, DatabaseConsentStore, StaticPhoneDirectory, normalize_phone
from runtime.database import Database, DatabaseUnavailable
from runtime.settings import ConfigError, Settings
from tests.helpers.database import sqlite_database, write_legacy_consent_file


async def test_opt_out_survives_reopening_the_store(tmp_path: Path) -> None:
    store = DatabaseConsentStore(sqlite_database(tmp_path))
    assert not await store.sms_opted_out("cus_1")
    await store.set_sms_opt_out("cus_1", True, source="sms:STOP")

    reopened = DatabaseConsentStore(sqlite_database(tmp_path))  # a worker restart, or the API process
    assert await reopened.sms_opted_out("cus_1")
    assert not await reopened.sms_opted_out("cus_2")

    await reopened.set_sms_opt_out("cus_1", False, source="sms:START")
    assert not await store.sms_opted_out("cus_1")
    history = await reopened.history("cus_1")
    assert [(opted, source) for opted, source, _ in history] == [(True, "sms:STOP"), (False, "sms:START")]


async def test_texted_numbers_map_back_to_customers(tmp_path: Path) -> None:
    store = DatabaseConsentStore(sqlite_database(tmp_path))
    await store.remember_sms_recipient("cus_1", "+1 (555) 123-4567")
    await store.remember_sms_recipient("cus_2", "+15551234567")  # a shared family number
    await store.remember_sms_recipient("cus_1", "+15551234567")  # remembered once
    assert sorted(await store.customers_for_phone("+15551234567")) == ["cus_1", "cus_2"]
    assert await store.customers_for_phone("+15550000000") == []


def test_migrations_are_idempotent_and_the_default_database_is_in_the_state_dir(tmp_path: Path) -> None:
    settings = Settings(dunning_state_dir=tmp_path / "state")
    database = migrations.prepare(settings)
    assert database.engine.url.database == str((tmp_path / "state" / "dunning.sqlite3").resolve())
    assert migrations.current(database) == migrations.head() == migrations.upgrade(database)


async def test_the_legacy_consent_file_is_copied_in_once(tmp_path: Path) -> None:
    legacy = tmp_path / "consent.sqlite3"
    write_legacy_consent_file(legacy)
    database = sqlite_database(tmp_path, "db.sqlite3")
    store = DatabaseConsentStore(database)
    await store.set_sms_opt_out("cus_back", True, source="sms:STOP")  # newer than the file: it wins

    migrations.upgrade(database, tmp_path)
    assert not legacy.exists() and (tmp_path / "consent.sqlite3.migrated").exists()
    assert await store.sms_opted_out("cus_out") and await store.sms_opted_out("cus_back")
    assert await store.customers_for_phone("+1 555 123 4567") == ["cus_out"]
    assert [(o, s) for o, s, _ in await store.history("cus_back")] == [
        (True, "sms:STOP"),  # the database's own, then the file's two
        (True, "sms:STOP"),
        (False, "sms:START"),
    ]

    # A crash between the copy and the rename: the file is copied again, and nothing doubles.
    (tmp_path / "consent.sqlite3.migrated").rename(legacy)
    before = {c: await store.history(c) for c in ("cus_out", "cus_back")}
    assert store.import_legacy_file(legacy) == 0
    assert {c: await store.history(c) for c in ("cus_out", "cus_back")} == before
    assert await store.sms_opted_out("cus_back")


async def test_an_unreachable_database_is_unavailable_not_a_bug() -> None:
    store = DatabaseConsentStore(Database("postgresql+psycopg://dunning@127.0.0.1:1/dunning?connect_timeout=2"))
    with pytest.raises(DatabaseUnavailable):
        await store.sms_opted_out("cus_1")
    with pytest.raises(DatabaseUnavailable):
        migrations.upgrade(store.database)


def test_only_sqlite_and_postgresql() -> None:
    with pytest.raises(ConfigError, match="DUNNING_DATABASE_URL"):
        Database("mysql://u@localhost/dunning")


async def test_directories_chain() -> None:
    directory = ChainedPhoneDirectory(
        StaticPhoneDirectory({"+15551234567": "cus_1"}), StaticPhoneDirectory({"+15551234567": ["cus_1", "cus_9"]})
    )
    assert await directory.customers_for_phone("+1 555 123 4567") == ["cus_1", "cus_9"]


def test_phone_normalization() -> None:
    assert normalize_phone("+1 (555) 123-4567") == "+15551234567"
    assert normalize_phone("0049 30 123456") == "+4930123456"


async def test_the_api_migrates_at_start_and_stops_when_the_database_is_away(tmp_path: Path) -> None:
    from starter.api.main import create_app

    app = create_app(Settings(dunning_state_dir=tmp_path))
    async with app.router.lifespan_context(app):
        assert migrations.current(app.state.database) == migrations.head()
    away = create_app(Settings(dunning_database_url="postgresql+psycopg://dunning@127.0.0.1:1/d?connect_timeout=2"))
    with pytest.raises(DatabaseUnavailable):
        async with away.router.lifespan_context(away):
            pass
