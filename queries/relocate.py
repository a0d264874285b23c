"""The VQ2D answer stages after track search (RELOCATE, design.md steps 3-5).

3. the last candidate's point becomes a box (SAM 2) and is refined by re-encoding a crop of it;
4. SAM 2 tracks it through the video (up to the query frame) to form the response track;
5. crops from that track become new visual queries; search, refinement and tracking run again.
Without SAM 2 weights the stages fall back to the region track's own boxes (said once).
"""

from __future__ import annotations

import numpy as np

from queries.engine import Box, Hit, QueryEngine
from queries.sam2_stages import SAM2Stages


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / max(float(np.linalg.norm(x)), 1e-8)).astype(np.float32)


def _refine_and_track(engine: QueryEngine, stages: SAM2Stages, hit: Hit, until_frame: int | None
                      ) -> tuple[Hit, np.ndarray]:
    """Steps 3 and 4 on one candidate: (hit with the response track's boxes, refined crop token)."""
    import decord

    reader = decord.VideoReader(hit.source, num_threads=1)
    anchor = hit.boxes[-1]
    frame = reader[anchor.frame].asnumpy()
    box = (anchor.x, anchor.y, anchor.width, anchor.height)
    if stages.available():
        found = stages.point_to_box(frame, (anchor.x + anchor.width / 2, anchor.y + anchor.height / 2))
        box = found if found is not None else box
    box, token = stages.refine(frame, box, engine.encode_crop)
    last = len(reader) - 1 if until_frame is None else min(until_frame, len(reader) - 1)
    track = stages.track(reader, anchor.frame, box, list(range(0, last + 1)), own_boxes=hit.boxes)
    frames = sorted(track)
    boxes = [Box(f, *(round(float(v), 1) for v in track[f])) for f in frames]
    return Hit(hit.video, hit.score, frames[0], frames[-1], round(frames[0] / hit.fps, 3),
               round(frames[-1] / hit.fps, 3), boxes, hit.track_id, hit.source, hit.fps), token


def relocate(engine: QueryEngine, stages: SAM2Stages, queries: dict[str, np.ndarray],
             until_frame: int | None = None, rounds: int = 2) -> Hit | None:
    """The last occurrence with a box on every frame of it, or None when nothing matches."""
    import decord

    last, _ = engine.answer(queries, until_frame=until_frame)
    if last is None:
        return None
    answer, token = _refine_and_track(engine, stages, last, until_frame)
    for _ in range(rounds - 1):
        track_boxes = {b.frame: (b.x, b.y, b.width, b.height) for b in answer.boxes}
        crops = stages.augment_queries(decord.VideoReader(answer.source, num_threads=1), track_boxes)
        tokens = [token] + [engine.encode_crop(crop) for crop in crops if min(crop.shape[:2]) >= 2]
        if "visual" in queries:
            tokens.append(queries["visual"])
        again, _ = engine.answer({**queries, "visual": _unit(np.mean(tokens, axis=0))}, until_frame=until_frame)
        if again is None or again.track_id == last.track_id:
            break
        last = again
        answer, token = _refine_and_track(engine, stages, again, until_frame)
    return answer
