"""T-REN's two merges: region tokens within a frame, then merged tokens across frames into tracks."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components


@dataclass
class FrameRegions:
    """A frame's merged regions: tokens [M, D], masks [M, h, w], prompt points [M, 2] (y, x).

    Filled in after the merge: `text` [M, T] text-aligned tokens (projected or pooled per region),
    `colours` [M, 22] colour descriptors (`vqsearch.colours`), and on frames the detector saw,
    `labels` [M, L] each region's evidence for each detector label. `groups` [Q]: the region each
    prompt output went to (-1: a dropped group).
    """

    tokens: np.ndarray
    masks: np.ndarray
    points: np.ndarray
    text: np.ndarray | None = None
    colours: np.ndarray | None = None
    labels: np.ndarray | None = None
    groups: np.ndarray | None = None


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-8)


def merge_in_frame(tokens: np.ndarray, masks: np.ndarray, points: np.ndarray, cosine: float,
                   mask_iou: float, min_group: int = 1) -> FrameRegions:
    """Connected components of (cosine > `cosine`) OR (IoU of half-max masks > `mask_iou`).

    tokens [Q, D], masks [Q, h, w], points [Q, 2] for the Q = P x k prompt outputs of one frame.
    Members are average-pooled; a merged region keeps the prompt point of its most central member.
    Groups with fewer than `min_group` members are dropped (REN, for dense prompts).
    """
    q = len(tokens)
    flat = masks.reshape(q, -1)
    binary = (flat >= 0.5 * flat.max(1, keepdims=True)).astype(np.float32)
    inter = binary @ binary.T
    area = binary.sum(1)
    iou = inter / (area[:, None] + area[None, :] - inter).clip(1e-8)
    normed = unit(tokens)
    graph = (normed @ normed.T > cosine) | (iou > mask_iou)
    count, labels = connected_components(csr_matrix(graph), directed=False)
    keep_tokens, keep_masks, keep_points = [], [], []
    groups = np.full(q, -1, np.int64)
    for group in range(count):
        members = np.flatnonzero(labels == group)
        if len(members) < min_group:
            continue
        groups[members] = len(keep_tokens)
        mean = tokens[members].mean(0)
        keep_tokens.append(mean)
        keep_masks.append(masks[members].mean(0))
        keep_points.append(points[members[np.argmax(normed[members] @ unit(mean))]])
    d = tokens.shape[1]
    return FrameRegions(
        np.asarray(keep_tokens, dtype=np.float32).reshape(-1, d),
        np.asarray(keep_masks, dtype=np.float32).reshape(-1, *masks.shape[1:]),
        np.asarray(keep_points, dtype=np.float32).reshape(-1, 2),
        groups=groups,
    )


@dataclass
class Track:
    """A region followed through sampled frames. Its tokens are the means over its observations,
    so a few frames where the object is seen well still weigh in; its label evidence is the mean
    over the frames the detector saw (zero where the detector saw no such object)."""

    token_sum: np.ndarray
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    points: list[np.ndarray] = field(default_factory=list)
    text_sum: np.ndarray | None = None
    colour_sum: np.ndarray | None = None
    label_sum: np.ndarray | None = None
    labelled_frames: int = 0
    detected: bool = False  # a region of its own for a detection (kept however short)

    @property
    def token(self) -> np.ndarray:
        return self.token_sum / len(self.frames)

    @property
    def text_token(self) -> np.ndarray | None:
        return None if self.text_sum is None else self.text_sum / len(self.frames)

    @property
    def colour(self) -> np.ndarray | None:
        return None if self.colour_sum is None else self.colour_sum / len(self.frames)

    def label_evidence(self, labels: int) -> np.ndarray:
        if self.label_sum is None:
            return np.zeros(labels, np.float32)
        return self.label_sum / self.labelled_frames

    def add(self, frame: int, regions: FrameRegions, r: int, box: np.ndarray) -> None:
        """Add region `r` of a frame's regions, seen at `box`."""
        self.token_sum = self.token_sum + regions.tokens[r]
        for name, values in (("text_sum", regions.text), ("colour_sum", regions.colours), ("label_sum", regions.labels)):
            if values is not None:
                self._accumulate(name, values[r])
        self.labelled_frames += regions.labels is not None
        at = bisect.bisect(self.frames, frame)  # the end, but for a detection's frame seen late
        self.frames.insert(at, frame)
        self.boxes.insert(at, box)
        self.points.insert(at, regions.points[r])

    def extend(self, later: Track) -> None:
        """Continue this track with the track that follows it in the next segment (`indexer.segments`)."""
        self.token_sum = self.token_sum + later.token_sum
        for name in ("text_sum", "colour_sum", "label_sum"):
            if (value := getattr(later, name)) is not None:
                self._accumulate(name, value)
        self.labelled_frames += later.labelled_frames
        self.frames += later.frames
        self.boxes += later.boxes
        self.points += later.points

    def _accumulate(self, name: str, value: np.ndarray) -> None:
        total = getattr(self, name)
        setattr(self, name, value.copy() if total is None else total + value)


def match(tokens: np.ndarray, track_tokens: np.ndarray, tau: float) -> dict[int, int]:
    """The temporal merge's rule: a frame's region tokens [R, D] paired one-to-one with the tokens
    [A, D] of the tracks active before it, greedily by descending cosine, each pair at least `tau`.
    Returns {region: track row}."""
    sims = unit(tokens) @ unit(track_tokens).T
    matched: dict[int, int] = {}
    taken: set[int] = set()
    for flat in np.argsort(-sims, axis=None):
        r, a = divmod(int(flat), sims.shape[1])
        if sims[r, a] < tau:
            break
        if r in matched or a in taken:
            continue
        matched[r] = a
        taken.add(a)
    return matched


class TrackBuilder:
    """Temporal merge: greedy one-to-one matching of a frame's regions to the tracks active before.

    A track is active if it contains the previous sampled frame and no shot cut lies between;
    pairs need cosine >= `tau`; matching goes by descending similarity; unmatched regions start
    new tracks.
    """

    def __init__(self, tau: float) -> None:
        self.tau = tau
        self.tracks: list[Track] = []
        self._active: list[int] = []
        self._detected: list[int] = []  # the detections' own tracks on the last frame the detector saw

    def add_frame(self, frame: int, regions: FrameRegions, boxes: np.ndarray, cut: bool = False) -> list[Track]:
        """Add a sampled frame's regions; `cut`: a shot cut lies between it and the previous one.
        Returns the tracks that ended: active before this frame, not continued by it."""
        before = self._active
        if cut:
            self._active, self._detected = [], []
        matched: dict[int, int] = {}
        if self._active and len(regions.tokens):
            tokens = np.stack([self.tracks[t].token for t in self._active])
            matched = {r: self._active[a] for r, a in match(regions.tokens, tokens, self.tau).items()}
        active = []
        for r in range(len(regions.tokens)):
            if r not in matched:
                self.tracks.append(Track(np.zeros_like(regions.tokens[r])))
                matched[r] = len(self.tracks) - 1
            self.tracks[matched[r]].add(frame, regions, r, boxes[r])
            active.append(matched[r])
        self._active = active
        continued = set(active)
        return [self.tracks[t] for t in before if t not in continued]

    def add_detected(self, frame: int, regions: FrameRegions, boxes: np.ndarray, link: bool = True,
                     seen: frozenset[int] = frozenset()) -> None:
        """Add the regions made for detections on a frame the detector saw (`detector.detected_regions`,
        with their labels). The frames between two such frames do not have them apart, so a region
        continues a track of the previous such frame's of its best label (by `match`, no cut
        between), else starts one. `link`: the frames the detector sees on schedule, each in turn,
        with or without regions; they alone move the tracks to continue on, keeping those of the
        labels it detected there though a region stood for them (`seen`). Without it (a frame seen
        late, out of turn, between two of them), a region joins one of those tracks in order."""
        best = regions.labels.argmax(1) if len(regions.tokens) else np.zeros(0, np.int64)
        matched: dict[int, int] = {}
        for label in set(best.tolist()):
            rows = np.flatnonzero(best == label)
            before = [t for t in self._detected if self._label(t) == label and frame not in self.tracks[t].frames]
            if before:
                tokens = np.stack([self.tracks[t].token for t in before])
                matched |= {int(rows[r]): before[a] for r, a in match(regions.tokens[rows], tokens, self.tau).items()}
        for r in range(len(regions.tokens)):
            if r not in matched:
                self.tracks.append(Track(np.zeros_like(regions.tokens[r]), detected=True))
                matched[r] = len(self.tracks) - 1
            self.tracks[matched[r]].add(frame, regions, r, boxes[r])
        if link:
            continued = [matched[r] for r in range(len(regions.tokens))]
            self._detected = continued + [t for t in self._detected if t not in continued and self._label(t) in seen]

    def _label(self, track: int) -> int:
        return int(self.tracks[track].label_sum.argmax())

    @property
    def active(self) -> list[Track]:
        return [self.tracks[t] for t in self._active]
