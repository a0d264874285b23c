"""A damaged, foreign or future index, and oversized or odd inputs: one error line, nothing written.
An index of an older schema: read as it is, brought to the newest by the next `index`."""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from conftest import downgrade, vqsearch
from vqsearch.schema import SCHEMA_VERSION

pytestmark = pytest.mark.slow


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.name != ".lock"}


def _zero_bytes(root: Path) -> None:
    (root / "index.sqlite").write_bytes(b"")


def _garbage(root: Path) -> None:
    (root / "index.sqlite").write_bytes(b"SQLite format 3\x00" + os.urandom(4000))


def _not_sqlite(root: Path) -> None:
    (root / "index.sqlite").write_text("these are my notes, not a database\n")


def _foreign(root: Path) -> None:
    (root / "index.sqlite").unlink()
    connection = sqlite3.connect(root / "index.sqlite")
    connection.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
    connection.execute("INSERT INTO contacts VALUES ('a', '1')")
    connection.commit()
    connection.close()


def _future_schema(root: Path) -> None:
    connection = sqlite3.connect(root / "index.sqlite")
    connection.execute("UPDATE meta SET value = '999' WHERE key = 'schema'")
    connection.commit()
    connection.close()


def _missing_vectors(root: Path) -> None:
    next(root.glob("visual-*.faiss")).unlink()


def _corrupt_vectors(root: Path) -> None:
    next(root.glob("visual-*.faiss")).write_bytes(b"\x00" * 100)


DAMAGE = {"zero-byte index.sqlite": (_zero_bytes, "empty (0 bytes)"),
          "garbage index.sqlite": (_garbage, "damaged"),
          "a text file as index.sqlite": (_not_sqlite, "not an SQLite database"),
          "a foreign SQLite file": (_foreign, "not a vqsearch index"),
          "schema 999": (_future_schema, "schema version '999'"),
          "missing visual-N.faiss": (_missing_vectors, "missing"),
          "corrupt visual-N.faiss": (_corrupt_vectors, "unreadable")}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("command", ["list", "query", "index", "remove"])
def test_a_damaged_index_is_refused_and_left_as_it_is(indexed_db, videos, tmp_path, damage, command, ball_crop):
    import shutil

    root = tmp_path / "db"
    shutil.copytree(indexed_db, root)
    harm, says = DAMAGE[damage]
    harm(root)
    before = _files(root)
    args = {"list": ["list"], "query": ["query", "--crop", str(ball_crop)],
            "index": ["index", str(videos / "02_cups.mp4")], "remove": ["remove", str(videos / "bedroom.mp4")]}
    done = vqsearch(*args[command], "--db", str(root))
    lines = done.stderr.strip().splitlines()
    if command == "list" and "faiss" in damage:
        assert done.returncode == 0  # listing reads no vectors
    else:
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("vqsearch: error: ") and says in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert _files(root) == before


@pytest.mark.parametrize("version", ["1", "2", "3", "4"])
def test_an_older_schema_is_read_unchanged_and_the_next_index_upgrades_it(indexed_db, videos, tmp_path, version):
    import shutil

    root = tmp_path / "db"
    shutil.copytree(indexed_db, root)
    downgrade(root, version)
    before = _files(root)
    listed = vqsearch("list", "--json", "--db", str(root))
    assert listed.returncode == 0 and [Path(v["video"]).name for v in json.loads(listed.stdout)["videos"]] == [
        "bedroom.mp4"], listed.stderr
    found = vqsearch("query", "--text", "bed", "--no-relocate", "--json", "--db", str(root))
    assert found.returncode == 0 and json.loads(found.stdout)["results"], found.stderr
    checked = json.loads(vqsearch("check", "--json", "--db", str(root)).stdout)
    assert checked["sound"] and checked["schema"] == version
    assert _files(root) == before  # reads never migrate

    indexed = vqsearch("index", str(videos / "02_cups.mp4"), "--fps", "2", "--db", str(root))
    assert indexed.returncode == 0, indexed.stderr
    checked = json.loads(vqsearch("check", "--json", "--db", str(root)).stdout)
    assert checked["sound"] and checked["schema"] == SCHEMA_VERSION and checked["videos"] == 2 and not checked["orphans"]
    assert checked["files"] == ["visual-2.faiss", "text-2.faiss", "colour-2.faiss"]
    with closing(sqlite3.connect(root / "index.sqlite")) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_VERSION,)]
