"""Searches of a compressed index that walk its lists nearest first: a query's shortlist of nearest
tracks and, without a cap, every track at a score or more (`within`), each list scanned once; and
every track of some blocks of ids at a score or more, in every list (`blocks`).

A `Walk` ranks every list by its centroid's similarity to the query, once. Its shortlist is the k
nearest tracks of its first lists (`depth`), each with the rank of its list (FAISS's store pairs).
When those lists hold fewer than k tracks, or the k-th is below a score, the shortlist holds every
track of those lists at that score or more, and `within` takes its first steps from it rather than
scanning the same lists again (a nearest-neighbour scan of 64 lists was most of a query's time).
The shortlist's tracks are also scored with their fine codes when the file holds them
(`fine_codes`): what ranks them, while the walk itself goes by the codes' scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vqsearch.fine_codes import attached

NPROBE = 64  # lists a nearest-neighbour search probes: recall@10 0.93 at 16, 0.95 at 32, 0.96 at 64 (100k tracks)
PROBED_TRACKS = 16_384  # ... or fewer, down to 32, when fewer hold this many tracks


def depth(index) -> int:
    """Lists a shortlist probes: NPROBE, or as few as hold PROBED_TRACKS tracks, at least 32 (the
    probe is most of a query's time). Recall@10 (visual / text, fine codes) at 10M (8,192 lists of
    1,220: 32 probed) 0.978 / 0.986 at 32, 48 and 64 lists; at 1M (2,048 of 490: 34 probed) 0.978 /
    0.980, against 0.980 / 0.984 at 64; 100k (512 of 195) probes 64."""
    held = -(-PROBED_TRACKS * index.nlist // max(index.ntotal, 1))
    return int(min(index.nlist, max(NPROBE // 2, min(NPROBE, held))))
RANGE_NPROBE = 16  # lists a range search probes first, before it deepens


@dataclass
class Shortlist:
    """The nearest tracks of a walk's first `depth` lists, best first, and their lists' ranks."""

    ids: np.ndarray
    sims: np.ndarray  # by the 8-bit codes, as the walk's range searches score
    fine: np.ndarray  # by the fine codes too when the file holds them (else `sims`): what ranks them
    ranks: np.ndarray
    depth: int
    full: bool  # as many tracks as asked for: lists may hold more beyond the last

    def holds_all_from(self, radius: float) -> bool:
        """Whether every track of its lists at `radius` or more is here."""
        return not self.full or float(self.sims[-1]) < radius


class Walk:
    """One query's walk through a compressed index's lists, nearest first."""

    def __init__(self, index, query: np.ndarray, in_id_order: bool = True) -> None:
        self.index, self.in_id_order = index, in_id_order  # whether each list holds its ids ascending
        self.query = np.ascontiguousarray(query[None], dtype=np.float32)
        self.coarse, self.lists = index.quantizer.search(self.query, index.nlist)
        self.rank = np.empty(index.nlist, np.int64)
        self.rank[self.lists[0]] = np.arange(index.nlist)

    @staticmethod
    def _params(count: int, selector=None):
        import faiss

        return faiss.SearchParametersIVF(nprobe=count, sel=selector)

    def shortlist(self, k: int, selector=None) -> Shortlist:
        """The `k` nearest tracks of the first `depth` lists (of those `selector` selects), by their codes."""
        import faiss

        probed = depth(self.index)
        sims, pairs = np.empty((1, k), np.float32), np.empty((1, k), np.int64)
        self.index.search_preassigned_c(
            1, faiss.swig_ptr(self.query), k, faiss.swig_ptr(np.ascontiguousarray(self.lists[:, :probed])),
            faiss.swig_ptr(np.ascontiguousarray(self.coarse[:, :probed])), faiss.swig_ptr(sims),
            faiss.swig_ptr(pairs), True, self._params(probed, selector))
        pairs = pairs[0][pairs[0] >= 0]
        numbers, offsets = pairs >> 32, pairs & 0xFFFFFFFF
        lists = self.index.invlists
        ids = np.empty(len(pairs), np.int64)
        for number in np.unique(numbers).tolist():  # one call per list, not per track
            mine = numbers == number
            ids[mine] = faiss.rev_swig_ptr(lists.get_ids(number), lists.list_size(number))[offsets[mine]]
        sims = sims[0][:len(ids)]
        fine = attached(self.index)
        return Shortlist(ids, sims, sims if fine is None else fine.similarities(self.query[0], sims, numbers, offsets),
                         self.rank[numbers], probed, len(ids) == k)

    def within(self, radius: float, base_rate: float, known: Shortlist | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, similarities) of every track at `radius` or more: no cap on how many.

        They are found in the lists nearest the query, probing twice as many lists
        while the lists last added still hold them more densely than twice `base_rate` (the share
        of all tracks at `radius` or more, from the background sample): an object seen ten
        thousand times fills the lists around it, and the deepening stops where its lists give way
        to lists that hold only the chance matches every list holds. The steps within a `known`
        shortlist that holds them all are taken from it."""
        import faiss

        index = self.index
        known = known if known is not None and known.holds_all_from(radius) else None
        found: list[tuple[np.ndarray, np.ndarray]] = []
        start, stop = 0, RANGE_NPROBE
        while True:
            new = np.ascontiguousarray(self.lists[:, start:stop])
            if known is not None and stop <= known.depth:
                taken = (known.ranks >= start) & (known.ranks < stop) & (known.sims >= radius)
                found.append((known.ids[taken], known.sims[taken]))
            else:
                result = faiss.RangeSearchResult(1)
                index.range_search_preassigned_c(
                    1, faiss.swig_ptr(self.query), radius, faiss.swig_ptr(new),
                    faiss.swig_ptr(np.ascontiguousarray(self.coarse[:, start:stop])), result, False,
                    self._params(new.shape[1]))
                count = int(faiss.rev_swig_ptr(result.lims, 2)[1])
                found.append((faiss.rev_swig_ptr(result.labels, count).copy(),
                              faiss.rev_swig_ptr(result.distances, count).copy()))
            size = sum(index.invlists.list_size(int(number)) for number in new[0] if number >= 0)
            if stop >= index.nlist or len(found[-1][0]) <= 2 * base_rate * size:
                return np.concatenate([ids for ids, _ in found]), np.concatenate([sims for _, sims in found])
            start, stop = stop, 2 * stop

    def blocks(self, radius: float, blocks: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, similarities) of every track of these blocks of ids (first, last) at `radius` or
        more, in every list: whatever the lists, so every chance match of the margin rule is there
        too. Per block, a nearest-neighbour search for as many tracks as it holds: FAISS reads only
        the block's stretch of each list when the lists hold their ids in ascending order (a range
        search checks every id), else checks each list's ids."""
        import faiss

        found = [(np.zeros(0, np.int64), np.zeros(0, np.float32))]
        layout = attached(self.index)
        if layout is not None and blocks:  # the newest ids lie at the lists' ends
            layout.read_ahead_tails(-(-2 * sum(last - first + 1 for first, last in blocks) // self.index.nlist))
        for first, last in blocks:
            k = last - first + 1
            sims, ids = np.empty((1, k), np.float32), np.empty((1, k), np.int64)
            self.index.search_preassigned_c(
                1, faiss.swig_ptr(self.query), k, faiss.swig_ptr(self.lists), faiss.swig_ptr(self.coarse),
                faiss.swig_ptr(sims), faiss.swig_ptr(ids), False,
                self._params(self.index.nlist, faiss.IDSelectorRange(first, last + 1, self.in_id_order)))
            keep = (ids[0] >= 0) & (sims[0] >= radius)
            found.append((ids[0][keep], sims[0][keep]))
        return np.concatenate([ids for ids, _ in found]), np.concatenate([sims for _, sims in found])
