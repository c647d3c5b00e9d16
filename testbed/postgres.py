"""A throwaway PostgreSQL server: initdb and pg_ctl as the postgres user in a temporary directory.

Used by the inventory tests (through the `postgres` fixture) and by the benchmarks.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


class Postgres:
    """initdb + pg_ctl as the postgres system user, in a temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nodeagent-pg-"))
        self.data, self.sock = self.dir / "data", self.dir / "sock"
        self.sock.mkdir()
        shutil.chown(self.dir, "postgres")
        shutil.chown(self.sock, "postgres")
        self.port = 20000 + os.getpid() % 20000
        self._db = itertools.count()

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def start(self) -> Postgres:
        assert PG_BIN is not None
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )
        self.pg_ctl(
            "start", "-w", "-o", f"-p {self.port} -k {self.sock} -c listen_addresses='' -c fsync=on"
        )
        return self

    def pg_ctl(self, *args: str) -> None:
        assert PG_BIN is not None
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), *args
        )

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@/{db}?host={self.sock}&port={self.port}"

    def new_database(self) -> str:
        import psycopg

        name = f"inv{next(self._db)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
