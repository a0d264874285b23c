"""The official Ego4D VQ2D metrics (tAP, stAP, success, recovery) in plain numpy.

Why: ``bench vq2d-eval`` must print the same numbers as the official evaluation
(``VQ2D/evaluate_vq.py`` in EGO4D/episodic-memory) without pandas, torch or the Ego4D code.
Implemented from these official definitions (files under ``VQ2D/vq2d/``):

- Data (``evaluate_vq.py``): one ground truth and one prediction per *valid* query set, in
  annotation order; each query set is its own "video-id", so a prediction can only match the
  ground truth of its own query set. GT boxes are ``(x, y, x + width, y + height)``.
- Area filter (``metrics/metrics.py``, pairing "all"): a query set counts only if the visual
  crop area and the largest GT box area are in ``[0, 1e10)``.
- Temporal extent (``structures.py``): first and last frame of the track sorted by frame;
  an empty track is ``(0, -1)``.
- Temporal IoU (``metrics/utils.py`` ``segment_iou``): frames are inclusive, so
  intersection = ``max(0, min(e1, e2) - max(s1, s2) + 1)`` and each length is ``e - s + 1``.
- Spatio-temporal IoU (``metrics/utils.py`` ``spatio_temporal_iou_response_track``):
  sum over GT frames of the box intersection with the predicted box on the same frame,
  divided by ``volume(pred) + volume(gt) - intersection`` where a volume is the sum of box
  areas ``(x2 - x1) * (y2 - y1)`` (no +1 in space).
- AP (``metrics/temporal_metrics.py``, ``metrics/spatio_temporal_metrics.py``
  ``compute_average_precision_detection``, ActivityNet detection): predictions sorted by
  ``numpy.argsort(score)[::-1]``; a prediction is a true positive when IoU >= threshold;
  recall = cumulative TP / number of query sets, precision = cumulative TP / rank;
  AP = VOC 2011 interpolated area (``interpolated_prec_rec``). The thresholds are
  ``[0.25, 0.5, 0.75, 0.95]``: "tAP"/"stAP" are the mean AP over those four (the official label
  "@ IoU=0.25:0.95" means first:last, not a 0.05 step), "tAP@0.25"/"stAP@0.25" the AP at 0.25.
  Fractions in [0, 1].
- Success (``metrics/success_metrics.py``, mode "take_max_score"): percent of query sets whose
  top-scored prediction has spatio-temporal IoU >= 0.05. Percent in [0, 100].
- Recovery (``metrics/tracking_metrics.py``, "% recovery" at IoU 0.5): for the top-scored
  prediction, a GT frame is recovered when the predicted box on that frame has IoU >= 0.5
  (0 when there is none); recovery = 100 * recovered frames / GT frames, pooled over all query
  sets (not a mean of per-query ratios). Percent in [0, 100].

Where the official code would divide by zero (both boxes or tracks of zero area) the IoU here
is 0. With no valid query set left to score, the official script prints nothing; here it is a
ValueError.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from queries.vq2d.formats import (
    PredictedTrack,
    VQ2DAnnotations,
    as_annotations,
    iter_valid_queries,
    parse_predictions,
)

AP_IOU_THRESHOLDS: tuple[float, ...] = (0.25, 0.5, 0.75, 0.95)
REPORTED_AP_IOU = 0.25
SUCCESS_IOU = 0.05
RECOVERY_IOU = 0.5
MAX_AREA = 1e5**2  # upper end of the official "all" area range

XYXY = tuple[float, float, float, float]
Track = dict[int, XYXY]  # frame number -> box, one box per frame


def temporal_iou(pred: tuple[int, int], gt: tuple[int, int]) -> float:
    """IoU of two inclusive frame ranges (start, end); an empty track is (0, -1)."""
    inter = max(0, min(pred[1], gt[1]) - max(pred[0], gt[0]) + 1)
    union = (pred[1] - pred[0] + 1) + (gt[1] - gt[0] + 1) - inter
    return inter / union if union > 0 else 0.0


def _intersection(a: XYXY, b: XYXY) -> float:
    w = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
    h = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
    return w * h


def _area(b: XYXY) -> float:
    return (b[2] - b[0]) * (b[3] - b[1])


def spatial_iou(a: XYXY, b: XYXY) -> float:
    """Box IoU on continuous coordinates (no +1), as the official tracking metric."""
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _volume(track: Track) -> float:
    v = 0.0
    for fno in sorted(track):
        v += _area(track[fno])
    return v


def spatio_temporal_iou(pred: Track, gt: Track) -> float:
    """Tube IoU: summed per-frame box intersections over the union of the two box volumes."""
    inter = 0.0
    for fno in sorted(gt):
        if fno in pred:
            inter += _intersection(pred[fno], gt[fno])
    union = _volume(pred) + _volume(gt) - inter
    return inter / union if union > 0 else 0.0


def recovered_frames(pred: Track, gt: Track, threshold: float = RECOVERY_IOU) -> int:
    """GT frames whose predicted box on the same frame has IoU >= threshold."""
    return sum(1 for fno, box in gt.items() if fno in pred and spatial_iou(box, pred[fno]) >= threshold)


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC 2011 interpolated AP: area under the precision envelope at each recall step."""
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def average_precision(scores: Sequence[float], ious: Sequence[float], threshold: float) -> float:
    """ActivityNet detection AP when each query set has one GT and one prediction (so matching
    is one-to-one): rank by score, TP when IoU >= threshold, recall over all query sets."""
    scores_a = np.asarray(scores, dtype=np.float64)
    if scores_a.size == 0:
        return 0.0
    order = scores_a.argsort()[::-1]  # the official ordering, ties included
    tp = (np.asarray(ious, dtype=np.float64)[order] >= threshold).astype(np.float64)
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(1.0 - tp)
    recall = tp_cum / float(len(scores_a))
    precision = tp_cum / (tp_cum + fp_cum)
    return interpolated_ap(precision, recall)


def _pred_track(track: PredictedTrack) -> Track:
    return {b.fno: (b.x1, b.y1, b.x2, b.y2) for b in track.bboxes}


def _extent(track: Track) -> tuple[int, int]:
    return (min(track), max(track)) if track else (0, -1)


def evaluate(
    annotations: VQ2DAnnotations | Mapping[str, Any],
    predictions: Mapping[str, Any],
    *,
    iou_thresholds: Sequence[float] = AP_IOU_THRESHOLDS,
) -> dict[str, float]:
    """The official VQ2D metrics of ``predictions`` (challenge format) against ``annotations``.

    Returns {"tAP", "tAP@0.25", "stAP", "stAP@0.25"} as fractions and {"success", "recovery"} as
    percents, like the official ``evaluate_vq.py``. Raises ValueError on a malformed file."""
    ann = as_annotations(annotations)
    tracks = parse_predictions(ann, predictions)
    scores: list[float] = []
    t_ious: list[float] = []
    st_ious: list[float] = []
    recovered = total = 0
    for q in iter_valid_queries(ann):
        gt: Track = {b.frame_number: b.xyxy() for b in q.query_set.response_track}
        vc = q.query_set.visual_crop
        assert vc is not None  # parse_annotations guarantees it for valid query sets
        x1, y1, x2, y2 = vc.xyxy()
        vc_area = abs(x2 - x1) * abs(y2 - y1)
        rt_area = max(abs(b[2] - b[0]) * abs(b[3] - b[1]) for b in gt.values())
        if not (0 <= vc_area < MAX_AREA and 0 <= rt_area < MAX_AREA):
            continue
        pred_rt = tracks[q.key]
        pred = _pred_track(pred_rt)
        scores.append(pred_rt.score)
        t_ious.append(temporal_iou(_extent(pred), _extent(gt)))
        st_iou = spatio_temporal_iou(pred, gt)
        st_ious.append(st_iou)
        recovered += recovered_frames(pred, gt, RECOVERY_IOU)
        total += len(gt)
    if not scores:
        raise ValueError("no valid query set to evaluate in the annotations")
    t_ap = [average_precision(scores, t_ious, t) for t in iou_thresholds]
    st_ap = [average_precision(scores, st_ious, t) for t in iou_thresholds]
    success = np.mean([1.0 if s >= SUCCESS_IOU else 0.0 for s in st_ious]) * 100.0
    return {
        "tAP": float(np.mean(t_ap)),
        "tAP@0.25": average_precision(scores, t_ious, REPORTED_AP_IOU),
        "stAP": float(np.mean(st_ap)),
        "stAP@0.25": average_precision(scores, st_ious, REPORTED_AP_IOU),
        "success": float(success),
        "recovery": 100.0 * recovered / total if total > 0 else 0.0,
    }
