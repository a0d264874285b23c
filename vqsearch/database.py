"""Where an index's metadata lives, as `--db` says (`vqsearch.store.locate`): a directory (its
`index.sqlite` beside the FAISS files) or a PostgreSQL URL (`vqsearch.postgres`) whose `vectors`
parameter names the FAISS files' directory. The store is the same on both; what differs is here:
the engine, reading what the database holds before anything trusts it, the write lock, and how a
read keeps a writer from committing or sweeping the files it reads about."""

from __future__ import annotations

import fcntl
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session

from vqsearch.errors import VQSearchError

MARKER = "vqsearch-index-id"  # in an index's vectors directory on PostgreSQL: the id its database records


@dataclass
class Catalogue:
    """What a database holds, read before anything trusts it: its tables, its `meta` (when it has
    that table), the alembic revision it is at, and the columns of `observations`."""

    tables: set[str]
    meta: dict[str, str]
    revision: str | None
    columns: set[str]


class Database(ABC):
    """The metadata of one index and the directory of its FAISS files (`vectors`). `name` is how
    messages and suggested commands give the `--db` (never with a password)."""

    kind: str  # "an SQLite database", said of a database that is no vqsearch index
    missing: str  # what a vectors directory without an index lacks
    recover: str  # how to recover a database that cannot be used

    def __init__(self, vectors: Path, name: str, label: str, database: str) -> None:
        self.vectors = vectors
        self.name = name
        self.label = label  # how a message names the vectors directory
        self.database = database  # how a message names the database

    @abstractmethod
    def engine(self) -> Engine: ...

    @abstractmethod
    def catalogue(self, engine: Engine) -> Catalogue | None:
        """What the database holds, or None when it holds no index yet; one line if it cannot be read."""

    def refuse_other_vectors(self, meta: dict[str, str] | None) -> None:
        """Refuse a vectors directory that is not this index's (`meta` None: a new index)."""

    def begin_read(self, session: Session) -> None:
        """Begin a read that no writer can commit or sweep under until it ends."""

    def begin_write(self, session: Session) -> None:
        """Begin a write's transaction (the write lock is held)."""

    def before_commit(self, session: Session) -> None:
        """Wait for the reads under way, and keep new ones out, until the commit."""

    @abstractmethod
    def exclusive(self, engine: Engine) -> AbstractContextManager[None]:
        """Hold the index's write lock, or refuse at once in one line."""

    def claim(self, session: Session) -> None:
        """Tie a new index to its vectors directory, in the transaction that creates it."""

    @abstractmethod
    def discard(self, engine: Engine) -> None:
        """Remove a new index that nothing was committed to (the write lock is held)."""

    def cannot_write(self, error: OSError) -> VQSearchError:
        return VQSearchError(f"cannot write to the index at {self.name} ({error.strerror or error}): "
                             "check its permissions, or index into another --db")

    def busy(self) -> VQSearchError:
        return VQSearchError(f"another vqsearch is writing to the index at {self.name}; try again when it ends")


class Directory(Database):
    """Today's layout: `index.sqlite` in the directory of the FAISS files; a lock file in it is the
    write lock (`flock`), and SQLite's own locks keep readers and a commit apart."""

    kind = "an SQLite database"
    missing = "no index.sqlite"

    def __init__(self, root: Path) -> None:
        self.file = root / "index.sqlite"
        super().__init__(root, str(root), f"--db {root}", str(self.file))
        self.recover = f"restore {self.file} from a backup, or index into another --db"

    def engine(self) -> Engine:
        engine = create_engine(f"sqlite:///{self.file}")
        event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA foreign_keys=ON"))
        return engine

    def catalogue(self, engine: Engine) -> Catalogue | None:
        """Read with sqlite3, read-only, after checking the file's header: a file that is no SQLite
        database is never opened for writing."""
        import sqlite3

        if not self.file.exists():
            return None
        if self.file.stat().st_size == 0:
            raise VQSearchError(f"{self.file} is empty (0 bytes), not a vqsearch index: {self.recover}")
        with open(self.file, "rb") as handle:
            if handle.read(16) != b"SQLite format 3\x00":
                raise VQSearchError(f"{self.file} is not an SQLite database: {self.recover}")
        try:
            connection = sqlite3.connect(f"file:{self.file}?mode=ro", uri=True)
            try:
                tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                meta = dict(connection.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
                revision = (connection.execute("SELECT version_num FROM alembic_version").fetchone()
                            if "alembic_version" in tables else None)  # the migration it is at
                columns = {row[1] for row in connection.execute("PRAGMA table_info(observations)")}
            finally:
                connection.close()
        except sqlite3.DatabaseError as error:
            raise VQSearchError(f"{self.file} is damaged ({error}): {self.recover}") from None
        return Catalogue(tables, meta, revision[0] if revision else None, columns)

    def refuse_other_vectors(self, meta: dict[str, str] | None) -> None:
        if meta is None and (self.vectors / MARKER).exists():
            raise VQSearchError(f"{self.vectors} holds the vectors of an index on PostgreSQL ({MARKER}): "
                                "give that index's URL, or index into another --db")

    def begin_read(self, session: Session) -> None:
        session.execute(text("BEGIN"))  # SQLite's driver begins no transaction for reads

    def begin_write(self, session: Session) -> None:
        session.execute(text("BEGIN IMMEDIATE"))

    @contextmanager
    def exclusive(self, engine: Engine) -> Iterator[None]:
        try:
            handle = open(self.vectors / ".lock", "a")
        except OSError as error:
            raise self.cannot_write(error) from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self.busy() from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def discard(self, engine: Engine) -> None:
        engine.dispose()
        for name in ("index.sqlite", "index.sqlite-journal", ".lock"):
            (self.vectors / name).unlink(missing_ok=True)
