"""A real PostgreSQL from Debian's `postgresql` package, in a temporary folder (DESIGN.md §4).

`initdb` refuses to run as root, and CI runs as root: there, both `initdb` and `pg_ctl` run as the
`postgres` user the package creates, in a folder that user owns. Trust authentication on
127.0.0.1 only, superuser `dunning`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


def postgres_bin() -> Path | None:
    """The newest installed server's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, bin_dir: Path, folder: Path, port: int) -> None:
        self.bin_dir, self.folder, self.port = bin_dir, folder, port

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://dunning@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh database for one test; returns its SQLAlchemy URL."""
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=dunning dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin()
    assert bin_dir is not None
    folder = Path(tempfile.mkdtemp(prefix="dunning-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"

    def run(*args: str | Path) -> None:
        subprocess.run([*as_postgres, *map(str, args)], check=True, capture_output=True, timeout=60)

    try:
        run(bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "dunning", "--no-sync")
        run(bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", folder / "log", "-w", "start")
        try:
            yield PostgresServer(bin_dir, folder, port)
        finally:
            run(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
