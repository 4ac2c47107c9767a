"""The email suppression store on a real PostgreSQL: the same checks as on SQLite."""

from __future__ import annotations

import uuid

from runtime import migrations
from runtime.database import Database
from tests.helpers import suppression_checks
from tests.helpers.postgres import PostgresServer


def test_store_on_postgresql(postgres: PostgresServer) -> None:
    database = Database(postgres.create_database(f"t_{uuid.uuid4().hex[:12]}"))
    assert migrations.upgrade(database) == "0005"
    suppression_checks.check_store(database)
