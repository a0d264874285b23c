"""A store that grows past the threshold: compressed in one atomic write, checked cheaply on open
and fully by `check`, still written to (list by list) and repaired; "last seen" from the videos'
id blocks; the list files are FAISS's own layout, each list in id order, then the fine codes; bulk builds stream."""

from pathlib import Path

import numpy as np
import pytest

import vqsearch.store as store_module
from test_store import _indexed, video_files  # noqa: F401 (a fixture)
from vqsearch import fine_codes, vector_index
from vqsearch.errors import VQSearchError
from vqsearch.list_file import GrowingLists
from vqsearch.list_walk import Walk
from vqsearch.store import BulkVideo, Store
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


def test_open_checks_a_compressed_file_by_its_count_and_check_by_its_ids(grown, monkeypatch):
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
    monkeypatch.setattr(store_module, "CHECKED_IDS", 7)  # the tracks' ids compared a part at a time
    moved.reset()
    moved.add_with_ids(vector_index.vectors_of(index, ids), np.where(ids > 50, ids + 1000, ids))
    faiss.write_index(moved, str(path))
    assert Store.open(grown, verify=False).health().problems == [
        "text-2.faiss holds the vectors of 10 ids that are no track's, in place of 10 tracks'"]
    moved.reset()
    moved.add_with_ids(vector_index.vectors_of(index, ids), ids + 1000)
    moved.remove_ids(np.array([1001], np.int64))
    faiss.write_index(moved, str(path))
    with pytest.raises(VQSearchError, match="text-2.faiss holds 59 vectors for 60 tracks"):
        Store.open(grown)
    done = Store.open(grown, verify=False).repair()  # no file left holds the tracks' text vectors
    assert [tracks for _, tracks in done.lost] == [30, 30] and Store.open(grown).health().problems == []


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _lists_ascending(index) -> bool:
    import faiss

    return all(np.all(np.diff(faiss.rev_swig_ptr(index.invlists.get_ids(i), size)) > 0)
               for i in range(index.nlist) if (size := index.invlists.list_size(i)) > 1)


def test_a_list_file_is_faiss_own_layout_with_each_list_in_id_order(tmp_path):
    import faiss

    rng = np.random.default_rng(0)
    vectors, ids = _unit(rng.normal(size=(3000, 16))), rng.permutation(3000).astype(np.int64) + 1
    trained = vector_index.trained_index(vectors, 1000)  # 64 lists
    growing = GrowingLists(faiss.clone_index(trained), tmp_path / "spill")
    for part in np.array_split(np.arange(3000), 7):  # ids in no order: each list is written ascending
        growing.add_with_ids(vectors[part], ids[part])
    growing.write(tmp_path / "grown.faiss")
    order = np.argsort(ids)
    trained.add_with_ids(vectors[order], ids[order])
    faiss.write_index(trained, str(tmp_path / "faiss.faiss"))
    grown, own = (tmp_path / "grown.faiss").read_bytes(), (tmp_path / "faiss.faiss").read_bytes()
    assert grown[:len(own)] == own  # then the fine codes and their trailer, which FAISS does not read
    assert len(grown) == len(own) + 3000 * fine_codes.fine_size(16) + fine_codes.TRAILER.size
    assert not any((tmp_path / "spill").iterdir())  # the spilled rows were consumed

    changed = GrowingLists(_read(tmp_path / "grown.faiss"), tmp_path / "spill")
    changed.remove_ids(np.arange(1, 101))
    changed.add_with_ids(vectors[:10], np.arange(5001, 5011))
    assert changed.ntotal == 2910
    changed.write(tmp_path / "changed.faiss")
    index = _read(tmp_path / "changed.faiss")
    assert index.ntotal == 2910 and _lists_ascending(index)
    assert set(vector_index.stored_ids(index).tolist()) == set(range(101, 3001)) | set(range(5001, 5011))
    found, sims = vector_index.nearest(index, vectors[0], 1)
    assert found[0] in (ids[0], 5001) and sims[0] > 0.99  # the same vector, stored twice
    exact = dict(zip(ids.tolist(), vectors)) | dict(zip(range(5001, 5011), vectors[:10]))
    shortlist = Walk(index, vectors[0]).shortlist(2000)  # the fine codes kept through the change, and the new ones'
    truth = np.stack([exact[i] for i in shortlist.ids.tolist()]) @ vectors[0]
    assert np.abs(shortlist.fine - truth).mean() < 0.4 * np.abs(shortlist.sims - truth).mean()


def _read(path: Path):
    """A compressed file as the store reads it: memory-mapped, with its fine codes."""
    import faiss

    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
    fine_codes.attach(index, path)
    return index


def test_a_walk_finds_what_a_range_search_of_every_list_finds(tmp_path):
    import faiss

    rng = np.random.default_rng(1)
    vectors = _unit(rng.normal(size=(3000, 16)))
    index = vector_index.trained_index(vectors, 1000)  # 64 lists
    index.add_with_ids(vectors, np.arange(1, 3001))
    index.nprobe = index.nlist
    query = vectors[5]
    _, sims, ids = index.range_search(query[None], 0.3)
    walk = Walk(index, query)
    assert sorted(walk.within(0.3, 0.0)[0].tolist()) == sorted(ids.tolist())
    block = walk.blocks(0.3, [(1001, 2000)])[0]
    assert sorted(block.tolist()) == sorted(i for i in ids.tolist() if 1001 <= i <= 2000)
    unordered = Walk(index, query, in_id_order=False)  # a store written before: every id checked
    assert sorted(unordered.blocks(0.3, [(1001, 1500), (1501, 2000)])[0].tolist()) == sorted(block.tolist())
    shortlist = walk.shortlist(512)
    near, near_sims = vector_index.nearest(index, query, 512)
    assert shortlist.ids.tolist() == near.tolist() and np.allclose(shortlist.sims, near_sims)
    radius = float(shortlist.sims[-1]) + 1e-3  # the shortlist holds every track at this radius or more
    assert shortlist.holds_all_from(radius) and not shortlist.holds_all_from(0.0)
    taken = walk.within(radius, 0.0, known=shortlist)
    assert sorted(taken[0].tolist()) == sorted(walk.within(radius, 0.0)[0].tolist())


def test_a_compressed_store_is_written_again_list_by_list(grown, video_files):  # noqa: F811
    third = video_files[0].with_name("c.mp4")
    third.write_bytes(b"not decoded")
    Store.open(grown).add_video("m", "c.mp4", _indexed(third, 25, 2))
    store = Store.open(grown)
    index = store.vectors().visual
    assert index.ntotal == 85 and _lists_ascending(index) and store.health().problems == []
    assert store.health().files == ["visual-3.faiss", "text-3.faiss", "colour-3.faiss"]
    assert not (grown / ".spill").exists() and store.lists_in_id_order()
    assert store.latest_block(np.array([3, 70])) == (61, 85)  # c.mp4 is the newest


def _bulk_videos(videos: int, tracks: int) -> list[BulkVideo]:
    rng = np.random.default_rng(2)
    made = []
    for number in range(videos):
        path = f"/videos/{number}.mp4"
        made.append(BulkVideo(
            {"path": path, "abs_path": path, "fingerprint": "0:0", "frames": tracks + 10, "fps": 5.0, "width": 64,
             "height": 48, "sample_fps": 5.0, "frames_sampled": tracks + 10, "patch_tokens": 0,
             "region_tokens": tracks, "recorded_at": float(number)},
            np.arange(tracks), np.arange(tracks) + 5, np.zeros((tracks, 2, 5)),
            {"visual": _unit(rng.normal(size=(tracks, 16))), "text": _unit(rng.normal(size=(tracks, 8))),
             "colour": rng.random((tracks, 11)).astype(np.float32)}))
    return made


def bulk_build(db: str | Path) -> Store:
    """A compressed store of 3 videos of 400 tracks built by `add_many`, as bench scale builds."""
    videos = _bulk_videos(3, 400)
    training = {kind: np.concatenate([video.vectors[kind] for video in videos]) for kind in videos[0].vectors}
    store = Store.open(db, create=True)
    store.add_many("m", iter(videos), 1200, training, compress_from=1000)
    return store


def test_add_many_streams_a_compressed_store(tmp_path):
    store = bulk_build(tmp_path / "db")
    assert is_compressed(store.vectors().visual) and store.vectors().text.ntotal == 1200
    assert store.health().problems == [] and not (tmp_path / "db" / ".spill").exists()
    assert store.latest_track(np.array([5, 401, 1190]), np.ones(3)) == 1190
    assert store.later_blocks(np.array([5, 10])) == [(401, 1200)]  # the videos recorded after: one run
    assert store.later_blocks(np.array([5, 900])) == []


def test_last_seen_of_a_compressed_store_finds_a_chance_match_in_a_far_list(tmp_path):
    """The margin rule passes chance matches anywhere; when one in the latest likely video ends
    last it is the answer, whichever list holds it (`Walk.blocks` searches them all: the lists
    around the query hold chance matches no more densely than the rest, so a walk stops at 16)."""
    from types import SimpleNamespace

    from queries.engine import QueryEngine
    from vqsearch.models.base import ModelConfig

    videos = _bulk_videos(3, 1000)  # 128 lists: more than a shortlist probes
    rng = np.random.default_rng(3)
    query = _unit(rng.normal(size=(1, 16)))[0]
    for video in videos:  # the other tracks: half of them chance matches (0.3-0.5), in every list
        other = rng.normal(size=(1000, 16))
        other = _unit(other - (other @ query)[:, None] * query)
        part = rng.uniform(0.3, 0.5, (1000, 1))
        video.vectors["visual"][:] = part * query + np.sqrt(1 - part**2) * other
        video.vectors["visual"][10:40] = _unit(query + 0.05 * rng.normal(size=(30, 16)))  # the object
    last = videos[-1].vectors["visual"][-1]  # ends last: a chance match too weak for the shortlist
    last[:] = 0.41 * query + np.sqrt(1 - 0.41**2) * _unit((last - (last @ query) * query)[None])[0]
    training = {kind: np.concatenate([video.vectors[kind] for video in videos]) for kind in videos[0].vectors}
    store = Store.open(tmp_path / "db", create=True)
    store.add_many("m", iter(videos), 3000, training, compress_from=1000)
    config = ModelConfig(name="m", visual_threshold=0.4, visual_video_share=0.8)
    engine = QueryEngine(Store.open(tmp_path / "db"), SimpleNamespace(config=config))
    last, _ = engine.answer({"visual": query})
    assert last.track_id == 3000
