"""The index's metadata on a real PostgreSQL server (`--db postgresql+psycopg://...?vectors=DIR`):
the same answers as a directory's SQLite index of the same videos; remove, re-index, check and
repair; one writer at a time across processes; a write killed before or after its commit; a read
holding off a commit; the migrations; and the refusals (unreachable server, wrong password, no
such database, a bad URL, an empty, foreign or future database, another index's vectors
directory, no psycopg), each one line that never shows the password, the index as it was. The
server is Debian's `postgresql`, started once per session by the `server` fixture (`pg_server`)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import pytest

from conftest import downgrade, missing, tree, vqsearch
from pg_server import PASSWORD, Server, free_port, pg_bin, running_server
from test_faults import KILL_AT
from test_store import _indexed, _state, _tables, video_files, write_lock_held  # noqa: F401 (a fixture)
from vqsearch.errors import VQSearchError
from vqsearch.schema import SCHEMA_VERSION
from vqsearch.store import Store

CLIPS = ("02_cups.mp4", "bedroom.mp4")


@dataclass
class PgIndex:
    """An index on the test server: its database, its vectors directory, its --db (with the
    password) and that --db as vqsearch shows it (without)."""

    database: str
    vectors: Path
    url: str
    shown: str


def _index_in(server: Server, database: str, vectors: Path) -> PgIndex:
    url = server.url(database, vectors)
    return PgIndex(database, vectors, url, url.replace(f":{PASSWORD}@", "@"))


def _contents(server: Server, index: PgIndex) -> tuple:
    """Every row and every vector file: what a refused command leaves as it was."""
    return server.contents(index.database), tree(index.vectors)


def _run(*args: str) -> subprocess.CompletedProcess:
    """`vqsearch` in a fresh process, which never prints the password."""
    done = vqsearch(*args)
    assert PASSWORD not in done.stdout + done.stderr
    return done


def _refused(done: subprocess.CompletedProcess, says: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("vqsearch: error: "), done.stderr
    assert says in lines[0], done.stderr


def _listed(db: str) -> list[str]:
    done = _run("list", "--json", "--db", db)
    assert done.returncode == 0, done.stderr
    return [Path(video["video"]).name for video in json.loads(done.stdout)["videos"]]


def _checked(db: str) -> dict:
    return json.loads(_run("check", "--json", "--db", db).stdout)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    bin_dir = pg_bin()
    if bin_dir is None:
        missing("PostgreSQL (Debian's postgresql package, which scripts/setup.sh installs)")
    with running_server(bin_dir) as started:
        yield started


@pytest.fixture
def empty(server: Server, tmp_path: Path) -> PgIndex:
    """A new database without tables; its vectors directory does not exist yet."""
    return _index_in(server, server.create(), tmp_path / "vectors")


@pytest.fixture(scope="session")
def indexed(server: Server, videos: Path, tmp_path_factory) -> tuple[PgIndex, Path]:
    """02_cups.mp4 and bedroom.mp4 at 2 fps, indexed once on PostgreSQL and once into a directory."""
    work = tmp_path_factory.mktemp("pg")
    index = _index_in(server, server.create(), work / "vectors")
    for db in (index.url, str(work / "sqlite")):
        done = _run("index", *(str(videos / name) for name in CLIPS), "--fps", "2", "--db", db)
        assert done.returncode == 0, done.stderr
    return index, work / "sqlite"


@pytest.fixture
def copied(server: Server, indexed: tuple[PgIndex, Path], tmp_path: Path) -> PgIndex:
    """A copy of the indexed database and its vectors, for a test to change."""
    source = indexed[0]
    shutil.copytree(source.vectors, tmp_path / "vectors")
    return _index_in(server, server.create(template=source.database), tmp_path / "vectors")


@pytest.mark.slow
def test_the_answers_are_those_of_the_sqlite_index_of_the_same_videos(indexed, ball_crop):
    index, sqlite = indexed
    crop = str(ball_crop)
    for args in (["list"], ["query", "--text", "bed", "--no-relocate"], ["query", "--crop", crop, "--no-relocate"],
                 ["query", "--text", "ball", "--crop", crop]):
        pg, lite = (json.loads(_run(*args, "--json", "--db", db).stdout) for db in (index.url, str(sqlite)))
        assert pg == lite and (pg.get("last_seen") or pg.get("videos")), args
    pg, lite = _checked(index.url), _checked(str(sqlite))
    assert pg.pop("db") == index.shown and lite.pop("db") == str(sqlite)
    assert pg == lite and pg["sound"] and pg["videos"] == 2


@pytest.mark.slow
def test_remove_and_index_again(copied, videos):
    done = _run("remove", str(videos / "bedroom.mp4"), "--db", copied.url)
    assert done.returncode == 0 and done.stdout.strip() == f"Removed {videos / 'bedroom.mp4'}", done.stderr
    assert _listed(copied.url) == ["02_cups.mp4"]
    checked = _checked(copied.url)
    assert checked["sound"] and checked["generation"] == 3 and not checked["orphans"]
    assert sorted(path.name for path in copied.vectors.iterdir()) == [
        "colour-3.faiss", "text-3.faiss", "visual-3.faiss", "vqsearch-index-id"]
    assert _run("index", str(videos / "bedroom.mp4"), "--fps", "2", "--db", copied.url).returncode == 0
    assert _listed(copied.url) == ["02_cups.mp4", "bedroom.mp4"]
    assert _checked(copied.url)["sound"]
    found = json.loads(_run("query", "--text", "bed", "--no-relocate", "--json", "--db", copied.url).stdout)
    assert Path(found["last_seen"]["video"]).name == "bedroom.mp4"


def _kill_during_index(index: PgIndex, video: Path, point: str) -> int:
    """Index `video` again, killed at `point` of its write (test_faults.KILL_AT); the exit status."""
    return subprocess.run([sys.executable, "-c", KILL_AT, point, "index", str(video), "--fps", "2", "--db", index.url],
                          capture_output=True, env=os.environ.copy(), timeout=300).returncode


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before the commit", "after the commit"])
def test_a_write_killed_leaves_a_sound_index_and_its_lock_free(copied, videos, point):
    """Killed before its commit, the write is rolled back with its connection; after it, the new
    generation stands. Either way the server released the write lock with the connection."""
    assert _kill_during_index(copied, videos / "02_cups.mp4", point) == -signal.SIGKILL
    checked = _checked(copied.url)
    committed = point == "after the commit"
    assert checked["sound"] and checked["generation"] == (3 if committed else 2)
    assert checked["orphans"] == [f"{kind}-{2 if committed else 3}.faiss" for kind in ("colour", "text", "visual")]
    assert _listed(copied.url) == (["bedroom.mp4", "02_cups.mp4"] if committed else ["02_cups.mp4", "bedroom.mp4"])
    assert _run("remove", str(videos / "bedroom.mp4"), "--db", copied.url).returncode == 0
    assert sorted(path.name for path in copied.vectors.glob("*.faiss*")) == [
        f"{kind}-{checked['generation'] + 1}.faiss" for kind in ("colour", "text", "visual")]


@pytest.mark.slow
def test_repair_rebuilds_from_the_generation_a_crash_left(copied, videos):
    """02_cups.mp4 indexed again and killed after the commit; the new visual file is damaged:
    bedroom's vectors are in the previous generation's file, the new 02_cups's nowhere."""
    assert _kill_during_index(copied, videos / "02_cups.mp4", "after the commit") == -signal.SIGKILL
    (copied.vectors / "visual-3.faiss").write_bytes(b"\0" * 100)
    _refused(_run("query", "--text", "bed", "--db", copied.url),
             f"visual-3.faiss is unreadable (truncated or corrupt); `vqsearch check --db {shlex.quote(copied.shown)}`")
    checked = _run("check", "--db", copied.url)
    assert checked.returncode == 1 and checked.stdout.splitlines()[0] == (
        "problem: visual-3.faiss is unreadable (truncated or corrupt)")
    report = json.loads(_run("repair", "--json", "--db", copied.url).stdout)
    assert report["rebuilt"] == {"visual": ["visual-2.faiss"], "text": ["text-3.faiss"], "colour": ["colour-3.faiss"]}
    assert [Path(lost["video"]).name for lost in report["lost"]] == ["02_cups.mp4"]
    assert _listed(copied.url) == ["bedroom.mp4"] and _checked(copied.url)["sound"]


@pytest.mark.slow
def test_one_writer_at_a_time_across_processes_and_readers_go_on(server, copied, videos):
    """Another process holds the write lock (as `index` does for its run, from any machine):
    `index`, `remove` and `repair` are refused at once in one line, `list` reads on."""
    before = _contents(server, copied)
    with write_lock_held(copied.url):
        busy = f"vqsearch: error: another vqsearch is writing to the index at {copied.shown}; try again when it ends"
        for args in (["index", str(videos / "bedroom.mp4")], ["remove", str(videos / "bedroom.mp4")], ["repair"]):
            done = _run(*args, "--db", copied.url)
            assert done.returncode == 1 and done.stderr.strip().splitlines() == [busy], done.stderr
        assert _listed(copied.url) == ["02_cups.mp4", "bedroom.mp4"]
    assert _contents(server, copied) == before
    assert _run("remove", str(videos / "bedroom.mp4"), "--db", copied.url).returncode == 0


def _unreachable(server: Server, index: PgIndex) -> str:
    return index.url.replace(f":{server.port}/", f":{free_port()}/")


BAD_URLS: dict[str, tuple[Callable[[Server, PgIndex], str], str]] = {
    "server unreachable": (_unreachable, "Connection refused"),
    "wrong password": (lambda server, index: server.url(index.database, index.vectors, password="wrong-Pa55"),
                       'password authentication failed for user "vqsearch"'),
    "no such database": (lambda server, index: server.url("nope", index.vectors), 'database "nope" does not exist'),
    "no vectors": (lambda server, index: index.url.split("?")[0], "needs ?vectors=DIR"),
    "relative vectors": (lambda server, index: index.url.split("?")[0] + "?vectors=vectors", "needs ?vectors=DIR"),
    "a port that is no number": (lambda server, index: index.url.replace(f":{server.port}/", ":port/"),
                                 "is not a valid URL"),
    "another database system": (lambda server, index: index.url.replace("postgresql+psycopg", "mysql"), "not mysql"),
    "another driver": (lambda server, index: index.url.replace("+psycopg", "+psycopg2"), "not postgresql+psycopg2"),
}


@pytest.mark.parametrize("bad", list(BAD_URLS))
@pytest.mark.parametrize("command", ["list", "index"])
def test_a_bad_url_is_one_line_without_the_password_and_makes_nothing(server, empty, request, bad, command):
    make, says = BAD_URLS[bad]
    url = make(server, empty)
    args = ["index", str(request.getfixturevalue("videos") / "bedroom.mp4")] if command == "index" else ["list"]
    done = _run(*args, "--db", url)
    _refused(done, says)
    assert "wrong-Pa55" not in done.stderr and "Traceback" not in done.stderr
    assert server.contents(empty.database) == {} and not empty.vectors.exists()


def test_without_psycopg_the_error_says_what_to_install(empty):
    done = subprocess.run([sys.executable, "-c", "import sys; sys.modules['psycopg'] = None\n"
                           "from vqsearch.cli import main; main()", "list", "--db", empty.url],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    _refused(done, f"--db {empty.shown} needs psycopg: pip install 'vqsearch[postgres]'")
    assert PASSWORD not in done.stderr


def _foreign(server: Server, index: PgIndex) -> None:
    """Another program's tables instead of the index's, and no vectors directory."""
    _vectors_without_index(server, index)
    shutil.rmtree(index.vectors)
    server.execute("CREATE TABLE contacts (name text, phone text); INSERT INTO contacts VALUES ('a', '1')",
                   index.database)


def _future_schema(server: Server, index: PgIndex) -> None:
    server.execute("UPDATE meta SET value = '999' WHERE key = 'schema'", index.database)


def _other_index_id(server: Server, index: PgIndex) -> None:
    (index.vectors / "vqsearch-index-id").write_text("0123456789abcdef\n")


def _vectors_without_index(server: Server, index: PgIndex) -> None:
    server.execute("DROP TABLE background_tracks, observations, tracks, shot_cuts, partial_videos, videos, meta, "
                   "alembic_version",
                   index.database)
    (index.vectors / "vqsearch-index-id").unlink()


DAMAGE: dict[str, tuple[Callable[[Server, PgIndex], None], str]] = {
    "a foreign database": (_foreign, "is a PostgreSQL database but not a vqsearch index (no meta, observations, "
                                     "tracks, videos table): use another --db"),
    "schema 999": (_future_schema, "has schema version '999'"),
    "another index's vectors directory": (_other_index_id, "vqsearch-index-id names another index"),
    "FAISS files beside an empty database": (_vectors_without_index,
                                             "holds FAISS files but the database holds no index"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("command", ["list", "index"])
def test_a_database_that_is_no_sound_index_is_refused_and_left_as_it_is(server, copied, videos, damage, command):
    harm, says = DAMAGE[damage]
    harm(server, copied)
    before = _contents(server, copied)
    args = ["index", str(videos / "bedroom.mp4")] if command == "index" else ["list"]
    done = _run(*args, "--db", copied.url)
    if command == "list" and damage == "FAISS files beside an empty database":
        says = f"no index at {copied.shown}"  # reads look for an index, not at the files
    _refused(done, says)
    assert _contents(server, copied) == before


@pytest.mark.slow
def test_a_wrong_vectors_directory_is_refused_before_a_repair_could_drop_everything(server, copied, videos,
                                                                                   tmp_path):
    """On another machine the shared directory is mounted elsewhere, or not at all: an empty
    directory would look like lost vectors to `repair`. Nor is the directory an index of its own."""
    before = _contents(server, copied)
    elsewhere = _index_in(server, copied.database, tmp_path / "not-mounted")
    for command in ("list", "check", "repair"):
        _refused(_run(command, "--db", elsewhere.url),
                 f"{elsewhere.vectors} is not the vectors directory of the index at {elsewhere.shown} "
                 "(vqsearch-index-id is missing)")
    _refused(_run("index", str(videos / "bedroom.mp4"), "--db", str(copied.vectors)),
             f"{copied.vectors} holds the vectors of an index on PostgreSQL")
    assert _contents(server, copied) == before and not elsewhere.vectors.exists()


def test_an_empty_database_is_no_index_until_index_makes_one(server, empty, video_files):
    _refused(_run("list", "--db", empty.url), f"no index at {empty.shown}: run `vqsearch index VIDEO --db "
                                             f"{shlex.quote(empty.shown)}` first")
    with pytest.raises(RuntimeError), Store.writer(empty.url):  # a run that commits nothing
        raise RuntimeError("unreadable model weights")
    assert server.contents(empty.database) == {} and not empty.vectors.exists()
    Store.open(empty.url, create=True).add_video("m", "a.mp4", _indexed(video_files[0], 3, 0))
    assert _listed(empty.url) == ["a.mp4"]
    assert sorted(server.contents(empty.database)) == [
        "alembic_version", "background_tracks", "meta", "observations", "partial_videos", "shot_cuts", "tracks",
        "videos"]


@pytest.mark.parametrize("holds", ["vqsearch-index-id", "index.sqlite"])
def test_a_new_index_wants_a_vectors_directory_of_its_own(server, empty, holds):
    empty.vectors.mkdir()
    (empty.vectors / holds).write_text("another index's\n")
    with pytest.raises(VQSearchError, match="another index|an index of its own"):
        Store.open(empty.url, create=True)
    assert server.contents(empty.database) == {} and [path.name for path in empty.vectors.iterdir()] == [holds]


def test_a_read_holds_off_a_commit_until_it_ends(empty, video_files):
    """What SQLite's locks do for a directory: a read's transaction keeps a writer from committing
    (and sweeping the files the read is about) until it ends; a commit never waits for more."""
    Store.open(empty.url, create=True).add_video("m", "a.mp4", _indexed(video_files[0], 3, 0))
    reader, writer = Store.open(empty.url), Store.open(empty.url)
    with reader._snapshot() as session:
        assert reader._meta(session)["generation"] == "1"
        write = threading.Thread(target=writer.add_video, args=("m", "b.mp4", _indexed(video_files[1], 2, 1)))
        write.start()
        write.join(1.0)
        assert write.is_alive() and (empty.vectors / "visual-1.faiss").exists()
    write.join(30)
    assert not write.is_alive() and not (empty.vectors / "visual-1.faiss").exists()
    assert _state(Store.open(empty.url)) == ([("a.mp4", 3), ("b.mp4", 2)], (5, 5))


@pytest.mark.parametrize("version", ["1", "2", "3", "4"])
def test_the_migrations_run_on_postgres(empty, video_files, version):
    """An index taken back to schema 1, 2, 3 or 4 reads as it is; the next write runs the revisions
    on PostgreSQL and leaves exactly a new index's tables."""
    a = _indexed(video_files[0], 3, 0)
    a.info, a.cuts = replace(a.info, declared_frames=400), [(2, 3)]
    Store.open(empty.url, create=True).add_video("m", "a.mp4", a)
    fresh = _tables(empty.url)
    downgrade(empty.url, version)
    store = Store.open(empty.url)
    assert _state(store) == ([("a.mp4", 3)], (3, 3)) and store.health().schema == version
    store.add_video("m", "b.mp4", _indexed(video_files[1], 2, 1))
    after = Store.open(empty.url)
    health = after.health()
    assert (health.problems, health.schema, health.orphans) == ([], SCHEMA_VERSION, [])
    assert after.vectors().colour.ntotal == 5 and after.track_ids(after.find_video(video_files[1])) == [4, 5]
    assert _tables(empty.url) == fresh


def test_a_bulk_build_runs_on_postgres(empty):
    """`Store.add_many` (bench scale's builder) writes its rows in no one database's paramstyle."""
    from test_store_compressed import bulk_build

    store = bulk_build(empty.url)
    assert store.health().problems == [] and store.vectors().visual.ntotal == 1200
    assert _checked(empty.url)["tracks"] == 1200
