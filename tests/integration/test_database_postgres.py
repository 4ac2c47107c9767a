"""The production path of the service's database: a real PostgreSQL (tests/helpers/postgres.py).

Migrations from empty and again, replicas migrating at once (the advisory lock), consent shared
between processes, the old consent file copied in, and compose's database set-up script."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import yaml

from runtime import migrations
from runtime.consent import DatabaseConsentStore
from runtime.database import MIGRATION_LOCK_KEY, Database
from tests.helpers.database import write_legacy_consent_file
from tests.helpers.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[2]


def fresh(postgres: PostgresServer) -> tuple[Database, str]:
    url = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    return Database(url), url


def tables(url: str) -> set[str]:
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as db:
        return {r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def cli(url: str, *args: str) -> subprocess.Popen[str]:
    env = os.environ | {"DUNNING_DATABASE_URL": url}
    command = [sys.executable, "-m", "starter.cli.app", *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_migrations_from_empty_then_again(postgres: PostgresServer) -> None:
    database, url = fresh(postgres)
    assert migrations.current(database) is None
    assert migrations.upgrade(database) == migrations.head()
    assert {"alembic_version", "sms_consent", "consent_events", "sms_recipients"} <= tables(url)
    assert migrations.upgrade(database) == migrations.head()  # nothing left to do, nothing fails


async def test_replicas_starting_together_migrate_one_at_a_time(postgres: PostgresServer) -> None:
    """Two `dunning db upgrade` wait on the lock a third party holds, then both succeed, in turn."""
    _, url = fresh(postgres)
    plain = url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        procs = [cli(url, "db", "upgrade") for _ in range(2)]
        deadline = time.monotonic() + 30
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        while holder.execute(waiting).fetchone() != (2,):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            await asyncio.sleep(0.05)
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert f"database at revision {migrations.head()}" in out
    with psycopg.connect(plain) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(migrations.head(),)]


SET_CONSENT = """
import asyncio, sys
from runtime.consent import DatabaseConsentStore
from runtime.database import Database
store = DatabaseConsentStore(Database(sys.argv[1]))
async def main():
    for i in range(int(sys.argv[3])):
        await store.set_sms_opt_out("cus_shared", i % 2 == 0, source=sys.argv[2])
asyncio.run(main())
"""


async def test_consent_written_by_one_process_is_read_by_another(postgres: PostgresServer) -> None:
    database, url = fresh(postgres)
    migrations.upgrade(database)
    store = DatabaseConsentStore(database)
    assert not await store.sms_opted_out("cus_shared")
    # Two writers at once (the API's replicas): every change kept, none half-written.
    writers = [
        subprocess.Popen([sys.executable, "-c", SET_CONSENT, url, f"writer-{n}", "25"], cwd=ROOT) for n in range(2)
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    history = await store.history("cus_shared")
    assert sorted(source for _, source, _ in history) == ["writer-0"] * 25 + ["writer-1"] * 25
    # The current state is the last change made.
    assert await store.sms_opted_out("cus_shared") is history[-1][0]
    subprocess.run([sys.executable, "-c", SET_CONSENT, url, "api", "1"], cwd=ROOT, check=True, timeout=60)
    assert await store.sms_opted_out("cus_shared")


async def test_an_old_consent_file_moves_into_postgresql_once(postgres: PostgresServer, tmp_path: Path) -> None:
    database, _ = fresh(postgres)
    write_legacy_consent_file(tmp_path / "consent.sqlite3")
    migrations.upgrade(database, tmp_path)
    migrations.upgrade(database, tmp_path)  # the next start: nothing left to copy
    assert (tmp_path / "consent.sqlite3.migrated").exists() and not (tmp_path / "consent.sqlite3").exists()
    store = DatabaseConsentStore(database)
    assert await store.sms_opted_out("cus_out") and not await store.sms_opted_out("cus_back")
    assert [(o, s) for o, s, _ in await store.history("cus_back")] == [(True, "sms:STOP"), (False, "sms:START")]
    assert await store.customers_for_phone("+15551234567") == ["cus_out"]


def test_compose_creates_our_role_and_database_idempotently(postgres: PostgresServer, tmp_path: Path) -> None:
    """dunning-db-setup's script, run twice against a real server (here the superuser is `dunning`,
    so the role exists already: the script must cope with that too). Its passwords come from
    secret files, as compose mounts them."""
    setup = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["dunning-db-setup"]
    script = setup["command"][-1].replace("$$", "$")  # compose's escape for a literal $
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "postgres_password").write_text("unused-with-trust-auth\n")
    (secrets / "dunning_db_password").write_text("it's s3cret\n")  # quoted by psql, not pasted into SQL
    env = os.environ | {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(postgres.port),
        "PGUSER": "dunning",
        "PGDATABASE": "postgres",
        "PGPASSFILE": str(tmp_path / "pgpass"),
        "SECRETS_DIR": str(secrets),
        "PATH": f"{postgres.bin_dir}:{os.environ['PATH']}",
    }
    for _ in range(2):
        subprocess.run(["sh", "-c", script], env=env, check=True, capture_output=True, timeout=30)
    assert migrations.upgrade(Database(postgres.url("dunning"))) == migrations.head()
    assert "sms_consent" in tables(postgres.url("dunning"))
