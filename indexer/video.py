"""Video in: open with decord, check it, and stream frames sampled at a target rate in batches.

Decoding is resized by the decoder itself (cheaper than resizing after), and only one batch of
frames is held at a time, so memory stays flat in the video's length.
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
    """Yield (frame indices, uint8 frames [B, H, W, 3] at `size_hw`) for the sampled indices.

    A video cut short is read front to back with PyAV, which stops cleanly at the cut: decord
    decodes ahead in its own thread, fails past the cut and reports it on a later read of frames
    that do decode.
    """
    frames = (_partial_frames(info, indices, size_hw) if info.partial
              else _decord_frames(info, indices, size_hw, batch))
    chunk: list[int] = []
    images: list[np.ndarray] = []
    for index, image in frames:
        chunk.append(index)
        images.append(image)
        if len(chunk) == batch:
            yield chunk, np.stack(images)
            chunk, images = [], []
    if chunk:
        yield chunk, np.stack(images)


def _decord_frames(info: VideoInfo, indices: list[int], size_hw: tuple[int, int], batch: int
                   ) -> Iterator[tuple[int, np.ndarray]]:
    import decord

    reader = decord.VideoReader(str(info.path), width=size_hw[1], height=size_hw[0], num_threads=1)
    for start in range(0, len(indices), batch):
        chunk = indices[start : start + batch]
        try:
            frames = reader.get_batch(chunk).asnumpy()
        except (decord.DECORDError, RuntimeError) as error:
            raise VQSearchError(
                f"cannot decode {info.path} near frame {chunk[0]} (truncated or corrupt?): {_reason(error)}"
            ) from None
        yield from zip(chunk, frames)


def _partial_frames(info: VideoInfo, indices: list[int], size_hw: tuple[int, int]) -> Iterator[tuple[int, np.ndarray]]:
    import av

    wanted = set(indices)
    with av.open(str(info.path)) as container:
        try:
            for number, frame in enumerate(container.decode(video=0)):
                if number > indices[-1]:
                    return
                if number in wanted:
                    yield number, frame.to_ndarray(format="rgb24", width=size_hw[1], height=size_hw[0])
        except av.error.FFmpegError:
            return  # the cut: every frame before it was given
