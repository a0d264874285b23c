"""End to end through the `vqsearch` command on the three real sample videos, embedded model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def vqsearch(*args: str, db: Path, check: bool = True) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "vqsearch.cli", *args, "--db", str(db)],
                         capture_output=True, text=True, env=os.environ.copy())
    if check and run.returncode != 0:
        raise AssertionError(f"vqsearch {' '.join(args)} failed: {run.stderr}")
    return run


@pytest.fixture(scope="module")
def db(videos: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("db")
    out = vqsearch("index", *(str(videos / n) for n in ("02_cups.mp4", "04_coffee.mp4", "bedroom.mp4")),
                   "--json", db=root)
    summary = json.loads(out.stdout)["videos"]
    assert [Path(v["video"]).name for v in summary] == ["02_cups.mp4", "04_coffee.mp4", "bedroom.mp4"]
    for video in summary:
        assert video["frames_sampled"] in (34, 48, 51)
        assert video["patch_tokens"] >= 100 * video["tracks"] > 0
        assert video["region_tokens"] > video["tracks"] / 10
    return root


def query(db: Path, *args: str) -> dict:
    return json.loads(vqsearch("query", *args, "--json", db=db).stdout)


def test_crop_of_the_ball_finds_its_reappearance(db, ball_crop):
    answer = query(db, "--crop", str(ball_crop))
    last = answer["last_seen"]
    assert Path(last["video"]).name == "02_cups.mp4"
    assert 280 <= last["start_frame"] <= last["end_frame"] <= 299
    assert last["end_time"] == pytest.approx(last["end_frame"] / 29.97, abs=0.01)
    # a tight box on every frame of the occurrence (the ball is 78 x 80 px and rolls to the left)
    assert [b["frame"] for b in last["boxes"]] == list(range(last["start_frame"], last["end_frame"] + 1))
    for box in last["boxes"]:
        assert 600 <= box["x"] <= 820 and box["width"] < 150 and box["height"] < 150
    at = next(b for b in last["boxes"] if b["frame"] == 295)
    x1, y1 = max(at["x"], 725), max(at["y"], 482)
    inter = max(0, min(at["x"] + at["width"], 803) - x1) * max(0, min(at["y"] + at["height"], 562) - y1)
    assert inter / (at["width"] * at["height"] + 78 * 80 - inter) >= 0.5
    assert answer["results"][0]["score"] == max(r["score"] for r in answer["results"])


@pytest.mark.parametrize("text, video", [("coffee mug", "04_coffee.mp4"), ("quilt", "bedroom.mp4"),
                                         ("bed", "bedroom.mp4"), ("ball", "02_cups.mp4")])
def test_text_ranks_the_right_video_first(db, text, video):
    answer = query(db, "--text", text, "--top-k", "3")
    assert answer["query"] == {"text": text, "crop": None}
    assert Path(answer["results"][0]["video"]).name == video
    assert Path(answer["last_seen"]["video"]).name == video


def test_text_and_crop_together_and_video_filter(db, ball_crop, videos):
    both = query(db, "--text", "ball", "--crop", str(ball_crop))
    assert 280 <= both["last_seen"]["start_frame"] <= 299
    crop = query(db, "--crop", str(ball_crop))  # the crop decides the occurrence, the product scores it
    assert (both["last_seen"]["start_frame"], both["last_seen"]["end_frame"]) == (
        crop["last_seen"]["start_frame"], crop["last_seen"]["end_frame"])
    assert 0 < both["last_seen"]["score"] < crop["last_seen"]["score"]
    only = query(db, "--text", "ball", "--video", str(videos / "bedroom.mp4"), "--top-k", "4")
    assert {Path(r["video"]).name for r in only["results"]} == {"bedroom.mp4"}


def test_show_writes_a_contact_sheet(db, ball_crop, tmp_path):
    from PIL import Image

    sheet = tmp_path / "answer.png"
    out = vqsearch("query", "--crop", str(ball_crop), "--show", str(sheet), db=db)
    assert "Last seen" in out.stdout and "02_cups.mp4" in out.stdout
    with Image.open(sheet) as image:
        assert image.width == 1280 and image.height > 300


def test_list_and_remove_and_reindex(db, videos, tmp_path):
    import shutil

    copy = tmp_path / "db"
    shutil.copytree(db, copy)
    listed = json.loads(vqsearch("list", "--json", db=copy).stdout)["videos"]
    assert [(Path(v["video"]).name, v["model"]) for v in listed] == [
        ("02_cups.mp4", "lite0-conse"), ("04_coffee.mp4", "lite0-conse"), ("bedroom.mp4", "lite0-conse")]
    vqsearch("index", str(videos / "bedroom.mp4"), db=copy)  # again: replaced, not duplicated
    assert len(json.loads(vqsearch("list", "--json", db=copy).stdout)["videos"]) == 3
    vqsearch("remove", str(videos / "bedroom.mp4"), db=copy)
    names = [Path(v["video"]).name for v in json.loads(vqsearch("list", "--json", db=copy).stdout)["videos"]]
    assert names == ["02_cups.mp4", "04_coffee.mp4"]
    answer = query(copy, "--text", "quilt")
    assert "bedroom.mp4" not in {Path(r["video"]).name for r in answer["results"]}


def test_an_index_from_another_model_is_refused(db, tmp_path, videos):
    import shutil

    copy = tmp_path / "db"
    shutil.copytree(db, copy)
    run = vqsearch("query", "--text", "ball", "--model", "some-other-model", db=copy, check=False)
    assert run.returncode == 1 and "built with model 'lite0-conse'" in run.stderr


def test_an_index_of_older_label_texts_answers_crops_but_not_text(db, tmp_path, ball_crop):
    import shutil
    import sqlite3

    copy = tmp_path / "db"
    shutil.copytree(db, copy)
    with sqlite3.connect(copy / "index.sqlite") as connection:  # as vqsearch left it before it recorded them
        connection.execute("DELETE FROM meta WHERE key = 'text_space'")
    run = vqsearch("query", "--text", "ball", db=copy, check=False)
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1
    assert "older label texts" in run.stderr and "new --db" in run.stderr
    assert Path(query(copy, "--crop", str(ball_crop), "--no-relocate")["last_seen"]["video"]).name == "02_cups.mp4"


def test_query_does_not_import_torch(db):
    """A query answers from OpenVINO and FAISS alone: torch would add seconds to every call."""
    code = ("import sys; from vqsearch.cli import app\n"
            f"try: app(['query', '--text', 'mug', '--db', {str(db)!r}, '--json'], standalone_mode=False)\n"
            "except SystemExit: pass\n"
            "print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert run.stdout.strip().splitlines()[-1] == "False", run.stderr


def test_the_embedded_model_indexes_without_torch(db, videos, tmp_path):
    """With its graphs converted (the `db` fixture did it), indexing runs on OpenVINO and numpy."""
    code = ("import sys; from vqsearch.cli import app\n"
            f"try: app(['index', {str(videos / 'bedroom.mp4')!r}, '--db', {str(tmp_path / 'db')!r}, '--threads', '1',"
            " '--json'], standalone_mode=False)\n"
            "except SystemExit: pass\n"
            "print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert '"tracks"' in run.stdout and run.stdout.strip().splitlines()[-1] == "False", run.stderr


def test_a_moved_video_still_answers_from_the_index(videos, tmp_path, ball_crop):
    import shutil

    moved = tmp_path / "02_cups.mp4"
    shutil.copy(videos / "02_cups.mp4", moved)
    root = tmp_path / "db"
    vqsearch("index", str(moved), db=root)
    moved.unlink()
    run = vqsearch("query", "--crop", str(ball_crop), "--json", "--show", str(tmp_path / "sheet.png"), db=root)
    answer = json.loads(run.stdout)
    assert 280 <= answer["last_seen"]["start_frame"] <= answer["last_seen"]["end_frame"] <= 299
    assert "answering with the index's own boxes" in run.stderr
    assert (tmp_path / "sheet.png").stat().st_size > 0  # grey tiles where the frames were


def test_a_video_cut_short_is_indexed_only_when_allowed_and_the_gap_is_kept(videos, tmp_path):
    data = (videos / "02_cups.mp4").read_bytes()
    cut_short = tmp_path / "cut_short.mp4"
    cut_short.write_bytes(data[: len(data) * 3 // 10])
    root = tmp_path / "db"
    refused = vqsearch("index", str(cut_short), db=root, check=False)
    assert refused.returncode == 1 and "is incomplete: 94 of the 300 frames" in refused.stderr
    assert not root.exists()
    done = vqsearch("index", str(cut_short), "--allow-partial", "--json", db=root)
    assert json.loads(done.stdout)["videos"][0]["declared_frames"] == 300
    assert "is incomplete" in done.stderr
    listed = json.loads(vqsearch("list", "--json", db=root).stdout)["videos"]
    assert [(v["frames"], v["declared_frames"]) for v in listed] == [(94, 300)]
