"""Versioned schema migrations of an index's metadata, in index.sqlite or on PostgreSQL (Alembic),
run in code: no alembic.ini.

Each schema version is a revision of the same name ("1" .. "4", versions/), the value `meta.schema`
records, so an index written before the migrations is stamped from it. They run only when a write
begins (`Store._write`): under the index's write lock, in the write's own transaction, so a
write that does not commit leaves the index as it was. Reads never migrate; they read every known
schema. A new schema: a revision after the newest, and SCHEMA_VERSION and KNOWN_SCHEMAS in store.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config


def upgrade(connection: Connection, vectors: Path) -> None:
    """Bring the database on `connection`, whose FAISS files are in `vectors`, to the newest schema
    in the caller's transaction. A new one gets today's tables whole (`create_all`), marked as the
    newest; an index from before the migrations is stamped from its `schema` meta (1 when it has
    none) and upgraded from there. Alembic is loaded only when there is something to do."""
    from vqsearch.schema import SCHEMA_VERSION, Base

    tables = set(inspect(connection).get_table_names())
    revision = (connection.scalar(text("SELECT version_num FROM alembic_version"))
                if "alembic_version" in tables else None)
    if revision == SCHEMA_VERSION:
        return
    from alembic import command

    settings = config(connection)
    settings.attributes["vectors"] = vectors  # pin_kinds looks at the files
    if not tables:
        Base.metadata.create_all(connection)
        set_schema(connection, SCHEMA_VERSION)
        command.stamp(settings, "head")
        return
    if revision is None:
        command.stamp(settings, read_meta(connection).get("schema", "1"))
    command.upgrade(settings, "head")


def config(connection: Connection) -> Config:
    """Alembic's configuration, built here: the revisions beside this file, run on `connection`."""
    from alembic.config import Config

    made = Config()
    made.set_main_option("script_location", str(Path(__file__).parent))
    made.attributes["connection"] = connection  # env.py runs the revisions on it
    return made


def read_meta(connection: Connection) -> dict[str, str]:
    return dict(connection.execute(text("SELECT key, value FROM meta")).all())


def write_meta(connection: Connection, **values: str) -> None:
    """Set these keys of `meta` (an upsert both SQLite and PostgreSQL know)."""
    for key, value in values.items():
        connection.execute(text("INSERT INTO meta (key, value) VALUES (:key, :value) "
                                "ON CONFLICT (key) DO UPDATE SET value = excluded.value"), {"key": key, "value": value})


def set_schema(connection: Connection, version: str) -> None:
    """Record the schema in `meta`, where every vqsearch, also one from before the migrations,
    looks for it (and refuses a version it does not know)."""
    write_meta(connection, schema=version)


def lacks(connection: Connection, table: str) -> bool:
    """Whether the index lacks this table. Before the migrations every open added the tables of
    its vqsearch's schema, so an index may already hold a table newer than its `schema` says."""
    return not inspect(connection).has_table(table)


def pin_kinds(connection: Connection) -> None:
    """Record the FAISS files the committed generation names (`kinds`) while the rule of the schema
    being left still names them: schema 3's rule adds a colour file, 4's reads `kinds` alone."""
    from alembic import op

    from vqsearch.schema import committed_kinds

    meta = read_meta(connection)
    kinds = committed_kinds(meta, op.get_context().config.attributes["vectors"])
    if kinds and "kinds" not in meta:
        write_meta(connection, kinds=",".join(kinds))
