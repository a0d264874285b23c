"""`query --show`: a contact sheet a person can read at a glance.

First row: frames across the last occurrence with its boxes; then one frame per top result.
Every tile is labelled with video name, time and score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from queries.hits import Answer, Hit

TILE_WIDTH = 320
PER_ROW = 4
LABEL_HEIGHT = 18


def _frames(video: str, frames: list[int]) -> list[np.ndarray]:
    """The frames, or grey stand-ins when the video has moved since it was indexed."""
    import decord

    if not Path(video).is_file():
        return [np.full((180, 320, 3), 64, np.uint8) for _ in frames]
    reader = decord.VideoReader(video, num_threads=1)
    return list(reader.get_batch(frames).asnumpy())


def _tile(hit: Hit, frame: int, image: np.ndarray, caption: str, colour: str) -> Image.Image:
    height, width = image.shape[:2]
    scale = TILE_WIDTH / width
    tile = Image.new("RGB", (TILE_WIDTH, round(height * scale) + LABEL_HEIGHT), "black")
    tile.paste(Image.fromarray(image).resize((TILE_WIDTH, round(height * scale))), (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(tile)
    for box in hit.boxes:
        if box.frame == frame:
            x0, y0 = box.x * scale, box.y * scale + LABEL_HEIGHT
            draw.rectangle([x0, y0, x0 + box.width * scale, y0 + box.height * scale], outline=colour, width=3)
    draw.text((4, 3), f"{Path(hit.video).name}  {frame / hit.fps:.2f}s  f{frame}  {caption}", fill="white",
              font=ImageFont.load_default())
    return tile


def _spread(frames: list[int], count: int) -> list[int]:
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    return [frames[i] for i in sorted(set(picks.tolist()))]


def contact_sheet(answer: Answer, out: Path) -> Path:
    """Write the sheet as PNG to `out` (atomically) and return its path."""
    rows: list[list[Image.Image]] = []
    if answer.last_seen is not None:
        hit = answer.last_seen
        frames = _spread([b.frame for b in hit.boxes], PER_ROW)
        rows.append([_tile(hit, f, img, f"LAST SEEN {hit.score:.2f}", "lime")
                     for f, img in zip(frames, _frames(hit.source, frames))])
    tiles = []
    for rank, hit in enumerate(answer.results, 1):
        frame = hit.boxes[len(hit.boxes) // 2].frame if hit.boxes else hit.start_frame
        tiles.append(_tile(hit, frame, _frames(hit.source, [frame])[0], f"#{rank} {hit.score:.2f}", "orange"))
    rows += [tiles[i : i + PER_ROW] for i in range(0, len(tiles), PER_ROW)]
    if not rows:
        rows = [[Image.new("RGB", (TILE_WIDTH, 60), "black")]]
        ImageDraw.Draw(rows[0][0]).text((4, 20), "no match", fill="white")
    row_heights = [max(t.height for t in row) for row in rows]
    sheet = Image.new("RGB", (TILE_WIDTH * PER_ROW, sum(row_heights)), (30, 30, 30))
    y = 0
    for row, height in zip(rows, row_heights):
        for i, tile in enumerate(row):
            sheet.paste(tile, (i * TILE_WIDTH, y))
        y += height
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    sheet.save(tmp, format="PNG")
    tmp.replace(out)
    return out
