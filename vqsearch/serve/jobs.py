"""Index jobs: `POST /api/index` queues a video file; one background thread indexes them in turn.

A job is queued, running, done or failed, with its progress (0..1, sampled frames done over the
video's sampled frames) and, when it ends, `index --json`'s object for the video or one line that
says what went wrong. Like `vqsearch index`, a job holds the directory's write lock from before
the video is decoded to the end, so another writer (a CLI `index` or `remove`) is refused while
it runs and queries keep answering. The job has its own model (the served engine's is busy with
queries); its commit runs between two queries and the served engine reopens the store after it.
Stopping the server stops a running job at its next batch of frames: nothing is committed.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from vqsearch.errors import VQSearchError
from vqsearch.serve.index import ServedIndex

log = logging.getLogger("vqsearch.serve")
FPS = 5.0          # frames sampled per second, as `vqsearch index`'s default
KEPT_JOBS = 100    # finished jobs remembered; older ones are forgotten


class Stopped(Exception):
    """The server is shutting down: the running job ends without committing."""


@dataclass
class Job:
    id: str
    path: str
    state: str = "queued"
    progress: float = 0.0
    error: str | None = None
    result: dict | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def to_json(self) -> dict:
        with self._lock:
            return {"job": self.id, "video": self.path, "state": self.state, "progress": round(self.progress, 3),
                    "error": self.error, "result": self.result}

    def update(self, **changes) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)


class Jobs:
    """The job table and its worker thread (started with the first job)."""

    def __init__(self, served: ServedIndex, fps: float = FPS) -> None:
        self.served, self.fps = served, fps
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._models: dict[str, object] = {}

    def submit(self, path: str) -> Job:
        job = Job(uuid.uuid4().hex[:12], path)
        with self._lock:
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.state in ("done", "failed")]
            for old in finished[:max(0, len(finished) - KEPT_JOBS)]:
                del self._jobs[old.id]
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="vqsearch-index-jobs", daemon=True)
                self._worker.start()
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker: the running job at its next batch of frames, the queued ones not at all."""
        self._stop.set()
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._stop.is_set():
                job.update(state="failed", error="not run: the server stopped")
                continue
            job.update(state="running")
            try:
                job.update(state="done", progress=1.0, result=self._index(job))
            except VQSearchError as error:
                job.update(state="failed", error=str(error))
            except Stopped:
                job.update(state="failed", error="stopped: the server shut down before the video was committed")
            except Exception as error:  # a fault, not the user's: the line says so, the log has the trace
                log.exception("index job %s failed", job.id)
                job.update(state="failed", error=f"indexing {job.path} failed: {type(error).__name__}: {error}")

    def _index(self, job: Job) -> dict:
        """Index one video as `vqsearch index` does; its `index --json` object."""
        from indexer.pipeline import index_video
        from indexer.video import probe, sample_indices
        from vqsearch.models.factory import DEFAULT_MODEL
        from vqsearch.store import Store

        info = probe(Path(job.path))
        total = max(1, len(sample_indices(info.frames, info.fps, self.fps)))
        done = 0

        def advance(frames: int) -> None:
            nonlocal done
            if self._stop.is_set():
                raise Stopped
            done += frames
            job.update(progress=0.95 * min(done / total, 1.0))  # the commit is the last 5 %

        with Store.writer(self.served.root) as store:
            name = store.model_name or DEFAULT_MODEL
            store.check_model(name)
            result = index_video(self._model(name), info, self.fps, progress=advance)
            self.served.write(lambda: store.add_video(name, job.path, result))
        return result.summary(job.path)

    def _model(self, name: str):
        """The jobs' own model, created with the first job and kept for the next."""
        from vqsearch.models.factory import create_model

        if name not in self._models:
            self._models[name] = create_model(name, self.served.device)
        return self._models[name]
