"""The VQ2D answer stages after track search (RELOCATE, design.md steps 3-5), on every query.

3. the last occurrence's coarse boxes become a tight box: with SAM 2 weights, SAM 2's mask of the
   candidate's point refined on a context crop; without, the similarity map of the query token on
   re-encoded context crops (`queries.localize`), on a few of the track's frames, keeping the
   frame where the query matches best as the anchor, then a detected box in its place where the
   model has a detector and that box's crop looks more like the query;
4. from the anchor the object is followed on every sampled frame of its shot up to the query
   frame: SAM 2's video predictor, or OpenCV's CSRT checked by the query's appearance
   (`queries.tracker`), each tracked box then tightened by one round of step 3;
5. (with SAM 2) crops from that response track become new visual queries; search, refinement
   and tracking run again, and a later occurrence found that way replaces the answer.
A visual query token comes from the crop when there is one, else from the track itself.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from queries.hits import Box, Hit
from queries.localize import refine_box, snap_to_detection
from queries.sam2_stages import SAM2Stages, clip_box, read_frames, scale_box
from queries.tracker import TrackSettings, fill_frames, track_object
from vqsearch.models.runtime import default_threads

if TYPE_CHECKING:
    from queries.engine import QueryEngine

NO_SAM2_MESSAGE = "SAM 2 weights not configured: boxes from similarity maps, tracking with OpenCV CSRT"
ANCHOR_CANDIDATES = 3  # track frames tried as the anchor (last, middle, first)
REFINED_FRAMES = 16    # tracked frames (spread over the track) whose CSRT box gets one refinement round
_said = False


def _say_once(message: str) -> None:
    global _said
    if not _said:
        _said = True
        print(message, file=sys.stderr, flush=True)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / max(float(np.linalg.norm(x)), 1e-8)).astype(np.float32)


def _crop(frame: np.ndarray, box) -> np.ndarray:
    x, y, w, h = clip_box(box, *frame.shape[:2])
    return np.ascontiguousarray(frame[y:y + h, x:x + w])


def _sampled_frames(engine: QueryEngine, hit: Hit, anchor: int, until_frame: int | None) -> list[int]:
    """The index's sampled frames of the anchor's shot, up to the query frame, and at most
    `TrackSettings.max_frames` either side of the anchor (what is decoded stays bounded)."""
    from indexer.video import sample_indices

    video = engine.store.video(hit.video_id)
    first, last = engine.store.shot_bounds(video, anchor)
    if until_frame is not None:
        last = min(last, until_frame)
    frames = sorted({f for f in sample_indices(video.frames, video.fps, video.sample_fps) if first <= f <= last}
                    | {anchor})
    at, reach = frames.index(anchor), TrackSettings().max_frames
    return frames[max(0, at - reach):at + reach + 1]


def _decode(path: str, frames: list[int], size_hw: tuple[int, int] | None = None) -> dict[int, np.ndarray]:
    """Frames of a video (resized by the decoder to `size_hw`), the reader closed at once: with
    a second decord reader open on the same file, one read of 48 frames took 400 MB more."""
    import decord

    if not frames:
        return {}
    width, height = (size_hw[1], size_hw[0]) if size_hw else (-1, -1)
    reader = decord.VideoReader(path, width=width, height=height, num_threads=default_threads())
    try:
        frames = sorted(frames)  # decoders go forward
        return dict(zip(frames, read_frames(reader, frames)))
    finally:
        del reader


def _refine_and_track(engine: QueryEngine, sam2: SAM2Stages | None, hit: Hit, crop_token: np.ndarray | None,
                      until_frame: int | None) -> tuple[Hit, np.ndarray]:
    """Steps 3 and 4 on one candidate: (hit with the response track's boxes, refined crop token).

    `crop_token`: the query crop's token, None for a text query (the track's own token stands in).
    """
    import decord

    own = {b.frame: (b.x, b.y, b.width, b.height) for b in hit.boxes}
    picks = sorted({hit.boxes[-1].frame, hit.boxes[len(hit.boxes) // 2].frame, hit.boxes[0].frame},
                   reverse=True)[:ANCHOR_CANDIDATES]
    images = _decode(hit.source, picks)
    if sam2 is not None:
        reader = decord.VideoReader(hit.source, num_threads=default_threads())
        anchor = picks[0]
        box = own[anchor]
        found = sam2.point_to_box(images[anchor], (box[0] + box[2] / 2, box[1] + box[3] / 2))
        box, refined = sam2.refine(images[anchor], found if found is not None else box, engine.encode_crop)
        frames = _sampled_frames(engine, hit, anchor, until_frame)
        track = sam2.track(reader, anchor, box, list(range(frames[0], frames[-1] + 1)))
    else:
        _say_once(NO_SAM2_MESSAGE)
        token = crop_token if crop_token is not None else engine.store.track_vector(hit.track_id)
        track, refined = _similarity_stages(engine, hit, images, own, token, crop_token is None, until_frame)
    track = fill_frames(track)
    frames = sorted(track)
    boxes = [Box(f, *(round(float(v), 1) for v in track[f])) for f in frames]
    return Hit(hit.video, hit.score, frames[0], frames[-1], round(frames[0] / hit.fps, 3),
               round(frames[-1] / hit.fps, 3), boxes, hit.track_id, hit.source, hit.fps, hit.video_id), refined


def _similarity_stages(engine: QueryEngine, hit: Hit, images: dict[int, np.ndarray], own: dict[int, tuple],
                       token: np.ndarray, check_anchor: bool, until_frame: int | None
                       ) -> tuple[dict[int, tuple], np.ndarray]:
    """Steps 3-4 without SAM 2: the anchor is the candidate frame whose box refines to the best
    match of `token` (one round each, then two more on the winner); CSRT follows it on the
    shot's sampled frames, decoded once at a reduced size, each new box compared with `token`, or
    with the anchor's own crop when `check_anchor` (a track token is not a crop's: a text query);
    each tracked box then gets one round of refinement. Refined boxes snap to a detected box
    where the model has a detector and the detected box's crop matches better."""
    import decord

    backbone, detector = engine.model.backbone, engine.model.detector

    def tighten(image: np.ndarray, box: tuple, rounds: int) -> tuple:
        box = refine_box(backbone, image, box, token, rounds=rounds).box
        return box if detector is None else snap_to_detection(detector, engine.encode_crop, image, box, token)

    first = {f: refine_box(backbone, image, own[f], token, rounds=1) for f, image in images.items()}
    anchor = max(first, key=lambda f: first[f].score)
    box = tighten(images[anchor], first[anchor].box, rounds=2)
    refined = _unit(engine.encode_crop(_crop(images[anchor], box)))

    height, width = images[anchor].shape[:2]
    scale = min(1.0, TrackSettings().track_side / max(height, width))
    small_hw = (round(height * scale) // 2 * 2, round(width * scale) // 2 * 2)
    small: dict[int, np.ndarray] = {}
    reader = decord.VideoReader(hit.source, width=small_hw[1], height=small_hw[0], num_threads=default_threads())

    def read(ids: list[int]) -> np.ndarray:
        missing = sorted(i for i in ids if i not in small)  # decoders go forward
        if missing:
            small.update(zip(missing, read_frames(reader, missing)))
        return np.stack([small[i] for i in ids])

    track = track_object(read, _sampled_frames(engine, hit, anchor, until_frame), anchor, box, (height, width),
                         small_hw, engine.encode_crop, refined if check_anchor else token)
    sx, sy = small_hw[1] / width, small_hw[0] / height
    others = [f for f in track if f != anchor]
    for i in np.linspace(0, len(others) - 1, min(len(others), REFINED_FRAMES)):
        f = others[round(i)]
        x, y, w, h = track[f]
        fx, fy, fw, fh = tighten(small[f], (x * sx, y * sy, w * sx, h * sy), rounds=1)
        track[f] = (fx / sx, fy / sy, fw / sx, fh / sy)
    return track, refined


def relocate(engine: QueryEngine, queries: dict[str, np.ndarray], until_frame: int | None = None,
             sam2: SAM2Stages | None = None, rounds: int | None = None, last: Hit | None = None,
             video=None) -> Hit | None:
    """The last occurrence with a tight box on every frame of it, or None (boxes between the
    sampled frames are interpolated).

    `rounds`: 2 runs step 5 once. By default only with SAM 2: on the hard DAVIS episodes the
    query augmented with crops of our own CSRT track found a look-alike after the true sighting
    (stAP@0.25 0.84 -> 0.77 on one seed, no change on the other). `last`: the engine's answer for
    these queries when the caller already has it; `video` restricts every search to one indexed
    video, as `QueryEngine.answer` does.
    """
    if rounds is None:
        rounds = 2 if sam2 is not None else 1
    if last is None:
        last, _ = engine.answer(queries, video, until_frame=until_frame)
    if last is None:
        return None
    crop_token = queries.get("visual")
    if not Path(last.source).is_file():  # moved or deleted since it was indexed
        print(f"vqsearch: cannot read {last.source}: answering with the index's own boxes", file=sys.stderr)
        return last
    answer, refined = _refine_and_track(engine, sam2, last, crop_token, until_frame)
    for _ in range(rounds - 1):
        import decord

        track_boxes = {b.frame: (b.x, b.y, b.width, b.height) for b in answer.boxes}
        crops = augment_queries(decord.VideoReader(answer.source, num_threads=default_threads()), track_boxes)
        tokens = [refined] + [engine.encode_crop(crop) for crop in crops if min(crop.shape[:2]) >= 2]
        if "visual" in queries:
            tokens.append(queries["visual"])
        again, _ = engine.answer({**queries, "visual": _unit(np.mean(tokens, axis=0))}, video,
                                 until_frame=until_frame)
        if again is None or again.track_id == last.track_id or again.end_frame <= answer.end_frame:
            break
        last = again
        answer, refined = _refine_and_track(engine, sam2, again, crop_token, until_frame)
    return answer


def augment_queries(frames, track_boxes: dict[int, tuple], n: int = 3, original_hw: tuple[int, int] | None = None,
                    min_side: float = 8.0) -> list[np.ndarray]:
    """Up to `n` new visual query crops (uint8 RGB) from a response track: boxes spread evenly over
    the track in time, skipping boxes with a side below `min_side` original pixels. `frames` is a
    decord VideoReader, a callable or a mapping frame -> image (`read_frames`); `original_hw` the
    original (height, width) when it decodes resized frames."""
    usable = sorted(f for f, b in track_boxes.items() if min(b[2], b[3]) >= min_side)
    if n < 1 or not usable:
        return []
    chosen = sorted({usable[round(i)] for i in np.linspace(0, len(usable) - 1, min(n, len(usable)))})
    images = read_frames(frames, chosen)
    fh, fw = images.shape[1:3]
    oh, ow = original_hw if original_hw is not None else (fh, fw)
    crops = []
    for frame, image in zip(chosen, images):
        x, y, w, h = clip_box(scale_box(track_boxes[frame], fw / ow, fh / oh), fh, fw)
        crops.append(np.ascontiguousarray(image[y:y + h, x:x + w]))
    return crops


class Relocation:
    """Steps 3-5 as `QueryEngine.search`'s `relocate` hook, with SAM 2 when it is given."""

    def __init__(self, sam2: SAM2Stages | None = None) -> None:
        self.sam2 = sam2

    def __call__(self, engine: QueryEngine, queries: dict[str, np.ndarray], last: Hit, video=None) -> Hit | None:
        return relocate(engine, queries, sam2=self.sam2, last=last, video=video)
