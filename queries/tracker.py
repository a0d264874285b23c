"""A response track without SAM 2 (RELOCATE step 4): follow the object from an anchor box until it
is lost, with OpenCV's CSRT tracker (no downloaded weights) checked by the query's appearance.

From the anchor frame the tracker runs forward and backward over the video's sampled frames,
never across a shot cut and never past the query frame (the caller gives those frames). Every
new box is re-encoded and compared with the query token: the track ends at the first frame that
looks unlike the query (cosine below `accept`) or where CSRT itself loses the object. Frames are
tracked at a reduced size (`track_side`), boxes returned in original pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

BoxXYWH = tuple[float, float, float, float]


@dataclass(frozen=True)
class TrackSettings:
    accept: float = 0.4       # crop-vs-query cosine a tracked box must keep (93 % of true boxes on DAVIS)
    max_frames: int = 150     # per direction: 30 s at 5 fps
    track_side: int = 640     # long side of the frames the tracker sees
    chunk: int = 8            # frames decoded at a time


def _frames(read: Callable[[list[int]], np.ndarray], order: list[int], chunk: int) -> Iterator[np.ndarray]:
    """Frames in `order`, decoded `chunk` at a time, only as far as they are asked for."""
    for start in range(0, len(order), chunk):
        yield from read(order[start:start + chunk])


def _one_way(frames: Iterator[np.ndarray], box: BoxXYWH,
             looks_like: Callable[[np.ndarray, BoxXYWH], bool]) -> list[BoxXYWH]:
    """Boxes for the frames after the first, until the object is lost."""
    import cv2

    tracker = cv2.TrackerCSRT.create(cv2.TrackerCSRT.Params())
    tracker.init(cv2.cvtColor(next(frames), cv2.COLOR_RGB2BGR), tuple(int(round(v)) for v in box))
    out: list[BoxXYWH] = []
    for frame in frames:
        ok, found = tracker.update(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        found = tuple(float(v) for v in found)
        if not ok or found[2] < 2 or found[3] < 2 or not looks_like(frame, found):
            break
        out.append(found)
    return out


def track_object(read: Callable[[list[int]], np.ndarray], frames: Sequence[int], anchor: int, box: BoxXYWH,
                 original_hw: tuple[int, int], small_hw: tuple[int, int],
                 encode_crop: Callable[[np.ndarray], np.ndarray], token: np.ndarray,
                 settings: TrackSettings = TrackSettings()) -> dict[int, BoxXYWH]:
    """{frame: box} in original pixels over `frames` (sorted frame numbers holding `anchor`).

    `read(frame_numbers)` gives those frames as uint8 RGB [N, *small_hw, 3]; it is called a few
    frames at a time, as far as the object is followed. The anchor's box is always in the answer.
    """
    at = list(frames).index(anchor)
    forward = list(frames[at:at + settings.max_frames + 1])
    backward = list(frames[max(0, at - settings.max_frames):at + 1])[::-1]
    sx, sy = small_hw[1] / original_hw[1], small_hw[0] / original_hw[0]

    def looks_like(frame: np.ndarray, b: BoxXYWH) -> bool:
        x0, y0 = max(0, int(b[0])), max(0, int(b[1]))
        x1, y1 = min(frame.shape[1], int(b[0] + b[2])), min(frame.shape[0], int(b[1] + b[3]))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return False
        return float(encode_crop(np.ascontiguousarray(frame[y0:y1, x0:x1])) @ token) >= settings.accept

    start = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    result: dict[int, BoxXYWH] = {anchor: tuple(float(v) for v in box)}
    for order in (forward, backward):
        if len(order) < 2:
            continue
        for frame, found in zip(order[1:], _one_way(_frames(read, order, settings.chunk), start, looks_like)):
            result[frame] = (found[0] / sx, found[1] / sy, found[2] / sx, found[3] / sy)
    return dict(sorted(result.items()))


def fill_frames(track: dict[int, BoxXYWH]) -> dict[int, BoxXYWH]:
    """A box on every frame from the first to the last of `track`, gaps linearly interpolated."""
    if not track:
        return {}
    frames = np.array(sorted(track), dtype=float)
    boxes = np.array([track[int(f)] for f in frames], dtype=float)
    every = np.arange(int(frames[0]), int(frames[-1]) + 1)
    filled = np.stack([np.interp(every, frames, boxes[:, k]) for k in range(4)], axis=1)
    return {int(f): tuple(float(v) for v in box) for f, box in zip(every, filled)}
