"""A store that grows past the threshold: compressed in one atomic write, checked cheaply on open
and fully by `check`, still written to and repaired; "last seen" from the videos' id blocks."""

import numpy as np
import pytest

import vqsearch.store as store_module
from test_store import _indexed, video_files  # noqa: F401 (a fixture)
from vqsearch import vector_index
from vqsearch.errors import VQSearchError
from vqsearch.store import Store
from vqsearch.vector_index import is_compressed


@pytest.fixture
def grown(tmp_path, video_files, monkeypatch):  # noqa: F811
    """An index of two videos (30 + 30 tracks) that crossed a threshold of 40 with the second."""
    for module in (store_module, vector_index):
        monkeypatch.setattr(module, "COMPRESS_FROM", 40)
    root = tmp_path / "db"
    store = Store.open(root, create=True)
    store.add_video("m", "a.mp4", _indexed(video_files[0], 30, 0))
    assert not is_compressed(Store.open(root).vectors().visual)
    store.add_video("m", "b.mp4", _indexed(video_files[1], 30, 1))
    return root


def test_reaching_the_threshold_compresses_every_kind_and_draws_the_background(grown, video_files):  # noqa: F811
    store = Store.open(grown)
    vectors = store.vectors()
    assert [kind for kind, index in vectors.present().items() if is_compressed(index)] == ["visual", "text", "colour"]
    assert vectors.visual.ntotal == 60 and store.health().problems == []
    assert len(store.background(["visual"])["visual"]) == 60  # a sample of 4096 holds every track of 60
    stored = _indexed(video_files[1], 30, 1).visual[4]
    assert float(store.track_vector(35) @ stored) > 0.99  # decoded from 8-bit codes
    store.remove_video(video_files[0])
    after = Store.open(grown)
    assert is_compressed(after.vectors().visual) and after.vectors().visual.ntotal == 30
    assert after.health().problems == [] and len(after.background(["text"])["text"]) == 30


def test_last_seen_maps_any_number_of_tracks_to_videos_by_their_id_blocks(grown):
    store = Store.open(grown)
    ids = np.arange(1, 61)
    scores = np.linspace(1, 0, 60)
    assert store.latest_track(ids, scores) == 60  # b.mp4 was recorded last (its file is newer or as new)
    assert store.latest_track(ids[:30], scores[:30]) == 30  # a.mp4: frames i .. i + 6, the last ends last
    assert store.latest_track(ids[:30], scores[:30], until_frame=10) == 5  # all cut at 10: the best score of those


def test_open_checks_a_compressed_file_by_its_count_and_check_by_its_ids(grown):
    import faiss

    path = grown / "text-2.faiss"
    index = faiss.read_index(str(path))
    ids = vector_index.stored_ids(index)
    moved = faiss.clone_index(index)
    moved.reset()
    moved.add_with_ids(vector_index.vectors_of(index, ids), ids + 1000)
    faiss.write_index(moved, str(path))
    Store.open(grown)  # the count is right: opening reads no ids
    assert Store.open(grown, verify=False).health().problems == [
        "text-2.faiss holds the vectors of 60 ids that are no track's, in place of 60 tracks'"]
    moved.remove_ids(np.array([1001], np.int64))
    faiss.write_index(moved, str(path))
    with pytest.raises(VQSearchError, match="text-2.faiss holds 59 vectors for 60 tracks"):
        Store.open(grown)
    done = Store.open(grown, verify=False).repair()  # no file left holds the tracks' text vectors
    assert [tracks for _, tracks in done.lost] == [30, 30] and Store.open(grown).health().problems == []
