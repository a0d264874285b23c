"""Video input: sampling maps to original frame numbers; bad files fail with one clear message."""


import numpy as np
import pytest

from indexer.video import probe, sample_indices, stream
from vqsearch.errors import VQSearchError


def test_sample_indices_follow_the_original_clock():
    assert sample_indices(300, 29.97, 5.0)[:4] == [0, 6, 12, 18]
    assert sample_indices(300, 29.97, 5.0)[-1] == 299
    assert sample_indices(10, 5.0, 30.0) == list(range(10))
    with pytest.raises(VQSearchError):
        sample_indices(10, 5.0, 0.0)


def test_probe_and_stream_real_video(videos):
    info = probe(videos / "02_cups.mp4")
    assert (info.frames, info.width, info.height) == (300, 1280, 720)
    assert abs(info.fps - 29.97) < 0.01
    batches = list(stream(info, [0, 150, 299], (288, 512), batch=2))
    assert [chunk for chunk, _ in batches] == [[0, 150], [299]]
    assert batches[0][1].shape == (2, 288, 512, 3)


def test_bad_files_fail_clearly(tmp_path, videos):
    with pytest.raises(VQSearchError, match="no such video"):
        probe(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    with pytest.raises(VQSearchError, match="cannot read video"):
        probe(text)
    truncated = tmp_path / "truncated.mp4"
    data = (videos / "02_cups.mp4").read_bytes()
    truncated.write_bytes(data[: len(data) // 50])
    with pytest.raises(VQSearchError):
        info = probe(truncated)
        list(stream(info, sample_indices(info.frames, info.fps, 5.0), (288, 512)))


def test_stream_gives_decords_frames_exactly(videos, tmp_path):
    """Indexing decodes with PyAV, skipping frames nothing refers to: the frames, their numbers and
    their pixels are decord's, for a whole video at 5 fps, a segment starting mid-video, and a
    video cut short (up to its last frame)."""
    import decord

    cut_short = tmp_path / "cut_short.mp4"
    data = (videos / "02_cups.mp4").read_bytes()
    cut_short.write_bytes(data[: len(data) * 3 // 10])
    for path, allow_partial, span in ((videos / "bedroom.mp4", False, slice(None)),
                                      (videos / "bedroom.mp4", False, slice(17, 25)), (cut_short, True, slice(None))):
        info = probe(path, allow_partial=allow_partial)
        indices = sample_indices(info.frames, info.fps, 5.0)[span]
        got = [(i, frame) for chunk, frames in stream(info, indices, (288, 512), 4) for i, frame in zip(chunk, frames)]
        assert [i for i, _ in got] == indices
        expected = decord.VideoReader(str(path), width=512, height=288, num_threads=1).get_batch(indices).asnumpy()
        assert all(np.array_equal(frame, want) for (_, frame), want in zip(got, expected)), path
