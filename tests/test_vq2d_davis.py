"""The DAVIS VQ2D builder writes real episodes whose annotation matches the clips and masks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from queries.vq2d.davis import (
    OBJECT_KINDS,
    OBJECT_TITLES,
    EpisodePlan,
    build_davis_episodes,
    object_kind,
    plan_episodes,
)

DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016-val"
EPISODES, SEED, FPS = 3, 0, 5.0
BOX_KEYS = {"frame_number", "x", "y", "width", "height", "original_width", "original_height"}


def _require_davis() -> None:
    """Skip without the data, except in CI where missing data is a failure."""
    if not DAVIS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"DAVIS data missing in CI: {DAVIS}")
        pytest.skip(f"DAVIS data not found: {DAVIS}")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    _require_davis()
    out = tmp_path_factory.mktemp("vq_davis")
    ann_path = build_davis_episodes(DAVIS, out, episodes=EPISODES, seed=SEED, fps=FPS, progress=False)
    return ann_path, json.loads(ann_path.read_text())


@pytest.fixture(scope="module")
def plans() -> dict[str, EpisodePlan]:
    _require_davis()
    return {p.clip_uid: p for p in plan_episodes(DAVIS, episodes=EPISODES, seed=SEED, fps=FPS)}


def _clips(ann: dict) -> list[dict]:
    return [clip for video in ann["videos"] for clip in video["clips"]]


def _query(clip: dict) -> dict:
    return clip["annotations"][0]["query_sets"]["1"]


def _source_box(sequence: str, index: int) -> tuple[int, int, int, int]:
    """Box of a DAVIS mask computed here independently: x, y, width, height."""
    path = sorted((DAVIS / "Annotations" / "480p" / sequence).glob("*.png"))[index]
    ys, xs = np.nonzero(np.asarray(Image.open(path)) > 127)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def _source_rgb(sequence: str, index: int) -> np.ndarray:
    path = sorted((DAVIS / "JPEGImages" / "480p" / sequence).glob("*.jpg"))[index]
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def _clip_rgb(ann_path: Path, clip_uid: str) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(ann_path.parent / "clips" / f"{clip_uid}.mp4"))
    return reader.get_batch(list(range(len(reader)))).asnumpy().astype(np.float32)


def _box(entry: dict) -> tuple[int, int, int, int]:
    return entry["x"], entry["y"], entry["width"], entry["height"]


def test_annotation_has_official_vq2d_layout(built: tuple[Path, dict], plans: dict[str, EpisodePlan]) -> None:
    _, ann = built
    assert set(ann) == {"version", "videos"} and isinstance(ann["version"], str)
    assert len(ann["videos"]) == EPISODES
    for video in ann["videos"]:
        assert set(video) == {"video_uid", "clips"} and len(video["clips"]) == 1
        clip = video["clips"][0]
        assert set(clip) == {"clip_uid", "clip_fps", "annotations"} and clip["clip_fps"] == FPS
        assert len(clip["annotations"]) == 1 and set(clip["annotations"][0]) == {"query_sets"}
        assert set(clip["annotations"][0]["query_sets"]) == {"1"}
        query = _query(clip)
        assert set(query) == {"is_valid", "object_title", "query_frame", "visual_crop", "response_track"}
        assert query["is_valid"] is True
        assert query["object_title"] == OBJECT_TITLES[plans[clip["clip_uid"]].target]
        for box in [query["visual_crop"], *query["response_track"]]:
            assert set(box) == BOX_KEYS
            assert (box["original_width"], box["original_height"]) == (854, 480)
            assert box["width"] > 0 and box["height"] > 0
            assert 0 <= box["x"] and box["x"] + box["width"] <= 854
            assert 0 <= box["y"] and box["y"] + box["height"] <= 480


def test_clips_read_back_with_decord(built: tuple[Path, dict], plans: dict[str, EpisodePlan]) -> None:
    import decord

    ann_path, ann = built
    for clip in _clips(ann):
        reader = decord.VideoReader(str(ann_path.parent / "clips" / f"{clip['clip_uid']}.mp4"))
        query = _query(clip)
        assert len(reader) == query["query_frame"] + 1 == plans[clip["clip_uid"]].num_frames
        assert query["response_track"][-1]["frame_number"] <= query["query_frame"]
        assert reader.get_avg_fps() == pytest.approx(FPS)
        assert reader[0].shape == (480, 854, 3)


def test_response_track_is_last_appearance_with_mask_boxes(
    built: tuple[Path, dict], plans: dict[str, EpisodePlan]
) -> None:
    ann_path, ann = built
    for clip in _clips(ann):
        plan, track = plans[clip["clip_uid"]], _query(clip)["response_track"]
        at = [s.role for s in plan.segments].index("last")
        first, last = plan.segments[0], plan.segments[at]
        assert first.sequence == last.sequence == plan.target
        assert max(first.source_frames) < min(last.source_frames)  # a later part of the sequence
        assert 3 <= len(track) <= 6  # a short reappearance
        assert [t["frame_number"] for t in track] == list(plan.clip_range(at))
        assert [_box(t) for t in track] == [_source_box(plan.target, i) for i in last.source_frames]
        # The clip really shows those source frames there, and something else just before.
        frames = _clip_rgb(ann_path, clip["clip_uid"])
        for t, src in zip(track, last.source_frames):
            assert np.abs(frames[t["frame_number"]] - _source_rgb(plan.target, src)).mean() < 6
        before = plan.segments[at - 1]
        gap = np.abs(frames[track[0]["frame_number"] - 1] - _source_rgb(before.sequence, before.source_frames[-1]))
        assert gap.mean() < 6 and before.sequence != plan.target


def test_visual_crop_is_from_first_appearance(built: tuple[Path, dict], plans: dict[str, EpisodePlan]) -> None:
    _, ann = built
    for clip in _clips(ann):
        plan, query = plans[clip["clip_uid"]], _query(clip)
        crop, track_start = query["visual_crop"], query["response_track"][0]["frame_number"]
        first = plan.clip_range(0)
        assert crop["frame_number"] in first and crop["frame_number"] < track_start
        source = plan.segments[0].source_frames[crop["frame_number"] - first.start]
        assert _box(crop) == _source_box(plan.target, source)
        between = [s for s in plan.segments if s.role == "distractor"]
        assert 3 <= len(between) <= 4
        assert all(s.sequence != plan.target for s in between)
        # one distractor of the target's own kind where the data has one; nothing of its kind after
        kin = {s for s, kind in OBJECT_KINDS.items() if kind == object_kind(plan.target)} - {plan.target}
        assert sum(s.sequence in kin for s in between) == (1 if kin else 0)
        after = [s for s in plan.segments if s.role == "after"]
        assert plan.segments[-1].role in ("last", "after") and len(after) <= 1
        assert all(object_kind(s.sequence) != object_kind(plan.target) for s in after)


def test_deterministic_for_a_seed(built: tuple[Path, dict], tmp_path: Path) -> None:
    ann_path, _ = built
    again = build_davis_episodes(DAVIS, tmp_path, episodes=EPISODES, seed=SEED, fps=FPS, progress=False)
    assert again.read_text() == ann_path.read_text()
    assert plan_episodes(DAVIS, EPISODES, SEED) == plan_episodes(DAVIS, EPISODES, SEED)
    assert plan_episodes(DAVIS, 4, SEED) != plan_episodes(DAVIS, 4, SEED + 1)


def test_every_davis_sequence_has_a_title() -> None:
    _require_davis()
    sequences = sorted(p.name for p in (DAVIS / "Annotations" / "480p").iterdir() if p.is_dir())
    assert sequences and set(sequences) <= set(OBJECT_TITLES)
