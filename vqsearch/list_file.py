"""Compressed vector files written list by list, so that one of any size is built and changed
without its lists in memory.

FAISS writes an inverted file from memory (`write_index` of an index holding every list), so a
compressed store of 10M tracks (17 GB of codes) could be neither built nor changed on a machine of
24 GB. During a write, `GrowingLists` stands in for a compressed index: the vectors added are
assigned to their lists and encoded at once, by the index's own quantizer and encoder, and
spilled to files of a few lists each beside the index; the ids removed are noted. Writing it
streams list by list the lists it started from (memory-mapped) less the removed ids, then the
spilled rows of that list, in FAISS's own layout of an inverted file (its header, then "ilar"
lists), which `faiss.read_index` memory-maps as it does its own files: the bytes are those
`write_index` gives for the same index (tested), followed by the vectors' fine codes in the same
order (`fine_codes`: computed as vectors are added, from the exact vectors; a file written before
them has none, and nor has one made from it). Each list holds its ids in ascending order, so a
search of a block of ids (a video's) reads only a stretch of each list (`IDSelectorRange`).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from vqsearch.errors import VQSearchError
from vqsearch.fine_codes import FineEncoder, attached, supports, trailer

BUCKETS = 64  # spill files per kind: writing holds one in memory, about 1/64 of the codes added


def _faiss():
    import faiss

    return faiss


def header(index, ntotal: int) -> bytes:
    """FAISS's serialisation of a compressed index up to its lists, as if it held `ntotal` vectors:
    written with empty lists in place of its own (which may be memory-mapped and huge)."""
    faiss = _faiss()
    lists, owned, count = index.invlists, index.own_invlists, index.ntotal
    empty = faiss.ArrayInvertedLists(index.nlist, index.code_size)
    index.own_invlists = False
    index.replace_invlists(empty, False)
    index.ntotal = ntotal
    try:
        writer = faiss.VectorIOWriter()
        faiss.write_index(index, writer)
    finally:
        index.replace_invlists(lists, owned)
        index.ntotal = count
    data = faiss.vector_to_array(writer.data).tobytes()
    tail = b"ilar" + struct.pack("<QQ", index.nlist, index.code_size) + b"sprs" + struct.pack("<Q", 0)
    if not data.endswith(tail):
        raise VQSearchError("this FAISS writes inverted files in a layout vqsearch does not know: "
                            "install the FAISS version pyproject.toml names")
    return data[:-len(tail)]


class GrowingLists:
    """A compressed index being written: `base` (a trained index, its lists memory-mapped or
    empty) plus the vectors added, minus the ids removed (which must be base's), until `write`."""

    def __init__(self, base, spill: Path) -> None:
        self.base, self.spill = base, spill
        self.d, self.nlist, self.code_size = base.d, base.nlist, base.code_size
        self.per_bucket = -(-self.nlist // BUCKETS)
        fine = supports(base) and (not base.ntotal or attached(base) is not None)  # base's vectors all have them
        self.fine = FineEncoder(base) if fine else None
        self.row = np.dtype([("list", "<i8"), ("id", "<i8"), ("code", "u1", (self.code_size,))]
                            + ([("fine", "u1", (self.fine.size,))] if self.fine else []))
        self.added = 0
        self.per_list = np.zeros(self.nlist, np.int64)  # vectors added to each list
        self.removed = np.zeros(0, np.int64)
        spill.mkdir(parents=True, exist_ok=True)

    @property
    def ntotal(self) -> int:
        return self.base.ntotal + self.added - len(self.removed)

    def add_with_ids(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Assign and encode these vectors as `IndexIVF.add_with_ids` does, and spill them by list."""
        faiss = _faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        lists = np.ascontiguousarray(self.base.quantizer.assign(vectors, 1)[:, 0], dtype=np.int64)
        codes = np.empty((len(vectors), self.code_size), np.uint8)
        self.base.encode_vectors(len(vectors), faiss.swig_ptr(vectors), faiss.swig_ptr(lists), faiss.swig_ptr(codes))
        rows = np.empty(len(vectors), self.row)
        rows["list"], rows["id"], rows["code"] = lists, ids, codes
        if self.fine:
            rows["fine"] = self.fine.encode(vectors, lists, codes)
        self.per_list += np.bincount(lists, minlength=self.nlist)
        buckets = lists // self.per_bucket
        order = np.argsort(buckets, kind="stable")
        bounds = np.searchsorted(buckets[order], np.arange(BUCKETS + 1))
        for bucket in np.flatnonzero(np.diff(bounds)).tolist():
            with open(self._bucket(bucket), "ab") as handle:
                rows[order[bounds[bucket]:bounds[bucket + 1]]].tofile(handle)
        self.added += len(vectors)

    def remove_ids(self, ids: np.ndarray) -> None:
        self.removed = np.union1d(self.removed, np.asarray(ids, np.int64))

    def _bucket(self, number: int) -> Path:
        return self.spill / f"{number}.rows"

    def _base_list(self, number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(codes, ids, fine codes or None) of one of base's lists, views of its memory-mapped file."""
        faiss = _faiss()
        lists = self.base.invlists
        size = lists.list_size(number)
        if not size:
            return (np.zeros((0, self.code_size), np.uint8), np.zeros(0, np.int64),
                    np.zeros((0, self.fine.size), np.uint8) if self.fine else None)
        codes = faiss.rev_swig_ptr(lists.get_codes(number), size * self.code_size).reshape(size, self.code_size)
        held = attached(self.base) if self.fine else None
        fine = None if held is None else held.codes[held.list_start[number]:held.list_start[number] + size]
        return codes, faiss.rev_swig_ptr(lists.get_ids(number), size), fine

    def _sizes(self) -> np.ndarray:
        """How many vectors each list of the written file holds: base's, less those removed, plus those added."""
        sizes = np.array([self.base.invlists.list_size(i) for i in range(self.nlist)], np.int64) + self.per_list
        if len(self.removed):
            for number in np.flatnonzero(sizes).tolist():
                sizes[number] -= int(np.isin(self._base_list(number)[1], self.removed).sum())
        return sizes

    def write(self, path: Path) -> None:
        """Write the index to `path`, list by list (then the fine codes, in the same order, through a
        second handle at their known place); the spilled rows are consumed (write once)."""
        sizes = self._sizes()
        with open(path, "wb") as out, open(path, "r+b") as fine_out:
            out.write(header(self.base, self.ntotal))
            out.write(b"ilar" + struct.pack("<QQ", self.nlist, self.code_size))
            out.write(b"full" + struct.pack("<Q", self.nlist))
            out.write(sizes.astype(np.uint64).tobytes())
            fine_start = out.tell() + int(sizes.sum()) * (self.code_size + 8)
            fine_out.seek(fine_start)
            for bucket in range(BUCKETS):
                first = bucket * self.per_bucket
                lists = range(first, min(first + self.per_bucket, self.nlist))
                spilled = self._bucket(bucket)
                rows = np.fromfile(spilled, self.row) if spilled.exists() else np.zeros(0, self.row)
                spilled.unlink(missing_ok=True)
                rows = rows[np.argsort(rows["list"], kind="stable")]
                bounds = np.searchsorted(rows["list"], np.arange(first, first + len(lists) + 1))
                for slot, number in enumerate(lists):
                    codes, ids, fine = self._base_list(number)
                    new = rows[bounds[slot]:bounds[slot + 1]]
                    parts = [np.concatenate([codes, new["code"]]), np.concatenate([ids, new["id"]])]
                    if self.fine:
                        parts.append(np.concatenate([fine, new["fine"]]))
                    if len(self.removed):
                        kept = ~np.isin(parts[1], self.removed)
                        parts = [part[kept] for part in parts]
                    if np.any(parts[1][1:] < parts[1][:-1]):  # a search of a block of ids reads a stretch of each list
                        order = np.argsort(parts[1], kind="stable")
                        parts = [part[order] for part in parts]
                    if len(parts[1]) != sizes[number]:
                        raise VQSearchError(f"{path.name}: list {number} holds {len(parts[1])} vectors, "
                                            f"{sizes[number]} were counted")
                    out.write(parts[0].tobytes())
                    out.write(parts[1].tobytes())
                    if self.fine:
                        fine_out.write(parts[2].tobytes())
            if self.fine:
                fine_out.write(trailer(fine_start, self.fine.size))
        if int(sizes.sum()) != self.ntotal:
            raise VQSearchError(f"{path.name}: {int(sizes.sum())} vectors written for {self.ntotal}: removed ids "
                                "that the index does not hold")
