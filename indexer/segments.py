"""Long videos in segments: plan them, and stitch the segments' tracks back into continuous ones.

Segments index in parallel (`indexer.distributed`). Stitching applies the temporal merge's own
rule at each boundary: unless a shot cut lies between a segment's last sampled frame and the
next one's first, the tracks active on the last frame are matched one-to-one, greedily, with the
tracks that start on the first (their first-frame tokens against the tracks' mean tokens, at
least `track_tau`), exactly as the single pass matches that frame's regions. Past the boundary
the passes differ: a stitched track's later frames were matched against the mean of its own
segment's frames, the single pass's against the mean of all its frames so far.
"""

from __future__ import annotations

import math

import numpy as np

from indexer.pipeline import Tracked
from indexer.shots import is_cut
from vqsearch.merge import Track, match


def plan(frames: int, fps: float, seconds: float) -> list[tuple[int, int]]:
    """Spans (a, b) of `frames` sampled frames at `fps`, of about `seconds` each and at most that
    long, all of about the same length; a video no longer than `seconds` is one span."""
    count = math.ceil(frames / max(1, round(seconds * fps)))
    bounds = [round(n * frames / count) for n in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def stitch(parts: list[Tracked], tau: float, min_frames: int) -> Tracked:
    """The tracks of consecutive segments joined into those of the whole video (frame numbers are
    the video's all along). A held late label is given to a stitched track that ends with its
    part, unlabelled and seen on at least `min_frames` sampled frames, as the single pass would."""
    tracks: list[Track] = []
    held: list[np.ndarray | None] = []  # the held label of each track's last part
    cuts: list[tuple[int, int]] = []
    active: list[int] = []
    before = None
    for part in parts:
        edges = part.edges
        into: dict[int, int] = {}  # the part's track -> the stitched track it continues
        if before is not None and is_cut(before.last_look, edges.first_look):
            cuts.append((before.last_frame, edges.first_frame))
        elif active and edges.first_tokens:
            ends = np.stack([tracks[t].token for t in active])
            into = {r: active[a] for r, a in match(np.stack(edges.first_tokens), ends, tau).items()}
        cuts += part.cuts
        for n, track in enumerate(part.tracks):
            if n in into:
                tracks[into[n]].extend(track)
                held[into[n]] = edges.held.get(n)
            else:
                into[n] = len(tracks)
                tracks.append(track)
                held.append(edges.held.get(n))
        active = [into[n] for n in edges.last_tracks]
        before = edges
    for track, labels in zip(tracks, held):
        if labels is not None and not track.labelled_frames and len(track.frames) >= min_frames:
            track.label_sum, track.labelled_frames = labels, 1
    return Tracked(tracks, sum(p.frames_sampled for p in parts), sum(p.patch_tokens for p in parts),
                   sum(p.region_tokens for p in parts), sum(p.seconds for p in parts), cuts)
