"""The stored form of a kind of track vector: exact while small, a trained compressed index past a size.

Below `COMPRESS_FROM` tracks a kind is an exact flat index (`IndexIDMap2(IndexFlatIP)`): every query
scores every track, as vqsearch always did. From `COMPRESS_FROM` on it is an inverted file of 8-bit
scalar-quantised vectors (`IVF{nlist},SQ8`, FAISS's index factory, inner product), trained on a
sample of the stored vectors. Its lists are memory-mapped when read (`faiss.IO_FLAG_MMAP`), so a
query touches the lists it probes and nothing else; the ids live in the lists (no ID map to load).
A write never holds the lists in memory: it streams them into the next file (`list_file`), each
list in id order. Queries walk the lists nearest first (`list_walk`).

Each vector also has a fine code (`fine_codes`, 2 bits a dimension): the nearest tracks by their
codes are ranked by it, which keeps the near-ties of a 10M store in exact search's order.

Why SQ8: on real track tokens mixed into 200k synthetic ones it kept recall@10 0.99 against exact
search at 16 probed lists, where PQ160 (8-bit codes, 160 bytes) kept 0.82 and 4-bit PQ fast scan
or SQ4 0.5-0.8; PQ's scores are too coarse for the near-ties of an object seen often.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from vqsearch.list_file import GrowingLists
from vqsearch.list_walk import NPROBE, Walk

COMPRESS_FROM = 50_000  # tracks: from here on a kind is stored compressed
RERANKED = 64  # a compressed index's nearest tracks by their codes that their fine codes rank
TRAIN_PER_LIST = 40  # training vectors per list (FAISS warns below 39)
ALL = -1e30  # a range-search radius every inner product passes


def _faiss():
    import faiss

    return faiss


def is_compressed(index) -> bool:
    """A compressed index, or one being written (`GrowingLists`)."""
    return isinstance(index, (_faiss().IndexIVF, GrowingLists))


def list_count(tracks: int) -> int:
    """Inverted lists for a store of this many tracks: a power of two near 2 sqrt(N), at most 8192
    (50k tracks: 512 lists of ~100; 1M: 2048 of ~490; 10M: 8192 of ~1200)."""
    return int(np.clip(2 ** round(np.log2(2 * np.sqrt(max(tracks, 1)))), 16, 8192))


def training_size(tracks: int) -> int:
    """How many stored vectors train an index for this many tracks."""
    return TRAIN_PER_LIST * list_count(tracks)


def trained_index(sample: np.ndarray, tracks: int):
    """An empty compressed index for a store of `tracks`, trained on `sample` (unit vectors)."""
    faiss = _faiss()
    index = faiss.index_factory(sample.shape[1], f"IVF{list_count(tracks)},SQ8", faiss.METRIC_INNER_PRODUCT)
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.nprobe = NPROBE
    return index


def compressed_copy(flat, spill: Path, seed: int = 0) -> GrowingLists:
    """The compressed form of a flat ID-mapped index, trained on a random sample of its vectors, to
    be written (its vectors spilled to `spill`)."""
    ids = stored_ids(flat)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(flat.ntotal, min(flat.ntotal, training_size(flat.ntotal)), replace=False))
    index = GrowingLists(trained_index(flat.index.reconstruct_batch(sample), flat.ntotal), spill)
    for part in chunks(flat.ntotal, 65536):
        index.add_with_ids(flat.index.reconstruct_n(part.start, part.stop - part.start), ids[part])
    return index


def stored_form(flat, spill: Path):
    """A flat ID-mapped index as the store keeps it: itself below COMPRESS_FROM vectors, else compressed."""
    return compressed_copy(flat, spill) if flat.ntotal >= COMPRESS_FROM else flat


def stored_ids(index) -> np.ndarray:
    """Every id an index holds (for `vqsearch check` and `repair`: a compressed index reads its lists)."""
    faiss = _faiss()
    if not is_compressed(index):
        return faiss.vector_to_array(index.id_map).copy()
    lists = index.invlists
    return np.concatenate([np.zeros(0, np.int64)] + [
        faiss.rev_swig_ptr(lists.get_ids(i), size).copy()
        for i in range(index.nlist) if (size := lists.list_size(i))])


def all_vectors(index) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of everything an index holds, in its order (a compressed one decodes them)."""
    ids = stored_ids(index)
    return ids, (vectors_of(index, ids) if is_compressed(index) else index.index.reconstruct_n(0, index.ntotal))


def vectors_of(index, ids: np.ndarray) -> np.ndarray:
    """The stored vectors of these ids (a compressed index decodes them: it first maps ids to
    their lists, a pass over every list's ids, once per index)."""
    faiss = _faiss()
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if is_compressed(index) and index.direct_map.type != faiss.DirectMap.Hashtable:
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index.reconstruct_batch(ids).astype(np.float32)


def scores_of(index, query: np.ndarray, ids: np.ndarray) -> dict[int, float]:
    """{id: inner product with `query`} for these ids of a compressed index: every list is scanned
    for them (no id is missed, none decoded twice)."""
    faiss = _faiss()
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if not len(ids):
        return {}
    selector = faiss.IDSelectorBatch(ids)
    _, sims, found = index.range_search(query[None], ALL, params=faiss.SearchParametersIVF(nprobe=index.nlist, sel=selector))
    return dict(zip(found.tolist(), sims.tolist()))


def nearest(index, query: np.ndarray, k: int, selector=None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, similarities) of the `k` nearest tracks, best first (a compressed index probes the
    lists `list_walk.depth` says, and its RERANKED nearest by their codes are ranked by their fine
    codes)."""
    faiss = _faiss()
    if is_compressed(index):
        known = Walk(index, query).shortlist(max(k, RERANKED), selector)
        best = np.argsort(-known.fine, kind="stable")[:k]
        return known.ids[best], known.fine[best]
    sims, ids = index.search(query[None], k, params=selector and faiss.SearchParameters(sel=selector))
    keep = ids[0] >= 0
    return ids[0][keep], sims[0][keep]


def chunks(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))
