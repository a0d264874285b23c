"""What an index holds, for every module that reads or migrates one: the SQL tables, the schema
version they are at, and how the committed generation names its FAISS files. Kept apart from the
store so that migrations and the PostgreSQL back end read them without importing the store."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import BigInteger, Float, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# 2: shot cuts per video; 3: track colours (older indexes read without them); 4: each generation
# names its files (`kinds`) and track ids are never reused (`repair` relies on both; a vqsearch
# that knows only 1-3 refuses it); 5: compressed vector files, each video's block of track ids, the
# background sample. Each is a revision of the same name in vqsearch/migrations.
SCHEMA_VERSION = "5"

# Track and observation ids: SQLite's INTEGER is 64-bit, PostgreSQL's 32 (an index on PostgreSQL
# is always made whole by this vqsearch, so its type needs no migration).
RowId = Integer().with_variant(BigInteger(), "postgresql")


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
    # its tracks are ids first..last (schema 5 on; deferred: reads of older schemas never ask for them)
    first_track_id: Mapped[int | None] = mapped_column(RowId, deferred=True)
    last_track_id: Mapped[int | None] = mapped_column(RowId, deferred=True)
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
    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    start_frame: Mapped[int] = mapped_column(Integer)
    end_frame: Mapped[int] = mapped_column(Integer)
    video: Mapped[Video] = relationship(back_populates="tracks")
    observations: Mapped[list[Observation]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="Observation.frame")


class Observation(Base):
    __tablename__ = "observations"
    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    track_id: Mapped[int] = mapped_column(RowId, ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    frame: Mapped[int] = mapped_column(Integer)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    width: Mapped[float] = mapped_column(Float)
    height: Mapped[float] = mapped_column(Float)


class BackgroundTrack(Base):
    """A track of a compressed store's fixed random sample, with its exact vectors (float32 bytes):
    a query's median and spread over the store are estimated from these (`queries.engine`)."""

    __tablename__ = "background_tracks"
    track_id: Mapped[int] = mapped_column(RowId, ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True)
    visual: Mapped[bytes] = mapped_column(LargeBinary)
    text: Mapped[bytes | None] = mapped_column(LargeBinary)
    colour: Mapped[bytes | None] = mapped_column(LargeBinary)


KNOWN_SCHEMAS = ("1", "2", "3", "4", "5")
KINDS = ("visual", "text", "colour")


def generation_of(meta: dict[str, str]) -> int:
    """The committed generation (0: no vectors were ever written)."""
    return int(meta.get("generation", "0"))


def faiss_name(kind: str, generation: int) -> str:
    return f"{kind}-{generation}.faiss"


def committed_kinds(meta: dict[str, str], root: Path) -> list[str]:
    """The kinds of FAISS file the committed generation names: those `kinds` lists (schema 4); an
    index written before names visual, colour from schema 3 on, and text when its file is there."""
    generation = generation_of(meta)
    if generation == 0:
        return []
    if "kinds" in meta:
        return [kind for kind in KINDS if kind in meta["kinds"].split(",")]
    return [kind for kind in KINDS if kind == "visual" or (kind == "colour" and meta.get("schema") == "3")
            or (kind == "text" and (root / faiss_name(kind, generation)).exists())]
