"""The store: no duplicates on re-index, remove, one model per index, atomic writes, one writer at
a time, older schemas read as they are and migrated by the next write."""

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np
import pytest

from conftest import downgrade
from indexer.pipeline import IndexedVideo
from indexer.video import VideoInfo
from test_store_guard import _files
from vqsearch.errors import VQSearchError
from vqsearch.merge import FrameRegions, Track
from vqsearch.schema import SCHEMA_VERSION
from vqsearch.store import Store


def _indexed(path: Path, tracks: int, seed: int, text: bool = True) -> IndexedVideo:
    rng = np.random.default_rng(seed)
    visual = rng.normal(size=(tracks, 8)).astype(np.float32)
    visual /= np.linalg.norm(visual, axis=1, keepdims=True)
    made = []
    for i in range(tracks):
        track = Track(np.zeros(8, np.float32))
        regions = FrameRegions(visual[i:i + 1], np.ones((1, 2, 2), np.float32), np.zeros((1, 2), np.float32))
        for frame in (i, i + 6):
            track.add(frame, regions, 0, np.array([10.0 * i, 5.0, 20.0, 30.0]))
        made.append(track)
    text_vectors = visual[:, :4] / np.linalg.norm(visual[:, :4], axis=1, keepdims=True) if text else None
    info = VideoInfo(path, 100, 25.0, 64, 48)
    colours = np.tile(rng.dirichlet(np.ones(11), size=tracks), 2).astype(np.float32)
    return IndexedVideo(info, 5.0, 20, 20 * 12, tracks * 3, made, visual, text_vectors, colours, 0.1)


@pytest.fixture
def video_files(tmp_path):
    paths = []
    for name in ("a.mp4", "b.mp4"):
        path = tmp_path / name
        path.write_bytes(b"not decoded by these tests")
        paths.append(path)
    return paths


def _state(store: Store):
    vectors = store.vectors()
    return ([(v.path, n) for v, n in store.videos()],
            None if vectors is None else (vectors.visual.ntotal, vectors.text.ntotal))


def test_add_reindex_remove(tmp_path, video_files):
    store = Store.open(tmp_path / "db", create=True)
    store.add_video("m", "a.mp4", _indexed(video_files[0], 3, 0))
    store.add_video("m", "b.mp4", _indexed(video_files[1], 2, 1))
    store.add_video("m", "a.mp4", _indexed(video_files[0], 4, 2))  # re-index replaces, never duplicates
    reopened = Store.open(tmp_path / "db")
    assert _state(reopened) == ([("b.mp4", 2), ("a.mp4", 4)], (6, 6))
    rows = reopened.tracks(reopened.track_ids(reopened.find_video(video_files[0])))
    assert sorted(len(r.observations) for r in rows.values()) == [2, 2, 2, 2]
    assert reopened.remove_video(video_files[1]) is True
    assert reopened.remove_video(video_files[1]) is False
    again = Store.open(tmp_path / "db")
    assert _state(again) == ([("a.mp4", 4)], (4, 4))
    ids = set(again.track_ids(again.find_video(video_files[0])))
    assert again.track_ids(started_by=2) == sorted(ids)[:3]
    _, found = again.vectors().visual.search(np.ones((1, 8), np.float32), 10)
    assert set(found[0][found[0] >= 0].tolist()) == ids
    assert sorted(p.name for p in (tmp_path / "db").glob("*.faiss")) == ["colour-4.faiss", "text-4.faiss", "visual-4.faiss"]


def test_one_model_per_index(tmp_path, video_files):
    store = Store.open(tmp_path / "db", create=True)
    store.add_video("m", "a.mp4", _indexed(video_files[0], 2, 0))
    with pytest.raises(VQSearchError, match="built with model 'm'"):
        store.check_model("other")
    with pytest.raises(VQSearchError, match="built with model 'm'"):
        store.add_video("other", "b.mp4", _indexed(video_files[1], 2, 1))
    assert _state(Store.open(tmp_path / "db")) == ([("a.mp4", 2)], (2, 2))


def test_text_tokens_of_other_label_texts_never_join_an_index(tmp_path, video_files):
    store = Store.open(tmp_path / "db", create=True)
    first = _indexed(video_files[0], 3, 0)
    first.text_space = "labels-v3"
    store.add_video("m", "a.mp4", first)
    assert store.text_space == "labels-v3"
    other = _indexed(video_files[1], 2, 1)
    other.text_space = "labels-v4"
    before = _state(store)
    with pytest.raises(VQSearchError, match="made with labels-v3, and this vqsearch makes them with labels-v4"):
        store.add_video("m", "b.mp4", other)
    assert _state(store) == before
    legacy = Store.open(tmp_path / "legacy", create=True)  # text tokens written before they were recorded
    legacy.add_video("m", "a.mp4", _indexed(video_files[0], 3, 0))
    assert legacy.text_space is None
    with pytest.raises(VQSearchError, match="older label texts"):
        legacy.add_video("m", "b.mp4", other)
    crops_only = Store.open(tmp_path / "visual", create=True)  # no text tokens yet: any label texts may come
    crops_only.add_video("m", "a.mp4", _indexed(video_files[0], 3, 0, text=False))
    crops_only.add_video("m", "b.mp4", other)
    assert crops_only.text_space == "labels-v4"


def test_failed_write_leaves_previous_index_whole(tmp_path, video_files, monkeypatch):
    store = Store.open(tmp_path / "db", create=True)
    store.add_video("m", "a.mp4", _indexed(video_files[0], 3, 0))
    before = _state(Store.open(tmp_path / "db"))
    real_write = faiss.write_index

    def crash_on_text(index, path):
        if "text" in Path(path).name:
            raise OSError("disk full")
        real_write(index, path)

    monkeypatch.setattr(faiss, "write_index", crash_on_text)
    with pytest.raises(OSError):
        store.add_video("m", "b.mp4", _indexed(video_files[1], 2, 1))
    with pytest.raises(OSError):
        store.remove_video(video_files[0])
    monkeypatch.setattr(faiss, "write_index", real_write)
    assert _state(Store.open(tmp_path / "db")) == before
    assert sorted(p.name for p in (tmp_path / "db").iterdir() if "faiss" in p.name) == [
        "colour-1.faiss", "text-1.faiss", "visual-1.faiss"]


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(VQSearchError, match="no index at"):
        Store.open(tmp_path / "nowhere")


@pytest.mark.parametrize("legacy", [False, True])
def test_repair_takes_vectors_only_where_an_id_is_still_the_same_track(tmp_path, video_files, legacy):
    """Generation 2's files are left over; generation 4's visual file is lost. a's tracks are in
    generation 2 under the same ids; c's are nowhere: c's ids were never given before (SQLite alone
    would have given it b's), so b's vectors are not taken for c. An index of schema 3, which never
    recorded unique ids (`legacy`), trusts no generation but the committed one: both are lost."""
    import shutil

    root = tmp_path / "db"
    c_file = tmp_path / "c.mp4"
    c_file.write_bytes(b"c")
    a = _indexed(video_files[0], 3, 0)
    store = Store.open(root, create=True)
    store.add_video("m", "a.mp4", a)
    store.add_video("m", "b.mp4", _indexed(video_files[1], 2, 1))
    kept = tmp_path / "kept"
    kept.mkdir()
    for path in root.glob("*-2.faiss"):
        shutil.copy(path, kept)
    store.remove_video(video_files[1])
    store.add_video("m", "c.mp4", _indexed(c_file, 2, 2))
    assert store.track_ids(store.find_video(c_file)) == [6, 7]
    for path in kept.iterdir():
        shutil.copy(path, root)
    (root / "visual-4.faiss").unlink()
    if legacy:
        downgrade(root, "3")
    with pytest.raises(VQSearchError, match="visual-4.faiss is missing; `vqsearch check"):
        Store.open(root)

    done = Store.open(root, verify=False).repair()
    lost = [(Path(path).name, tracks) for path, tracks in done.lost]
    reopened = Store.open(root)
    if legacy:
        assert lost == [("a.mp4", 3), ("c.mp4", 2)] and done.rebuilt == {}
        assert _state(reopened) == ([], None)
        return
    assert lost == [("c.mp4", 2)] and done.rebuilt == {
        "visual": ["visual-2.faiss"], "text": ["text-4.faiss"], "colour": ["colour-4.faiss"]}
    assert _state(reopened) == ([("a.mp4", 3)], (3, 3))
    assert np.array_equal(reopened.vectors().visual.reconstruct_batch(np.arange(1, 4)), a.visual)
    assert sorted(p.name for p in root.glob("*.faiss*")) == ["colour-5.faiss", "text-5.faiss", "visual-5.faiss"]
    assert Store.open(root, verify=False).repair() is None


def test_an_index_repaired_to_nothing_takes_new_videos(tmp_path, video_files):
    root = tmp_path / "db"
    Store.open(root, create=True).add_video("m", "a.mp4", _indexed(video_files[0], 3, 0))
    (root / "visual-1.faiss").write_bytes(b"\0" * 100)
    done = Store.open(root, verify=False).repair()
    assert [tracks for _, tracks in done.lost] == [3] and not list(root.glob("*.faiss*"))
    store = Store.open(root)
    assert _state(store) == ([], None) and store.health().problems == []
    store.add_video("m", "b.mp4", _indexed(video_files[1], 2, 1))
    assert _state(Store.open(root)) == ([("b.mp4", 2)], (2, 2))


def test_a_failure_after_the_commit_deletes_none_of_the_files_it_names(tmp_path, video_files, monkeypatch):
    """The files a write leaves behind when it fails are swept, but never those the database
    committed to, whatever the failure."""
    from sqlalchemy.orm import Session

    root = tmp_path / "db"
    store = Store.open(root, create=True)
    store.add_video("m", "a.mp4", _indexed(video_files[0], 3, 0))
    commit = Session.commit

    def commit_then_fail(session):
        commit(session)
        raise OSError("I/O error after the commit")

    monkeypatch.setattr(Session, "commit", commit_then_fail)
    with pytest.raises(OSError):
        store.add_video("m", "b.mp4", _indexed(video_files[1], 2, 1))
    monkeypatch.undo()
    assert _state(Store.open(root)) == ([("a.mp4", 3), ("b.mp4", 2)], (5, 5))


def test_rows_another_program_left_without_their_parent_are_found_and_removed(tmp_path, video_files):
    import sqlite3

    root = tmp_path / "db"
    Store.open(root, create=True).add_video("m", "a.mp4", _indexed(video_files[0], 3, 0))
    connection = sqlite3.connect(root / "index.sqlite")  # foreign keys are off by default here
    connection.execute("DELETE FROM videos")
    connection.commit()
    connection.close()
    assert Store.open(root, verify=False).health().problems == ["3 rows of tracks belong to no row of videos"]
    done = Store.open(root, verify=False).repair()
    assert (done.orphan_rows, done.lost, done.rebuilt) == (3, [], {})
    assert Store.open(root).health().problems == [] and _state(Store.open(root)) == ([], None)


def _tables(db: Path | str) -> dict[str, tuple]:
    """Every table's columns, indexes and foreign keys, as the index's database holds them."""
    from sqlalchemy import inspect

    from vqsearch.store import locate

    engine = locate(db).engine()
    found = inspect(engine)
    tables = {table: ([(c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(table)],
                      found.get_pk_constraint(table)["constrained_columns"],
                      sorted((i["name"], tuple(i["column_names"])) for i in found.get_indexes(table)),
                      [(k["referred_table"], k["constrained_columns"], k["options"])
                       for k in found.get_foreign_keys(table)])
              for table in found.get_table_names()}
    engine.dispose()
    return tables


def test_the_migrations_are_the_schema_versions():
    from alembic.script import ScriptDirectory

    from vqsearch import migrations
    from vqsearch.schema import KNOWN_SCHEMAS, SCHEMA_VERSION

    script = ScriptDirectory(str(Path(migrations.__file__).parent))
    assert [r.revision for r in reversed(list(script.walk_revisions()))] == list(KNOWN_SCHEMAS)
    assert script.get_current_head() == SCHEMA_VERSION


@pytest.mark.parametrize("version", ["1", "2", "3", "4"])
def test_an_older_schema_is_read_as_it_is_and_the_next_write_brings_it_to_the_newest(tmp_path, video_files, version):
    """An index as vqsearch of schema 1 to 4 left it (no alembic_version; before 3 no colour
    file, before 2 no shot cuts) reads without a change to its files, also through writes that
    migrate it and commit nothing (repair, within the migration, finds the files it names sound);
    the next video added migrates it, and it then has exactly a new index's tables."""
    from dataclasses import replace

    root = tmp_path / "db"
    a = _indexed(video_files[0], 3, 0)
    a.info, a.cuts = replace(a.info, declared_frames=400), [(2, 3)]
    Store.open(root, create=True).add_video("m", "a.mp4", a)
    fresh = _tables(root)
    downgrade(root, version)
    before = _files(root)

    store = Store.open(root)
    assert _state(store) == ([("a.mp4", 3)], (3, 3)) and (store.vectors().colour is None) == (int(version) < 3)
    assert [video.gap is not None for video, _ in store.videos()] == [int(version) >= 3]
    assert store.shot_bounds(store.find_video(video_files[0]), 1) == ((0, 99) if version == "1" else (0, 2))
    health = store.health()
    assert (health.problems, health.schema, health.orphans) == ([], version, [])
    assert store.remove_video(video_files[1]) is False and store.repair() is None  # they migrate, commit nothing
    assert _files(root) == before

    store.add_video("m", "b.mp4", _indexed(video_files[1], 2, 1))
    after = Store.open(root)
    assert _state(after) == ([("a.mp4", 3), ("b.mp4", 2)], (5, 5)) and after.vectors().colour.ntotal == 5
    assert after.track_ids(after.find_video(video_files[1])) == [4, 5]
    health = after.health()
    assert (health.problems, health.schema, health.orphans) == ([], SCHEMA_VERSION, [])
    assert _tables(root) == fresh


def test_a_run_that_commits_nothing_to_a_new_index_removes_it(tmp_path, video_files):
    """Only what the run made goes: the directories it made, or the index it made in one that was
    there; an index it committed a video to stays."""
    with pytest.raises(RuntimeError), Store.writer(tmp_path / "new" / "db"):
        raise RuntimeError("unreadable model weights")
    assert not (tmp_path / "new").exists()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    with pytest.raises(KeyboardInterrupt), Store.writer(mine):
        raise KeyboardInterrupt
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    with pytest.raises(RuntimeError), Store.writer(tmp_path / "kept") as store:
        store.add_video("m", "a.mp4", _indexed(video_files[0], 3, 0))
        raise RuntimeError("the second video is unreadable")
    assert _state(Store.open(tmp_path / "kept")) == ([("a.mp4", 3)], (3, 3))


@contextmanager
def write_lock_held(db: Path | str) -> Iterator[None]:
    """Another process holds the index's write lock, as `index` does for its whole run."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from vqsearch.store import Store\n"
         f"with Store.writer({str(db)!r}):\n    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        yield
    finally:
        holder.communicate("")
    assert holder.returncode == 0


def test_one_writer_at_a_time_and_readers_never_wait(tmp_path, video_files):
    """Another process holds the write lock: a write here is refused at once, in one line, and
    reads go on."""
    root = tmp_path / "db"
    Store.open(root, create=True).add_video("m", "a.mp4", _indexed(video_files[0], 3, 0))
    before = _files(root)
    with write_lock_held(root):
        store = Store.open(root)
        with pytest.raises(VQSearchError, match=f"^another vqsearch is writing to the index at {root}; try again"):
            store.add_video("m", "b.mp4", _indexed(video_files[1], 2, 1))
        with pytest.raises(VQSearchError, match="another vqsearch is writing"), Store.writer(root):
            pass
        assert _state(store) == ([("a.mp4", 3)], (3, 3))
    assert _files(root) == before
    Store.open(root).add_video("m", "b.mp4", _indexed(video_files[1], 2, 1))
