"""Reading official VQ2D annotation files and writing / checking challenge predictions."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from queries.vq2d.formats import (
    CHALLENGE,
    AnnotatedBox,
    PredictedBox,
    PredictedTrack,
    QueryKey,
    build_predictions,
    iter_valid_queries,
    load_annotations,
    load_predictions,
    parse_annotations,
    parse_predictions,
    validate_predictions,
    write_predictions,
)


def box(fno: int, x: float = 1, y: float = 2, w: float = 3, h: float = 4) -> dict[str, Any]:
    return {"frame_number": fno, "x": x, "y": y, "width": w, "height": h,
            "original_width": 1920, "original_height": 1080}


def qset(frames: range, title: str = "cup", valid: bool = True) -> dict[str, Any]:
    return {"is_valid": valid, "object_title": title, "query_frame": 50,
            "visual_crop": box(40, 10, 20, 30, 40), "response_track": [box(f) for f in frames]}


def annotation_json() -> dict[str, Any]:
    """Two videos; v1 has two clips; query set ids are deliberately not sorted in the file."""
    return {"version": "1.0.5", "videos": [
        {"video_uid": "v1", "clips": [
            {"clip_uid": "c1", "clip_fps": 5.0, "annotations": [
                {"annotation_uid": "a1", "query_sets": {"2": qset(range(5, 8), "mug"),
                                                        "1": qset(range(9, 10), "key"),
                                                        "3": qset(range(0, 0), valid=False)}},
                {"query_sets": {"1": qset(range(1, 3), "bag")}}]},
            {"clip_uid": "c2", "clip_fps": 5.0, "annotations": [
                {"query_sets": {"1": {"is_valid": False}}}]}]},
        {"video_uid": "v2", "clips": [
            {"clip_uid": "c3", "clip_fps": 5.0, "annotations": [
                {"query_sets": {"1": qset(range(20, 24), "phone")}}]}]},
    ]}


@pytest.fixture()
def ann_path(tmp_path: Path) -> Path:
    path = tmp_path / "vq_val.json"
    path.write_text(json.dumps(annotation_json()))
    return path


def track_for(key: QueryKey) -> PredictedTrack:
    """A distinct, deterministic track per query set."""
    start = 10 * key.annotation_index + int(key.query_set_id)
    return PredictedTrack(tuple(PredictedBox(start + i, 1.5, 2, 7.25, 9) for i in range(3)), 0.1 * start)


def good_predictions(ann_path: Path) -> dict[str, Any]:
    ann = load_annotations(ann_path)
    return build_predictions(ann, {q.key: track_for(q.key) for q in iter_valid_queries(ann)})


def test_load_annotations_reads_the_official_fields(ann_path: Path) -> None:
    ann = load_annotations(ann_path)
    assert ann.version == "1.0.5"
    clip = ann.videos[0].clips[0]
    assert (ann.videos[0].video_uid, clip.clip_uid, clip.clip_fps) == ("v1", "c1", 5.0)
    assert clip.annotations[0].annotation_uid == "a1"
    mug = clip.annotations[0].query_sets["2"]
    assert (mug.is_valid, mug.object_title, mug.query_frame) == (True, "mug", 50)
    assert mug.visual_crop == AnnotatedBox(40, 10, 20, 30, 40, 1920, 1080)
    assert [b.frame_number for b in mug.response_track] == [5, 6, 7]
    assert mug.response_track[0].xyxy() == (1, 2, 4, 6)  # x, y, x + width, y + height
    assert clip.annotations[0].query_sets["3"].is_valid is False


def test_valid_queries_follow_the_official_order(ann_path: Path) -> None:
    keys = [q.key for q in iter_valid_queries(load_annotations(ann_path))]
    # File order of videos, clips, annotations and query set ids; invalid ones skipped.
    assert keys == [("v1", "c1", 0, "2"), ("v1", "c1", 0, "1"), ("v1", "c1", 1, "1"), ("v2", "c3", 0, "1")]


def test_predictions_round_trip(ann_path: Path, tmp_path: Path) -> None:
    ann = load_annotations(ann_path)
    tracks = {q.key: track_for(q.key) for q in iter_valid_queries(ann)}
    out = tmp_path / "pred.json"
    write_predictions(out, build_predictions(ann, tracks))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.json", "vq_val.json"]  # no temp file
    data = load_predictions(out)
    assert (data["version"], data["challenge"]) == ("1.0.5", CHALLENGE)
    clip_preds = data["results"]["videos"][0]["clips"][0]["predictions"]
    assert len(clip_preds) == 2  # one per annotation
    assert list(clip_preds[0]["query_sets"]) == ["2", "1"]  # only valid ones, annotation order
    assert data["results"]["videos"][0]["clips"][1]["predictions"] == [{"query_sets": {}}]
    assert set(clip_preds[0]["query_sets"]["2"]["bboxes"][0]) == {"fno", "x1", "y1", "x2", "y2"}
    assert parse_predictions(ann, data) == tracks
    assert list(parse_predictions(ann, data)) == [q.key for q in iter_valid_queries(ann)]


def test_build_requires_every_valid_query_set_unless_filled(ann_path: Path) -> None:
    ann = load_annotations(ann_path)
    with pytest.raises(ValueError, match="no predicted track"):
        build_predictions(ann, {})
    filled = build_predictions(ann, {}, fill_missing=True)
    assert filled["results"]["videos"][1]["clips"][0]["predictions"][0]["query_sets"]["1"] == {"bboxes": [], "score": 0.0}
    validate_predictions(ann, filled)
    with pytest.raises(ValueError, match="not a valid query set"):
        build_predictions(ann, {QueryKey("v1", "c1", 0, "3"): PredictedTrack((), 0.0)})


def test_write_is_atomic(tmp_path: Path) -> None:
    out = tmp_path / "pred.json"
    write_predictions(out, {"a": 1})
    with pytest.raises(TypeError):
        write_predictions(out, {"a": object()})  # not JSON-serialisable mid-write
    assert json.loads(out.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["pred.json"]


def _break(preds: dict[str, Any], how: str) -> dict[str, Any]:
    p = copy.deepcopy(preds)
    videos = p["results"]["videos"]
    qsets = videos[0]["clips"][0]["predictions"][0]["query_sets"]
    if how == "missing query set":
        del qsets["1"]
    elif how == "video order":
        videos.reverse()
    elif how == "clip order":
        videos[0]["clips"].reverse()
    elif how == "bad bbox":
        qsets["2"]["bboxes"][1]["x2"] = -5.0
    elif how == "gap":
        del qsets["2"]["bboxes"][1]
    elif how == "duplicate frame":
        qsets["2"]["bboxes"][1]["fno"] = qsets["2"]["bboxes"][0]["fno"]
    elif how == "no score":
        del qsets["2"]["score"]
    elif how == "version":
        p["version"] = "0.9"
    elif how == "challenge":
        p["challenge"] = "ego4d_nlq_challenge"
    elif how == "annotation count":
        videos[0]["clips"][0]["predictions"].pop()
    elif how == "unknown query set":
        qsets["7"] = {"bboxes": [], "score": 0.0}
    return p


@pytest.mark.parametrize(("how", "message"), [
    ("missing query set", r"predictions\[0\]: missing query set '1' \(valid in the annotations\)"),
    ("video order", r"results.videos\[0\].video_uid is 'v2' but the annotations have 'v1' there"),
    ("clip order", r"clips\[0\].clip_uid is 'c2' but the annotations have 'c1' there"),
    ("bad bbox", r"query_sets\['2'\].bboxes\[1\]: bad box, needs x2 >= x1 and y2 >= y1"),
    ("gap", r"query_sets\['2'\].bboxes: track is not contiguous \(frame \d+ is missing\)"),
    ("duplicate frame", r"more than one box on frame"),
    ("no score", r"query_sets\['2'\]: missing 'score'"),
    ("version", r"predictions version '0.9' does not match annotations version '1.0.5'"),
    ("challenge", r"challenge must be 'ego4d_vq2d_challenge'"),
    ("annotation count", r"1 predictions, annotations have 2 \(one prediction per annotation\)"),
    ("unknown query set", r"query set '7' does not exist in the annotation"),
])
def test_validate_rejects_with_one_clear_message(ann_path: Path, how: str, message: str) -> None:
    preds = good_predictions(ann_path)
    validate_predictions(load_annotations(ann_path), preds)  # the unbroken file passes
    with pytest.raises(ValueError, match=message):
        validate_predictions(load_annotations(ann_path), _break(preds, how))


def test_validate_accepts_raw_annotations_and_extra_invalid_query_sets(ann_path: Path) -> None:
    preds = good_predictions(ann_path)
    # The official validator allows entries for invalid query sets; they are not scored.
    preds["results"]["videos"][0]["clips"][0]["predictions"][0]["query_sets"]["3"] = {"bboxes": [], "score": 0.0}
    validate_predictions(json.loads(ann_path.read_text()), preds)


def test_bad_annotations_are_rejected() -> None:
    data = annotation_json()
    data["videos"][0]["clips"][0]["annotations"][1]["query_sets"]["1"]["response_track"].append(box(9))
    with pytest.raises(ValueError, match=r"annotations\[1\].query_sets\['1'\].response_track: track is not contiguous"):
        parse_annotations(data)
    data = annotation_json()
    del data["videos"][1]["clips"][0]["annotations"][0]["query_sets"]["1"]["visual_crop"]
    with pytest.raises(ValueError, match=r"videos\[1\].clips\[0\].annotations\[0\].query_sets\['1'\]: missing 'visual_crop'"):
        parse_annotations(data)
