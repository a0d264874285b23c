"""Shot cuts on real frames: found at a hard cut between two real sequences, not inside real shots,
and no track (stored or answered) crosses one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED, need_shared
from indexer.shots import FrameLook, colour_distance, colour_histogram, is_cut
from vqsearch.merge import FrameRegions, TrackBuilder

DAVIS = SHARED / "data" / "davis2016-val"


def _regions(tokens: np.ndarray) -> FrameRegions:
    n = len(tokens)
    return FrameRegions(tokens, np.ones((n, 2, 2), np.float32), np.zeros((n, 2), np.float32))


def test_a_cut_ends_every_active_track():
    builder = TrackBuilder(tau=0.1)
    token = np.array([[1.0, 0.0]], np.float32)
    box = np.zeros((1, 4), np.float32)
    builder.add_frame(0, _regions(token), box)
    builder.add_frame(1, _regions(token), box)
    builder.add_frame(2, _regions(token), box, cut=True)  # the same look after a cut: a new track
    assert [t.frames for t in builder.tracks] == [[0, 1], [2]]


def test_colour_distance_bounds():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert colour_distance(colour_histogram(frame), colour_histogram(frame)) == pytest.approx(0.0, abs=1e-9)
    black, white = np.zeros_like(frame), np.full_like(frame, 255)
    assert colour_distance(colour_histogram(black), colour_histogram(white)) == pytest.approx(1.0)


@pytest.mark.slow
def test_cut_between_two_real_sequences_and_none_inside(tmp_path: Path):
    from PIL import Image

    from indexer.pipeline import index_video
    from indexer.video import probe
    from queries.vq2d.davis import frame_paths, write_clip
    from vqsearch.models.factory import create_model
    from vqsearch.store import Store

    davis = need_shared(DAVIS)
    frames = []
    for sequence in ("cows", "goat"):  # two herds on grass: a cut between similar scenes
        images, _ = frame_paths(davis, sequence)
        frames += [np.asarray(Image.open(p).convert("RGB")) for p in images[:40:5]]
    clip = tmp_path / "two-shots.mp4"
    write_clip(frames, clip, 5.0, (854, 480))
    model = create_model()
    result = index_video(model, probe(clip), 5.0)
    assert result.cuts == [(7, 8)]
    assert all(t.frames[-1] <= 7 or t.frames[0] >= 8 for t in result.tracks)
    store = Store.open(tmp_path / "db", create=True)
    store.add_video(model.name, str(clip), result)
    video = store.find_video(clip)
    assert store.shot_bounds(video, 3) == (0, 7) and store.shot_bounds(video, 12) == (8, 15)


@pytest.mark.slow
def test_no_cut_inside_the_real_sample_videos(videos: Path):
    import decord

    from indexer.video import sample_indices
    from vqsearch.models.factory import create_model

    backbone = create_model().backbone
    for name in ("02_cups.mp4", "04_coffee.mp4", "bedroom.mp4"):
        reader = decord.VideoReader(str(videos / name), num_threads=1)
        height, width = backbone.input_size(*reader[0].shape[:2])
        small = decord.VideoReader(str(videos / name), width=width, height=height, num_threads=1)
        indices = sample_indices(len(reader), reader.get_avg_fps(), 5.0)
        images = small.get_batch(indices).asnumpy()
        looks = [FrameLook.of(image, features) for image, features in zip(images, backbone.features(images))]
        assert not any(is_cut(a, b) for a, b in zip(looks, looks[1:])), name
