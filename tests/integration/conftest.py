"""Fixtures of the integration tier."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.helpers.postgres import PostgresServer, postgres_bin, postgres_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (each test creates its own database on it).

    Skipped where PostgreSQL is not installed, except in CI (`CI=true`), where `.ci/run`
    installs it: a missing server there is a failure, not a silent skip."""
    if postgres_bin() is None:
        reason = "PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    with postgres_server() as server:
        yield server
