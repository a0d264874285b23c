"""The index: track vectors in FAISS, videos / tracks / per-frame observations in SQLite (or on
PostgreSQL: `vqsearch.database` says where `--db` puts them).

Layout of a database directory:
  index.sqlite             videos, tracks, observations, meta (model, generation)
  visual-<gen>.faiss       unit visual track tokens, inner product, ID map -> tracks.id
  text-<gen>.faiss         unit text-aligned track tokens (models with a text side)
  colour-<gen>.faiss       colour-term histograms of the tracks (schema 3 on)
Each kind is an exact flat index while the store is small and, from `COMPRESS_FROM` tracks on, a
trained compressed one whose lists are memory-mapped (`vqsearch.vector_index`); a query reads only
the kinds it uses. A compressed store keeps a fixed random sample of its tracks' vectors in
`background_tracks`, the background its queries are measured against (`queries.engine`).
Every write builds the next generation's FAISS files beside the current ones, then commits the
SQL transaction that switches `generation` (and `kinds`, the files it names) to them: a crash
at any point leaves either the old or the new index whole. Writers hold the index's exclusive
write lock (`index` for its whole run); a second writer is refused at once, readers never wait.
A write first brings the tables to this vqsearch's schema (`vqsearch.migrations`) in its own
transaction; reads never migrate and read every known schema. Opening checks that the committed
files match the rows (count, and the ids of flat files; `vqsearch check` reads a compressed file's
ids too); `repair` rebuilds them from the FAISS files still on disk, or removes the videos whose
vectors are lost.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections import Counter
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
from sqlalchemy import Table, delete, func, insert, inspect, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from vqsearch.database import Catalogue, Database, Directory
from vqsearch.errors import VQSearchError
from vqsearch.fine_codes import attach
from vqsearch.list_file import GrowingLists
from vqsearch.schema import (KINDS, KNOWN_SCHEMAS, SCHEMA_VERSION, BackgroundTrack, Base, Meta, Observation,
                             PartialVideo, ShotCut, TrackRow, Video, committed_kinds, faiss_name, generation_of)
from vqsearch.vector_index import (COMPRESS_FROM, all_vectors, chunks, compressed_copy, is_compressed, stored_form,
                                   stored_ids, vectors_of)

if TYPE_CHECKING:
    from indexer.pipeline import IndexedVideo

BACKGROUND_SAMPLE = 4096  # tracks in a compressed store's background sample (median, MAD of a query)
CHECKED_IDS = 1_000_000  # tracks' ids read at a time when a check compares them with a FAISS file's

_TABLES = {"meta", "videos", "tracks", "observations"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def locate(db: str | Path) -> Database:
    """The index `--db` names: a SQLAlchemy URL (PostgreSQL), else a directory."""
    if isinstance(db, str) and _URL.match(db):
        from vqsearch.postgres import Postgres

        return Postgres.from_url(db)
    return Directory(Path(db))


def _refuse_unknown(db: Database, found: Catalogue) -> None:
    """Refuse, in one line, a database that is not a vqsearch index of a known schema."""
    if not _TABLES <= found.tables:
        raise VQSearchError(f"{db.database} is {db.kind} but not a vqsearch index (no "
                            f"{', '.join(sorted(_TABLES - found.tables))} table): use another --db")
    for version in (found.meta.get("schema"), found.revision):
        if version is not None and version not in KNOWN_SCHEMAS:
            raise VQSearchError(f"{db.database} has schema version {version!r}; this vqsearch reads versions "
                                f"{', '.join(KNOWN_SCHEMAS)}: use the vqsearch that wrote it, or another --db")
    missing = set(Observation.__table__.columns.keys()) - found.columns
    if missing:
        raise VQSearchError(f"{db.database} is damaged (observations lack {', '.join(sorted(missing))}): {db.recover}")


def file_fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _new_index(dim: int):
    import faiss

    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _load_index(path: Path, mapped: bool = True):
    """A FAISS file as vqsearch writes them (a flat ID map, or a compressed inverted file), or a
    VQSearchError saying what is wrong. A compressed file's lists are always memory-mapped (read as
    probed; FAISS checks they lie inside the file; a write streams them: `GrowingLists`), with their
    fine codes when the file holds them (`fine_codes`); a flat file's vectors are too with `mapped`
    (read to be checked), else read into memory, as a write that changes them needs."""
    import faiss

    if not path.is_file():
        raise VQSearchError(f"{path.name} is missing")
    with open(path, "rb") as handle:
        flat = handle.read(4) == b"IxM2"
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if not flat else faiss.IO_FLAG_MMAP_IFC if mapped else 0)
    except RuntimeError:
        raise VQSearchError(f"{path.name} is unreadable (truncated or corrupt)") from None
    if not isinstance(index, (faiss.IndexIDMap2, faiss.IndexIVF)):
        raise VQSearchError(f"{path.name} is not a vqsearch vector file")
    if not flat:
        attach(index, path)
    return index


def _id_block(first: int, count: int) -> dict[str, int | None]:
    """A video's block of track ids (its columns first_track_id, last_track_id)."""
    return {"first_track_id": first if count else None, "last_track_id": first + count - 1 if count else None}


def _has(session: Session, table: Table) -> bool:
    """Whether the index has this table: one of schema 1 or 2 that no write has migrated yet may
    lack shot_cuts or partial_videos, which reads then take as empty."""
    return inspect(session.connection()).has_table(table.name)


def _orphaned(session: Session) -> list[tuple[Table, str, object]]:
    """(table, parent table, condition) for the rows whose parent row is gone: impossible while
    SQLite enforces the foreign keys, as vqsearch's connections do, but not for other programs'."""
    return [(table, key.column.table.name, key.parent.not_in(select(key.column)))
            for table in Base.metadata.sorted_tables if _has(session, table) for key in table.foreign_keys]


def _fsync(path: Path) -> None:
    """Sync a file, or a directory's entries, to the disk."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@dataclass
class Health:
    """What `vqsearch check` finds. Problems make an index unsound; orphans (FAISS files the
    committed generation does not name, left by a crash) harm nothing and go at the next write."""

    videos: int
    tracks: int
    model: str | None
    schema: str | None
    generation: int
    files: list[str]
    problems: list[str]
    orphans: list[str]


@dataclass
class Repair:
    """What `repair` did: per kind, the files its vectors were rebuilt from (none when no track
    is left); the videos removed because their vectors are in no file left (absolute path,
    tracks), to be indexed again; and the rows removed because their parent row was gone."""

    generation: int
    rebuilt: dict[str, list[str]]
    lost: list[tuple[str, int]]
    orphan_rows: int


@dataclass
class BulkVideo:
    """One video for `Store.add_many`: its row of `videos` (but its block of track ids), its
    tracks' first and last frames, their boxes ([tracks, boxes, 5]: frame, x, y, width, height)
    and their vectors by kind."""

    columns: dict[str, object]
    starts: np.ndarray
    ends: np.ndarray
    boxes: np.ndarray
    vectors: dict[str, np.ndarray]


@dataclass
class Vectors:
    """The FAISS indexes of one generation (text is None for models without a text side, colour
    for indexes written before schema 3, and any kind a reader has not asked for)."""

    visual: object | None = None
    text: object | None = None
    colour: object | None = None

    def present(self) -> dict[str, object]:
        return {kind: index for kind in KINDS if (index := getattr(self, kind)) is not None}


class Store:
    """Opens (or creates) the index `--db` names for one model: a directory, or a PostgreSQL URL
    with the directory of its FAISS files (`vqsearch.database`)."""

    def __init__(self, db: str | Path, device: str = "cpu") -> None:
        self.db = locate(db)
        self.root = self.db.vectors  # the FAISS files' directory
        self.name = self.db.name  # how messages give the --db
        if self.root.exists() and not self.root.is_dir():
            raise VQSearchError(f"{self.db.label} is a file, not a directory")
        self.engine = self.db.engine()
        self._vectors: Vectors | None = None
        self._vectors_generation = 0  # the generation `_vectors` holds
        self._background: tuple[int, dict[str, np.ndarray]] = (0, {})  # (its generation, the sample by kind)
        self._cached: tuple[int, dict[str, object]] = (0, {})  # (its generation, reads of rows by name)
        self._gpu_vectors: tuple[tuple, Vectors] | None = None  # (generation and kinds copied, copies)
        self._locked = False  # this Store holds the index's write lock
        self._one_thread = False  # searches were held to one thread
        self.device = device  # "auto" or "cuda": search on a GPU when faiss-gpu sees one

    @classmethod
    def open(cls, root: str | Path, create: bool = False, device: str = "cpu", verify: bool = True) -> Store:
        """Open an index (or, with `create`, make a new one where there is none), checking first
        that it is one and (with `verify`) that its committed FAISS files match its rows."""
        store = cls(root, device)
        if store._check(create, verify):
            store._make_root()
            store._create()
        return store

    @classmethod
    @contextmanager
    def writer(cls, root: str | Path, device: str = "cpu") -> Iterator[Store]:
        """Open (or create) an index for a run of writes, holding its write lock from before any work
        to the end: a second writer is refused at once, and readers never wait. A new index that the
        run fails before committing anything to is removed again, with the directories it made."""
        store = cls(root, device)
        new = store._check(create=True, verify=True)
        made = store._make_root()
        with store._write_lock():
            try:
                if new:
                    store._create()
                yield store
            except BaseException:
                if new:
                    store._remove_unwritten(made)
                raise

    def _check(self, create: bool, verify: bool) -> bool:
        """Check what the database and the directory hold before anything reads or writes them, so
        that nothing is written to anything but a vqsearch index; True when there is none yet and
        `create` allows one."""
        found = self.db.catalogue(self.engine)
        if found is not None:
            _refuse_unknown(self.db, found)
            self.db.refuse_other_vectors(found.meta)
            if verify:
                self.verify()
            return False
        if not create:
            raise VQSearchError(f"no index at {self.name}: run `vqsearch index VIDEO --db {shlex.quote(self.name)}` "
                                "first")
        self.db.refuse_other_vectors(None)
        if any(self.root.glob("*.faiss")):  # a new index's first write would sweep them
            raise VQSearchError(f"{self.root} holds FAISS files but {self.db.missing}: {self.db.recover}")
        return True

    def _make_root(self) -> list[Path]:
        """Make the directory and its missing parents; those it made, innermost first."""
        made = [path for path in (self.root, *self.root.parents) if not path.exists()]
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise VQSearchError(f"cannot create {self.db.label} ({error.strerror or error})") from None
        return made

    def _create(self) -> None:
        """A new index: today's tables, marked as of the newest schema (`vqsearch.migrations`)."""
        with self._write() as session:
            self.db.claim(session)
            session.commit()

    def _remove_unwritten(self, made: list[Path]) -> None:
        """Remove a new index that nothing was committed to, and the directories made for it while
        they hold nothing else."""
        with Session(self.engine) as session:
            try:
                if generation_of(self._meta(session)):
                    return
            except SQLAlchemyError:  # its tables were never made
                pass
        with suppress(OSError, SQLAlchemyError):  # something else in a directory keeps it
            self.db.discard(self.engine)
            for directory in made:
                directory.rmdir()

    # --- metadata -----------------------------------------------------------------------------
    def _meta(self, session: Session) -> dict[str, str]:
        return {m.key: m.value for m in session.scalars(select(Meta))}

    @property
    def model_name(self) -> str | None:
        with Session(self.engine) as session:
            return self._meta(session).get("model")

    @property
    def schema_version(self) -> str | None:
        """The schema version of the index (`meta.schema`); every write brings it to SCHEMA_VERSION
        first. None only for an empty index made before the migrations."""
        with Session(self.engine) as session:
            return self._meta(session).get("schema")

    @property
    def text_space(self) -> str | None:
        """What the stored text tokens are made of (`SearchModel.text_space`); None: not recorded
        (no text tokens, or written before vqsearch recorded it)."""
        with Session(self.engine) as session:
            return self._meta(session).get("text_space")

    def check_model(self, name: str) -> None:
        """Refuse to mix models in one index."""
        self._refuse_other_model(self.model_name, name)

    def _refuse_other_text_space(self, meta: dict[str, str], spaces: set[str]) -> None:
        """Refuse text tokens made of other label texts than the stored ones (or than each other):
        their similarities would not compare."""
        stored = meta.get("text_space")
        if len(spaces) > 1 or ("text" in committed_kinds(meta, self.root) and {stored} != spaces):
            raise VQSearchError(
                f"the index at {self.name} holds text tokens made with {stored or 'older label texts'}, and this "
                f"vqsearch makes them with {', '.join(sorted(spaces))}: index into a new --db, or remove its videos "
                "and index them again")

    def _refuse_other_model(self, built: str | None, name: str) -> None:
        if built is not None and built != name:
            raise VQSearchError(
                f"the index at {self.name} was built with model {built!r}, not {name!r}; "
                f"use --model {built} or another --db")

    def videos(self) -> list[tuple[Video, int]]:
        """Every indexed video with its number of tracks, in indexing order."""
        with Session(self.engine, expire_on_commit=False) as session:
            counts = select(Video, func.count(TrackRow.id)).outerjoin(TrackRow).group_by(Video.id).order_by(Video.id)
            gaps = _has(session, PartialVideo.__table__)
            rows = [(video, count) for video, count in
                    session.execute(counts.options(selectinload(Video.gap)) if gaps else counts)]
            if not gaps:
                for video, _ in rows:
                    set_committed_value(video, "gap", None)
            return rows

    def find_video(self, path: Path) -> Video | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return self._video_at(session, path)

    @staticmethod
    def _video_at(session: Session, path: Path) -> Video | None:
        """The video indexed from this file: by its absolute path, else by the path as given."""
        found = session.scalars(select(Video).where(Video.abs_path == str(Path(path).resolve()))).first()
        return found or session.scalars(select(Video).where(Video.path == str(path))).first()

    # --- vectors ------------------------------------------------------------------------------
    def _faiss_path(self, kind: str, generation: int) -> Path:
        return self.root / faiss_name(kind, generation)

    def _committed_files(self, meta: dict[str, str]) -> dict[str, Path]:
        """The FAISS files the committed generation names, by kind."""
        return {kind: self._faiss_path(kind, generation_of(meta)) for kind in committed_kinds(meta, self.root)}

    @contextmanager
    def _snapshot(self) -> Iterator[Session]:
        """A session whose reads are one transaction, so a writer can neither commit nor sweep the
        files it reads about until it ends."""
        with Session(self.engine) as session:
            self.db.begin_read(session)
            yield session

    def vectors(self, kinds: Iterable[str] = KINDS) -> Vectors | None:
        """The current generation's FAISS indexes of these kinds (those it has), each read once per
        Store and generation; None for an empty index. A query asks for the kinds it uses only."""
        with self._snapshot() as session:
            meta = self._meta(session)
            files = self._committed_files(meta)
            if self._vectors is None or self._vectors_generation != generation_of(meta):
                self._vectors, self._vectors_generation = Vectors(), generation_of(meta)
            try:
                for kind in (kind for kind in kinds if kind in files and getattr(self._vectors, kind) is None):
                    setattr(self._vectors, kind, _load_index(files[kind]))
            except VQSearchError as problem:
                raise self._damaged([str(problem)]) from None
        return self._vectors if files else None

    def verify(self) -> None:
        """Refuse, in one line, an index whose committed FAISS files do not match its rows. Cheap:
        the files are memory-mapped and only their headers (and a flat file's ids) are read."""
        with self._snapshot() as session:
            problems = self._vector_problems(session, every_id=False)
        if problems:
            raise self._damaged(problems)

    def _damaged(self, problems: list[str]) -> VQSearchError:
        """One line: the first problem, and the two commands that list them all and recover."""
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        db = shlex.quote(self.name)
        return VQSearchError(f"the index at {self.name} is damaged: {problems[0]}{more}; `vqsearch check --db {db}` "
                             f"lists what is wrong, `vqsearch repair --db {db}` keeps what can be kept")

    def _vector_problems(self, session: Session, every_id: bool = True) -> list[str]:
        """Each committed FAISS file that is missing, unreadable, or holds another number of vectors
        than there are tracks or (for a flat file, or with `every_id`) other ids than the tracks'."""
        meta = self._meta(session)
        tracks = self._track_count(session, meta, every_id)
        files = self._committed_files(meta)
        if tracks and not files:
            return [f"its {tracks} tracks have no FAISS files"]
        problems = []
        for path in files.values():
            try:
                index = _load_index(path)
            except VQSearchError as problem:
                problems.append(str(problem))
                continue
            if index.ntotal != tracks:
                problems.append(f"{path.name} holds {index.ntotal} vectors for {tracks} tracks")
                continue
            if is_compressed(index) and not every_id:
                continue
            strays, missing = self._unmatched(session, np.sort(stored_ids(index)))
            if strays or missing:
                problems.append(f"{path.name} holds the vectors of {strays} ids that are no track's, in place of "
                                f"{missing} tracks'")
        return problems

    @staticmethod
    def _unmatched(session: Session, stored: np.ndarray) -> tuple[int, int]:
        """(how many of these sorted ids are no track's, how many tracks' ids are not among them):
        the tracks' ids read in order a million at a time, each part against the stored ids in its
        range, so that 10M tracks' ids are never held as Python ints (a list of them took GBs)."""
        strays = missing = done = 0
        rows = session.execute(select(TrackRow.id).order_by(TrackRow.id).execution_options(yield_per=CHECKED_IDS))
        for part in rows.scalars().partitions():
            ids = np.fromiter(part, np.int64, len(part))
            upto = int(np.searchsorted(stored, ids[-1], side="right"))
            strays += np.setdiff1d(stored[done:upto], ids, assume_unique=True).size
            missing += np.setdiff1d(ids, stored[done:upto], assume_unique=True).size
            done = upto
        return strays + len(stored) - done, missing

    @staticmethod
    def _track_count(session: Session, meta: dict[str, str], counted: bool) -> int:
        """How many tracks the index holds: counted, or (unless `counted`, schema 5) summed over the
        videos' blocks of ids (a video without tracks has none), which reads the videos' rows, not
        the tracks' (counting 10M tracks read 200 MB: seconds of a cold query)."""
        if not counted and meta.get("schema") == SCHEMA_VERSION:
            return int(session.scalar(select(func.sum(Video.last_track_id - Video.first_track_id + 1))) or 0)
        return session.scalar(select(func.count(TrackRow.id)))

    def health(self) -> Health:
        """Everything `vqsearch check` reports, read in one transaction."""
        with self._snapshot() as session:
            meta = self._meta(session)
            files = self._committed_files(meta)
            problems = self._vector_problems(session)
            for table, parent, orphaned in _orphaned(session):
                count = session.scalar(select(func.count()).select_from(table).where(orphaned))
                if count:
                    problems.append(f"{count} rows of {table.name} belong to no row of {parent}")
            return Health(
                videos=session.scalar(select(func.count(Video.id))),
                tracks=session.scalar(select(func.count(TrackRow.id))),
                model=meta.get("model"), schema=meta.get("schema"), generation=generation_of(meta),
                files=[path.name for path in files.values()], problems=problems,
                orphans=sorted(path.name for path in self.root.glob("*.faiss*") if path not in files.values()))

    def search_vectors(self, kinds: Iterable[str] = KINDS) -> Vectors | None:
        """The current vectors of these kinds for searching: flat ones copied to a GPU when `device`
        asks for one and faiss-gpu is installed and sees a GPU; else the CPU indexes (compressed
        ones always: their lists stay memory-mapped). Writes always use the CPU.

        CPU searches run on one thread: a query is one vector, and FAISS's OpenMP threads only
        spin (9 ms for 300 tracks when another process held the second core), as BLAS's do
        (scoring a background sample of 4096 took 5.4 ms on two threads, 2.4 ms on one)."""
        import faiss
        from threadpoolctl import threadpool_limits

        if not self._one_thread:  # once: threadpoolctl walks the loaded libraries (2 ms a query)
            faiss.omp_set_num_threads(1)
            threadpool_limits(1, user_api="blas")
            self._one_thread = True
        vectors = self.vectors(kinds)
        wants_gpu = self.device != "cpu" and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
        if vectors is None or not wants_gpu:
            return vectors
        key = (self._vectors_generation, tuple(vectors.present()))
        if self._gpu_vectors is None or self._gpu_vectors[0] != key:
            resources = faiss.StandardGpuResources()
            self._gpu_vectors = key, Vectors(**{
                kind: index if is_compressed(index) else faiss.index_cpu_to_gpu(resources, 0, index)
                for kind, index in vectors.present().items()})
        return self._gpu_vectors[1]

    # --- writes -------------------------------------------------------------------------------
    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Hold the index's exclusive write lock, or refuse at once in one line: one writer at a
        time, and none waits minutes behind another (`index` holds it for its whole run). Re-entrant
        within this Store; readers never take it. Taking it proves the FAISS files' directory
        writable: a new file beside them (as the next generation) must be creatable."""
        if self._locked:
            yield
            return
        trial = self.root / f".write-check-{os.getpid()}"
        try:
            trial.write_bytes(b"")
            trial.unlink()
        except OSError as error:
            raise self.db.cannot_write(error) from None
        with self.db.exclusive(self.engine):
            self._locked = True
            try:
                yield
            finally:
                self._locked = False

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A session for one write, under the write lock, in one transaction that first brings the
        tables to this vqsearch's schema: a write that does not commit leaves the index as it was,
        migration included."""
        from vqsearch.migrations import upgrade

        with self._write_lock(), Session(self.engine) as session:
            shutil.rmtree(self._spill, ignore_errors=True)  # a killed writer's
            try:
                self.db.begin_write(session)
                upgrade(session.connection(), self.root)
                yield session
            finally:
                shutil.rmtree(self._spill, ignore_errors=True)

    @property
    def _spill(self) -> Path:
        """Where a write spills the vectors it adds to a compressed index (`GrowingLists`), by kind."""
        return self.root / ".spill"

    def _commit(self, session: Session, indexes: dict[str, object]) -> None:
        """Write the next generation's FAISS files, then switch to them in one SQL commit. The files
        and their directory are synced first, so what the commit names survives a power cut."""
        import faiss

        new = generation_of(self._meta(session)) + 1
        try:
            for kind, index in indexes.items():
                path = self._faiss_path(kind, new)
                tmp = path.with_name(f"{path.name}.tmp")
                if isinstance(index, GrowingLists):
                    index.write(tmp)
                else:
                    faiss.write_index(index, str(tmp))
                _fsync(tmp)
                os.replace(tmp, path)
            _fsync(self.root)
            session.merge(Meta(key="generation", value=str(new)))
            session.merge(Meta(key="kinds", value=",".join(indexes)))
            session.merge(Meta(key="lists", value="id order"))  # GrowingLists wrote any compressed file
            self.db.before_commit(session)
            session.commit()
        except BaseException:
            session.rollback()
            self._vectors = None
            self._sweep(self.root.glob(f"*-{new}.faiss*"))
            raise
        searchable = indexes and not any(isinstance(index, GrowingLists) for index in indexes.values())
        self._vectors, self._vectors_generation = (Vectors(**indexes) if searchable else None), new
        self._gpu_vectors = None
        self._sweep(self.root.glob("*.faiss*"))

    def _sweep(self, paths: Iterable[Path]) -> None:
        """Delete these FAISS files (of other generations, or of a write that failed), except those
        the committed generation names: it is read back from the database, and when it cannot be
        read nothing is deleted (a file left over harms nothing)."""
        try:
            with Session(self.engine) as session:
                keep = set(self._committed_files(self._meta(session)).values())
        except SQLAlchemyError:
            return
        for path in paths:
            if path not in keep:
                path.unlink(missing_ok=True)

    def _working_vectors(self, session: Session, dims: dict[str, int]) -> Vectors:
        """Copies of the current indexes (or new ones of `dims`) that a write may change freely: a
        flat file read into memory, a compressed one memory-mapped under `GrowingLists`.

        An index written before colours gets a colour index whose older tracks have the uniform
        histogram (colour unknown: no colour word favours or rules them out)."""
        from vqsearch.colours import DIM, TERMS

        files = self._committed_files(self._meta(session))
        if not files:
            return Vectors(**{kind: _new_index(dim) for kind, dim in dims.items()})
        try:
            copies = Vectors(**{kind: self._growing(kind, _load_index(path, mapped=False))
                                for kind, path in files.items()})
        except VQSearchError as problem:
            raise self._damaged([str(problem)]) from None
        if copies.colour is None and "colour" in dims:
            ids = np.asarray(self._track_ids(session, None), dtype=np.int64)
            copies.colour = _new_index(DIM)
            copies.colour.add_with_ids(np.full((len(ids), DIM), 1 / len(TERMS), np.float32), ids)
        return copies

    def _growing(self, kind: str, index):
        """A compressed index as a write changes it (`GrowingLists`); a flat one as it is."""
        return GrowingLists(index, self._spill / kind) if is_compressed(index) else index

    def add_video(self, model_name: str, given_path: str, result: IndexedVideo) -> None:
        """Store one indexed video, replacing an earlier index of the same file, atomically."""
        self.add_videos(model_name, [(given_path, result)])

    def add_videos(self, model_name: str, videos: list[tuple[str, IndexedVideo]]) -> None:
        """Store indexed videos (path as given, result) in one atomic write, each replacing an
        earlier index of the same file: one generation switch for the batch (`index --ray`)."""
        with self._write() as session:
            meta = self._meta(session)
            self._refuse_other_model(meta.get("model"), model_name)
            session.merge(Meta(key="model", value=model_name))
            spaces = {result.text_space for _, result in videos if result.text is not None} - {None}
            if spaces:
                self._refuse_other_text_space(meta, spaces)
                session.merge(Meta(key="text_space", value=spaces.pop()))
            self._vectors = None  # another process may have written since we read
            result = videos[0][1]
            dims = {"visual": result.visual.shape[1], "colour": result.colour.shape[1]}
            if result.text is not None:
                dims["text"] = result.text.shape[1]
            vectors = self._working_vectors(session, dims)
            for given_path, result in videos:
                self._add(session, vectors, given_path, result)
            self._commit(session, vectors.present())

    def _add(self, session: Session, vectors: Vectors, given_path: str, result: IndexedVideo) -> None:
        """One video's rows and vectors, in a write's session and working vectors."""
        first_id = self._claim_track_ids(session, len(result.tracks))  # before the previous rows go
        info = result.info
        abs_path = str(info.path.resolve())
        previous = session.scalars(select(Video).where(Video.abs_path == abs_path)).first()
        if previous is not None:
            self._remove_vectors(vectors, self._track_ids(session, previous.id))
            session.delete(previous)
            session.flush()
        video = Video(
            path=given_path, abs_path=abs_path, fingerprint=file_fingerprint(info.path),
            frames=info.frames, fps=info.fps, width=info.width, height=info.height,
            sample_fps=result.sample_fps, frames_sampled=result.frames_sampled,
            patch_tokens=result.patch_tokens, region_tokens=result.region_tokens,
            recorded_at=info.path.stat().st_mtime, **_id_block(first_id, len(result.tracks)),
        )
        video.cuts = [ShotCut(before=before, after=after) for before, after in result.cuts]
        if info.partial:
            video.gap = PartialVideo(declared_frames=info.declared_frames)
        for track_id, track in enumerate(result.tracks, first_id):
            row = TrackRow(id=track_id, start_frame=track.frames[0], end_frame=track.frames[-1])
            row.observations = [
                Observation(frame=f, x=float(b[0]), y=float(b[1]), width=float(b[2]), height=float(b[3]))
                for f, b in zip(track.frames, track.boxes)
            ]
            video.tracks.append(row)
        session.add(video)
        session.flush()
        ids = np.array([row.id for row in video.tracks], dtype=np.int64)
        if len(ids):
            added = {kind: getattr(result, kind) for kind in vectors.present()}
            for kind, index in vectors.present().items():
                index.add_with_ids(added[kind], ids)
            self._grow(session, vectors, ids, added)

    def _grow(self, session: Session, vectors: Vectors, ids: np.ndarray, added: dict[str, np.ndarray]) -> None:
        """Bring the working indexes to their stored form after `ids` were added (`added`: their
        vectors by kind). A store that reaches COMPRESS_FROM tracks is compressed, every kind at
        once, and its background sample drawn from all its tracks; in a compressed store each added
        track joins the sample with the sample's share of the store."""
        total = vectors.visual.ntotal
        if total < COMPRESS_FROM:
            return
        indexes = vectors.present()
        crossing = not is_compressed(vectors.visual)
        pool = stored_ids(vectors.visual) if crossing else ids
        chosen = np.random.default_rng(int(ids[0])).random(len(pool)) < BACKGROUND_SAMPLE / total
        self._add_background(session, pool[chosen], {
            kind: vectors_of(index, pool[chosen]) if crossing else added[kind][chosen] for kind, index in indexes.items()})
        if crossing:
            for kind, index in indexes.items():
                setattr(vectors, kind, compressed_copy(index, self._spill / kind))

    @staticmethod
    def _add_background(session: Session, ids: np.ndarray, sample: dict[str, np.ndarray]) -> None:
        """Add these tracks, with their exact vectors by kind, to the background sample."""
        if len(ids):
            session.execute(insert(BackgroundTrack), [
                {"track_id": track_id, **{kind: np.asarray(vectors[row], np.float32).tobytes()
                                          for kind, vectors in sample.items()}}
                for row, track_id in enumerate(ids.tolist())])

    def add_many(self, model_name: str, videos: Iterable[BulkVideo], tracks: int, training: dict[str, np.ndarray],
                 compress_from: int = COMPRESS_FROM, text_space: str | None = None) -> None:
        """Add many videos to an empty index in one write, as they stream (the scale benchmark's
        builder): rows inserted in bulk, vectors added to indexes in their stored form for `tracks`
        tracks (from `compress_from` on, compressed and trained on `training`, a sample of the
        vectors to come, by kind), each track joining the background sample with its share; one commit.
        `text_space`: what their text vectors are made of (`SearchModel.text_space`)."""
        from vqsearch.vector_index import trained_index

        with self._write() as session:
            if generation_of(self._meta(session)) or session.scalar(select(func.count(Video.id))):
                raise VQSearchError(f"the index at {self.root} is not empty: add many videos to a new --db only")
            session.merge(Meta(key="model", value=model_name))
            if text_space is not None and "text" in training:
                session.merge(Meta(key="text_space", value=text_space))
            compressed = tracks >= compress_from
            indexes = {kind: self._growing(kind, trained_index(sample, tracks)) if compressed
                       else _new_index(sample.shape[1]) for kind, sample in training.items()}
            chance = np.random.default_rng(0)
            connection = session.connection()
            for video in videos:
                count = len(video.ends)
                first = self._claim_track_ids(session, count)
                ids = np.arange(first, first + count, dtype=np.int64)
                video_id = connection.execute(insert(Video).values(**video.columns, **_id_block(first, count))
                                              ).inserted_primary_key[0]
                connection.execute(insert(TrackRow.__table__), [
                    {"id": track_id, "video_id": video_id, "start_frame": start, "end_frame": end}
                    for track_id, start, end in zip(ids.tolist(), video.starts.tolist(), video.ends.tolist())])
                connection.execute(insert(Observation.__table__), [
                    {"track_id": track_id, "frame": int(box[0]), "x": box[1], "y": box[2], "width": box[3],
                     "height": box[4]} for track_id, boxes in zip(ids.tolist(), video.boxes.tolist()) for box in boxes])
                for kind, index in indexes.items():
                    index.add_with_ids(video.vectors[kind], ids)
                if compressed:
                    chosen = chance.random(count) < BACKGROUND_SAMPLE / tracks
                    self._add_background(session, ids[chosen], {kind: video.vectors[kind][chosen] for kind in indexes})
            self._commit(session, indexes)

    def remove_video(self, path: Path) -> bool:
        """Delete a video's rows and vectors atomically; False if it was not indexed."""
        with self._write() as session:
            video = self._video_at(session, path)
            if video is None:
                return False
            self._vectors = None
            vectors = self._working_vectors(session, {})  # a stored video implies stored vectors
            self._remove_vectors(vectors, self._track_ids(session, video.id))
            session.delete(video)
            session.flush()
            self._commit(session, vectors.present())
            return True

    def _claim_track_ids(self, session: Session, count: int) -> int:
        """The first of `count` new track ids, above every id this index ever gave (SQLite reuses
        the highest after a delete): from `unique_ids_from` on, an id in any generation's FAISS file
        is the same track as now, which lets `repair` take vectors from older generations. Both are
        absent from a new index (none given yet, all unique) and recorded by the migration to schema 4."""
        first = int(self._meta(session).get("last_track_id", "0")) + 1
        session.merge(Meta(key="last_track_id", value=str(first + count - 1)))
        return first

    def repair(self) -> Repair | None:
        """Make an unsound index consistent, keeping every track whose vectors a FAISS file still
        holds (`_gather`); the videos of the others are removed, to be indexed again, as are rows
        that belong to no row. One new generation, one commit, under the write lock; None when
        there was nothing to repair."""
        with self._write() as session:
            self._vectors = None
            orphan_rows = sum(session.execute(delete(table).where(orphaned)).rowcount
                              for table, _, orphaned in _orphaned(session))
            if not orphan_rows and not self._vector_problems(session):
                return None
            meta = self._meta(session)
            generation = generation_of(meta)
            tracks = session.execute(select(TrackRow.id, TrackRow.video_id)).all()
            ids = {track_id for track_id, _ in tracks}
            gathered = {kind: self._gather(kind, generation, int(meta.get("unique_ids_from", "0")), ids)
                        for kind in self._committed_files(meta) or ["visual"]}
            missing = set().union(*(ids - vectors.keys() for vectors, _ in gathered.values()))
            lost_ids = {video_id for track_id, video_id in tracks if track_id in missing}
            kept = [track_id for track_id, video_id in tracks if video_id not in lost_ids]
            indexes = {}
            if kept:
                for kind, (vectors, _) in gathered.items():
                    index = _new_index(len(vectors[kept[0]]))
                    index.add_with_ids(np.stack([vectors[i] for i in kept]), np.asarray(kept, np.int64))
                    indexes[kind] = stored_form(index, self._spill / kind)
            per_video = Counter(video_id for _, video_id in tracks)
            lost = []
            for video in session.scalars(select(Video).where(Video.id.in_(lost_ids)).order_by(Video.id)):
                lost.append((video.abs_path, per_video[video.id]))
                session.delete(video)
            session.flush()
            self._commit(session, indexes)
            rebuilt = {kind: sources for kind, (_, sources) in gathered.items()} if kept else {}
            return Repair(generation + 1, rebuilt, lost, orphan_rows)

    def _gather(self, kind: str, newest: int, oldest: int, ids: set[int]) -> tuple[dict[int, np.ndarray], list[str]]:
        """The vectors of `ids` in this kind's readable FAISS files of generations `newest` down to
        `oldest`, newest first, and the files that gave them. Only in that range is an id known
        to be the same track as now (`_claim_track_ids`); a file of another dimension is skipped."""
        generations = sorted((int(number) for path in self.root.glob(f"{kind}-*.faiss")
                              if (number := path.name[len(kind) + 1:-len(".faiss")]).isdigit()), reverse=True)
        vectors: dict[int, np.ndarray] = {}
        sources: list[str] = []
        dim = None
        for generation in (g for g in generations if oldest <= g <= newest):
            path = self._faiss_path(kind, generation)
            try:
                index = _load_index(path)
            except VQSearchError:
                continue
            if dim not in (None, index.d):
                continue
            stored, rows = all_vectors(index)
            found = {track_id: rows[position] for position, track_id in enumerate(stored.tolist())
                     if track_id in ids and track_id not in vectors}
            if found:
                vectors.update(found)
                sources.append(path.name)
                dim = index.d
        return vectors, sources

    @staticmethod
    def _remove_vectors(vectors: Vectors, ids: list[int]) -> None:
        if not ids:
            return
        id_array = np.asarray(ids, dtype=np.int64)
        for index in vectors.present().values():
            index.remove_ids(id_array)

    # --- reads for queries --------------------------------------------------------------------
    def tracks(self, ids: list[int]) -> dict[int, TrackRow]:
        """Tracks by id with their video and observations loaded."""
        with Session(self.engine, expire_on_commit=False) as session:
            rows = session.scalars(
                select(TrackRow).where(TrackRow.id.in_(ids))
                .options(selectinload(TrackRow.observations), selectinload(TrackRow.video))
            ).all()
            return {row.id: row for row in rows}

    def spans(self, ids: list[int]) -> dict[int, tuple[int, int, int]]:
        """{track id: (video id, start frame, end frame)}, read without building track objects (in
        parts: SQLite binds at most 32766 values a statement)."""
        columns = select(TrackRow.id, TrackRow.video_id, TrackRow.start_frame, TrackRow.end_frame)
        with Session(self.engine) as session:
            return {row[0]: (row[1], row[2], row[3]) for part in chunks(len(ids), 30_000)
                    for row in session.execute(columns.where(TrackRow.id.in_(ids[part])))}

    def video_count(self) -> int:
        """How many videos the index holds (kept per generation of the vectors last read)."""
        return self._per_generation("videos", lambda session: session.scalar(select(func.count(Video.id))))

    def _per_generation(self, name: str, read: Callable[[Session], object]):
        """A read of the rows kept until the generation of the vectors last read changes: every
        write that changes videos commits a new generation."""
        generation, cached = self._cached
        if generation != self._vectors_generation or not generation:
            cached = {}
        if name not in cached:
            with Session(self.engine) as session:
                cached[name] = read(session)
        self._cached = self._vectors_generation, cached
        return cached[name]

    def _blocks(self) -> np.ndarray:
        """[videos, 4]: each video's first and last track id, recording time and id, by first track id
        (kept per generation)."""
        return self._per_generation("blocks", lambda session: np.array(session.execute(
            select(Video.first_track_id, Video.last_track_id, Video.recorded_at, Video.id)
            .where(Video.first_track_id.is_not(None)).order_by(Video.first_track_id)).all(),
            dtype=np.float64).reshape(-1, 4))

    def lists_in_id_order(self) -> bool:
        """Whether each list of the compressed files holds its ids in ascending order: so every
        generation this vqsearch wrote (`GrowingLists`); one written before may not be (FAISS
        removed ids by moving a list's last one into the gap) until its next write."""
        return self._per_generation("lists", lambda session: self._meta(session).get("lists") == "id order")

    def video_ids(self, ids: np.ndarray) -> np.ndarray:
        """The video id of each of these tracks, by the videos' blocks of ids (schema 5)."""
        videos = self._blocks()
        return videos[np.searchsorted(videos[:, 0], ids, side="right") - 1, 3].astype(np.int64)

    def later_blocks(self, ids: np.ndarray) -> list[tuple[int, int]]:
        """(first, last) track ids of the videos recorded after the latest video holding any of these
        tracks (recording time, then id), as runs of neighbouring blocks: where a later sighting
        can only be (schema 5). Videos indexed in recording order make one run."""
        videos = self._blocks()
        held = np.unique(np.searchsorted(videos[:, 0], ids, side="right") - 1)
        latest = videos[held[np.lexsort((videos[held, 3], videos[held, 2]))[-1]]]
        later = np.flatnonzero((videos[:, 2] > latest[2]) | ((videos[:, 2] == latest[2]) & (videos[:, 3] > latest[3])))
        if not len(later):
            return []
        apart = np.diff(later) > 1
        starts, ends = later[np.r_[True, apart]], later[np.r_[apart, True]]
        return [(int(videos[start, 0]), int(videos[end, 1])) for start, end in zip(starts.tolist(), ends.tolist())]

    def latest_block(self, ids: np.ndarray) -> tuple[int, int] | None:
        """(first, last) track id of the latest video (recording time, then id) holding any of
        these tracks, by the videos' blocks of ids (schema 5), without a row read per track."""
        if not len(ids):
            return None
        videos = self._blocks()
        held = np.unique(np.searchsorted(videos[:, 0], ids, side="right") - 1)
        first, last = videos[held[np.lexsort((videos[held, 3], videos[held, 2]))[-1]], :2]
        return int(first), int(last)

    def latest_track(self, ids: np.ndarray, scores: np.ndarray, until_frame: int | None = None) -> int | None:
        """Of these tracks, the one seen last: in the latest video (`latest_block`), the latest end
        (cut at `until_frame`), then the best score. The rows read are the videos' and the chosen
        video's tracks among these: the cost does not grow with the number of tracks given."""
        block = self.latest_block(ids)
        if block is None:
            return None
        mine = (ids >= block[0]) & (ids <= block[1])
        spans = self.spans(ids[mine].tolist())
        return max(zip(ids[mine].tolist(), scores[mine].tolist()), key=lambda track: (
            spans[track[0]][2] if until_frame is None else min(spans[track[0]][2], until_frame), track[1]))[0]

    def background(self, kinds: list[str]) -> dict[str, np.ndarray]:
        """A compressed store's background sample: {kind: its tracks' exact vectors}, rows aligned;
        read once per Store and generation (that of the vectors last read)."""
        generation, cached = self._background
        if generation != self._vectors_generation:
            cached = {}
        missing = [kind for kind in kinds if kind not in cached]
        if missing:
            with Session(self.engine) as session:
                rows = session.execute(select(*(getattr(BackgroundTrack, kind) for kind in missing))
                                       .order_by(BackgroundTrack.track_id)).all()
            for column, kind in enumerate(missing):
                cached[kind] = np.frombuffer(b"".join(row[column] for row in rows), np.float32).reshape(len(rows), -1)
        self._background = self._vectors_generation, cached
        return {kind: cached[kind] for kind in kinds}

    def recording_times(self, video_ids: set[int]) -> dict[int, float]:
        """{video id: recording time}, the order of "last seen" across videos."""
        with Session(self.engine) as session:
            rows = session.execute(select(Video.id, Video.recorded_at).where(Video.id.in_(video_ids)))
            return {row[0]: row[1] for row in rows}

    def video(self, video_id: int) -> Video:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(Video, video_id)

    def track_vector(self, track_id: int) -> np.ndarray:
        """A track's stored visual token (unit norm; a compressed store's decoded)."""
        return vectors_of(self.vectors(["visual"]).visual, np.array([track_id]))[0]

    def shot_bounds(self, video: Video, frame: int) -> tuple[int, int]:
        """(first, last) frame that may belong to the shot holding `frame`, cut to the sampled frames
        around the cuts: a cut between sampled frames b and a allows frames b+1 .. a-1 either way."""
        with Session(self.engine) as session:
            cuts = (session.scalars(select(ShotCut).where(ShotCut.video_id == video.id)).all()
                    if _has(session, ShotCut.__table__) else [])
        first = max((c.before + 1 for c in cuts if c.after <= frame), default=0)
        last = min((c.after - 1 for c in cuts if c.before >= frame), default=video.frames - 1)
        return first, last

    def track_ids(self, video: Video | None = None, started_by: int | None = None) -> list[int]:
        """Ids of the tracks of one video (or all), optionally only those starting by a frame."""
        with Session(self.engine) as session:
            return self._track_ids(session, video.id if video else None, started_by)

    @staticmethod
    def _track_ids(session: Session, video_id: int | None, started_by: int | None = None) -> list[int]:
        query = select(TrackRow.id)
        if video_id is not None:
            query = query.where(TrackRow.video_id == video_id)
        if started_by is not None:
            query = query.where(TrackRow.start_frame <= started_by)
        return list(session.scalars(query))
