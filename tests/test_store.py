"""The store: no duplicates on re-index, remove, one model per index, atomic writes."""

from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer.pipeline import IndexedVideo
from indexer.video import VideoInfo
from vqsearch.errors import VQSearchError
from vqsearch.merge import FrameRegions, Track
from vqsearch.store import Store


def _indexed(path: Path, tracks: int, seed: int, text: bool = True) -> IndexedVideo:
    rng = np.random.default_rng(seed)
    visual = rng.normal(size=(tracks, 8)).astype(np.float32)
    visual /= np.linalg.norm(visual, axis=1, keepdims=True)
    made = []
    for i in range(tracks):
        track = Track(np.zeros(8, np.float32))
        regions = FrameRegions(visual[i:i + 1], np.ones((1, 2, 2), np.float32), np.zeros((1, 2), np.float32))
        for frame in (i, i + 6):
            track.add(frame, regions, 0, np.array([10.0 * i, 5.0, 20.0, 30.0]))
        made.append(track)
    text_vectors = visual[:, :4] / np.linalg.norm(visual[:, :4], axis=1, keepdims=True) if text else None
    info = VideoInfo(path, 100, 25.0, 64, 48)
    colours = np.tile(rng.dirichlet(np.ones(11), size=tracks), 2).astype(np.float32)
    return IndexedVideo(info, 5.0, 20, 20 * 12, tracks * 3, made, visual, text_vectors, colours, 0.1)


@pytest.fixture
def video_files(tmp_path):
    paths = []
    for name in ("a.mp4", "b.mp4"):
        path = tmp_path / name
        path.write_bytes(b"not decoded by these tests")
        paths.append(path)
    return paths


def _state(store: Store):
    vectors = store.vectors()
    return ([(v.path, n) for v, n in store.videos()],
            None if vectors is None else (vectors.visual.ntotal, vectors.text.ntotal))


def test_add_reindex_remove(tmp_path, video_files):
    store = Store.open(tmp_path / "db", create=True)
    store.add_video("m", "a.mp4", _indexed(video_files[0], 3, 0))
    store.add_video("m", "b.mp4", _indexed(video_files[1], 2, 1))
    store.add_video("m", "a.mp4", _indexed(video_files[0], 4, 2))  # re-index replaces, never duplicates
    reopened = Store.open(tmp_path / "db")
    assert _state(reopened) == ([("b.mp4", 2), ("a.mp4", 4)], (6, 6))
    rows = reopened.tracks(reopened.track_ids(reopened.find_video(video_files[0])))
    assert sorted(len(r.observations) for r in rows.values()) == [2, 2, 2, 2]
    assert reopened.remove_video(video_files[1]) is True
    assert reopened.remove_video(video_files[1]) is False
    again = Store.open(tmp_path / "db")
    assert _state(again) == ([("a.mp4", 4)], (4, 4))
    ids = set(again.track_ids(again.find_video(video_files[0])))
    assert again.track_ids(started_by=2) == sorted(ids)[:3]
    _, found = again.vectors().visual.search(np.ones((1, 8), np.float32), 10)
    assert set(found[0][found[0] >= 0].tolist()) == ids
    assert sorted(p.name for p in (tmp_path / "db").glob("*.faiss")) == ["colour-4.faiss", "text-4.faiss", "visual-4.faiss"]


def test_one_model_per_index(tmp_path, video_files):
    store = Store.open(tmp_path / "db", create=True)
    store.add_video("m", "a.mp4", _indexed(video_files[0], 2, 0))
    with pytest.raises(VQSearchError, match="built with model 'm'"):
        store.check_model("other")
    with pytest.raises(VQSearchError, match="built with model 'm'"):
        store.add_video("other", "b.mp4", _indexed(video_files[1], 2, 1))
    assert _state(Store.open(tmp_path / "db")) == ([("a.mp4", 2)], (2, 2))


def test_failed_write_leaves_previous_index_whole(tmp_path, video_files, monkeypatch):
    store = Store.open(tmp_path / "db", create=True)
    store.add_video("m", "a.mp4", _indexed(video_files[0], 3, 0))
    before = _state(Store.open(tmp_path / "db"))
    real_write = faiss.write_index

    def crash_on_text(index, path):
        if "text" in Path(path).name:
            raise OSError("disk full")
        real_write(index, path)

    monkeypatch.setattr(faiss, "write_index", crash_on_text)
    with pytest.raises(OSError):
        store.add_video("m", "b.mp4", _indexed(video_files[1], 2, 1))
    with pytest.raises(OSError):
        store.remove_video(video_files[0])
    monkeypatch.setattr(faiss, "write_index", real_write)
    assert _state(Store.open(tmp_path / "db")) == before
    assert sorted(p.name for p in (tmp_path / "db").iterdir() if "faiss" in p.name) == [
        "colour-1.faiss", "text-1.faiss", "visual-1.faiss"]


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(VQSearchError, match="no index at"):
        Store.open(tmp_path / "nowhere")
