"""Run vqsearch on an Ego4D VQ2D annotation file and write challenge-format predictions.

Clip by clip: ``<clips_dir>/<clip_uid>.mp4`` is indexed (frames 0..max query frame of the clip
only: nothing after a query frame may be searched) into its own Store under a work directory
beside the output, ``.<out_name>.work/<clip_uid>/``. Every valid query set of the clip is then
answered with its visual crop and/or its object title, and the clip's predictions are saved as
``predictions.json`` in that directory. An interrupted run therefore resumes: a clip with saved
predictions (for the same settings) is skipped, a clip whose store already holds the indexed
clip is not indexed again.

The prediction of a query set is its "last seen" track (the engine's rule, restricted to tracks
that start on or before the query frame), relocated (tight boxes, tracked through its shot; see
`queries.relocate`) and cut at the query frame, with missing frames filled by linear
interpolation (the official format needs contiguous tracks), boxes scaled to the annotation's
original frame size. A VQ2D query's object was seen by construction, so when no track passes the
occurrence rule the best match answers, at its own (low) score, as the official baseline answers
with the last frame's best box when it finds no peak. Nothing to query with -> empty track.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from queries.vq2d.formats import (
    PredictedBox,
    PredictedTrack,
    QueryKey,
    ValidQuery,
    build_predictions,
    iter_valid_queries,
    load_annotations,
    load_for_user,
    track_to_json,
    validate_predictions,
    write_json_atomic,
    write_predictions,
)
from queries.tracker import fill_frames
from vqsearch.errors import VQSearchError
from vqsearch.models.factory import DEFAULT_MODEL

if TYPE_CHECKING:
    from queries.sam2_stages import SAM2Stages

MAX_SAMPLE_FPS = 5.0
CLIP_PREDICTIONS = "predictions.json"


def is_plain_name(uid: str) -> bool:
    """A clip_uid names a file in --clips and a folder in the work directory: never a path."""
    return bool(uid) and uid not in (".", "..") and not any(c in uid for c in "/\\\0") and \
        Path(uid).name == uid


def work_dir_for(out_path: Path) -> Path:
    out_path = Path(out_path)
    return out_path.parent / f".{out_path.name}.work"


def sample_fps_for(clip_fps: float, override: float | None = None) -> float:
    """Native rate for clips at <= 5 fps (VQ2D clips are 5 fps), else 5 fps."""
    if override is not None:
        if not override > 0:
            raise VQSearchError(f"fps must be positive, got {override}")
        return float(override)
    return float(clip_fps) if clip_fps <= MAX_SAMPLE_FPS else MAX_SAMPLE_FPS


def _read_frame(path: Path, frame: int) -> np.ndarray:
    import decord

    from indexer.video import native_stderr_silenced

    with native_stderr_silenced():
        reader = decord.VideoReader(str(path), num_threads=1)
        frame = min(max(frame, 0), len(reader) - 1)
        return reader[frame].asnumpy()


def cut_crop(frame: np.ndarray, query: ValidQuery) -> np.ndarray | None:
    """The visual crop, its box scaled from the annotation's original size to the decoded frame."""
    vc = query.query_set.visual_crop
    height, width = frame.shape[:2]
    sx = width / vc.original_width if vc.original_width else 1.0
    sy = height / vc.original_height if vc.original_height else 1.0
    x1, y1 = max(0, int(np.floor(vc.x * sx))), max(0, int(np.floor(vc.y * sy)))
    x2 = min(width, int(np.ceil((vc.x + vc.width) * sx)))
    y2 = min(height, int(np.ceil((vc.y + vc.height) * sy)))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return np.ascontiguousarray(frame[y1:y2, x1:x2])


def track_boxes(observations, scale: tuple[float, float]) -> list[PredictedBox]:
    """A hit's boxes with gaps filled by linear interpolation, as scaled corner boxes."""
    filled = fill_frames({o.frame: (o.x, o.y, o.width, o.height) for o in observations})
    sx, sy = scale
    return [PredictedBox(f, *(round(float(v), 2) for v in (x * sx, y * sy, (x + w) * sx, (y + h) * sy)))
            for f, (x, y, w, h) in filled.items()]


def run_vq2d(
    annotations_path: str | Path,
    clips_dir: str | Path,
    out_path: str | Path,
    model_name: str = DEFAULT_MODEL,
    use_text: bool = True,
    use_crop: bool = True,
    fps: float | None = None,
    progress: bool = True,
    relocate: bool = True,
    sam2: SAM2Stages | None = None,
) -> dict[str, Any]:
    """Answer every valid query set of the annotations; write and validate the predictions.

    Returns a summary: clips, clips_indexed, clips_resumed, queries, answered, tracks,
    patch_tokens, compression (patch tokens per stored track), seconds, answer_seconds (of them,
    answering rather than indexing), predictions (path)."""
    from tqdm import tqdm

    from indexer.pipeline import index_video
    from indexer.video import probe
    from queries.engine import QueryEngine
    from queries.relocate import relocate as relocate_hit
    from vqsearch.models.factory import create_model, get_config
    from vqsearch.schema import SCHEMA_VERSION
    from vqsearch.store import Store, file_fingerprint

    start = time.perf_counter()
    annotations_path, clips_dir, out_path = Path(annotations_path), Path(clips_dir), Path(out_path)
    if not use_text and not use_crop:
        raise VQSearchError("nothing to query with: both the text and the crop are turned off")
    get_config(model_name)
    annotations = load_for_user(load_annotations, annotations_path, "annotation")
    if not clips_dir.is_dir():
        raise VQSearchError(f"no such clips directory: {clips_dir}")
    if out_path.exists() and out_path.is_dir():
        raise VQSearchError(f"--out {out_path} is a directory")
    if not out_path.parent.is_dir():
        raise VQSearchError(f"no such directory for --out: {out_path.parent}")

    by_clip: dict[str, list[ValidQuery]] = {}
    for query in iter_valid_queries(annotations):
        by_clip.setdefault(query.clip_uid, []).append(query)
    paths = [uid for uid in by_clip if not is_plain_name(uid)]
    if paths:
        raise VQSearchError(f"clip_uid {paths[0]!r} in {annotations_path} is not a plain name: "
                            "clips are read only from <clips>/<clip_uid>.mp4")
    missing = [uid for uid in by_clip if not (clips_dir / f"{uid}.mp4").is_file()]
    if missing:
        raise VQSearchError(f"{len(missing)} of {len(by_clip)} clips are missing from {clips_dir}, "
                            f"e.g. {missing[0]}.mp4")

    stages_label = None if not relocate else ("sam2" if sam2 is not None else "similarity-csrt")
    work = work_dir_for(out_path)
    model = None
    tracks: dict[QueryKey, PredictedTrack] = {}
    indexed = resumed = answered = total_tracks = total_patch = 0
    answering = 0.0  # seconds spent answering (not indexing)
    for clip_uid, queries in tqdm(list(by_clip.items()), desc="vq2d", unit="clip", file=sys.stderr,
                                  disable=not progress):
        clip_path = clips_dir / f"{clip_uid}.mp4"
        clip_work = work / clip_uid
        cutoff = max(q.query_set.query_frame for q in queries)
        sample_fps = sample_fps_for(queries[0].clip_fps, fps)
        settings = {"model": model_name, "text": use_text, "crop": use_crop, "fps": sample_fps,
                    "stages": stages_label,
                    "cutoff": cutoff, "fingerprint": file_fingerprint(clip_path)}
        saved_path = clip_work / CLIP_PREDICTIONS
        saved = json.loads(saved_path.read_text()) if saved_path.is_file() else None
        if saved is not None and saved.get("settings") == settings:
            resumed += 1
            total_tracks += saved["tracks"]
            total_patch += saved["patch_tokens"]
            for q in queries:
                raw = saved["predictions"].get(f"{q.annotation_index}/{q.query_set_id}")
                if raw is not None:
                    tracks[q.key] = PredictedTrack(tuple(PredictedBox(**b) for b in raw["bboxes"]), raw["score"])
            continue

        if model is None:
            model = create_model(model_name)
        info = probe(clip_path)  # before its work folder is made
        info = replace(info, frames=min(info.frames, cutoff + 1))  # never look past the query frame
        store = Store.open(clip_work / "index", create=True)
        store.check_model(model_name)
        video = store.find_video(clip_path)
        if not (video is not None and video.fingerprint == settings["fingerprint"] and video.frames == info.frames
                and abs(video.sample_fps - sample_fps) < 1e-9 and store.schema_version == SCHEMA_VERSION):
            result = index_video(model, info, sample_fps)
            store.add_video(model_name, str(clip_path), result)
            video = store.find_video(clip_path)
            indexed += 1
        n_tracks = len(store.track_ids(video))
        scale_of: dict[tuple, tuple[float, float]] = {}
        engine = QueryEngine(store, model)
        frames: dict[int, np.ndarray] = {}
        clip_preds: dict[str, dict] = {}
        text_ok = use_text and model.has_text and store.vectors() is not None and store.vectors().text is not None
        for q in queries:
            began = time.perf_counter()
            qs = q.query_set
            vectors: dict[str, np.ndarray] = {}
            if use_crop:
                fno = qs.visual_crop.frame_number
                if fno not in frames:
                    frames[fno] = _read_frame(clip_path, fno)
                crop = cut_crop(frames[fno], q)
                if crop is not None:
                    vectors["visual"] = engine.encode_crop(crop)
            if text_ok and qs.object_title and qs.object_title.strip():
                vectors.update(engine.encode_text(qs.object_title.strip()))
            last = None
            if vectors:
                last, ranked = engine.answer(vectors, top_k=1, until_frame=qs.query_frame)
                if last is None and ranked:
                    last = ranked[0]  # a VQ2D object was seen: its best match, at its low score
                if last is not None and relocate:
                    last = relocate_hit(engine, vectors, until_frame=qs.query_frame, sam2=sam2, last=last)
            track = PredictedTrack((), 0.0)
            if last is not None:
                box = qs.response_track[0]
                key = (box.original_width, box.original_height)
                if key not in scale_of:
                    scale_of[key] = (box.original_width / video.width if box.original_width else 1.0,
                                     box.original_height / video.height if box.original_height else 1.0)
                boxes = track_boxes(last.boxes, scale_of[key])
                if boxes:
                    track = PredictedTrack(tuple(boxes), round(float(last.score), 6))
            tracks[q.key] = track
            answering += time.perf_counter() - began
            clip_preds[f"{q.annotation_index}/{q.query_set_id}"] = track_to_json(track)
        total_tracks += n_tracks
        total_patch += video.patch_tokens
        write_json_atomic(saved_path, {"settings": settings, "tracks": n_tracks,
                                       "patch_tokens": video.patch_tokens, "predictions": clip_preds})

    answered = sum(1 for t in tracks.values() if t.bboxes)
    predictions = build_predictions(annotations, tracks, fill_missing=True)
    validate_predictions(annotations, predictions)
    write_predictions(out_path, predictions)
    n_queries = sum(len(qs) for qs in by_clip.values())
    return {
        "predictions": str(out_path),
        "clips": len(by_clip),
        "clips_indexed": indexed,
        "clips_resumed": resumed,
        "queries": n_queries,
        "answered": answered,
        "tracks": total_tracks,
        "patch_tokens": total_patch,
        "compression": round(total_patch / max(total_tracks, 1), 2),
        "model": model_name,
        "text": use_text,
        "stages": stages_label,
        "crop": use_crop,
        "seconds": round(time.perf_counter() - start, 3),
        "answer_seconds": round(answering, 3),
    }
