"""Ego4D VQ2D annotation and prediction files, in the official challenge layout.

Why this module exists: the benchmark runner and ``bench vq2d-eval`` must read the real
``vq_val.json`` and write predictions the official Ego4D evaluation accepts, so the layout and
the acceptance rules live in one place (layout: docs/design.md, "Ego4D VQ2D format and metrics").

Official rules followed (EGO4D/episodic-memory, ``VQ2D/evaluate_vq.py``
``validate_model_predictions`` and ``VQ2D/vq2d/structures.py`` ``BBox``/``ResponseTrack``):

- annotation boxes are ``x, y, width, height``; the evaluation turns them into
  ``x1=x, y1=y, x2=x+width, y2=y+height``;
- predictions: ``version`` equal to the annotations' version, ``challenge`` equal to
  ``"ego4d_vq2d_challenge"``, ``results.videos`` in annotation order (same ``video_uid`` and
  ``clip_uid`` at each position, one prediction per annotation), and for each annotation exactly
  the valid query set ids present, each with ``bboxes`` (``fno, x1, y1, x2, y2``) and ``score``;
- a response track is sorted by frame and must be contiguous (no missing frame); an empty track
  is allowed (temporal extent ``(0, -1)``, length 0).

Stricter than the official code, so that bad files fail here with one clear message instead of
crashing or silently scoring: scores must be finite numbers, ``fno`` non-negative integers, box
coordinates finite with ``x2 >= x1`` and ``y2 >= y1``, at most one box per frame, and no query
set id that the annotation does not have.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

from vqsearch.errors import VQSearchError

CHALLENGE = "ego4d_vq2d_challenge"


@dataclass(frozen=True)
class AnnotatedBox:
    """An annotated box on clip frame ``frame_number``, in original pixels (x, y, width, height)."""

    frame_number: int
    x: float
    y: float
    width: float
    height: float
    original_width: int | None = None
    original_height: int | None = None

    def xyxy(self) -> tuple[float, float, float, float]:
        """Corners as the official evaluation builds them: (x, y, x + width, y + height)."""
        return (self.x, self.y, self.x + self.width, self.y + self.height)


@dataclass(frozen=True)
class QuerySet:
    """One visual query. Invalid query sets may lack fields; valid ones always have them."""

    is_valid: bool
    object_title: str | None
    query_frame: int | None
    visual_crop: AnnotatedBox | None
    response_track: tuple[AnnotatedBox, ...]


@dataclass(frozen=True)
class Annotation:
    """The query sets of one annotation, keyed by id ("1", "2", ...) in file order."""

    query_sets: Mapping[str, QuerySet]
    annotation_uid: str | None = None


@dataclass(frozen=True)
class Clip:
    clip_uid: str
    clip_fps: float
    annotations: tuple[Annotation, ...]


@dataclass(frozen=True)
class Video:
    video_uid: str
    clips: tuple[Clip, ...]


@dataclass(frozen=True)
class VQ2DAnnotations:
    """A whole annotation file; videos, clips and annotations keep the file order."""

    version: str
    videos: tuple[Video, ...]


class QueryKey(NamedTuple):
    """Identifies one query set; the annotation is addressed by its index in the clip."""

    video_uid: str
    clip_uid: str
    annotation_index: int
    query_set_id: str


@dataclass(frozen=True)
class ValidQuery:
    """A valid query set with the context a runner needs to answer it."""

    video_uid: str
    clip_uid: str
    clip_fps: float
    annotation_index: int
    query_set_id: str
    query_set: QuerySet

    @property
    def key(self) -> QueryKey:
        return QueryKey(self.video_uid, self.clip_uid, self.annotation_index, self.query_set_id)


@dataclass(frozen=True)
class PredictedBox:
    """A predicted box on clip frame ``fno``, as corners (x1, y1, x2, y2) in original pixels."""

    fno: int
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class PredictedTrack:
    """A predicted response track with its confidence; ``bboxes`` may be empty."""

    bboxes: tuple[PredictedBox, ...]
    score: float


# ----------------------------------------------------------------------------- annotations


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _need(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise ValueError(f"{where}: missing '{key}'")
    return obj[key]


def _need_list(obj: Any, key: str, where: str) -> list:
    value = _need(obj, key, where)
    if not isinstance(value, list):
        raise ValueError(f"{where}.{key}: expected a list, got {type(value).__name__}")
    return value


def _frame_and_numbers(raw: Any, frame_key: str, keys: Sequence[str], where: str) -> tuple[int, list]:
    """A box's frame number (a non-negative integer) and its coordinates (finite numbers)."""
    fno = _need(raw, frame_key, where)
    if not _is_int(fno) or fno < 0:
        raise ValueError(f"{where}.{frame_key}: expected a non-negative integer frame number, got {fno!r}")
    values = []
    for key in keys:
        v = _need(raw, key, where)
        if not _is_number(v):
            raise ValueError(f"{where}.{key}: expected a finite number, got {v!r}")
        values.append(v)
    return fno, values


def _parse_box(raw: Any, where: str) -> AnnotatedBox:
    fno, values = _frame_and_numbers(raw, "frame_number", ("x", "y", "width", "height"), where)
    if values[2] < 0 or values[3] < 0:
        raise ValueError(f"{where}: negative width or height ({values[2]}, {values[3]})")
    return AnnotatedBox(fno, *values, raw.get("original_width"), raw.get("original_height"))


def _check_contiguous(frames: Sequence[int], where: str) -> None:
    """Official ResponseTrack rule: sorted frames cover first..last with one box per frame."""
    if not frames:
        return
    ordered = sorted(frames)
    if len(set(ordered)) != len(ordered):
        dup = next(f for f, g in zip(ordered, ordered[1:]) if f == g)
        raise ValueError(f"{where}: more than one box on frame {dup}")
    if ordered[-1] - ordered[0] + 1 != len(ordered):
        missing = next(f + 1 for f, g in zip(ordered, ordered[1:]) if g != f + 1)
        raise ValueError(f"{where}: track is not contiguous (frame {missing} is missing)")


def _parse_query_set(raw: Any, where: str) -> QuerySet:
    is_valid = _need(raw, "is_valid", where)
    if not isinstance(is_valid, bool):
        raise ValueError(f"{where}.is_valid: expected true or false, got {is_valid!r}")
    if not is_valid:  # invalid query sets are never evaluated; keep what is readable
        track = raw.get("response_track") or []
        vc = raw.get("visual_crop")
        try:
            boxes = tuple(_parse_box(b, where) for b in track)
            crop = _parse_box(vc, where) if vc else None
        except ValueError:
            boxes, crop = (), None
        qf = raw.get("query_frame")
        return QuerySet(False, raw.get("object_title"), qf if _is_int(qf) else None, crop, boxes)
    title = _need(raw, "object_title", where)
    query_frame = _need(raw, "query_frame", where)
    if not _is_int(query_frame) or query_frame < 0:
        raise ValueError(f"{where}.query_frame: expected a non-negative integer, got {query_frame!r}")
    crop = _parse_box(_need(raw, "visual_crop", where), f"{where}.visual_crop")
    track_raw = _need_list(raw, "response_track", where)
    if not track_raw:
        raise ValueError(f"{where}.response_track: a valid query set needs at least one box")
    track = tuple(_parse_box(b, f"{where}.response_track[{i}]") for i, b in enumerate(track_raw))
    _check_contiguous([b.frame_number for b in track], f"{where}.response_track")
    return QuerySet(True, str(title), query_frame, crop, track)


def parse_annotations(data: Mapping[str, Any]) -> VQ2DAnnotations:
    """Read the official annotation layout (already JSON-decoded) into dataclasses."""
    version = _need(data, "version", "annotations")
    videos = []
    for vi, v in enumerate(_need_list(data, "videos", "annotations")):
        vw = f"videos[{vi}]"
        clips = []
        for ci, c in enumerate(_need_list(v, "clips", vw)):
            cw = f"{vw}.clips[{ci}]"
            fps = _need(c, "clip_fps", cw)
            if not _is_number(fps) or fps <= 0:
                raise ValueError(f"{cw}.clip_fps: expected a positive number, got {fps!r}")
            anns = []
            for ai, a in enumerate(_need_list(c, "annotations", cw)):
                aw = f"{cw}.annotations[{ai}]"
                qs_raw = _need(a, "query_sets", aw)
                if not isinstance(qs_raw, Mapping):
                    raise ValueError(f"{aw}.query_sets: expected a JSON object")
                qsets = {str(k): _parse_query_set(q, f"{aw}.query_sets['{k}']") for k, q in qs_raw.items()}
                anns.append(Annotation(qsets, a.get("annotation_uid")))
            clips.append(Clip(str(_need(c, "clip_uid", cw)), float(fps), tuple(anns)))
        videos.append(Video(str(_need(v, "video_uid", vw)), tuple(clips)))
    return VQ2DAnnotations(str(version), tuple(videos))


def load_annotations(path: str | os.PathLike[str]) -> VQ2DAnnotations:
    """Load an official annotation file such as ``vq_val.json``."""
    with open(path, encoding="utf-8") as fp:
        return parse_annotations(json.load(fp))


def as_annotations(annotations: VQ2DAnnotations | Mapping[str, Any]) -> VQ2DAnnotations:
    """Accept parsed annotations or the raw JSON object."""
    return annotations if isinstance(annotations, VQ2DAnnotations) else parse_annotations(annotations)


def iter_valid_queries(annotations: VQ2DAnnotations) -> Iterator[ValidQuery]:
    """Valid query sets in the official evaluation order: video, clip, annotation, query set id
    in file order (the order ``evaluate_vq.py`` builds its lists in)."""
    for v in annotations.videos:
        for c in v.clips:
            for ai, a in enumerate(c.annotations):
                for qid, q in a.query_sets.items():
                    if q.is_valid:
                        yield ValidQuery(v.video_uid, c.clip_uid, c.clip_fps, ai, qid, q)


# ----------------------------------------------------------------------------- predictions


def track_to_json(track: PredictedTrack) -> dict[str, Any]:
    """One query-set entry of the challenge format."""
    return {
        "bboxes": [
            {"fno": int(b.fno), "x1": float(b.x1), "y1": float(b.y1), "x2": float(b.x2), "y2": float(b.y2)}
            for b in sorted(track.bboxes, key=lambda b: b.fno)
        ],
        "score": float(track.score),
    }


def build_predictions(
    annotations: VQ2DAnnotations,
    tracks: Mapping[QueryKey, PredictedTrack],
    *,
    fill_missing: bool = False,
) -> dict[str, Any]:
    """Challenge-format predictions: one entry per annotation in the same order, with every valid
    query set. A valid query set without a track is an error unless ``fill_missing``, which
    writes an empty track with score 0 (what the official baseline writes for skipped queries)."""
    wanted = {q.key for q in iter_valid_queries(annotations)}
    unknown = [k for k in tracks if k not in wanted]
    if unknown:
        raise ValueError(f"track for a query set that is not a valid query set of the annotations: {unknown[0]}")
    empty = PredictedTrack((), 0.0)
    out_videos = []
    for v in annotations.videos:
        out_clips = []
        for c in v.clips:
            preds = []
            for ai, a in enumerate(c.annotations):
                qsets = {}
                for qid, q in a.query_sets.items():
                    if not q.is_valid:
                        continue
                    key = QueryKey(v.video_uid, c.clip_uid, ai, qid)
                    if key not in tracks and not fill_missing:
                        raise ValueError(f"no predicted track for valid query set {key}")
                    qsets[qid] = track_to_json(tracks.get(key, empty))
                preds.append({"query_sets": qsets})
            out_clips.append({"clip_uid": c.clip_uid, "predictions": preds})
        out_videos.append({"video_uid": v.video_uid, "clips": out_clips})
    return {"version": annotations.version, "challenge": CHALLENGE, "results": {"videos": out_videos}}


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON through a temp file in the same directory and ``os.replace`` it into place, so
    a crash never leaves a half-written file behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fp:
            json.dump(data, fp)
            fp.write("\n")
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_predictions(path: str | os.PathLike[str], predictions: Mapping[str, Any]) -> None:
    """Write a challenge-format predictions file atomically."""
    write_json_atomic(path, predictions)


def load_predictions(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a predictions file (raw JSON; check it with ``validate_predictions``)."""
    with open(path, encoding="utf-8") as fp:
        data = json.load(fp)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: predictions must be a JSON object")
    return data


def _parse_track(raw: Any, where: str) -> PredictedTrack:
    bboxes = _need_list(raw, "bboxes", where)
    score = _need(raw, "score", where)
    if not _is_number(score):
        raise ValueError(f"{where}.score: expected a finite number, got {score!r}")
    boxes = []
    for i, b in enumerate(bboxes):
        bw = f"{where}.bboxes[{i}]"
        fno, xyxy = _frame_and_numbers(b, "fno", ("x1", "y1", "x2", "y2"), bw)
        if xyxy[2] < xyxy[0] or xyxy[3] < xyxy[1]:
            raise ValueError(f"{bw}: bad box, needs x2 >= x1 and y2 >= y1, got {xyxy}")
        boxes.append(PredictedBox(fno, *xyxy))
    _check_contiguous([b.fno for b in boxes], f"{where}.bboxes")
    return PredictedTrack(tuple(sorted(boxes, key=lambda b: b.fno)), score)


def _same_uid(obj: Any, key: str, expected: str, where: str) -> None:
    """Predictions follow the annotation order: the uid at each place must be the annotation's."""
    uid = _need(obj, key, where)
    if uid != expected:
        raise ValueError(f"{where}.{key} is {uid!r} but the annotations have {expected!r} there "
                         "(predictions must follow the annotation order)")


def parse_predictions(
    annotations: VQ2DAnnotations | Mapping[str, Any], predictions: Mapping[str, Any]
) -> dict[QueryKey, PredictedTrack]:
    """Check ``predictions`` against the official rules and return the track of every valid
    query set, in official order. Raises ValueError with one clear message on the first problem."""
    ann = as_annotations(annotations)
    if not isinstance(predictions, Mapping):
        raise ValueError("predictions must be a JSON object")
    for key in ("version", "challenge", "results"):
        _need(predictions, key, "predictions")
    if predictions["version"] != ann.version:
        raise ValueError(
            f"predictions version {predictions['version']!r} does not match annotations version {ann.version!r}"
        )
    if predictions["challenge"] != CHALLENGE:
        raise ValueError(f"predictions challenge must be {CHALLENGE!r}, got {predictions['challenge']!r}")
    videos = _need_list(predictions["results"], "videos", "predictions.results")
    if len(videos) != len(ann.videos):
        raise ValueError(f"predictions have {len(videos)} videos, annotations have {len(ann.videos)}")
    tracks: dict[QueryKey, PredictedTrack] = {}
    for vi, (va, vp) in enumerate(zip(ann.videos, videos)):
        vw = f"results.videos[{vi}]"
        _same_uid(vp, "video_uid", va.video_uid, vw)
        clips = _need_list(vp, "clips", vw)
        if len(clips) != len(va.clips):
            raise ValueError(f"{vw}: {len(clips)} clips, annotations have {len(va.clips)}")
        for ci, (ca, cp) in enumerate(zip(va.clips, clips)):
            cw = f"{vw}.clips[{ci}]"
            _same_uid(cp, "clip_uid", ca.clip_uid, cw)
            preds = _need_list(cp, "predictions", cw)
            if len(preds) != len(ca.annotations):
                raise ValueError(
                    f"{cw}: {len(preds)} predictions, annotations have {len(ca.annotations)} "
                    "(one prediction per annotation)"
                )
            for ai, (aa, ap) in enumerate(zip(ca.annotations, preds)):
                aw = f"{cw}.predictions[{ai}]"
                qsets = _need(ap, "query_sets", aw)
                if not isinstance(qsets, Mapping):
                    raise ValueError(f"{aw}.query_sets: expected a JSON object")
                extra = [k for k in qsets if k not in aa.query_sets]
                if extra:
                    raise ValueError(f"{aw}: query set {extra[0]!r} does not exist in the annotation")
                for qid, q in aa.query_sets.items():
                    if q.is_valid and qid not in qsets:
                        raise ValueError(f"{aw}: missing query set {qid!r} (valid in the annotations)")
                for qid, raw in qsets.items():
                    track = _parse_track(raw, f"{aw}.query_sets['{qid}']")
                    if aa.query_sets[qid].is_valid:
                        tracks[QueryKey(va.video_uid, ca.clip_uid, ai, qid)] = track
    return {q.key: tracks[q.key] for q in iter_valid_queries(ann)}


def validate_predictions(
    annotations: VQ2DAnnotations | Mapping[str, Any], predictions: Mapping[str, Any]
) -> None:
    """Raise ValueError (one clear message) unless ``predictions`` follow the official format."""
    parse_predictions(annotations, predictions)


def load_for_user(load, path: str | os.PathLike[str], kind: str):
    """`load(path)` with every way a user's file can be wrong turned into one clear VQSearchError."""
    path = Path(path)
    if not path.is_file():
        raise VQSearchError(f"no such {kind} file: {path}")
    try:
        return load(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise VQSearchError(f"{kind} file {path} is not JSON: {error}") from None
    except ValueError as error:
        raise VQSearchError(f"bad {kind} file {path}: {error}") from None
    except OSError as error:
        raise VQSearchError(f"cannot read {kind} file {path}: {error}") from None
