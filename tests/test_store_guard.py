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


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    Image.new("RGB", (5000, 4000), "white").save(folder / "huge.png")
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")  # past PIL's own decompression-bomb limit
    (folder / "empty.png").write_bytes(b"")
    return {name: folder / f"{name}.png" for name in ("huge", "bomb", "empty")}


@pytest.mark.parametrize("args, says", [
    (["index", "{video}", "--fps", "nan"], "--fps must be a positive number"),
    (["index", "{video}", "--fps", "inf"], "--fps must be a positive number"),
    (["index", "{video}", "--fps", "-1"], "--fps must be a positive number"),
    (["index", "{video}", "--threads", "0"], "--threads must be at least 1"),
    (["query", "--crop", "{huge}"], "megapixels"),
    (["query", "--crop", "{bomb}"], "megapixels"),
    (["query", "--crop", "{empty}"], "cannot read crop image"),
    (["query", "--text", "ball", "--top-k", "0"], "--top-k must be at least 1"),
])
def test_bad_arguments_are_one_line_and_write_nothing(indexed_db, videos, tmp_path, images, args, says):
    import shutil

    root = tmp_path / "db"
    shutil.copytree(indexed_db, root)
    before = _files(root)
    values = {"video": str(videos / "bedroom.mp4"), **{k: str(v) for k, v in images.items()}}
    done = vqsearch(*(a.format(**values) for a in args), "--db", str(root))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1
    assert len(lines) == 1 and lines[0].startswith("vqsearch: error: ") and says in lines[0], done.stderr
    assert _files(root) == before


def test_an_index_that_cannot_be_written_is_refused_before_any_video_work(indexed_db, tmp_path, videos):
    """The lock file is a folder (as a permission error would be; tests run as root, so chmod is
    no test here): one line at once, not after the video was processed, and the index as it was."""
    import shutil

    root = tmp_path / "db"
    shutil.copytree(indexed_db, root)
    (root / ".lock").unlink(missing_ok=True)
    (root / ".lock").mkdir()
    before = _files(root)
    done = vqsearch("index", str(videos / "02_cups.mp4"), "--db", str(root))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "cannot write to the index" in lines[0], done.stderr
    assert _files(root) == before
    assert not list(root.glob(".write-check-*"))


def test_a_new_index_in_a_file_path_is_refused(tmp_path, videos):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    done = vqsearch("index", str(videos / "bedroom.mp4"), "--db", str(notes))
    assert done.returncode == 1 and "is a file, not a directory" in done.stderr
    assert notes.read_text() == "mine"
    listed = vqsearch("list", "--db", str(tmp_path / "absent"), "--json")
    assert listed.returncode == 1 and "no index at" in listed.stderr
    assert not (tmp_path / "absent").exists()  # reading never creates an index


@pytest.mark.parametrize("version", ["1", "2", "3"])
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
    assert checked["sound"] and checked["schema"] == "4" and checked["videos"] == 2 and not checked["orphans"]
    assert checked["files"] == ["visual-2.faiss", "text-2.faiss", "colour-2.faiss"]
    with closing(sqlite3.connect(root / "index.sqlite")) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("4",)]
