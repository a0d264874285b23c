"""Video in, track tokens out: decode -> backbone -> region encoder -> in-frame merge -> tracks.

Four stages overlap, each in its own thread, with a few frames in bounded queues between them:
decoding, the backbone (two frames at once where it can: `backbone_stage`), the detector (on the
frames it sees), and the rest (regions, merges, tracks). Nothing here imports torch: the
embedded model indexes on OpenVINO and numpy alone.

Each region observation also gets its text token (projected or pooled per region), its colour
histogram (`vqsearch.colours`) and, on the frames a model's detector sees (`detect_fps`), its
detection evidence; a track keeps their means. There, a confident detection no region stands
for gets a region (and a track) of its own (`detector.detected_regions`).
Tracks end at shot cuts (`indexer.shots`); the cuts are kept so answers never cross them either.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, TypeVar

import numpy as np

from indexer.shots import FrameLook, is_cut
from indexer.video import VideoInfo, sample_indices, stream
from vqsearch.colours import DIM, region_colours
from vqsearch.merge import FrameRegions, Track, TrackBuilder, merge_in_frame, unit
from vqsearch.models.base import SearchModel
from vqsearch.models.detector import (DETECTED_MIN_SCORE, Detection, Detector, box_labels, corners_to_boxes,
                                      detected_regions, region_labels, with_labels)
from vqsearch.models.runtime import default_threads, pipeline_threads, streams
from vqsearch.regions import grid_points, half_max_masks, mask_boxes

T = TypeVar("T")


@dataclass
class IndexedVideo:
    """What indexing one video produced, ready for the store."""

    info: VideoInfo
    sample_fps: float
    frames_sampled: int
    patch_tokens: int
    region_tokens: int
    tracks: list[Track]
    visual: np.ndarray          # [T, D] unit-norm track tokens
    text: np.ndarray | None     # [T, T_dim] unit-norm text-aligned track tokens
    colour: np.ndarray          # [T, 22] colour descriptors of the tracks (`vqsearch.colours`)
    seconds: float
    cuts: list[tuple[int, int]] = field(default_factory=list)  # (last frame before, first after) a shot cut
    text_space: str | None = None  # the model's `text_space`: what the text tokens are made of

    def summary(self, given: str) -> dict:
        """This video's object in `vqsearch index --json` (and a served index job's result)."""
        return {"video": given, "frames_sampled": self.frames_sampled, "tracks": len(self.tracks),
                "region_tokens": self.region_tokens, "patch_tokens": self.patch_tokens,
                "seconds": round(self.seconds, 3),
                **({"declared_frames": self.info.declared_frames} if self.info.partial else {})}


@dataclass
class Edges:
    """What stitching a segment to its neighbours needs (`indexer.segments`).

    A shot cut may lie between two segments (the looks of their edge frames say); the tracks that
    start on a segment's first frame may continue those active on the previous segment's last one
    (the temporal merge compares their first-frame tokens with those tracks' tokens); and a late
    label (`LateLabels`) of a track at an edge is held back, since only the stitched track shows
    whether it ends there unlabelled and long enough.
    """

    first_frame: int
    last_frame: int
    first_look: FrameLook
    last_look: FrameLook
    first_tokens: list[np.ndarray]   # of tracks 0..n-1, the tracks that start on the first frame
    last_tracks: list[int]           # the tracks active on the last frame, in the merge's order
    held: dict[int, np.ndarray]      # late labels held back, by track


@dataclass
class Tracked:
    """The tracks of a run of sampled frames, before the short ones are dropped and the rest stacked:
    a whole video, or a segment of one with its `edges`."""

    tracks: list[Track]
    frames_sampled: int
    patch_tokens: int
    region_tokens: int
    seconds: float
    cuts: list[tuple[int, int]]
    edges: Edges | None = None


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Run an iterator in a background thread so decoding overlaps the backbone.

    When the consumer stops early (an error, Ctrl-C), the worker is stopped and joined before this
    returns: a thread killed inside native code (decoder, detector) at exit aborts the process.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def worker() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as error:  # re-raised in the consumer
            put(error)
        finally:
            getattr(items, "close", lambda: None)()  # an upstream stage stops and joins its own worker
        put(done)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class FrameInputs(NamedTuple):
    """What a frame's detections need to get regions of their own (`detector.detected_regions`),
    kept until the detector has seen the frame, on schedule or late."""

    regions: FrameRegions  # the merged regions
    inside: np.ndarray     # their binary masks [M, H, W]
    tokens: np.ndarray     # the prompt outputs' tokens [Q, D]
    masks: np.ndarray      # and soft masks [Q, h, w]
    pixels: np.ndarray     # uint8 [H, W, 3] at the backbone's input size
    context: object | None  # the backbone's context, for region pooling


@dataclass
class Batch:
    """One batch of sampled frames on its way through the stages."""

    frames: list[int]                       # original frame numbers
    pixels: np.ndarray                      # uint8 [B, H, W, 3] at the backbone's input size
    features: np.ndarray                    # [B, D, h, w]
    contexts: object | None                 # the backbone's context, for region pooling
    detections: list[list[Detection] | None]  # on every `every`-th sampled frame, else None


def backbone_stage(chunks: Iterator[tuple[list[int], np.ndarray]], model: SearchModel, threads: int,
                   workers: int = 1) -> Iterator[Batch]:
    """Backbone features on `threads` CPU threads (with context when the text side pools regions),
    `workers` batches at once, in order. Why at once: the backbone is the longest stage, and while
    it ran alone (the other stages waiting on it) one of two cores idled."""
    pooling = model.region_encoder.region_pooling is not None

    def encode(chunk: list[int], frames: np.ndarray) -> Batch:
        if pooling:
            features, contexts = model.backbone.features_with_context(frames)
        else:
            features, contexts = model.backbone.features(frames, threads), None
        return Batch(chunk, frames, features, contexts, [None] * len(chunk))

    with ThreadPoolExecutor(workers) as pool:
        running: deque[Future[Batch]] = deque()
        for chunk, frames in chunks:
            running.append(pool.submit(encode, chunk, frames))
            if len(running) == workers:
                yield running.popleft().result()
        while running:
            yield running.popleft().result()


def detect_stage(batches: Iterator[Batch], detector: Detector | None, every: int, threads: int, seen: int = 0
                 ) -> Iterator[Batch]:
    """The detector's findings (on `threads` CPU threads) on every `every`-th sampled frame of the
    video; `seen`: how many sampled frames come before the first batch (a segment's start)."""
    for step in batches:
        if detector is not None:
            step.detections = [detector(step.pixels[b], threads) if (seen + b) % every == 0 else None
                                for b in range(len(step.frames))]
        seen += len(step.frames)
        yield step


class LateLabels:
    """Detector labels for the short tracks that no detector frame saw.

    The detector sees one sampled frame in `every`; a track shorter than that (a brief
    reappearance) may lie between two and would lack the labels its longer sightings carry. When
    such a track ends, the detector sees its last frame, kept in a short buffer, and the track's
    box stands for its mask.

    In a segment, a track that starts on `hold_from` (the first frame of a segment that follows
    another) or is still active at the end may be part of a longer one: its label is `held`, not
    given, whatever its length, for the stitching to give or drop.

    A run for a track that is given its label is `fresh` until taken: its confident detections
    that no region stands for get regions of their own, as on the frames the detector sees anyway
    (`detector.detected_regions`), from what the buffer kept of that frame (`keep`'s `region_inputs`).
    """

    def __init__(self, detector: Detector | None, every: int, min_frames: int, frame_hw: tuple[int, int],
                 hold_from: int | None = None, threads: int | None = None) -> None:
        self.detector, self.min_frames, self.frame_hw, self.hold_from = detector, min_frames, frame_hw, hold_from
        self.threads = threads
        self.frames: dict[int, np.ndarray] = {}
        self.region_inputs: dict[int, FrameInputs] = {}
        self.found: dict[int, list[Detection]] = {}
        self.held: list[tuple[Track, np.ndarray]] = []
        self.fresh: list[int] = []
        self.depth = every + 1

    def keep(self, frame: int, pixels: np.ndarray, detections: list[Detection] | None,
             region_inputs: FrameInputs | None = None) -> None:
        if self.detector is None:
            return
        self.frames[frame] = pixels  # frames come in order: the oldest goes first
        if region_inputs is not None:
            self.region_inputs[frame] = region_inputs
        if detections is not None:
            self.found[frame] = detections
        if len(self.frames) > self.depth:
            oldest = min(self.frames)
            del self.frames[oldest]
            self.found.pop(oldest, None)
            self.region_inputs.pop(oldest, None)

    def take_fresh(self) -> list[tuple[int, list[Detection], FrameInputs]]:
        """(frame, detections, what `keep` kept of it) of the fresh runs, once each."""
        taken = [(frame, self.found[frame], self.region_inputs[frame]) for frame in self.fresh
                 if frame in self.region_inputs]
        self.fresh = []
        return taken

    def label(self, ended: list[Track], hold: bool = False) -> None:
        """Label the tracks that ended; with `hold`, hold back the labels of all of them."""
        if self.detector is None:
            return
        h, w = self.frame_hw
        for track in ended:
            last = track.frames[-1]
            held = hold or track.frames[0] == self.hold_from
            if track.labelled_frames or (len(track.frames) < self.min_frames and not held) or last not in self.frames:
                continue
            if last not in self.found:
                self.found[last] = self.detector(self.frames[last], self.threads)
                if not held:
                    self.fresh.append(last)
            x, y, bw, bh = track.boxes[-1]
            labels = box_labels(self.found[last], (x / w, y / h, (x + bw) / w, (y + bh) / h))
            if held:
                self.held.append((track, labels))
            else:
                track.label_sum, track.labelled_frames = labels, 1


def index_video(model: SearchModel, info: VideoInfo, fps: float, batch: int | None = None, progress=None
                ) -> IndexedVideo:
    """Turn one video into track tokens. `progress(n)` is called with each batch's frame count;
    `batch` frames go through the backbone at once (default: what suits the backbone)."""
    return finish(model, info, fps, track_frames(model, info, fps, batch=batch, progress=progress))


def track_frames(model: SearchModel, info: VideoInfo, fps: float, span: tuple[int, int] | None = None,
                 batch: int | None = None, progress=None) -> Tracked:
    """The tracks of a video's sampled frames, or with `span` (a, b) of its sampled frames a to b
    (excluded), a segment with its edges (`indexer.segments` stitches segments back together).

    A torch backbone runs on `vqsearch.models.runtime.default_threads()` threads (`vqsearch index
    --threads`); the embedded model's OpenVINO graphs, the backbone and the detector, run each
    inference on half of them (`pipeline_threads`), two backbone frames at once. BLAS runs
    single-threaded: the per-frame matrices are small (a few hundred rows) and OpenBLAS's thread
    start-up cost them 10-80x more than the arithmetic on this 2-core machine.
    """
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")  # only the big models bring it
    before = torch.get_num_threads() if torch else 0
    if torch:
        torch.set_num_threads(default_threads())
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            return _track_frames(model, info, fps, span, batch or model.backbone.batch, progress)
    finally:
        if torch:
            torch.set_num_threads(before)


def _track_frames(model: SearchModel, info: VideoInfo, fps: float, span: tuple[int, int] | None, batch: int,
                  progress) -> Tracked:
    start = time.perf_counter()
    config, backbone, encoder = model.config, model.backbone, model.region_encoder
    detector = model.detector if model.has_text else None
    sampled = sample_indices(info.frames, info.fps, fps)
    first, end = span or (0, len(sampled))
    indices = sampled[first:end]
    size = backbone.input_size(info.height, info.width)
    points = grid_points(*size, backbone.stride, config.prompt_stride)
    builder = TrackBuilder(config.track_tau)
    pooling = encoder.region_pooling  # text tokens from masks, per frame (REN's training-free transfer)
    prompt_points = np.repeat(points, encoder.k, 0)  # the prompt of each of the P x k outputs
    patch_tokens = region_tokens = 0
    cuts: list[tuple[int, int]] = []
    previous: tuple[int, FrameLook] | None = None
    first_look, first_tokens = None, []
    every = max(1, round(fps / config.detect_fps))
    threads = pipeline_threads()
    late = LateLabels(detector, every, config.min_track_frames, (info.height, info.width),
                      hold_from=indices[0] if first > 0 else None, threads=threads)

    def describe(regions: FrameRegions, pixels: np.ndarray, context, detections: list[Detection] | None,
                 seen_as: np.ndarray | None = None) -> np.ndarray:
        """Fill in a frame's regions' text tokens (from `seen_as`, when not their own tokens), colours
        and detection evidence; their binary masks."""
        if pooling is not None:
            regions.text = pooling(context, regions.masks)
        elif model.has_text:
            regions.text = encoder.text_tokens(regions.tokens if seen_as is None else seen_as)
        inside = half_max_masks(regions.masks)
        regions.colours = region_colours(pixels, inside)
        if detections is not None:
            regions.labels = region_labels(detections, inside)
        return inside

    def add_detected(frame: int, detections: list[Detection], inputs: FrameInputs, link: bool) -> int:
        """Regions of their own for the detections no region stands for, as tracks; how many."""
        found, own, corners = detected_regions(detections, inputs.regions, inputs.inside, inputs.tokens,
                                               inputs.masks, prompt_points, size)
        if len(found.tokens):
            describe(found, inputs.pixels, inputs.context, detections, own)
        seen = frozenset(d.label for d in detections if d.score >= DETECTED_MIN_SCORE)
        builder.add_detected(frame, found, corners_to_boxes(corners, (info.height, info.width)), link, seen)
        return len(found.tokens)

    def add_late_detected() -> int:
        """`add_detected` for the frames the late labels' detector has just seen, out of turn."""
        return sum(add_detected(seen, found, inputs, link=False) for seen, found, inputs in late.take_fresh())

    depth = max(2, 8 // batch)  # a few frames in flight between stages, whatever the batch
    decoded = prefetch(stream(info, indices, size, batch), depth)
    workers = streams(threads) if backbone.parallel else 1
    encoded = prefetch(backbone_stage(decoded, model, threads, workers), depth)
    for step in prefetch(detect_stage(encoded, detector, every, threads, first), depth):
        features = step.features
        patch_tokens += features.shape[0] * features.shape[2] * features.shape[3]
        tokens, masks = encoder.encode(features, points)
        for b, frame in enumerate(step.frames):
            pixels = step.pixels[b]
            look = FrameLook.of(pixels, features[b])
            cut = previous is not None and is_cut(previous[1], look)
            if cut:
                cuts.append((previous[0], frame))
            previous = (frame, look)
            regions = merge_in_frame(tokens[b], masks[b], prompt_points, config.merge_cosine,
                                     config.merge_mask_iou, config.min_group)
            context, detections = step.contexts[b] if pooling is not None else None, step.detections[b]
            inside = describe(regions, pixels, context, detections)
            region_tokens += len(regions.tokens)
            inputs = FrameInputs(regions, inside, tokens[b], masks[b], pixels, context)
            late.keep(frame, pixels, detections, inputs)
            late.label(builder.add_frame(frame, regions, mask_boxes(inside, (info.height, info.width)), cut))
            region_tokens += add_late_detected()  # before this frame's: a cut may lie between
            if detections is not None:
                region_tokens += add_detected(frame, detections, inputs, link=True)
            if first_look is None:
                first_look, first_tokens = look, [t.token for t in builder.active]  # not the detections' own
        if progress:
            progress(len(step.frames))
    late.label(builder.active, hold=end < len(sampled))
    region_tokens += add_late_detected()
    tracked = Tracked(builder.tracks, len(indices), patch_tokens, region_tokens, time.perf_counter() - start, cuts)
    if span is not None:
        number = {id(track): n for n, track in enumerate(builder.tracks)}
        tracked.edges = Edges(indices[0], indices[-1], first_look, previous[1], first_tokens,
                              [number[id(t)] for t in builder.active], {number[id(t)]: labels for t, labels in late.held})
    return tracked


def finish(model: SearchModel, info: VideoInfo, fps: float, tracked: Tracked) -> IndexedVideo:
    """Keep the tracks seen on enough sampled frames and stack their tokens for the store."""
    config, backbone = model.config, model.backbone
    detector = model.detector if model.has_text else None
    tracks = [t for t in tracked.tracks if len(t.frames) >= config.min_track_frames or t.detected]
    track_tokens = np.stack([t.token for t in tracks]).astype(np.float32) if tracks else np.zeros((0, backbone.dim), np.float32)
    colour = np.stack([t.colour for t in tracks]).astype(np.float32) if tracks else np.zeros((0, DIM), np.float32)
    text = None
    if model.has_text and len(tracks):
        text = unit(np.stack([t.text_token for t in tracks])).astype(np.float32)
        if detector is not None:
            evidence = np.stack([t.label_evidence(len(detector.labels)) for t in tracks])
            text = with_labels(text, evidence, detector, np.array([t.detected for t in tracks]))
    return IndexedVideo(info, fps, tracked.frames_sampled, tracked.patch_tokens, tracked.region_tokens, tracks,
                        unit(track_tokens), text, colour, tracked.seconds, tracked.cuts, model.text_space)
