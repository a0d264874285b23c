"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` binaries, a cluster in a
temporary directory, listening on 127.0.0.1 at a free port, password authentication (so that the
tests can check no password is ever printed), stopped and deleted afterwards.

PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user the
Debian package creates and every server command runs as that user (`runuser`)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

USER = "vqsearch"
PASSWORD = "s3cret-Pa55word"  # the tests assert it is never printed


def pg_bin() -> Path | None:
    """The directory of pg_ctl, initdb and postgres: from PATH, else Debian's newest
    /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = [path for path in map(Path, glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) if path.parts[-3].isdigit()]
    return max(versions, key=lambda path: int(path.parts[-3])).parent if versions else None


@dataclass
class Server:
    host: str
    port: int
    made: int = 0

    def url(self, database: str, vectors: Path, password: str = PASSWORD) -> str:
        """The `--db` of an index in this database with its FAISS files in `vectors`."""
        return f"postgresql+psycopg://{USER}:{password}@{self.host}:{self.port}/{database}?vectors={vectors}"

    def create(self, template: str | None = None) -> str:
        """A new database (a copy of `template`), by a name of its own."""
        self.made += 1
        name = f"db{self.made}"
        self.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return name

    def connect(self, database: str = "postgres"):
        """A psycopg connection in autocommit mode (CREATE DATABASE runs in no transaction)."""
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=USER, password=PASSWORD, dbname=database,
                               autocommit=True)

    def execute(self, statement: str, database: str = "postgres") -> None:
        with self.connect(database) as connection:
            connection.execute(statement)

    def contents(self, database: str) -> dict[str, list[tuple]]:
        """Every row of every table, sorted: what a refused command must leave as it was."""
        with self.connect(database) as connection:
            tables = [row[0] for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            return {table: sorted(connection.execute(f'SELECT * FROM "{table}"').fetchall()) for table in tables}


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (for now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(bin_dir: Path) -> Iterator[Server]:
    """Start a new cluster and yield its server; stop it and delete its files at the end."""
    as_user: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="vqsearch-pg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("as root, PostgreSQL runs as Debian's postgres user, and there is none") from None
        os.chown(work, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, password_file = work / "data", work / "password"
    password_file.write_text(PASSWORD)
    os.chmod(work, 0o700)
    if as_user:
        os.chown(password_file, owner.pw_uid, owner.pw_gid)
    port = free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr or done.stdout}")

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={password_file}", "--auth=scram-sha-256",
            "--no-sync", "-E", "UTF8", "--no-locale")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(work / "log"), "-w", "-t", "60", "-o",
            f"-h 127.0.0.1 -p {port} -k {work} -c fsync=off -c full_page_writes=off", "start")
        try:
            yield Server("127.0.0.1", port)
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(work, ignore_errors=True)
