"""The card's budget across cases on SQLite (the PostgreSQL run: tests/integration/test_card_budget_postgres.py)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import card_budget_checks
from tests.helpers.database import sqlite_database


def test_concurrent_charges_on_one_card_never_exceed_its_budget_on_sqlite(tmp_path: Path) -> None:
    card_budget_checks.check_concurrent_reservations_never_exceed_the_limit(sqlite_database(tmp_path))


def test_retries_reuse_their_reservation_and_a_stolen_card_stops_every_case_on_sqlite(tmp_path: Path) -> None:
    card_budget_checks.check_retry_reuses_and_blocks_spread(sqlite_database(tmp_path))


async def test_forgetting_a_customer_keeps_their_cards_attempts_but_not_their_name(tmp_path: Path) -> None:
    """Erasure deletes what the database keeps about the customer, except that the card's attempts
    stay (anonymized) for the 30-day window: forgetting must not hand the card a fresh budget."""
    from datetime import UTC, datetime

    from runtime.card_budget import DatabaseCardBudget, Reservation
    from runtime.customer_data import export_customer, forget_customer
    from tests.helpers.database import sqlite_database

    database = sqlite_database(tmp_path)
    budget = DatabaseCardBudget(database)
    now = datetime(2026, 11, 2, 9, tzinfo=UTC)
    for n in range(2):
        reservation = Reservation("fp_shared", f"key-{n}", "dunning-sub_a", "cus_a", limit=2)
        assert (await budget.reserve(reservation, now)).allowed
    assert len(export_customer(database, "cus_a")["tables"]["card_attempts"]) == 2
    assert forget_customer(database, "cus_a")["card_attempts"] == 2
    assert all(rows == [] for rows in export_customer(database, "cus_a")["tables"].values())
    third = Reservation("fp_shared", "key-2", "dunning-sub_b", "cus_b", limit=2)
    assert not (await budget.reserve(third, now)).allowed  # the card's budget is still spent
