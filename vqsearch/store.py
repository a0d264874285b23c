"""The index: track vectors in FAISS, videos / tracks / per-frame observations in SQLite.

Layout of a database directory:
  index.sqlite             videos, tracks, observations, meta (model, generation)
  visual-<gen>.faiss       unit visual track tokens, inner product, ID map -> tracks.id
  text-<gen>.faiss         unit text-aligned track tokens (models with a text side)
  colour-<gen>.faiss       colour-term histograms of the tracks (schema 3 on)
Every write builds the next generation's FAISS files beside the current ones, then commits the
SQLite transaction that switches `generation` to them: a crash at any point leaves either the
old or the new index whole. Writers hold an exclusive lock on the directory.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from sqlalchemy import Float, ForeignKey, Integer, String, create_engine, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from vqsearch.errors import VQSearchError

if TYPE_CHECKING:
    from indexer.pipeline import IndexedVideo

SCHEMA_VERSION = "3"  # 2: shot cuts per video; 3: track colours (older indexes read without them)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(String)


class Video(Base):
    __tablename__ = "videos"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String)                    # as given to `index`
    abs_path: Mapped[str] = mapped_column(String, unique=True)
    fingerprint: Mapped[str] = mapped_column(String)             # size:mtime of the file indexed
    frames: Mapped[int] = mapped_column(Integer)
    fps: Mapped[float] = mapped_column(Float)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sample_fps: Mapped[float] = mapped_column(Float)
    frames_sampled: Mapped[int] = mapped_column(Integer)
    patch_tokens: Mapped[int] = mapped_column(Integer)
    region_tokens: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[float] = mapped_column(Float)            # file mtime: orders "last seen" across videos
    tracks: Mapped[list[TrackRow]] = relationship(back_populates="video", cascade="all, delete-orphan",
                                                  passive_deletes=True)
    cuts: Mapped[list[ShotCut]] = relationship(cascade="all, delete-orphan", passive_deletes=True,
                                               order_by="ShotCut.after")
    gap: Mapped[PartialVideo | None] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class PartialVideo(Base):
    """A video indexed with --allow-partial: its container declared more frames than decoded."""

    __tablename__ = "partial_videos"
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), primary_key=True)
    declared_frames: Mapped[int] = mapped_column(Integer)


class ShotCut(Base):
    """A shot cut lies between sampled frames `before` and `after`: answers never cross it."""

    __tablename__ = "shot_cuts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    before: Mapped[int] = mapped_column(Integer)
    after: Mapped[int] = mapped_column(Integer)


class TrackRow(Base):
    __tablename__ = "tracks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    start_frame: Mapped[int] = mapped_column(Integer)
    end_frame: Mapped[int] = mapped_column(Integer)
    video: Mapped[Video] = relationship(back_populates="tracks")
    observations: Mapped[list[Observation]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="Observation.frame")


class Observation(Base):
    __tablename__ = "observations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    frame: Mapped[int] = mapped_column(Integer)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    width: Mapped[float] = mapped_column(Float)
    height: Mapped[float] = mapped_column(Float)


KNOWN_SCHEMAS = ("1", "2", "3")
_TABLES = {"meta", "videos", "tracks", "observations"}


def _check_index_file(path: Path) -> None:
    """Refuse, in one line, an index.sqlite that is not a readable vqsearch index of a known schema."""
    import sqlite3

    recover = f"restore {path} from a backup, or index into another --db"
    if path.stat().st_size == 0:
        raise VQSearchError(f"{path} is empty (0 bytes), not a vqsearch index: {recover}")
    with open(path, "rb") as handle:
        if handle.read(16) != b"SQLite format 3\x00":
            raise VQSearchError(f"{path} is not an SQLite database: {recover}")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            schema = (connection.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                      if "meta" in tables else None)
            columns = {row[1] for row in connection.execute("PRAGMA table_info(observations)")}
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise VQSearchError(f"{path} is damaged ({error}): {recover}") from None
    if not _TABLES <= tables:
        raise VQSearchError(f"{path} is an SQLite database but not a vqsearch index (no "
                            f"{', '.join(sorted(_TABLES - tables))} table): use another --db")
    if schema is not None and schema[0] not in KNOWN_SCHEMAS:
        raise VQSearchError(f"{path} has schema version {schema[0]!r}; this vqsearch reads versions "
                            f"{', '.join(KNOWN_SCHEMAS)}: use the vqsearch that wrote it, or another --db")
    missing = set(Observation.__table__.columns.keys()) - columns
    if missing:
        raise VQSearchError(f"{path} is damaged (observations lack {', '.join(sorted(missing))}): {recover}")


def file_fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _new_index(dim: int):
    import faiss

    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


KINDS = ("visual", "text", "colour")


@dataclass
class Vectors:
    """The FAISS indexes of one generation (text is None for models without a text side, colour
    for indexes written before schema 3)."""

    visual: object
    text: object | None = None
    colour: object | None = None

    def present(self) -> dict[str, object]:
        return {kind: index for kind in KINDS if (index := getattr(self, kind)) is not None}


class Store:
    """Opens (or creates) a database directory for one model."""

    def __init__(self, root: Path, device: str = "cpu") -> None:
        self.root = Path(root)
        self.sqlite = self.root / "index.sqlite"
        self.engine = create_engine(f"sqlite:///{self.sqlite}")
        event.listen(self.engine, "connect", lambda conn, _: conn.execute("PRAGMA foreign_keys=ON"))
        self._vectors: Vectors | None = None
        self._gpu_vectors: Vectors | None = None
        self.device = device  # "auto" or "cuda": search on a GPU when faiss-gpu sees one

    @classmethod
    def open(cls, root: Path, create: bool = False, device: str = "cpu") -> Store:
        """Open an index, checking first that it is one (nothing is written to anything else)."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise VQSearchError(f"--db {root} is a file, not a directory")
        if not (root / "index.sqlite").exists():
            if not create:
                raise VQSearchError(f"no index at {root}: run `vqsearch index VIDEO --db {root}` first")
            root.mkdir(parents=True, exist_ok=True)
        else:
            _check_index_file(root / "index.sqlite")
        store = cls(root, device)
        Base.metadata.create_all(store.engine)  # adds the tables a newer schema brings (shot_cuts)
        return store

    # --- metadata -----------------------------------------------------------------------------
    def _meta(self, session: Session) -> dict[str, str]:
        return {m.key: m.value for m in session.scalars(select(Meta))}

    @property
    def model_name(self) -> str | None:
        with Session(self.engine) as session:
            return self._meta(session).get("model")

    @property
    def schema_version(self) -> str | None:
        """The schema the index was last written with (None for an empty index)."""
        with Session(self.engine) as session:
            return self._meta(session).get("schema")

    def check_model(self, name: str) -> None:
        """Refuse to mix models in one index."""
        self._refuse_other_model(self.model_name, name)

    def _refuse_other_model(self, built: str | None, name: str) -> None:
        if built is not None and built != name:
            raise VQSearchError(
                f"the index at {self.root} was built with model {built!r}, not {name!r}; "
                f"use --model {built} or another --db")

    def videos(self) -> list[tuple[Video, int]]:
        """Every indexed video with its number of tracks, in indexing order."""
        from sqlalchemy import func
        from sqlalchemy.orm import selectinload

        with Session(self.engine, expire_on_commit=False) as session:
            counts = (select(Video, func.count(TrackRow.id)).outerjoin(TrackRow)
                      .group_by(Video.id).order_by(Video.id).options(selectinload(Video.gap)))
            return [(video, count) for video, count in session.execute(counts)]

    def find_video(self, path: Path) -> Video | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return self._video_at(session, path)

    @staticmethod
    def _video_at(session: Session, path: Path) -> Video | None:
        """The video indexed from this file: by its absolute path, else by the path as given."""
        found = session.scalars(select(Video).where(Video.abs_path == str(Path(path).resolve()))).first()
        return found or session.scalars(select(Video).where(Video.path == str(path))).first()

    # --- vectors ------------------------------------------------------------------------------
    def _generation(self, session: Session) -> int:
        return int(self._meta(session).get("generation", "0"))

    def _faiss_path(self, kind: str, generation: int) -> Path:
        return self.root / f"{kind}-{generation}.faiss"

    def vectors(self) -> Vectors | None:
        """The current generation's FAISS indexes, read once per Store; None for an empty index."""
        if self._vectors is None:
            with Session(self.engine) as session:
                generation = self._generation(session)
            if generation == 0:
                return None
            visual = self._read_index(self._faiss_path("visual", generation))
            optional = {kind: self._read_index(path) for kind in KINDS[1:]
                        if (path := self._faiss_path(kind, generation)).exists()}
            self._vectors = Vectors(visual, **optional)
        return self._vectors

    def _read_index(self, path: Path):
        """A FAISS file of the committed generation, or one line on what is lost."""
        import faiss

        lost = (f"the index at {self.root} names {path.name}, which is {{}}: its track vectors are lost; "
                "index the videos again into another --db")
        if not path.is_file():
            raise VQSearchError(lost.format("missing"))
        try:
            return faiss.read_index(str(path))
        except RuntimeError:
            raise VQSearchError(lost.format("unreadable")) from None

    def search_vectors(self) -> Vectors | None:
        """The current vectors for searching: copied to a GPU when `device` asks for one and
        faiss-gpu is installed and sees a GPU; else the CPU indexes. Writes always use the CPU.

        CPU searches run on one thread: a query is one vector, and FAISS's OpenMP threads only
        spin (9 ms for 300 tracks when another process held the second core)."""
        import faiss

        faiss.omp_set_num_threads(1)
        vectors = self.vectors()
        wants_gpu = self.device != "cpu" and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
        if vectors is None or not wants_gpu:
            return vectors
        if self._gpu_vectors is None:
            resources = faiss.StandardGpuResources()
            self._gpu_vectors = Vectors(**{kind: faiss.index_cpu_to_gpu(resources, 0, index)
                                           for kind, index in vectors.present().items()})
        return self._gpu_vectors

    # --- writes -------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Refuse, before any video work, an index this process cannot write: its lock file and a
        new file beside the index (the next FAISS generation) must both be creatable."""
        trial = self.root / f".write-check-{os.getpid()}"
        try:
            with open(self.root / ".lock", "a"):
                pass
            trial.write_bytes(b"")
            trial.unlink()
        except OSError as error:
            raise VQSearchError(f"cannot write to the index at {self.root} ({error.strerror or error}): "
                                "check its permissions, or index into another --db") from None

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _commit(self, session: Session, vectors: Vectors) -> None:
        """Write the next generation's FAISS files, then switch to them in one SQLite commit."""
        import faiss

        old = self._generation(session)
        new = old + 1
        written = []
        try:
            for kind, index in vectors.present().items():
                path = self._faiss_path(kind, new)
                tmp = path.with_suffix(".tmp")
                faiss.write_index(index, str(tmp))
                with open(tmp, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
                written.append(path)
            session.merge(Meta(key="generation", value=str(new)))
            session.commit()
        except BaseException:
            session.rollback()
            for path in written:
                path.unlink(missing_ok=True)
            raise
        self._vectors, self._gpu_vectors = vectors, None
        self._sweep(keep=new)

    def _sweep(self, keep: int) -> None:
        """Delete FAISS files of other generations (left by earlier writes or a crash)."""
        for path in self.root.glob("*.faiss*"):
            if path.name not in {f"{kind}-{keep}.faiss" for kind in KINDS}:
                path.unlink(missing_ok=True)

    def _working_vectors(self, session: Session, dims: dict[str, int]) -> Vectors:
        """Copies of the current indexes (or new ones of `dims`) that a write may change freely.

        An index written before colours gets a colour index whose older tracks have the uniform
        histogram (colour unknown: no colour word favours or rules them out)."""
        import faiss

        from vqsearch.colours import DIM, TERMS

        current = self.vectors()
        if current is None:
            return Vectors(**{kind: _new_index(dim) for kind, dim in dims.items()})
        copies = Vectors(**{kind: faiss.clone_index(index) for kind, index in current.present().items()})
        if copies.colour is None and "colour" in dims:
            ids = np.asarray(self._track_ids(session, None), dtype=np.int64)
            copies.colour = _new_index(DIM)
            copies.colour.add_with_ids(np.full((len(ids), DIM), 1 / len(TERMS), np.float32), ids)
        return copies

    def add_video(self, model_name: str, given_path: str, result: IndexedVideo) -> None:
        """Store one indexed video, replacing an earlier index of the same file, atomically."""
        with self._write_lock(), Session(self.engine) as session:
            self._refuse_other_model(self._meta(session).get("model"), model_name)
            session.merge(Meta(key="model", value=model_name))
            session.merge(Meta(key="schema", value=SCHEMA_VERSION))
            self._vectors = None  # another process may have written since we read
            dims = {"visual": result.visual.shape[1], "colour": result.colour.shape[1]}
            if result.text is not None:
                dims["text"] = result.text.shape[1]
            vectors = self._working_vectors(session, dims)
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
                recorded_at=info.path.stat().st_mtime,
            )
            video.cuts = [ShotCut(before=before, after=after) for before, after in result.cuts]
            if info.partial:
                video.gap = PartialVideo(declared_frames=info.declared_frames)
            for track in result.tracks:
                row = TrackRow(start_frame=track.frames[0], end_frame=track.frames[-1])
                row.observations = [
                    Observation(frame=f, x=float(b[0]), y=float(b[1]), width=float(b[2]), height=float(b[3]))
                    for f, b in zip(track.frames, track.boxes)
                ]
                video.tracks.append(row)
            session.add(video)
            session.flush()
            ids = np.array([row.id for row in video.tracks], dtype=np.int64)
            if len(ids):
                for kind, index in vectors.present().items():
                    index.add_with_ids(getattr(result, kind), ids)
            self._commit(session, vectors)

    def remove_video(self, path: Path) -> bool:
        """Delete a video's rows and vectors atomically; False if it was not indexed."""
        with self._write_lock(), Session(self.engine) as session:
            video = self._video_at(session, path)
            if video is None:
                return False
            self._vectors = None
            vectors = self._working_vectors(session, {})  # a stored video implies stored vectors
            self._remove_vectors(vectors, self._track_ids(session, video.id))
            session.delete(video)
            session.flush()
            self._commit(session, vectors)
            return True

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
        from sqlalchemy.orm import selectinload

        with Session(self.engine, expire_on_commit=False) as session:
            rows = session.scalars(
                select(TrackRow).where(TrackRow.id.in_(ids))
                .options(selectinload(TrackRow.observations), selectinload(TrackRow.video))
            ).all()
            return {row.id: row for row in rows}

    def spans(self, ids: list[int]) -> dict[int, tuple[int, int, int]]:
        """{track id: (video id, start frame, end frame)}, read without building track objects."""
        with Session(self.engine) as session:
            rows = session.execute(select(TrackRow.id, TrackRow.video_id, TrackRow.start_frame, TrackRow.end_frame)
                                   .where(TrackRow.id.in_(ids)))
            return {row[0]: (row[1], row[2], row[3]) for row in rows}

    def recording_times(self, video_ids: set[int]) -> dict[int, float]:
        """{video id: recording time}, the order of "last seen" across videos."""
        with Session(self.engine) as session:
            rows = session.execute(select(Video.id, Video.recorded_at).where(Video.id.in_(video_ids)))
            return {row[0]: row[1] for row in rows}

    def video(self, video_id: int) -> Video:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(Video, video_id)

    def track_vector(self, track_id: int) -> np.ndarray:
        """A track's stored visual token (unit norm)."""
        return self.vectors().visual.reconstruct(int(track_id)).astype(np.float32)

    def shot_bounds(self, video: Video, frame: int) -> tuple[int, int]:
        """(first, last) frame that may belong to the shot holding `frame`, cut to the sampled frames
        around the cuts: a cut between sampled frames b and a allows frames b+1 .. a-1 either way."""
        with Session(self.engine) as session:
            cuts = session.scalars(select(ShotCut).where(ShotCut.video_id == video.id)).all()
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
