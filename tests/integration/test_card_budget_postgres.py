"""The card's budget across cases on a real PostgreSQL: `pg_advisory_xact_lock` per card."""

from __future__ import annotations

import uuid

from runtime import migrations
from runtime.database import Database
from tests.helpers import card_budget_checks
from tests.helpers.postgres import PostgresServer


def fresh(postgres: PostgresServer) -> Database:
    database = Database(postgres.create_database(f"t_{uuid.uuid4().hex[:12]}"))
    migrations.upgrade(database)
    return database


def test_concurrent_charges_on_one_card_never_exceed_its_budget_on_postgresql(postgres: PostgresServer) -> None:
    card_budget_checks.check_concurrent_reservations_never_exceed_the_limit(fresh(postgres))


def test_retries_reuse_their_reservation_and_a_stolen_card_stops_every_case_on_postgresql(postgres: PostgresServer) -> None:
    card_budget_checks.check_retry_reuses_and_blocks_spread(fresh(postgres))
