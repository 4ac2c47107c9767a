"""The service's own database (`DUNNING_DATABASE_URL`): one SQLAlchemy engine per process.

SQLite in `DUNNING_STATE_DIR` by default (one host), PostgreSQL (`postgresql+psycopg://…`) in
production, shared by every worker and API replica. The schema is Alembic's
(`runtime/migrations`), brought up to date by `runtime.migrations.upgrade` when a process starts.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from runtime.settings import ConfigError, Settings

T = TypeVar("T")

#: Key of PostgreSQL's advisory lock that serializes migrations across replicas ("dunn").
MIGRATION_LOCK_KEY = 0x64756E6E
#: How long a query waits for a locked SQLite file, or a new PostgreSQL connection, before failing.
WAIT_SECONDS = 10


class DatabaseUnavailable(Exception):
    """The database cannot be reached or answer now: the caller retries later (503, activity retry)."""


class Database:
    """An engine (connects lazily) and the dialect-specific parts the stores need."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(f"DUNNING_DATABASE_URL: {self.dialect} is not supported (sqlite or postgresql+psycopg)")
        if self.dialect == "sqlite":
            self.sqlite_path = parsed.database if parsed.database not in (None, "", ":memory:") else None
            if self.sqlite_path:
                Path(self.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(parsed, connect_args={"timeout": WAIT_SECONDS})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.sqlite_path = None
            connect_args = {"connect_timeout": WAIT_SECONDS} if parsed.get_driver_name() == "psycopg" else {}
            # pre_ping: a connection the server dropped (restart, failover) is replaced, not handed out.
            self.engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(settings.database_url())

    def insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """INSERT that takes ON CONFLICT (an atomic upsert), which SQLAlchemy spells per dialect."""
        return postgresql.insert(table) if self.dialect == "postgresql" else sqlite.insert(table)

    def run(self, work: Callable[[Connection], T]) -> T:
        """`work` in one transaction; an unreachable database raises `DatabaseUnavailable`."""
        with unavailable_as_error(), self.engine.begin() as connection:
            return work(connection)

    @contextmanager
    def migration_lock(self) -> Iterator[Connection]:
        """One process at a time migrates (replicas starting together): PostgreSQL's advisory lock,
        SQLite's a lock file beside the database. Yields the connection to migrate with."""
        with unavailable_as_error(), self.engine.connect() as connection:
            if self.dialect == "postgresql":
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                connection.commit()
                try:
                    yield connection
                finally:
                    connection.rollback()
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                    connection.commit()
            elif self.sqlite_path is not None:
                with open(f"{self.sqlite_path}.lock", "a") as lock_file:
                    fcntl.flock(lock_file, fcntl.LOCK_EX)
                    try:
                        yield connection
                    finally:
                        fcntl.flock(lock_file, fcntl.LOCK_UN)
            else:  # an in-memory database belongs to this process alone
                yield connection

    def ping(self) -> None:
        """One round trip; `DatabaseUnavailable` when the database does not answer."""
        self.run(lambda connection: connection.execute(text("SELECT 1")))

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def unavailable_as_error() -> Iterator[None]:
    """Connection failures, timeouts and dropped connections become `DatabaseUnavailable`;
    constraint violations and SQL mistakes stay what they are (bugs, not outages)."""
    try:
        yield
    except PoolTimeout as exc:
        raise DatabaseUnavailable(f"database unavailable: {exc}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError)):
            raise DatabaseUnavailable(f"database unavailable: {' '.join(str(exc.orig).split())}") from exc
        raise


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    """WAL lets the API write while workers read the same file."""
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
