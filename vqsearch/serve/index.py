"""The served index: the store, the model and one QueryEngine, loaded once for every request.

Queries go through the same `QueryEngine.search` as `vqsearch query`, one at a time under a lock:
the model's inference requests and the relocation's decoders are shared state. Before each query
the stamp of index.sqlite is compared with the one loaded; after a write (an index job, a removal,
or another `vqsearch` process) the store is opened again, with the same model, so the engine
answers from the committed generation. Reads of rows (the library, a video) need no lock: every
Store read goes to SQLite as it is now.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from queries.engine import QueryEngine, UploadedCrop
from queries.hits import Answer
from vqsearch.errors import VQSearchError
from vqsearch.models.runtime import stamp
from vqsearch.serve.errors import ApiError
from vqsearch.schema import Video
from vqsearch.store import Store

T = TypeVar("T")
MAX_OCCURRENCES = 1000  # marked on the page's timelines; more only lengthens the answer


class TimelineEngine(QueryEngine):
    """The CLI's engine, which also keeps the occurrences of the last search (`found`: track id ->
    score, as the rule and the video share left them): the page's timeline marks every
    occurrence, not only the last (of a compressed store, those the answer looked at: each likely
    video's best and every one of the latest)."""

    found: dict[int, float] | None = None

    def search(self, *args, **kwargs) -> Answer:
        self.found = None
        return super().search(*args, **kwargs)

    def in_likely_videos(self, kept: list[int], scores: dict[int, float], videos: dict[int, int],
                         share: float) -> list[int]:
        kept = super().in_likely_videos(kept, scores, videos, share)
        if self.found is None:  # the search's own, not a relocation's search again (SAM 2, step 5)
            self.found = {i: scores[i] for i in kept[:MAX_OCCURRENCES]}
        return kept


def video_json(video: Video, tracks: int, model: str | None) -> dict:
    """A video of `GET /api/videos`: `list --json`'s fields, its id and size, and its indexing stats."""
    return {"id": video.id, "video": video.path, "frames": video.frames, "fps": round(video.fps, 3),
            "width": video.width, "height": video.height, "tracks": tracks, "model": model,
            "duration": round(video.frames / video.fps, 3), "sample_fps": video.sample_fps,
            "frames_sampled": video.frames_sampled, "region_tokens": video.region_tokens,
            "patch_tokens": video.patch_tokens, "compression": round(video.patch_tokens / max(tracks, 1), 1),
            **({"declared_frames": video.gap.declared_frames} if video.gap else {})}


class ServedIndex:
    """One index directory, served: `query`, `videos`, `video`, `remove`, and `write` for index jobs."""

    def __init__(self, root: str | Path, device: str = "cpu") -> None:
        from queries.relocate import Relocation

        from vqsearch.database import Directory
        from vqsearch.store import locate

        if not isinstance(locate(root), Directory):  # it notices writes by index.sqlite's stamp
            raise VQSearchError(f"vqsearch serve serves an index directory, not a database URL: {locate(root).name}")
        self.root, self.device = Path(root), device
        Store(self.root)  # refuses a --db that is a file, as every command does; a missing one is an empty index
        self._lock = threading.Lock()
        self._model = None
        self._store: Store | None = None
        self._engine: TimelineEngine | None = None
        self._stamp = ""
        self._relocation = Relocation()
        with self._lock:
            self._reload()

    # --- loading ------------------------------------------------------------------------------
    def _file_stamp(self) -> str:
        sqlite = self.root / "index.sqlite"
        return stamp(sqlite) if sqlite.is_file() else ""

    def _reload(self) -> None:
        """Open the store as committed now (none while the directory holds no index yet) and the
        engine over it; the model is created once, with the first store that names one."""
        from vqsearch.models.factory import create_model

        now = self._file_stamp()  # before opening: a write after it reloads again
        store = Store.open(self.root, device=self.device) if now else None  # FAISS on a GPU when asked, as `query`
        if store is not None and store.model_name is not None and self._model is None:
            self._model = create_model(store.model_name, self.device)
        self._store, self._stamp = store, now
        self._engine = TimelineEngine(store, self._model) if store is not None and self._model is not None else None
        if self._engine is not None:
            self._warm(self._engine)

    @staticmethod
    def _warm(engine: QueryEngine) -> None:
        """Load what the first query would (vectors, label embeddings, compiled graphs), so it is
        as fast as the rest."""
        engine.store.search_vectors()
        engine.encode_crop(np.zeros((96, 96, 3), np.uint8))
        if engine.model.text_encoder is not None:
            engine.encode_text("a cup")

    def _current(self) -> TimelineEngine:
        """The engine over the committed index (reopened if it changed); the caller holds the lock."""
        if self._file_stamp() != self._stamp:
            try:
                self._reload()
            except VQSearchError as error:  # damaged by another program since: `vqsearch check` says how
                raise ApiError(409, str(error)) from None
        if self._engine is None:
            raise ApiError(409, f"the index at {self.root} is empty: index a video first")
        return self._engine

    def write(self, change: Callable[[], T]) -> T:
        """Run a write (an index job's commit, a removal) between two queries, then reopen the store:
        no query sees half of it."""
        with self._lock:
            try:
                return change()
            finally:
                self._reload()

    # --- reads --------------------------------------------------------------------------------
    def _reader(self) -> Store | None:
        """A store for reading rows: the loaded one, or, while none is, the index a write made since."""
        return self._store or (Store.open(self.root, verify=False) if self._file_stamp() else None)

    @property
    def model_name(self) -> str | None:
        store = self._reader()
        return store.model_name if store is not None else None

    def videos(self) -> list[dict]:
        store = self._reader()
        if store is None:
            return []
        model = store.model_name
        return [video_json(video, tracks, model) for video, tracks in store.videos()]

    def video(self, video_id: int) -> Video:
        store = self._reader()
        video = store.video(video_id) if store is not None else None
        if video is None:
            raise ApiError(404, f"no video with id {video_id} in the index")
        return video

    # --- queries and removals -----------------------------------------------------------------
    def query(self, text: str | None, crop: UploadedCrop | None, video_id: int | None, top_k: int,
              relocate: bool) -> dict:
        """`query --json`'s object, every HIT with its video_id, and `occurrences`: every track the
        occurrence rule kept (video_id, frames, times, score), for the timeline."""
        with self._lock:
            engine = self._current()
            video = Path(self.video(video_id).abs_path) if video_id is not None else None
            answer = engine.search(text, crop, video, top_k, relocate=self._relocation if relocate else None)
            found = engine.found or {}
            spans = engine.store.spans(list(found))
        fps = {v: self.video(v).fps for v in {v for v, _, _ in spans.values()}}
        occurrences = [{"video_id": v, "start_frame": start, "end_frame": end, "start_time": round(start / fps[v], 3),
                        "end_time": round(end / fps[v], 3), "score": round(found[i], 4)}
                       for i, (v, start, end) in sorted(spans.items(), key=lambda item: item[1])]
        out = answer.to_json()
        for shown, hit in zip([out["last_seen"], *out["results"]], [answer.last_seen, *answer.results]):
            if hit is not None:
                shown["video_id"] = hit.video_id  # the id the frames of its video are asked by
        return {**out, "occurrences": occurrences}

    def remove(self, video_id: int) -> str:
        """Remove a video by id (under the directory's write lock, as `vqsearch remove`); its path as indexed."""
        video = self.video(video_id)

        def change() -> None:
            try:
                removed = self._reader().remove_video(Path(video.abs_path))
            except VQSearchError as error:  # another writer holds the index (an index job, a CLI)
                raise ApiError(409, str(error)) from None
            if not removed:
                raise ApiError(404, f"no video with id {video_id} in the index")

        self.write(change)
        return video.path
