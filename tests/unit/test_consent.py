"""Consent lasts: across store instances (restarts), across cases, with an audit trail."""

from __future__ import annotations

from pathlib import Path

from runtime.consent import ChainedPhoneDirectory, SqliteConsentStore, StaticPhoneDirectory, normalize_phone


async def test_opt_out_survives_reopening_the_store(tmp_path: Path) -> None:
    path = tmp_path / "state" / "consent.sqlite3"
    store = SqliteConsentStore(path)
    assert not await store.sms_opted_out("cus_1")
    await store.set_sms_opt_out("cus_1", True, source="sms:STOP")

    reopened = SqliteConsentStore(path)  # a worker restart, or the API process
    assert await reopened.sms_opted_out("cus_1")
    assert not await reopened.sms_opted_out("cus_2")

    await reopened.set_sms_opt_out("cus_1", False, source="sms:START")
    assert not await SqliteConsentStore(path).sms_opted_out("cus_1")
    history = await reopened.history("cus_1")
    assert [(opted, source) for opted, source, _ in history] == [(True, "sms:STOP"), (False, "sms:START")]


async def test_texted_numbers_map_back_to_customers(tmp_path: Path) -> None:
    store = SqliteConsentStore(tmp_path / "c.sqlite3")
    await store.remember_sms_recipient("cus_1", "+1 (555) 123-4567")
    await store.remember_sms_recipient("cus_2", "+15551234567")  # a shared family number
    await store.remember_sms_recipient("cus_1", "+15551234567")  # remembered once
    assert sorted(await SqliteConsentStore(tmp_path / "c.sqlite3").customers_for_phone("+15551234567")) == [
        "cus_1",
        "cus_2",
    ]
    assert await store.customers_for_phone("+15550000000") == []


async def test_directories_chain() -> None:
    directory = ChainedPhoneDirectory(
        StaticPhoneDirectory({"+15551234567": "cus_1"}), StaticPhoneDirectory({"+15551234567": ["cus_1", "cus_9"]})
    )
    assert await directory.customers_for_phone("+1 555 123 4567") == ["cus_1", "cus_9"]


def test_phone_normalization() -> None:
    assert normalize_phone("+1 (555) 123-4567") == "+15551234567"
    assert normalize_phone("0049 30 123456") == "+4930123456"
