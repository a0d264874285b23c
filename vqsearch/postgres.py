"""An index's metadata on a PostgreSQL server, for when one machine is not enough:
`--db postgresql+psycopg://USER@HOST[:PORT]/DBNAME?vectors=DIR`.

The FAISS files stay in `vectors`, an absolute path that every machine using the index must see
(a shared file system). The database records an id that a file in that directory (MARKER)
repeats, so a wrong directory is refused before anything reads or writes it: on an empty one,
`repair` would drop every video. A writer holds a PostgreSQL advisory lock for its run, so
writers on different machines exclude each other; a read holds a shared advisory lock for its
transaction and a commit takes it exclusively, so a commit waits for the reads under way, and no
read sees a generation whose files are swept (SQLite's own locks do the same for a directory).
The password (in the URL, PGPASSWORD or ~/.pgpass) is never printed."""

from __future__ import annotations

import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import URL, Engine, create_engine, func, inspect, make_url, select, text
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from vqsearch.database import MARKER, Catalogue, Database
from vqsearch.errors import VQSearchError

WRITE_LOCK = 0x7671_7365_6172_6368  # advisory lock keys ("vqsearch"), per database
GENERATION_LOCK = WRITE_LOCK + 1  # shared by reads, exclusive for a commit
_PASSWORD = re.compile(r"^([^:/]+://[^:/@]*):[^@]*@")  # the password in scheme://user:password@host


class Postgres(Database):
    kind = "a PostgreSQL database"
    missing = "the database holds no index"
    recover = "restore the database from a backup, or use another --db"

    def __init__(self, url: URL, vectors: Path, name: str) -> None:
        super().__init__(vectors, name, f"vectors={vectors} of --db {name}", name)
        self.url = url

    @classmethod
    def from_url(cls, given: str) -> Postgres:
        """Parse `--db`; refuse, in one line that shows no password, what is no usable URL."""
        shown = _PASSWORD.sub(r"\1@", given, count=1)
        try:
            url = make_url(given)
        except (ArgumentError, ValueError):  # ValueError: a port that is no number
            raise VQSearchError(f"--db {shown} is not a valid URL: give a directory or "
                                "postgresql+psycopg://USER@HOST[:PORT]/DBNAME?vectors=DIR") from None
        name = given if url.password is None else shown
        if url.drivername not in ("postgresql", "postgresql+psycopg"):
            raise VQSearchError(f"--db {name}: an index's metadata lives in a directory or on PostgreSQL through "
                                f"psycopg (postgresql+psycopg://...), not {url.drivername}")
        vectors = url.query.get("vectors")
        if not isinstance(vectors, str) or not os.path.isabs(vectors):
            raise VQSearchError(f"--db {name} needs ?vectors=DIR, the absolute path of the directory of the index's "
                                "FAISS files, the same on every machine that uses the index")
        return cls(url.difference_update_query(["vectors"]).set(drivername="postgresql+psycopg"), Path(vectors), name)

    def engine(self) -> Engine:
        """Connections fail after 10 s (unless the URL says otherwise), not the minutes TCP may take."""
        timeout = {} if "connect_timeout" in self.url.query else {"connect_timeout": 10}
        try:
            return create_engine(self.url, connect_args=timeout)
        except ImportError:
            raise VQSearchError(f"--db {self.name} needs psycopg: pip install 'vqsearch[postgres]'") from None

    def reason(self, error: SQLAlchemyError) -> str:
        """The driver's message on one line, with the password (should a message hold it) hidden."""
        said = " ".join(str(getattr(error, "orig", None) or error).split())
        return said.replace(self.url.password, "***") if self.url.password else said

    def catalogue(self, engine: Engine) -> Catalogue | None:
        """None for a database without tables: the place for a new index."""
        try:
            with engine.connect() as connection:
                found = inspect(connection)
                tables = set(found.get_table_names())
                meta = dict(connection.execute(text("SELECT key, value FROM meta")).all()) if "meta" in tables else {}
                revision = (connection.scalar(text("SELECT version_num FROM alembic_version"))
                            if "alembic_version" in tables else None)
                columns = {column["name"] for column in found.get_columns("observations")} if (
                    "observations" in tables) else set()
        except OperationalError as error:
            raise VQSearchError(f"cannot connect to the index at {self.name}: {self.reason(error)}") from None
        except SQLAlchemyError as error:
            raise VQSearchError(f"{self.name} is damaged or no vqsearch index ({self.reason(error)}): "
                                f"{self.recover}") from None
        return Catalogue(tables, meta, revision, columns) if tables else None

    def refuse_other_vectors(self, meta: dict[str, str] | None) -> None:
        marker = self.vectors / MARKER
        if meta is None:
            if (self.vectors / "index.sqlite").exists():
                raise VQSearchError(f"{self.vectors} is the directory of an index of its own (index.sqlite): "
                                    "give ?vectors= another directory")
            if marker.exists():
                raise VQSearchError(f"{self.vectors} holds the vectors of another index ({MARKER}): give ?vectors= "
                                    f"another directory, or delete {marker} if no index uses it")
            return
        try:
            held = marker.read_text().strip()
        except OSError:
            held = None
        if held != meta.get("vectors_id"):
            raise VQSearchError(f"{self.vectors} is not the vectors directory of the index at {self.name} ({MARKER} "
                                f"{'is missing' if held is None else 'names another index'}): give ?vectors= the "
                                "directory the index was made with, as this machine sees it")

    def begin_read(self, session: Session) -> None:
        session.execute(select(func.pg_advisory_xact_lock_shared(GENERATION_LOCK)))

    def before_commit(self, session: Session) -> None:
        session.execute(select(func.pg_advisory_xact_lock(GENERATION_LOCK)))

    @contextmanager
    def exclusive(self, engine: Engine) -> Iterator[None]:
        """A session-level advisory lock on a connection of its own, outside any transaction: the
        server releases it when the connection ends, also when the process is killed."""
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            if not connection.scalar(select(func.pg_try_advisory_lock(WRITE_LOCK))):
                raise self.busy()
            try:
                yield
            finally:
                connection.scalar(select(func.pg_advisory_unlock(WRITE_LOCK)))

    def claim(self, session: Session) -> None:
        """Record a new id in `meta` and in MARKER (written first: `discard` removes it if the
        creation fails)."""
        from vqsearch.migrations import write_meta

        if session.scalar(text("SELECT value FROM meta WHERE key = 'vectors_id'")) is not None:
            return  # another vqsearch made the index since this one looked
        made = uuid.uuid4().hex
        marker = self.vectors / MARKER
        try:
            with open(marker, "w") as handle:
                handle.write(made + "\n")
                handle.flush()
                os.fsync(handle.fileno())  # before the commit that relies on it
        except OSError as error:
            raise self.cannot_write(error) from None
        write_meta(session.connection(), vectors_id=made)

    def discard(self, engine: Engine) -> None:
        from vqsearch.schema import Base

        with engine.begin() as connection:
            Base.metadata.drop_all(connection)
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        engine.dispose()
        (self.vectors / MARKER).unlink(missing_ok=True)
