"""What an answer is made of: hits (a track's time window and boxes) and the answer to a query.

Apart from the engine so that the stages after it (`queries.relocate`) and the views of an
answer (`queries.show`, the JSON) depend on these, not on the engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vqsearch.schema import TrackRow


@dataclass
class Box:
    frame: int
    x: float
    y: float
    width: float
    height: float


@dataclass
class Hit:
    video: str
    score: float
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    boxes: list[Box] = field(default_factory=list)
    track_id: int = 0       # the rest is for the program, not the JSON
    source: str = ""        # absolute path of the video file
    fps: float = 0.0
    video_id: int = 0

    @classmethod
    def from_track(cls, row: TrackRow, score: float, until_frame: int | None = None) -> Hit:
        """A hit for a stored track, cut at `until_frame` when only the past may be seen."""
        fps = row.video.fps
        boxes = [Box(o.frame, round(o.x, 1), round(o.y, 1), round(o.width, 1), round(o.height, 1))
                 for o in row.observations if until_frame is None or o.frame <= until_frame]
        end = boxes[-1].frame if until_frame is not None else row.end_frame
        return cls(row.video.path, round(float(score), 4), row.start_frame, end,
                   round(row.start_frame / fps, 3), round(end / fps, 3), boxes, row.id,
                   row.video.abs_path, fps, row.video_id)

    def to_json(self) -> dict:
        out = asdict(self)
        for private in ("track_id", "source", "fps", "video_id"):
            out.pop(private)
        return out


@dataclass
class Answer:
    text: str | None
    crop: str | None
    last_seen: Hit | None
    results: list[Hit]

    def to_json(self) -> dict:
        return {
            "query": {"text": self.text, "crop": self.crop},
            "last_seen": self.last_seen.to_json() if self.last_seen else None,
            "results": [hit.to_json() for hit in self.results],
        }
