"""A video's frame as a JPEG, asked by video id and frame number only (no path comes from the
request), its box drawn when asked.

Readers stay open for the last few videos asked: the page's player asks for frames in order,
which an open reader decodes in about a millisecond each, while a new reader seeks from the last
keyframe (150-300 ms in the sample videos, which have one every 250 frames).
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from vqsearch.models.runtime import stamp
from vqsearch.serve.errors import ApiError
from vqsearch.schema import Video

OPEN_READERS = 2
JPEG_QUALITY = 85
BOX_COLOUR = (57, 255, 20)


def parse_box(text: str, video: Video) -> tuple[float, float, float, float]:
    """`x,y,w,h` in the video's pixels: four finite numbers, a positive size, inside the frame at least in part."""
    try:
        x, y, w, h = (float(part) for part in text.split(","))
    except ValueError:
        raise ApiError(422, f"box must be x,y,w,h (four numbers in the video's pixels), got {text[:40]!r}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ApiError(422, f"box must have finite numbers and a positive width and height, got {text[:40]!r}")
    if x >= video.width or y >= video.height or x + w <= 0 or y + h <= 0:
        raise ApiError(422, f"box {text[:40]} lies outside the {video.width}x{video.height} frame")
    return x, y, w, h


class FrameReader:
    """Decodes frames of indexed videos, one reader per file, each used by one request at a time."""

    def __init__(self) -> None:
        self._readers: OrderedDict[str, tuple[object, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    def _reader(self, path: str) -> tuple[object, threading.Lock]:
        """An open reader of the file as it is now (a file replaced since gets a new one)."""
        import decord

        key = f"{path}:{stamp(Path(path))}"
        with self._lock:
            if key not in self._readers:
                self._readers[key] = (decord.VideoReader(path, num_threads=1), threading.Lock())
                while len(self._readers) > OPEN_READERS:
                    self._readers.popitem(last=False)
            self._readers.move_to_end(key)
            return self._readers[key]

    def frame(self, video: Video, number: int) -> np.ndarray:
        """Frame `number` (original numbering) of an indexed video, RGB."""
        import decord

        if not 0 <= number < video.frames:
            raise ApiError(404, f"video {video.id} has frames 0-{video.frames - 1}, not {number}")
        if not Path(video.abs_path).is_file():
            raise ApiError(404, f"the file of video {video.id} is gone ({video.path}): index it again or remove it")
        try:
            reader, lock = self._reader(video.abs_path)
            with lock:
                return reader[number].asnumpy()
        except (decord.DECORDError, RuntimeError, IndexError):
            raise ApiError(404, f"cannot decode frame {number} of video {video.id} ({video.path}): "
                                "the file is truncated or corrupt") from None

    def jpeg(self, video: Video, number: int, box: tuple[float, float, float, float] | None = None,
             width: int | None = None) -> bytes:
        """The frame as a JPEG, scaled down to `width` when given, the box drawn over it."""
        from PIL import Image, ImageDraw

        image = Image.fromarray(self.frame(video, number))
        scale = 1.0
        if width is not None and width < image.width:
            scale = width / image.width
            image = image.resize((width, max(1, round(image.height * scale))), Image.BILINEAR)
        if box is not None:
            x, y, w, h = (v * scale for v in box)
            line = max(2, round(image.width / 320))
            ImageDraw.Draw(image).rectangle([x, y, x + w, y + h], outline=BOX_COLOUR, width=line)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
        return out.getvalue()
