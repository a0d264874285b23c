"""Build a small, real VQ2D-format benchmark from DAVIS 2016 val sequences.

The Ego4D VQ2D data is licensed and ~9 TB, so the benchmark runner is exercised on episodes we
make: DAVIS sequences are resampled to the clip rate and concatenated so that one target object
appears (first part of its sequence), leaves for three or four other sequences (one of its own
kind when there is one), and reappears briefly (3-6 frames of a later part of its sequence),
sometimes followed by a few frames of something else before the query frame. The query asks for
that last reappearance, with a visual crop taken from the first appearance, as in real VQ2D
queries. Boxes come from the per-frame DAVIS masks, so the ground truth is real.

Output (``out_dir``): ``clips/<clip_uid>.mp4`` (H.264, yuv420p, written with PyAV) and
``vq_davis.json`` in the official VQ2D annotation layout (see docs/design.md).
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import av
import numpy as np
from PIL import Image

from queries.vq2d.formats import write_json_atomic

VERSION = "davis2016-val-vq2d-2"
ANNOTATION_FILE = "vq_davis.json"
CLIPS_DIR = "clips"

# What the single annotated foreground object of each DAVIS 2016 val sequence is. The mask
# covers rider and vehicle together where there is one, so the title names both.
OBJECT_TITLES: dict[str, str] = {
    "blackswan": "black swan",
    "bmx-trees": "bmx rider",
    "camel": "camel",
    "car-roundabout": "car",
    "car-shadow": "car",
    "cows": "cow",
    "dance-twirl": "dancer",
    "dog": "dog",
    "goat": "goat",
    "horsejump-high": "horse and rider",
    "kite-surf": "kite surfer",
    "libby": "dog",
    "paragliding-launch": "paraglider",
    "scooter-black": "scooter rider",
    "soapbox": "soapbox cart",
}

# What kind of thing each sequence shows: distractors of the target's kind are the hard ones.
OBJECT_KINDS: dict[str, str] = {
    "blackswan": "bird",
    "bmx-trees": "rider",
    "camel": "hoofed animal",
    "car-roundabout": "car",
    "car-shadow": "car",
    "cows": "hoofed animal",
    "dance-twirl": "person",
    "dog": "dog",
    "goat": "hoofed animal",
    "horsejump-high": "rider",
    "kite-surf": "person",
    "libby": "dog",
    "paragliding-launch": "person",
    "scooter-black": "rider",
    "soapbox": "rider",
}

Box = tuple[int, int, int, int]  # x, y, width, height (pixels, inclusive extent)


@dataclass(frozen=True)
class Segment:
    """A run of resampled source frames of one DAVIS sequence placed in a clip."""

    sequence: str
    source_frames: tuple[int, ...]  # indices into the sequence's sorted frame files
    role: str  # "first" (target), "distractor", "last" (target; the response track), "after"


@dataclass(frozen=True)
class EpisodePlan:
    """Which source frames make up one clip, in order; pure data so tests can check it."""

    video_uid: str
    clip_uid: str
    target: str
    segments: tuple[Segment, ...]

    @property
    def num_frames(self) -> int:
        return sum(len(s.source_frames) for s in self.segments)

    def clip_range(self, index: int) -> range:
        """Clip frame numbers covered by segment ``index``."""
        start = sum(len(s.source_frames) for s in self.segments[:index])
        return range(start, start + len(self.segments[index].source_frames))


def object_title(sequence: str) -> str:
    """Name of the object in ``sequence``; explicit table, falling back to the name's words."""
    return OBJECT_TITLES.get(sequence, sequence.split("-")[0].replace("_", " "))


def object_kind(sequence: str) -> str:
    """The kind of object in ``sequence`` (its title when the table does not know it)."""
    return OBJECT_KINDS.get(sequence, object_title(sequence))


def frame_paths(davis_root: Path, sequence: str) -> tuple[list[Path], list[Path]]:
    """Sorted (JPEG, mask PNG) paths of a sequence; they must pair up one to one."""
    images = sorted((davis_root / "JPEGImages" / "480p" / sequence).glob("*.jpg"))
    masks = sorted((davis_root / "Annotations" / "480p" / sequence).glob("*.png"))
    if [p.stem for p in images] != [p.stem for p in masks]:
        raise ValueError(f"{sequence}: JPEG frames and masks do not pair up")
    return images, masks


def list_sequences(davis_root: Path) -> list[str]:
    """Sequences that have both frames and masks, sorted so plans do not depend on fs order."""
    image_dir = davis_root / "JPEGImages" / "480p"
    mask_dir = davis_root / "Annotations" / "480p"
    if not image_dir.is_dir() or not mask_dir.is_dir():
        raise FileNotFoundError(f"not a DAVIS root (no JPEGImages/480p, Annotations/480p): {davis_root}")
    return sorted(p.name for p in image_dir.iterdir() if p.is_dir() and (mask_dir / p.name).is_dir())


def frame_step(fps: float, source_fps: float) -> int:
    """Keep every Nth source frame so the clip plays at about ``fps``."""
    if fps <= 0 or source_fps <= 0:
        raise ValueError("fps and source_fps must be positive")
    return max(1, round(source_fps / fps))


def resample(num_source_frames: int, step: int) -> list[int]:
    """Source frame indices kept when taking every ``step``-th frame from the first."""
    return list(range(0, num_source_frames, step))


def mask_box(mask_path: Path) -> Box | None:
    """Tight box of the foreground (>127) pixels, or None when the mask is empty."""
    mask = np.asarray(Image.open(mask_path).convert("L")) > 127
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]), int(rows[0]), int(rows[-1])
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


def mask_area(mask_path: Path) -> int:
    """Foreground pixel count: how large the object is on that frame."""
    return int((np.asarray(Image.open(mask_path).convert("L")) > 127).sum())


def _split_target(frames: list[int], reappear: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """First part (25-40 % of the target's frames: the crop comes from here) and a short later run
    of `reappear` frames from the last 40 %, at least one frame after the first part, so the object
    has visibly moved on when it is seen again."""
    n = len(frames)
    first_len = rng.randint(max(2, round(0.25 * n)), max(2, round(0.4 * n)))
    reappear = min(reappear, n - first_len - 1)
    if reappear < 2:
        raise ValueError(f"target needs at least 5 resampled frames, has {n}")
    lo = max(first_len + 1, round(0.6 * n) - reappear)
    start = rng.randint(min(lo, n - reappear), n - reappear)
    return frames[:first_len], frames[start:start + reappear]


def _excerpt(frames: list[int], longest: int, rng: random.Random) -> list[int]:
    """A contiguous run of at most `longest` frames: distractors need not play whole."""
    if len(frames) <= longest:
        return frames
    start = rng.randint(0, len(frames) - longest)
    return frames[start:start + longest]


def plan_episodes(
    davis_root: Path,
    episodes: int = 16,
    seed: int = 0,
    fps: float = 5.0,
    source_fps: float = 24.0,
) -> list[EpisodePlan]:
    """Choose targets and distractors for every episode; deterministic for ``seed``.

    As hard as real queries (issue 7): the crop comes from the first appearance; three or four
    other sequences follow, one of the same kind as the target whenever the data has one (another
    dog, car, rider or animal); the target then reappears for only 3-6 sampled frames; in half the
    episodes a few frames of an unrelated sequence come after that, so the query frame is not the
    reappearance's last frame. Nothing after the first appearance shares the target's kind except
    the in-between distractor, so "last seen" stays the reappearance for a text query too.
    """
    sequences = list_sequences(davis_root)
    step = frame_step(fps, source_fps)
    kept = {s: resample(len(frame_paths(davis_root, s)[0]), step) for s in sequences}
    targets = [s for s in sequences if len(kept[s]) >= 8]
    if not targets:
        raise ValueError(f"no DAVIS sequence is long enough at {fps} fps in {davis_root}")
    rng = random.Random(seed)
    order: list[str] = []
    plans: list[EpisodePlan] = []
    for i in range(episodes):
        if not order:
            order = rng.sample(targets, len(targets))
        target = order.pop(0)
        same_kind = [s for s in sequences if s != target and object_kind(s) == object_kind(target)]
        others = [s for s in sequences if object_kind(s) != object_kind(target)]
        if len(others) < 4:
            raise ValueError(f"too few distractor sequences for {target}")
        chosen = rng.sample(others, rng.choice((3, 4)) - bool(same_kind))
        if same_kind:
            chosen.insert(rng.randrange(len(chosen) + 1), rng.choice(same_kind))
        first, last = _split_target(kept[target], rng.randint(3, 6), rng)
        segments = [
            Segment(target, tuple(first), "first"),
            *(Segment(d, tuple(_excerpt(kept[d], 12, rng)), "distractor") for d in chosen),
            Segment(target, tuple(last), "last"),
        ]
        if rng.random() < 0.5:
            after = rng.choice([s for s in others if s not in chosen])
            segments.append(Segment(after, tuple(_excerpt(kept[after], rng.randint(2, 6), rng)), "after"))
        video_uid = f"davis-s{seed}-e{i:02d}"
        plans.append(EpisodePlan(video_uid, f"{video_uid}-{target}", target, tuple(segments)))
    return plans


def _box_dict(frame_number: int, box: Box, size: tuple[int, int]) -> dict:
    x, y, w, h = box
    return {
        "frame_number": frame_number,
        "x": x,
        "y": y,
        "width": w,
        "height": h,
        "original_width": size[0],
        "original_height": size[1],
    }


def episode_clip_annotation(plan: EpisodePlan, davis_root: Path, fps: float, size: tuple[int, int]) -> dict:
    """The ``clips[]`` entry of one episode: visual crop from the first part, track = last part."""
    _, target_masks = frame_paths(davis_root, plan.target)
    first_i = 0
    last_i = next(i for i, s in enumerate(plan.segments) if s.role == "last")
    first, last = plan.segments[first_i], plan.segments[last_i]
    # Largest mask area in the first appearance: a crop where the object is big and clear.
    areas = [mask_area(target_masks[f]) for f in first.source_frames]
    best = int(np.argmax(areas))
    crop_box = mask_box(target_masks[first.source_frames[best]])
    if crop_box is None:
        raise ValueError(f"{plan.target}: empty mask for the visual crop")
    track = []
    for clip_fno, src in zip(plan.clip_range(last_i), last.source_frames):
        box = mask_box(target_masks[src])
        if box is None:
            raise ValueError(f"{plan.target}: empty mask on source frame {src}")
        track.append(_box_dict(clip_fno, box, size))
    query_set = {
        "is_valid": True,
        "object_title": object_title(plan.target),
        "query_frame": plan.num_frames - 1,
        "visual_crop": _box_dict(plan.clip_range(first_i)[best], crop_box, size),
        "response_track": track,
    }
    return {
        "clip_uid": plan.clip_uid,
        "clip_fps": float(fps),
        "annotations": [{"query_sets": {"1": query_set}}],
    }


def clip_frames(plan: EpisodePlan, davis_root: Path) -> Iterable[np.ndarray]:
    """RGB frames of the clip in order, read lazily from the source JPEGs."""
    for seg in plan.segments:
        images, _ = frame_paths(davis_root, seg.sequence)
        for src in seg.source_frames:
            yield np.asarray(Image.open(images[src]).convert("RGB"))


def write_clip(frames: Iterable[np.ndarray], out_path: Path, fps: float, size: tuple[int, int]) -> int:
    """Encode RGB frames as H.264 yuv420p MP4 (decord-friendly: no B-frames); returns count."""
    width, height = size
    rate = Fraction(fps).limit_denominator(1001)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(out_path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": "18", "bf": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for rgb in frames:
            if rgb.shape[:2] != (height, width):
                raise ValueError(f"frame is {rgb.shape[1]}x{rgb.shape[0]}, expected {width}x{height}")
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = count, 1 / rate
            container.mux(stream.encode(frame))
            count += 1
        container.mux(stream.encode(None))
    return count


def _frame_size(davis_root: Path, sequences: Sequence[str]) -> tuple[int, int]:
    """(width, height) shared by all frames used; boxes are in these pixel coordinates."""
    sizes = {Image.open(frame_paths(davis_root, s)[0][0]).size for s in sequences}
    if len(sizes) != 1:
        raise ValueError(f"DAVIS sequences differ in size: {sorted(sizes)}")
    return sizes.pop()


def build_davis_episodes(
    davis_root: Path,
    out_dir: Path,
    episodes: int = 16,
    seed: int = 0,
    fps: float = 5.0,
    source_fps: float = 24.0,
    progress: bool = True,
) -> Path:
    """Write ``episodes`` clips and their VQ2D annotation file; returns the annotation path."""
    davis_root, out_dir = Path(davis_root), Path(out_dir)
    plans = plan_episodes(davis_root, episodes, seed, fps, source_fps)
    size = _frame_size(davis_root, sorted({s.sequence for p in plans for s in p.segments}))
    videos = []
    for i, plan in enumerate(plans):
        clip_path = out_dir / CLIPS_DIR / f"{plan.clip_uid}.mp4"
        written = write_clip(clip_frames(plan, davis_root), clip_path, fps, size)
        assert written == plan.num_frames
        clip = episode_clip_annotation(plan, davis_root, fps, size)
        videos.append({"video_uid": plan.video_uid, "clips": [clip]})
        if progress:
            parts = " + ".join(f"{s.sequence}[{len(s.source_frames)}]" for s in plan.segments)
            print(f"[{i + 1}/{len(plans)}] {plan.clip_uid}: {parts}", file=sys.stderr)
    ann_path = out_dir / ANNOTATION_FILE
    write_json_atomic(ann_path, {"version": VERSION, "videos": videos})
    return ann_path
