"""The database's schema, as Alembic migrations shipped inside the package (`versions/`).

`upgrade` runs at the start of every worker and API process and in `dunning db upgrade`: under
the migration lock, so replicas starting together migrate once, then copy in the consent file
of earlier versions if one is still there.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from runtime.consent import LEGACY_FILE, DatabaseConsentStore
from runtime.database import Database, unavailable_as_error
from runtime.settings import Settings

HERE = Path(__file__).resolve().parent


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    return config


def head() -> str | None:
    """The newest revision this code knows."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(database: Database) -> str | None:
    """The revision the database is at (None: empty)."""
    with unavailable_as_error(), database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(database: Database, state_dir: Path | None = None) -> str | None:
    """Brings the schema to `head()`; with `state_dir`, also imports its legacy consent file.
    Returns the revision the database is at. Raises `DatabaseUnavailable` when unreachable."""
    config = _config()
    with database.migration_lock() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()
        if state_dir is not None:
            DatabaseConsentStore(database).import_legacy_file(state_dir / LEGACY_FILE)
        return MigrationContext.configure(connection).get_current_revision()


def prepare(settings: Settings) -> Database:
    """What a process does at start: the configured database, migrated, the old consent file in."""
    database = Database.from_settings(settings)
    upgrade(database, settings.dunning_state_dir)
    return database
