"""`bench vq2d`, `bench vq2d-eval` and `bench make-davis` end to end, on real DAVIS episodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED, need_shared

ROOT = Path(__file__).resolve().parents[1]
DAVIS = SHARED / "data" / "davis2016-val"
METRIC_KEYS = {"tAP", "tAP@0.25", "stAP", "stAP@0.25", "success", "recovery"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vqsearch.cli", *args], cwd=ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=600)


def test_track_boxes_are_filled_and_scaled():
    from queries.hits import Box
    from queries.vq2d.runner import track_boxes

    obs = [Box(5, 3, 3, 10, 10), Box(2, 0, 0, 10, 10)]
    boxes = track_boxes(obs, scale=(2.0, 1.0))
    assert [b.fno for b in boxes] == [2, 3, 4, 5]
    assert (boxes[0].x1, boxes[0].x2, boxes[0].y2) == (0.0, 20.0, 10.0)
    assert boxes[1].x1 == pytest.approx(2.0) and boxes[3].x1 == pytest.approx(6.0)
    assert track_boxes([], scale=(1.0, 1.0)) == []


def test_hits_are_cut_at_the_query_frame():
    from types import SimpleNamespace as O

    from queries.hits import Hit

    video = O(fps=5.0, path="clip.mp4", abs_path="/clip.mp4")
    row = O(id=1, video=video, video_id=1, start_frame=2, end_frame=9,
            observations=[O(frame=f, x=0.0, y=0.0, width=1.0, height=1.0) for f in (2, 5, 9)])
    hit = Hit.from_track(row, 0.5, until_frame=7)
    assert [b.frame for b in hit.boxes] == [2, 5] and (hit.end_frame, hit.end_time) == (5, 1.0)
    assert Hit.from_track(row, 0.5).end_frame == 9


def test_sample_fps_rule():
    from queries.vq2d.runner import sample_fps_for

    assert sample_fps_for(5.0) == 5.0
    assert sample_fps_for(3.0) == 3.0
    assert sample_fps_for(30.0) == 5.0
    assert sample_fps_for(30.0, 2.0) == 2.0


def test_bad_annotations_path_is_one_error_line(tmp_path):
    out = run("bench", "vq2d", "--annotations", str(tmp_path / "nope.json"), "--clips", str(tmp_path),
              "--out", str(tmp_path / "p.json"))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqsearch: error:") and "nope.json" in lines[0]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = run("bench", "vq2d-eval", "--annotations", str(bad), "--predictions", str(bad))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqsearch: error:")


@pytest.mark.parametrize("uid", ["../../escape/victim", "/tmp/victim", "..", "a\\b"])
def test_a_clip_uid_is_a_name_not_a_path(tmp_path, uid):
    """A clip_uid that walks out of --clips is refused before anything is read or written."""
    victim = tmp_path / "a" / "escape" / "victim.mp4"  # where clips/../../escape/victim.mp4 leads
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"not read")
    clips = tmp_path / "a" / "b" / "clips"
    clips.mkdir(parents=True)
    annotations = tmp_path / "vq.json"
    box = {"frame_number": 0, "x": 1, "y": 1, "width": 5, "height": 5, "original_width": 64, "original_height": 64}
    annotations.write_text(json.dumps({"version": "t", "videos": [{"video_uid": "v", "clips": [{
        "clip_uid": uid, "clip_fps": 5.0, "annotations": [{"query_sets": {"1": {
            "is_valid": True, "object_title": "cup", "query_frame": 3, "visual_crop": box,
            "response_track": [box]}}}]}]}]}))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = run("bench", "vq2d", "--annotations", str(annotations), "--clips", str(clips),
              "--out", str(tmp_path / "a" / "preds.json"))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a plain name" in lines[0], out.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.slow
def test_bench_vq2d_on_davis_episodes(tmp_path):
    from queries.vq2d.formats import load_annotations, load_predictions, validate_predictions

    davis = need_shared(DAVIS)
    made = run("bench", "make-davis", "--davis", str(davis), "--out", str(tmp_path / "davis"), "--episodes", "2")
    assert made.returncode == 0, made.stderr
    ann_path = Path(made.stdout.strip())
    assert ann_path.is_file()
    clips = tmp_path / "davis" / "clips"
    preds_path = tmp_path / "predictions.json"
    args = ("bench", "vq2d", "--annotations", str(ann_path), "--clips", str(clips), "--out", str(preds_path))

    first = run(*args, "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["clips"] == 2 and summary["clips_indexed"] == 2 and summary["clips_resumed"] == 0
    assert summary["queries"] == 2
    assert summary["tracks"] > 0 and summary["compression"] > 1

    annotations = load_annotations(ann_path)
    predictions = load_predictions(preds_path)
    validate_predictions(annotations, predictions)
    n_annotations = sum(len(c.annotations) for v in annotations.videos for c in v.clips)
    n_predictions = sum(len(c["predictions"]) for v in predictions["results"]["videos"] for c in v["clips"])
    assert n_predictions == n_annotations
    for v, va in zip(predictions["results"]["videos"], annotations.videos):
        for c, ca in zip(v["clips"], va.clips):
            for p, a in zip(c["predictions"], ca.annotations):
                for qid, track in p["query_sets"].items():
                    fnos = [b["fno"] for b in track["bboxes"]]
                    assert all(f <= a.query_sets[qid].query_frame for f in fnos)

    # A second run resumes: nothing is indexed again, and the predictions are the same.
    second = run(*args, "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["clips_indexed"] == 0 and again["clips_resumed"] == 2
    assert again["seconds"] < summary["seconds"] / 3
    assert load_predictions(preds_path) == predictions

    ev = run("bench", "vq2d-eval", "--annotations", str(ann_path), "--predictions", str(preds_path), "--json")
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)
    assert set(metrics) == METRIC_KEYS
    for key in ("tAP", "tAP@0.25", "stAP", "stAP@0.25"):
        assert 0.0 <= metrics[key] <= 1.0 and np.isfinite(metrics[key])
    for key in ("success", "recovery"):
        assert 0.0 <= metrics[key] <= 100.0

    table = run("bench", "vq2d-eval", "--annotations", str(ann_path), "--predictions", str(preds_path))
    assert table.returncode == 0 and "stAP@0.25" in table.stdout

    # Predictions that break the format are one error line, not a traceback.
    broken = dict(predictions, challenge="something else")
    bad_path = tmp_path / "broken.json"
    bad_path.write_text(json.dumps(broken))
    out = run("bench", "vq2d-eval", "--annotations", str(ann_path), "--predictions", str(bad_path))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqsearch: error:")
