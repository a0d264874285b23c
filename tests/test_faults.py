"""Fault injection (issue 9): bad input of every kind through every command, damaged indexes, and
signals. A refused case exits with status 1 (130 on Ctrl-C, 143 on SIGTERM), prints exactly one
line on stderr and no traceback, and leaves every file it was given (the index and the inputs)
byte-identical. A killed write leaves an index that opens, lists what it held and checks sound."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tree, vqsearch
from test_store_guard import DAMAGE

pytestmark = pytest.mark.slow


def _annotations(clip_uid: str) -> dict:
    """One valid VQ2D query set on one clip."""
    box = {"frame_number": 0, "x": 1, "y": 1, "width": 5, "height": 5, "original_width": 64, "original_height": 64}
    return {"version": "t", "videos": [{"video_uid": "v", "clips": [{
        "clip_uid": clip_uid, "clip_fps": 5.0, "annotations": [{"query_sets": {"1": {
            "is_valid": True, "object_title": "cup", "query_frame": 3, "visual_crop": box,
            "response_track": [box]}}}]}]}]}


@pytest.fixture(scope="module")
def inputs(videos: Path, tmp_path_factory) -> Path:
    """Bad files of every kind a user hands vqsearch, made once."""
    from PIL import Image

    root = tmp_path_factory.mktemp("inputs")
    (root / "empty.png").write_bytes(b"")
    (root / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(3000))
    (root / "notes.png").write_text("not an image")
    (root / "folder.png").mkdir()
    Image.new("RGB", (5000, 4000), "white").save(root / "huge.png")
    Image.new("1", (20000, 20000)).save(root / "bomb.png")  # past PIL's own decompression-bomb limit
    data = (videos / "02_cups.mp4").read_bytes()
    (root / "notes.mp4").write_text("not a video")
    (root / "empty.mp4").write_bytes(b"")
    (root / "truncated.mp4").write_bytes(data[: len(data) * 6 // 10])
    (root / "cut_short.mp4").write_bytes(data[: len(data) * 3 // 10])  # its index is at the front
    clips = root / "a" / "b" / "clips"
    clips.mkdir(parents=True)
    (clips / "clip.mp4").write_text("not a video")
    victim = root / "a" / "escape" / "victim.mp4"  # where clips/../../escape/victim.mp4 leads
    victim.parent.mkdir()
    victim.write_bytes(data[:1000])
    (root / "vq.json").write_text(json.dumps(_annotations("clip")))
    (root / "escape.json").write_text(json.dumps(_annotations("../../escape/victim")))
    (root / "absolute.json").write_text(json.dumps(_annotations(str(victim.with_suffix("")))))
    (root / "garbage.json").write_bytes(os.urandom(200))
    (root / "list.json").write_text("[1, 2, 3]")
    (root / "no_clips.json").write_text(json.dumps({"version": "t", "videos": [{"video_uid": "v", "clips": 5}]}))
    (root / "preds_no_results.json").write_text(json.dumps({"version": "t", "challenge": "ego4d_vq2d_challenge"}))
    (root / "preds_other_challenge.json").write_text(json.dumps(
        {"version": "t", "challenge": "something else", "results": {"videos": []}}))
    return root


def _sql(root: Path, statement: str) -> None:
    connection = sqlite3.connect(root / "index.sqlite")
    connection.execute(statement)
    connection.commit()
    connection.close()


def _faiss(root: Path, kind: str) -> Path:
    return next(root.glob(f"{kind}-*.faiss"))


def _truncated_sqlite(root: Path) -> None:
    data = (root / "index.sqlite").read_bytes()
    (root / "index.sqlite").write_bytes(data[: len(data) // 2])


def _dropped_column(root: Path) -> None:
    _sql(root, "ALTER TABLE observations DROP COLUMN width")


def _truncated_visual(root: Path) -> None:
    path = _faiss(root, "visual")
    path.write_bytes(path.read_bytes()[:5000])


def _one_vector_fewer(root: Path) -> None:
    import faiss

    path = _faiss(root, "visual")
    index = faiss.read_index(str(path))
    index.remove_ids(faiss.vector_to_array(index.id_map)[:1])
    faiss.write_index(index, str(path))


def _other_ids(root: Path) -> None:
    """The text vectors under ids that no track has (as many as there are tracks)."""
    import faiss

    path = _faiss(root, "text")
    index = faiss.read_index(str(path))
    vectors = index.index.reconstruct_n(0, index.ntotal)
    moved = faiss.IndexIDMap2(faiss.IndexFlatIP(index.d))
    moved.add_with_ids(vectors, faiss.vector_to_array(index.id_map) + 10_000)
    faiss.write_index(moved, str(path))


def _foreign_faiss(root: Path) -> None:
    import faiss
    import numpy as np

    path = _faiss(root, "visual")
    flat = faiss.IndexFlatL2(4)
    flat.add(np.ones((3, 4), np.float32))
    faiss.write_index(flat, str(path))


def _missing_colour(root: Path) -> None:
    _faiss(root, "colour").unlink()


def _unwritable(root: Path) -> None:
    """The lock file is a folder, as a permission error would be (tests run as root: chmod is no test)."""
    (root / ".lock").unlink(missing_ok=True)
    (root / ".lock").mkdir()


def _db_is_a_file(root: Path) -> None:
    shutil.rmtree(root)
    root.write_text("my notes")


def _no_db(root: Path) -> None:
    shutil.rmtree(root)


def _missing_sqlite(root: Path) -> None:
    (root / "index.sqlite").unlink()


HARM = {name: harm for name, (harm, _) in DAMAGE.items()} | {
    "truncated index.sqlite": _truncated_sqlite, "dropped column": _dropped_column,
    "truncated visual-N.faiss": _truncated_visual, "one vector fewer": _one_vector_fewer,
    "text vectors under other ids": _other_ids, "a foreign FAISS index": _foreign_faiss,
    "missing colour-N.faiss": _missing_colour, "unwritable": _unwritable, "db is a file": _db_is_a_file,
    "no db": _no_db, "missing index.sqlite": _missing_sqlite}

QUERY = ["query", "--text", "bed", "--db", "{db}"]
CROP = ["query", "--db", "{db}", "--crop"]
INDEX = ["index", "--db", "{db}"]
VQ2D = ["bench", "vq2d", "--clips", "{in}/a/b/clips", "--out", "{out}/preds.json", "--annotations"]
EVAL = ["bench", "vq2d-eval", "--annotations", "{in}/vq.json", "--predictions"]

# (id, arguments, harm done to the index copy first, what the error line says)
CASES = [
    # the index's own files, through every command that opens it
    ("zero-byte sqlite: list", ["list", "--db", "{db}"], "zero-byte index.sqlite", "empty (0 bytes)"),
    ("zero-byte sqlite: check", ["check", "--db", "{db}"], "zero-byte index.sqlite", "empty (0 bytes)"),
    ("zero-byte sqlite: repair", ["repair", "--db", "{db}"], "zero-byte index.sqlite", "empty (0 bytes)"),
    ("truncated sqlite: list", ["list", "--db", "{db}"], "truncated index.sqlite", "damaged"),
    ("truncated sqlite: query", QUERY, "truncated index.sqlite", "damaged"),
    ("garbage sqlite: index", [*INDEX, "{cups}"], "garbage index.sqlite", "damaged"),
    ("garbage sqlite: check", ["check", "--db", "{db}"], "garbage index.sqlite", "damaged"),
    ("text file as sqlite: remove", ["remove", "{bedroom}", "--db", "{db}"], "a text file as index.sqlite",
     "not an SQLite database"),
    ("foreign sqlite: list", ["list", "--db", "{db}"], "a foreign SQLite file", "not a vqsearch index"),
    ("foreign sqlite: repair", ["repair", "--db", "{db}"], "a foreign SQLite file", "not a vqsearch index"),
    ("schema 999: query", QUERY, "schema 999", "schema version '999'"),
    ("schema 999: repair", ["repair", "--db", "{db}"], "schema 999", "schema version '999'"),
    ("dropped column: list", ["list", "--db", "{db}"], "dropped column", "observations lack width"),
    ("missing visual: query", QUERY, "missing visual-N.faiss", "visual-1.faiss is missing"),
    ("missing visual: check", ["check", "--db", "{db}"], "missing visual-N.faiss", "not sound (1 problem"),
    ("truncated visual: index", [*INDEX, "{cups}"], "truncated visual-N.faiss", "unreadable"),
    ("garbage visual: remove", ["remove", "{bedroom}", "--db", "{db}"], "corrupt visual-N.faiss", "unreadable"),
    ("one vector fewer: query", QUERY, "one vector fewer", "holds 37 vectors for 38 tracks"),
    ("one vector fewer: check", ["check", "--db", "{db}"], "one vector fewer", "not sound"),
    ("text under other ids: remove", ["remove", "{bedroom}", "--db", "{db}"], "text vectors under other ids",
     "ids that are no track's"),
    ("foreign FAISS index: query", QUERY, "a foreign FAISS index", "not a vqsearch vector file"),
    ("missing colour: index", [*INDEX, "{cups}"], "missing colour-N.faiss", "colour-1.faiss is missing"),
    ("unwritable: index", [*INDEX, "{cups}"], "unwritable", "cannot write to the index"),
    ("unwritable: repair", ["repair", "--db", "{db}"], "unwritable", "cannot write to the index"),
    ("db is a file: index", [*INDEX, "{bedroom}"], "db is a file", "is a file, not a directory"),
    ("no db: list", ["list", "--db", "{db}"], "no db", "no index at"),
    ("no db: check", ["check", "--db", "{db}"], "no db", "no index at"),
    ("missing sqlite: index", [*INDEX, "{cups}"], "missing index.sqlite", "holds FAISS files but no index.sqlite"),
    # crops
    ("crop: empty file", [*CROP, "{in}/empty.png"], None, "cannot read crop image"),
    ("crop: garbage", [*CROP, "{in}/garbage.png"], None, "cannot read crop image"),
    ("crop: text file", [*CROP, "{in}/notes.png"], None, "cannot read crop image"),
    ("crop: folder", [*CROP, "{in}/folder.png"], None, "no such crop image"),
    ("crop: missing", [*CROP, "{in}/missing.png"], None, "no such crop image"),
    ("crop: 20 megapixels", [*CROP, "{in}/huge.png"], None, "megapixels"),
    ("crop: decompression bomb", [*CROP, "{in}/bomb.png"], None, "megapixels"),
    # query arguments
    ("query: blank text", ["query", "--text", "  ", "--db", "{db}"], None, "empty --text query"),
    ("query: nothing to query with", ["query", "--db", "{db}"], None, "give --text, --crop or both"),
    ("query: top-k 0", [*QUERY, "--top-k", "0"], None, "--top-k must be at least 1"),
    ("query: video not indexed", [*QUERY, "--video", "{cups}"], None, "video not in the index"),
    ("query: video missing", [*QUERY, "--video", "{in}/missing.mp4"], None, "video not in the index"),
    ("query: another model", [*QUERY, "--model", "another-model"], None, "built with model"),
    # videos and index arguments
    ("video: missing", [*INDEX, "{in}/missing.mp4"], None, "no such video file"),
    ("video: text file", [*INDEX, "{in}/notes.mp4"], None, "cannot read video"),
    ("video: zero bytes", [*INDEX, "{in}/empty.mp4"], None, "cannot read video"),
    ("video: truncated", [*INDEX, "{bedroom}", "{in}/truncated.mp4"], None, "truncated"),
    ("video: cut short", [*INDEX, "{in}/cut_short.mp4"], None, "is incomplete"),
    ("video: a folder", [*INDEX, "{in}"], None, "no such video file"),
    ("index: --fps nan", [*INDEX, "{bedroom}", "--fps", "nan"], None, "--fps must be a positive number"),
    ("index: --fps -1", [*INDEX, "{bedroom}", "--fps", "-1"], None, "--fps must be a positive number"),
    ("index: --fps inf", [*INDEX, "{bedroom}", "--fps", "inf"], None, "--fps must be a positive number"),
    ("index: --fps 0", [*INDEX, "{bedroom}", "--fps", "0"], None, "--fps must be a positive number"),
    ("index: --threads 0", [*INDEX, "{bedroom}", "--threads", "0"], None, "--threads must be at least 1"),
    ("index: unknown model", [*INDEX, "{bedroom}", "--model", "no-such-model"], None, "unknown model"),
    ("remove: not indexed", ["remove", "{cups}", "--db", "{db}"], None, "video not in the index"),
    ("remove: missing", ["remove", "{in}/missing.mp4", "--db", "{db}"], None, "video not in the index"),
    # bench vq2d: annotations, clips, paths
    ("vq2d: annotations garbage", [*VQ2D, "{in}/garbage.json"], None, "is not JSON"),
    ("vq2d: annotations a list", [*VQ2D, "{in}/list.json"], None, "bad annotation file"),
    ("vq2d: annotations without clips", [*VQ2D, "{in}/no_clips.json"], None, "bad annotation file"),
    ("vq2d: annotations missing", [*VQ2D, "{in}/missing.json"], None, "no such annotation file"),
    ("vq2d: clip_uid ../../", [*VQ2D, "{in}/escape.json"], None, "not a plain name"),
    ("vq2d: clip_uid absolute", [*VQ2D, "{in}/absolute.json"], None, "not a plain name"),
    ("vq2d: clip not a video", [*VQ2D, "{in}/vq.json", "--no-relocate"], None, "cannot read video"),
    ("vq2d: no clips folder", ["bench", "vq2d", "--annotations", "{in}/vq.json", "--clips", "{in}/none",
                               "--out", "{out}/preds.json"], None, "no such clips directory"),
    ("vq2d: --out a folder", ["bench", "vq2d", "--annotations", "{in}/vq.json", "--clips", "{in}/a/b/clips",
                              "--out", "{in}"], None, "is a directory"),
    ("vq2d: no text, no crop", [*VQ2D, "{in}/vq.json", "--no-text", "--no-crop"], None, "nothing to query with"),
    # bench vq2d-eval
    ("vq2d-eval: predictions garbage", [*EVAL, "{in}/garbage.json"], None, "is not JSON"),
    ("vq2d-eval: predictions a list", [*EVAL, "{in}/list.json"], None, "bad predictions file"),
    ("vq2d-eval: predictions without results", [*EVAL, "{in}/preds_no_results.json"], None, "results"),
    ("vq2d-eval: another challenge", [*EVAL, "{in}/preds_other_challenge.json"], None, "challenge"),
    ("vq2d-eval: predictions missing", [*EVAL, "{in}/missing.json"], None, "no such predictions file"),
    ("vq2d-eval: annotations garbage", ["bench", "vq2d-eval", "--annotations", "{in}/garbage.json",
                                        "--predictions", "{in}/vq.json"], None, "is not JSON"),
]


@pytest.mark.parametrize("args, harm, says", [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_a_fault_is_one_line_and_changes_nothing(indexed_db, inputs, videos, tmp_path, args, harm, says):
    db = tmp_path / "db"
    shutil.copytree(indexed_db, db)
    (tmp_path / "out").mkdir()
    if harm:
        HARM[harm](db)
    before, given = tree(tmp_path), tree(inputs)
    values = {"db": db, "in": inputs, "out": tmp_path / "out", "bedroom": videos / "bedroom.mp4",
              "cups": videos / "02_cups.mp4"}
    done = vqsearch(*(arg.format(**values) for arg in args))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("vqsearch: error: ") and says in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert tree(tmp_path) == before and tree(inputs) == given


def _wait_for_models(run: subprocess.Popen) -> None:
    """Past Python's start-up (a signal there ends it before any handler is set): loading models."""
    maps = Path(f"/proc/{run.pid}/maps")
    deadline = time.monotonic() + 60
    while run.poll() is None and time.monotonic() < deadline and "openvino" not in maps.read_text():
        time.sleep(0.05)


def _listed(db: Path) -> list[str]:
    done = vqsearch("list", "--json", "--db", str(db))
    assert done.returncode == 0, done.stderr
    return [Path(video["video"]).name for video in json.loads(done.stdout)["videos"]]


@pytest.mark.parametrize("signum, code, says", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")])
def test_a_signal_during_index_exits_in_one_line_and_changes_nothing(indexed_db, videos, tmp_path, signum, code,
                                                                     says):
    db = tmp_path / "db"
    shutil.copytree(indexed_db, db)
    before = tree(db)
    run = subprocess.Popen([sys.executable, "-m", "vqsearch.cli", "index", str(videos / "02_cups.mp4"),
                            "--db", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=os.environ.copy())
    _wait_for_models(run)
    time.sleep(1.0)  # loading the models or indexing: either way before the write
    run.send_signal(signum)
    _, err = run.communicate(timeout=60)
    assert run.returncode == code and err.strip().splitlines() == [f"vqsearch: {says}"], err
    assert tree(db) == before


# Run `vqsearch` with a SIGKILL at one point of its write: after the first FAISS file of the next
# generation is written, once all are written and synced (before the SQLite commit), or after the
# commit (before the files of the generation it replaced are deleted).
KILL_AT = """
import os, signal, sys
from pathlib import Path

import faiss

from vqsearch import store
from vqsearch.cli import main

def die(*args):
    os.kill(os.getpid(), signal.SIGKILL)

point = sys.argv.pop(1)
if point == "first FAISS file":
    write = faiss.write_index
    faiss.write_index = lambda index, path: (write(index, path), die())
elif point == "before the commit":
    fsync = store._fsync
    store._fsync = lambda path: die() if Path(path).is_dir() else fsync(path)
else:
    store.Store._sweep = die
main()
"""


def _kill_during_index(db: Path, video: Path, point: str) -> int:
    """Index `video` into `db`, killed with SIGKILL at `point` (mid-run: a second into loading the
    models or decoding); the exit status."""
    if point != "mid-run":
        return subprocess.run([sys.executable, "-c", KILL_AT, point, "index", str(video), "--db", str(db)],
                              capture_output=True, env=os.environ.copy(), timeout=300).returncode
    run = subprocess.Popen([sys.executable, "-m", "vqsearch.cli", "index", str(video), "--db", str(db)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    _wait_for_models(run)
    time.sleep(1.0)
    run.kill()
    return run.wait(timeout=60)


@pytest.mark.parametrize("point", ["mid-run", "first FAISS file", "before the commit"])
def test_sigkill_during_index_leaves_the_previous_index_sound(indexed_db, videos, tmp_path, point):
    db = tmp_path / "db"
    shutil.copytree(indexed_db, db)
    assert _kill_during_index(db, videos / "02_cups.mp4", point) == -signal.SIGKILL
    assert _listed(db) == ["bedroom.mp4"]
    checked = vqsearch("check", "--json", "--db", str(db))
    health = json.loads(checked.stdout)
    assert checked.returncode == 0 and health["sound"] and health["generation"] == 1, checked.stdout
    assert bool(health["orphans"]) == (point != "mid-run")  # the next generation's files, never committed
    query = vqsearch("query", "--text", "bed", "--no-relocate", "--json", "--db", str(db))
    assert query.returncode == 0 and "bedroom.mp4" in query.stdout, query.stderr


@pytest.fixture
def killed_after_commit(indexed_db: Path, videos: Path, tmp_path: Path) -> Path:
    """02_cups.mp4 indexed into a copy of the index and committed, then SIGKILL before the
    previous generation's files were deleted."""
    db = tmp_path / "db"
    shutil.copytree(indexed_db, db)
    assert _kill_during_index(db, videos / "02_cups.mp4", "after the commit") == -signal.SIGKILL
    return db


def test_sigkill_after_the_commit_keeps_the_new_index_and_the_next_write_sweeps(killed_after_commit, videos):
    db = killed_after_commit
    assert _listed(db) == ["bedroom.mp4", "02_cups.mp4"]
    health = json.loads(vqsearch("check", "--json", "--db", str(db)).stdout)
    assert health["sound"] and health["generation"] == 2
    assert health["orphans"] == ["colour-1.faiss", "text-1.faiss", "visual-1.faiss"]
    assert vqsearch("remove", str(videos / "02_cups.mp4"), "--db", str(db)).returncode == 0
    assert sorted(path.name for path in db.glob("*.faiss*")) == ["colour-3.faiss", "text-3.faiss", "visual-3.faiss"]


def test_repair_rebuilds_from_the_generation_left_behind_and_names_what_is_lost(killed_after_commit, videos):
    """The committed visual file is damaged: bedroom's vectors are still in the previous
    generation's file, 02_cups's are nowhere. Repair keeps the one and lists the other."""
    db = killed_after_commit
    (db / "visual-2.faiss").write_bytes((db / "visual-2.faiss").read_bytes()[:5000])
    checked = vqsearch("check", "--db", str(db))
    assert checked.returncode == 1 and checked.stdout.splitlines()[0] == (
        "problem: visual-2.faiss is unreadable (truncated or corrupt)")
    assert len(checked.stderr.strip().splitlines()) == 1 and "vqsearch repair --db" in checked.stderr

    repaired = vqsearch("repair", "--json", "--db", str(db))
    assert repaired.returncode == 0, repaired.stderr
    report = json.loads(repaired.stdout)
    assert report["rebuilt"] == {"visual": ["visual-1.faiss"], "text": ["text-2.faiss"], "colour": ["colour-2.faiss"]}
    assert [(Path(lost["video"]).name, lost["tracks"] > 0) for lost in report["lost"]] == [("02_cups.mp4", True)]
    assert _listed(db) == ["bedroom.mp4"]
    assert vqsearch("check", "--db", str(db)).returncode == 0
    assert sorted(path.name for path in db.glob("*.faiss*")) == ["colour-3.faiss", "text-3.faiss", "visual-3.faiss"]
    query = vqsearch("query", "--text", "bed", "--no-relocate", "--json", "--db", str(db))
    assert query.returncode == 0 and json.loads(query.stdout)["results"], query.stderr
    again = vqsearch("repair", "--db", str(db))
    assert again.returncode == 0 and "nothing to repair" in again.stdout


def test_a_second_indexer_is_refused_at_once_while_readers_go_on(indexed_db, videos, tmp_path):
    """`index` holds the write lock from before its video work to its end: another `index` on the
    same --db is refused in one line while the first still runs, `list` reads on, and the index is
    as it was (the first is stopped before its write)."""
    db = tmp_path / "db"
    shutil.copytree(indexed_db, db)
    before = tree(db)
    first = subprocess.Popen([sys.executable, "-m", "vqsearch.cli", "index", str(videos / "bedroom.mp4"), "--fps", "30",
                              "--threads", "1", "--db", str(db)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=os.environ.copy())
    try:
        _wait_for_models(first)
        second = vqsearch("index", str(videos / "02_cups.mp4"), "--db", str(db))
        assert second.returncode == 1 and second.stderr.strip().splitlines() == [
            f"vqsearch: error: another vqsearch is writing to the index at {db}; try again when it ends"], second.stderr
        assert _listed(db) == ["bedroom.mp4"]
        assert first.poll() is None  # the second did not wait for the first
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    assert tree(db) == before


def test_an_index_that_fails_on_its_model_removes_the_new_db_it_made(videos, tmp_path):
    """The checkpoint is read after the new --db (and its missing parents) was made: they go again."""
    weights = tmp_path / "weights.pt"
    weights.write_text("not a checkpoint")
    done = vqsearch("index", str(videos / "bedroom.mp4"), "--model", f"dinov3:{weights}",
                    "--db", str(tmp_path / "new" / "db"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("vqsearch: error: "), done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["weights.pt"]


@pytest.mark.parametrize("kind", ["module", "pickle"])
def test_a_pickled_checkpoint_is_refused_in_our_words(videos, tmp_path, kind):
    """A pickled module, or a pickle that is no torch file: one line, no torch warning, and never
    torch's advice to load it with weights_only=False."""
    import pickle

    import torch

    weights = tmp_path / "weights.pt"
    if kind == "module":
        torch.save(torch.nn.Linear(2, 2), weights)
    else:
        weights.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    done = vqsearch("index", str(videos / "bedroom.mp4"), "--model", f"dinov3:{weights}", "--db", str(tmp_path / "db"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "refused (loading it could run code)" in lines[0], done.stderr
    assert "weights_only" not in done.stderr and not (tmp_path / "db").exists()
