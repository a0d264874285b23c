"""Video in: open with decord, check it, and stream frames sampled at a target rate in batches.

Sampled frames are decoded with PyAV, front to back, skipping the frames that are neither sampled
nor a reference for another (`stream`), and resized by the same FFmpeg filter decord runs: the
same pixels as decord's reads, for 27-37 % less CPU. Only one batch of frames is held at a time,
so memory stays flat in the video's length. Queries, which read a few frames anywhere in a
video, keep decord's random access (`queries.relocate`).
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from vqsearch.errors import VQSearchError


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    frames: int                 # frames that can be decoded
    fps: float
    width: int
    height: int
    declared_frames: int = 0    # frames the container says it holds (0: it does not say)

    @property
    def partial(self) -> bool:
        """Fewer frames decode than the container declares: the file is cut short."""
        return self.declared_frames > 0 and self.frames < self.declared_frames * COMPLETE

    @property
    def duration(self) -> float:
        return self.frames / self.fps


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """FFmpeg and decord log to file descriptor 2 from C; our own error line says what failed."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _reason(error: Exception) -> str:
    """decord's message without its timestamp and source location: what went wrong, briefly."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*(error:?\s*)?", "", first, flags=re.IGNORECASE)[:200]


def sample_indices(frames: int, video_fps: float, target_fps: float) -> list[int]:
    """Original-frame indices closest to every 1/target_fps seconds (all frames if target >= fps)."""
    if target_fps <= 0:
        raise VQSearchError(f"--fps must be positive, got {target_fps}")
    step = max(video_fps / target_fps, 1.0)
    return sorted({min(frames - 1, round(i * step)) for i in range(int(np.ceil(frames / step)))})


COMPLETE = 0.99  # decodable / declared frames below this is a cut-short file, not rounding


def declared_frames(path: Path) -> int:
    """Frames the container declares for its first video stream (0 when it does not say)."""
    import av

    try:
        with av.open(str(path)) as container:
            return int(container.streams.video[0].frames or 0) if container.streams.video else 0
    except (av.error.FFmpegError, OSError, IndexError):
        return 0


def probe(path: Path, allow_partial: bool = False) -> VideoInfo:
    """Open a video and read its geometry, or fail with one clear line.

    A file whose container declares more frames than can be decoded (cut short while copying or
    recording) is refused unless `allow_partial`: indexing it as if whole would hide the gap.
    """
    import decord

    if not path.is_file():
        raise VQSearchError(f"no such video file: {path}")
    try:
        with native_stderr_silenced():
            reader = decord.VideoReader(str(path), num_threads=1)
            frames, fps = len(reader), float(reader.get_avg_fps())
            height, width = reader[0].shape[:2]
    except (decord.DECORDError, RuntimeError, IndexError) as error:
        raise VQSearchError(f"cannot read video {path} (truncated, corrupt or not a video): {_reason(error)}") from None
    if frames < 1 or not fps > 0:
        raise VQSearchError(f"cannot read video {path}: no frames or no frame rate")
    with native_stderr_silenced():
        declared = declared_frames(path)
    info = VideoInfo(path, frames, fps, int(width), int(height), declared)
    if info.partial and not allow_partial:
        raise VQSearchError(f"video {path} is incomplete: {frames} of the {declared} frames it declares can be "
                            "decoded (truncated?); index what is there with --allow-partial")
    return info


def stream(info: VideoInfo, indices: list[int], size_hw: tuple[int, int], batch: int = 8
           ) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yield (frame indices, uint8 frames [B, H, W, 3] at `size_hw`) for the sampled indices."""
    chunk: list[int] = []
    images: list[np.ndarray] = []
    for index, image in _sampled_frames(info, indices, size_hw):
        chunk.append(index)
        images.append(image)
        if len(chunk) == batch:
            yield chunk, np.stack(images)
            chunk, images = [], []
    if chunk:
        yield chunk, np.stack(images)


def _sampled_frames(info: VideoInfo, indices: list[int], size_hw: tuple[int, int]
                    ) -> Iterator[tuple[int, np.ndarray]]:
    """The frames `indices` (ascending), exactly, numbered as decord numbers them (`probe` counts
    frames with decord).

    Why not decord: it decodes every frame up to each it gives. Here a frame is decoded only if
    it is sampled or another frame is predicted from it (FFmpeg's `skip_frame` set per packet:
    most B-frames of H.264 are skipped). A frame's number is its rank among the stream's
    timestamps, read in a first pass over the packets (no decoding); a stream whose packets lack
    distinct timestamps is decoded whole and its frames counted. The read starts at the key frame
    before the first sampled one (a segment of the video). A video cut short ends cleanly at the
    cut: every frame before it is given.
    """
    import av

    want = set(indices)
    order = _display_order(info.path)
    with av.open(str(info.path)) as container:
        video = container.streams.video[0]
        video.codec_context.thread_count = 1  # the pipeline's other stages use the other cores
        resize = _decord_resize(video, size_hw)
        if order is not None and min(want) > 0:
            container.seek(order.pts[min(want)], backward=True, any_frame=False, stream=video)
        for counted, frame in enumerate(_decoded(container, video, order, want, info)):
            number = order.number[frame.pts] if order is not None else counted
            if number in want:
                want.discard(number)
                yield number, resize(frame)
                if not want:
                    return


def _decoded(container, video, order: DisplayOrder | None, want: set[int], info: VideoInfo) -> Iterator:
    """The decoded frames of `video`, the non-reference ones skipped unless `want`ed; past a cut
    (a partial file), those the decoder still held."""
    import av

    decoder = video.codec_context
    try:
        for packet in container.demux(video):
            if order is not None and packet.pts is not None:
                decoder.skip_frame = "DEFAULT" if order.number.get(packet.pts) in want else "NONREF"
            yield from decoder.decode(packet)
    except av.error.FFmpegError as error:
        if not info.partial:
            raise VQSearchError(f"cannot decode {info.path} near frame {min(want)} (truncated or corrupt?): "
                                f"{_reason(error)}") from None
        yield from decoder.decode(None)


@dataclass(frozen=True)
class DisplayOrder:
    """A stream's packet timestamps in display order (`pts[n]`: frame n's) and back (`number`)."""

    pts: list[int]
    number: dict[int, int]


def _display_order(path: Path) -> DisplayOrder | None:
    """Frame numbers by timestamp, from the packets alone; None when some packet has no timestamp
    or shares one (frames are then numbered as they come out of the decoder)."""
    import av

    stamps: list[int | None] = []
    with av.open(str(path)) as container:
        try:
            stamps = [packet.pts for packet in container.demux(container.streams.video[0]) if packet.size]
        except av.error.FFmpegError:
            pass  # a cut-short file: the packets before the cut
    if None in stamps or len(set(stamps)) != len(stamps):
        return None
    ordered = sorted(stamps)
    return DisplayOrder(ordered, {pts: n for n, pts in enumerate(ordered)})


def _decord_resize(video, size_hw: tuple[int, int]):
    """frame -> uint8 RGB [H, W, 3] at `size_hw` through decord's filter (bilinear scaling, then
    RGB): the very pixels decord gives."""
    import av

    graph = av.filter.Graph()
    chain = [graph.add_buffer(template=video), graph.add("scale", f"{size_hw[1]}:{size_hw[0]}:flags=bilinear"),
             graph.add("format", "rgb24"), graph.add("buffersink")]
    for source, sink in zip(chain, chain[1:]):
        source.link_to(sink)
    graph.configure()

    def resize(frame) -> np.ndarray:
        graph.push(frame)
        return graph.pull().to_ndarray()

    return resize
