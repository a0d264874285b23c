"""Official Ego4D VQ2D metrics on tiny hand-made files whose values are worked out by hand.

Reminders of the official definitions used in the hand computations (see queries/vq2d/metrics.py):
- tAP / stAP = mean AP over IoU thresholds [0.25, 0.5, 0.75, 0.95]; a prediction is a true
  positive when IoU >= threshold; "@0.25" is the AP at 0.25. Fractions.
- temporal IoU counts frames inclusively; spatio-temporal IoU = sum of per-frame intersections
  / (pred volume + GT volume - intersection).
- success = % of query sets with stIoU >= 0.05; recovery = 100 * (GT frames whose predicted box
  has IoU >= 0.5) / (all GT frames), pooled over query sets. Percents.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from queries.vq2d.formats import load_annotations, load_predictions
from queries.vq2d.metrics import evaluate, spatial_iou, spatio_temporal_iou, temporal_iou

KEYS = {"tAP", "tAP@0.25", "stAP", "stAP@0.25", "success", "recovery"}


def gt_box(fno: int, x: float, y: float, w: float, h: float) -> dict[str, Any]:
    return {"frame_number": fno, "x": x, "y": y, "width": w, "height": h,
            "original_width": 640, "original_height": 480}


def gt_track(frames: range, x: float = 0, y: float = 0, w: float = 10, h: float = 10) -> list[dict]:
    return [gt_box(f, x, y, w, h) for f in frames]


def query_set(track: list[dict], valid: bool = True, crop_w: float = 20, crop_h: float = 20) -> dict:
    return {"is_valid": valid, "object_title": "cup", "query_frame": 100,
            "visual_crop": gt_box(0, 0, 0, crop_w, crop_h), "response_track": track}


def pred_track(frames: range, x1: float = 0, y1: float = 0, x2: float = 10, y2: float = 10) -> list[dict]:
    return [{"fno": f, "x1": x1, "y1": y1, "x2": x2, "y2": y2} for f in frames]


def write_pair(tmp_path: Path, qsets: list[dict[str, dict]], preds: list[dict[str, tuple[list, float]]]):
    """One video "v1" with one clip "c1"; element i of qsets/preds is annotation i. Files are
    written and loaded back so the whole path from disk is exercised."""
    ann = {"version": "t1", "videos": [{"video_uid": "v1", "clips": [
        {"clip_uid": "c1", "clip_fps": 5.0, "annotations": [{"query_sets": q} for q in qsets]}]}]}
    pred = {"version": "t1", "challenge": "ego4d_vq2d_challenge", "results": {"videos": [
        {"video_uid": "v1", "clips": [{"clip_uid": "c1", "predictions": [
            {"query_sets": {k: {"bboxes": b, "score": s} for k, (b, s) in p.items()}} for p in preds
        ]}]}]}}
    (tmp_path / "vq.json").write_text(json.dumps(ann))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    return load_annotations(tmp_path / "vq.json"), load_predictions(tmp_path / "pred.json")


def check(metrics: dict[str, float], expected: dict[str, float]) -> None:
    assert set(metrics) == KEYS
    for k, v in expected.items():
        assert metrics[k] == pytest.approx(v, abs=1e-12), k


def test_perfect_prediction_scores_one_and_hundred(tmp_path: Path) -> None:
    # Each prediction equals its GT: tIoU = stIoU = 1 >= every threshold, so every AP is 1;
    # stIoU 1 >= 0.05 -> success 100%; every frame IoU 1 >= 0.5 -> recovery 100%.
    ann, pred = write_pair(
        tmp_path,
        [{"1": query_set(gt_track(range(10, 20)))}, {"1": query_set(gt_track(range(3, 5)))}],
        [{"1": (pred_track(range(10, 20)), 0.9)}, {"1": (pred_track(range(3, 5)), 0.4)}],
    )
    check(evaluate(ann, pred), {"tAP": 1.0, "tAP@0.25": 1.0, "stAP": 1.0, "stAP@0.25": 1.0,
                                "success": 100.0, "recovery": 100.0})


def test_prediction_shifted_by_five_frames(tmp_path: Path) -> None:
    # GT frames 10..19, prediction frames 15..24, same 10x10 box.
    # tIoU: intersection 15..19 = 5 frames, union 10 + 10 - 5 = 15 -> 1/3.
    # stIoU: intersection 5 * 100 = 500, volumes 1000 + 1000 - 500 = 1500 -> 1/3.
    # 1/3 passes only the 0.25 threshold: AP = [1, 0, 0, 0] -> tAP = stAP = 0.25, @0.25 = 1.
    # success: 1/3 >= 0.05 -> 100%. recovery: frames 15..19 of 10 GT frames -> 50%.
    ann, pred = write_pair(tmp_path, [{"1": query_set(gt_track(range(10, 20)))}],
                           [{"1": (pred_track(range(15, 25)), 0.7)}])
    check(evaluate(ann, pred), {"tAP": 0.25, "tAP@0.25": 1.0, "stAP": 0.25, "stAP@0.25": 1.0,
                                "success": 100.0, "recovery": 50.0})


def test_iou_exactly_one_half_counts_at_threshold_half(tmp_path: Path) -> None:
    # GT frames 10..19, prediction 10..14 (same box): tIoU = 5 / 10 = 0.5 and
    # stIoU = 500 / (500 + 1000 - 500) = 0.5. IoU >= threshold matches, so 0.25 and 0.5 pass,
    # 0.75 and 0.95 fail: tAP = stAP = 2/4 = 0.5. (A 0.25:0.05:0.95 grid would give 6/15.)
    # recovery 5/10 = 50%.
    ann, pred = write_pair(tmp_path, [{"1": query_set(gt_track(range(10, 20)))}],
                           [{"1": (pred_track(range(10, 15)), 1.0)}])
    check(evaluate(ann, pred), {"tAP": 0.5, "tAP@0.25": 1.0, "stAP": 0.5, "stAP@0.25": 1.0,
                                "success": 100.0, "recovery": 50.0})


def test_empty_prediction_scores_zero(tmp_path: Path) -> None:
    # An empty track has temporal extent (0, -1): no overlap with GT 10..19, tIoU 0, stIoU 0,
    # so it is a false positive at every threshold (AP 0), no success, no recovered frame.
    ann, pred = write_pair(tmp_path, [{"1": query_set(gt_track(range(10, 20)))}], [{"1": ([], 0.0)}])
    check(evaluate(ann, pred), {"tAP": 0.0, "tAP@0.25": 0.0, "stAP": 0.0, "stAP@0.25": 0.0,
                                "success": 0.0, "recovery": 0.0})


@pytest.mark.parametrize(("wrong_score", "right_score", "expected_ap"), [(0.9, 0.8, 0.25), (0.8, 0.9, 0.5)])
def test_score_ranking_changes_ap(tmp_path: Path, wrong_score: float, right_score: float, expected_ap: float) -> None:
    # Query set A: prediction 30..39 vs GT 10..19 -> IoU 0 (FP at every threshold).
    # Query set B: perfect (TP at every threshold). Two GTs, so recall = TP / 2.
    # A ranked first: precision [0, 1/2], recall [0, 1/2]; envelope over recall points
    #   [0, 0, 1/2, 1] is [1/2, 1/2, 1/2, 0]; recall steps at 1/2 (prec 1/2) and 1 (prec 0)
    #   -> AP = 1/2 * 1/2 = 0.25.
    # B ranked first: precision [1, 1/2], recall [1/2, 1/2] -> step at 1/2 with prec 1 and at 1
    #   with prec 0 -> AP = 1/2 * 1 = 0.5.
    # Same at every threshold, so the mean equals the AP at 0.25. success 50%;
    # recovery (0 + 10) / (10 + 10) = 50%.
    ann, pred = write_pair(
        tmp_path,
        [{"1": query_set(gt_track(range(10, 20)))}, {"1": query_set(gt_track(range(10, 20)))}],
        [{"1": (pred_track(range(30, 40)), wrong_score)}, {"1": (pred_track(range(10, 20)), right_score)}],
    )
    check(evaluate(ann, pred), {"tAP": expected_ap, "tAP@0.25": expected_ap, "stAP": expected_ap,
                                "stAP@0.25": expected_ap, "success": 50.0, "recovery": 50.0})


@pytest.mark.parametrize(("pred_x2", "expected_success"), [(20, 100.0), (21, 0.0)])
def test_success_threshold_edge(tmp_path: Path, pred_x2: float, expected_success: float) -> None:
    # One frame. GT box (0,0)-(10,1), area 10. Prediction (9,0)-(x2,1): intersection 1.
    # x2 = 20: area 11, stIoU = 1 / (10 + 11 - 1) = 1/20 = 0.05 -> counts (official uses >=).
    # x2 = 21: area 12, stIoU = 1/21 < 0.05 -> fails.
    # Same frame, so tIoU = 1 -> tAP 1; stIoU < 0.25 -> stAP 0; box IoU < 0.5 -> recovery 0.
    ann, pred = write_pair(tmp_path, [{"1": query_set([gt_box(5, 0, 0, 10, 1)])}],
                           [{"1": (pred_track(range(5, 6), 9, 0, pred_x2, 1), 0.5)}])
    check(evaluate(ann, pred), {"tAP": 1.0, "stAP": 0.0, "success": expected_success, "recovery": 0.0})


def test_recovery_is_pooled_over_frames(tmp_path: Path) -> None:
    # Query set 1: GT frames 0..3, box (0,0)-(10,10). Prediction frames 0..2:
    #   frame 0 exact (IoU 1, recovered); frame 1 shifted 5 px: 50 / (100 + 100 - 50) = 1/3 (no);
    #   frame 2 box (0,0)-(10,20): 100 / (100 + 200 - 100) = 0.5 (recovered, >=); frame 3 no box.
    #   -> 2 of 4 frames.
    # Query set 2: GT frames 0..5, exact prediction -> 6 of 6.
    # Pooled: (2 + 6) / (4 + 6) = 80% (the mean of per-query ratios would be 75%).
    pred1 = [{"fno": 0, "x1": 0, "y1": 0, "x2": 10, "y2": 10},
             {"fno": 1, "x1": 5, "y1": 0, "x2": 15, "y2": 10},
             {"fno": 2, "x1": 0, "y1": 0, "x2": 10, "y2": 20}]
    ann, pred = write_pair(
        tmp_path,
        [{"1": query_set(gt_track(range(0, 4)))}, {"1": query_set(gt_track(range(0, 6)))}],
        [{"1": (pred1, 0.6)}, {"1": (pred_track(range(0, 6)), 0.3)}],
    )
    assert evaluate(ann, pred)["recovery"] == pytest.approx(80.0)


def test_invalid_query_sets_are_not_scored(tmp_path: Path) -> None:
    # Query set "2" is invalid (and has no usable fields): it needs no prediction and does not
    # count, so the perfect prediction of "1" alone gives perfect metrics.
    invalid = {"is_valid": False, "object_title": None, "response_track": []}
    ann, pred = write_pair(tmp_path, [{"1": query_set(gt_track(range(2, 6))), "2": invalid}],
                           [{"1": (pred_track(range(2, 6)), 0.5)}])
    check(evaluate(ann, pred), {"tAP": 1.0, "stAP": 1.0, "success": 100.0, "recovery": 100.0})


def test_official_area_range_excludes_huge_crops(tmp_path: Path) -> None:
    # The official "all" range is [0, 1e10): a 1e5 x 1e5 visual crop (area 1e10) is left out,
    # so its wrong prediction does not lower the perfect score of the other query set.
    ann, pred = write_pair(
        tmp_path,
        [{"1": query_set(gt_track(range(0, 3)))}, {"1": query_set(gt_track(range(0, 3)), crop_w=1e5, crop_h=1e5)}],
        [{"1": (pred_track(range(0, 3)), 0.5)}, {"1": ([], 0.9)}],
    )
    check(evaluate(ann, pred), {"tAP": 1.0, "stAP": 1.0, "success": 100.0, "recovery": 100.0})


def test_nothing_to_evaluate_is_an_error(tmp_path: Path) -> None:
    ann, pred = write_pair(tmp_path, [{"1": {"is_valid": False}}], [{}])
    with pytest.raises(ValueError, match="no valid query set"):
        evaluate(ann, pred)


def test_malformed_predictions_are_rejected(tmp_path: Path) -> None:
    ann, pred = write_pair(tmp_path, [{"1": query_set(gt_track(range(0, 3)))}], [{}])
    with pytest.raises(ValueError, match="missing query set '1'"):
        evaluate(ann, pred)


def test_iou_helpers() -> None:
    assert temporal_iou((15, 24), (10, 19)) == pytest.approx(1 / 3)
    assert temporal_iou((0, -1), (0, 4)) == 0.0  # empty track
    assert temporal_iou((7, 7), (7, 7)) == 1.0  # one frame is a length-1 segment
    assert spatial_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert spatial_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # degenerate, no division by zero
    # Frame 0: intersection 100 of 100 and 100; frame 1 only in the GT (area 100).
    assert spatio_temporal_iou({0: (0, 0, 10, 10)}, {0: (0, 0, 10, 10), 1: (0, 0, 10, 10)}) == pytest.approx(0.5)


def test_metrics_module_does_not_import_torch() -> None:
    code = "import sys, queries.vq2d.metrics; sys.exit(1 if 'torch' in sys.modules else 0)"
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0
