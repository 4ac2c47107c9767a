"""The card's budget across cases on SQLite (the PostgreSQL run: tests/integration/test_card_budget_postgres.py)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import card_budget_checks
from tests.helpers.database import sqlite_database


def test_concurrent_charges_on_one_card_never_exceed_its_budget_on_sqlite(tmp_path: Path) -> None:
    card_budget_checks.check_concurrent_reservations_never_exceed_the_limit(sqlite_database(tmp_path))


def test_retries_reuse_their_reservation_and_a_stolen_card_stops_every_case_on_sqlite(tmp_path: Path) -> None:
    card_budget_checks.check_retry_reuses_and_blocks_spread(sqlite_database(tmp_path))
