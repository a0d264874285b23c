"""`vqsearch index --ray`: videos, and segments of long ones, indexed as Ray tasks; one writer.

Each task reads its video itself (the path must be the same on every node) and returns tracks,
never pixels; a worker process builds the model once and keeps it for the tasks that follow. A
long video is cut into segments (`indexer.segments`) whose tracks a last task stitches together.
The driver, holding the index's write lock, commits the finished videos in batches, each batch
one atomic write (`Store.add_videos`): a video is in the index whole or not at all, and whatever
was committed survives the driver's crash. A rerun skips the videos already indexed from the
same unchanged file at the same rate, so it finishes what a crash left.

A task that raises is retried (`RETRIES`), as one whose worker or node dies; a user-facing error
(an unreadable or truncated video) is returned as `Failed` instead of raised, so it is reported
without being retried, and the other videos go on.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Protocol

from indexer.pipeline import IndexedVideo, Tracked, finish, index_video, track_frames
from indexer.segments import plan, stitch
from indexer.video import VideoInfo, probe, sample_indices
from vqsearch.errors import VQSearchError
from vqsearch.store import Store, file_fingerprint

RETRIES = 3             # further attempts of a task that raised or whose worker died
COMMIT_SECONDS = 60.0   # a finished video waits at most about this long for its batch


@dataclass(frozen=True)
class RaySettings:
    """How `index --ray` runs: the cluster, the work units, the batches."""

    address: str | None = None   # None: $RAY_ADDRESS, else a local cluster on this machine's cores
    segment_seconds: float = 120.0
    commit_every: int = 8        # videos per commit
    threads: int = 1             # model threads per task, and the CPUs each task reserves


@dataclass(frozen=True)
class Failed:
    """A video that cannot be indexed, and why, in one line."""

    message: str


class Reporter(Protocol):
    def progress(self, total: int, label: str) -> ContextManager[None]: ...
    def frames(self, count: int) -> None: ...
    def committed(self, given: str, result: IndexedVideo) -> None: ...
    def failed(self, message: str) -> None: ...
    def skipped(self, given: str) -> None: ...


def _ray():
    try:
        import ray
    except ImportError:
        raise VQSearchError("--ray needs Ray on this machine and every node: pip install 'vqsearch[ray]'") from None
    return ray


@contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Join the Ray cluster at `address` (or $RAY_ADDRESS), else start a local one, for the run;
    a connection this process already has is used as it is (and kept).

    Ray prints a failed task's traceback (before its retry) on the driver's stdout, which is the
    command's output: while connected, stdout is stderr (`vqsearch.cli.IndexReport` keeps the real one).
    """
    ray = _ray()
    with redirect_stdout(sys.stderr):
        if ray.is_initialized():
            yield
        else:
            with _initialised(ray, address):
                yield


@contextmanager
def _initialised(ray, address: str | None) -> Iterator[None]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # vqsearch runs offline: nothing is reported
    local = (address or os.environ.get("RAY_ADDRESS") or "local") == "local"
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
                 **({"include_dashboard": False} if local else {}))
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise VQSearchError(f"cannot join the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: "
                            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    finally:  # Ray's own handler aborts the driver; the command's stops it as Ctrl-C does (`vqsearch.cli`)
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def _sigterm_between_ray_calls() -> Iterator[Callable[[], None]]:
    """Ray runs signal handlers inside its blocking calls and survives only KeyboardInterrupt there:
    another exception (`vqsearch.cli`'s SIGTERM raises one) breaks the call. Here SIGTERM is only
    noted; `check()` raises it again, to its own handler, between Ray's calls."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield lambda: None
        return
    noted: list[int] = []
    handler = signal.signal(signal.SIGTERM, lambda signum, frame: noted.append(signum)) or signal.SIG_DFL

    def check() -> None:
        if noted:
            signal.signal(signal.SIGTERM, handler)
            signal.raise_signal(signal.SIGTERM)

    try:
        yield check
    finally:
        signal.signal(signal.SIGTERM, handler)


# --- the tasks, run in the cluster's worker processes ------------------------------------------
_models: dict[tuple[str, str, int], object] = {}


def _model(name: str, device: str, threads: int):
    """This worker's model, built at its first task and kept for the next ones."""
    from vqsearch.models.factory import create_model
    from vqsearch.models.runtime import set_threads

    key = (name, device, threads)
    if key not in _models:
        set_threads(threads)
        _models[key] = create_model(name, device)
    return _models[key]


def _reported(work: Callable) -> Callable:
    """`work`, with a user-facing error returned as `Failed` rather than raised (and retried)."""

    @functools.wraps(work)
    def run(*args):
        try:
            return work(*args)
        except VQSearchError as error:
            return Failed(str(error))

    return run


@_reported
def _whole(model: tuple[str, str, int], info: VideoInfo, fps: float) -> IndexedVideo:
    return index_video(_model(*model), info, fps)


@_reported
def _segment(model: tuple[str, str, int], info: VideoInfo, fps: float, span: tuple[int, int]) -> Tracked:
    return track_frames(_model(*model), info, fps, span)


@_reported
def _stitched(model: tuple[str, str, int], info: VideoInfo, fps: float, *parts: Tracked | Failed
              ) -> IndexedVideo | Failed:
    failed = [part for part in parts if isinstance(part, Failed)]
    if failed:
        return failed[0]
    built = _model(*model)
    return finish(built, info, fps, stitch(list(parts), built.config.track_tau, built.config.min_track_frames))


# --- the driver ------------------------------------------------------------------------------------
def unchanged(store: Store, info: VideoInfo, fps: float) -> bool:
    """The index holds this very file (same size and modification time) sampled at `fps`."""
    video = store.find_video(info.path)
    return video is not None and video.fingerprint == file_fingerprint(info.path) and video.sample_fps == fps


def index_on_ray(store: Store, model_name: str, device: str, paths: list[Path], fps: float, allow_partial: bool,
                 settings: RaySettings, report: Reporter) -> int:
    """Index `paths` on the connected cluster into `store` (its write lock held); the number that failed."""
    with _sigterm_between_ray_calls() as stopping:
        run = _Run(store, (model_name, device, settings.threads), settings, report, stopping)
        for path in paths:
            stopping()
            run.submit(path, fps, allow_partial)
        run.collect()
        return run.failures


class _Run:
    """One `index --ray`: the tasks submitted, and the videos waiting for their commit."""

    def __init__(self, store: Store, model: tuple[str, str, int], settings: RaySettings, report: Reporter,
                 stopping: Callable[[], None]) -> None:
        self.ray = _ray()
        self.store, self.model, self.settings, self.report, self.stopping = store, model, settings, report, stopping
        options = dict(max_retries=RETRIES, retry_exceptions=True, num_cpus=settings.threads)
        self.whole, self.segment, self.stitched = (self.ray.remote(**options)(work)
                                                   for work in (_whole, _segment, _stitched))
        self.frames: dict[object, int] = {}  # a task's result -> its sampled frames, for progress
        self.videos: dict[object, str] = {}  # a video's result -> the path given
        self.waiting: list[tuple[str, IndexedVideo]] = []
        self.failures = 0

    def submit(self, path: Path, fps: float, allow_partial: bool) -> None:
        """A video's tasks: one for a short video, else one per segment and one to stitch them."""
        try:
            info = probe(path, allow_partial)
        except VQSearchError as error:
            self.failed(str(error))
            return
        if unchanged(self.store, info, fps):
            self.report.skipped(str(path))
            return
        spans = plan(len(sample_indices(info.frames, info.fps, fps)), fps, self.settings.segment_seconds)
        if len(spans) == 1:
            result = self.whole.remote(self.model, info, fps)
            self.frames[result] = spans[0][1]
        else:
            parts = [self.segment.remote(self.model, info, fps, span) for span in spans]
            self.frames.update({part: b - a for part, (a, b) in zip(parts, spans)})
            result = self.stitched.remote(self.model, info, fps, *parts)
        self.videos[result] = str(path)

    def collect(self) -> None:
        """Wait for the tasks; commit the finished videos by `commit_every`, at least every
        `COMMIT_SECONDS`, and when the last is in."""
        since = time.monotonic()
        unfinished = list(self.frames.keys() | self.videos.keys())
        with self.report.progress(sum(self.frames.values()), f"{len(self.videos)} videos"):
            while unfinished:
                done, unfinished = self.ray.wait(unfinished, timeout=1.0, fetch_local=False)
                self.stopping()
                for ref in done:
                    self.report.frames(self.frames.pop(ref, 0))
                    if ref in self.videos:
                        self.finished(self.videos.pop(ref), ref)
                if self.waiting and (len(self.waiting) >= self.settings.commit_every or not self.videos
                                     or time.monotonic() - since >= COMMIT_SECONDS):
                    self.commit()
                    since = time.monotonic()

    def finished(self, given: str, ref) -> None:
        try:
            outcome = self.ray.get(ref)
        except self.ray.exceptions.RayError as error:  # its retries ran out
            cause = getattr(error, "cause", None) or error
            reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            outcome = Failed(f"indexing {given} failed on the cluster after {RETRIES} retries "
                             f"({type(cause).__name__}: {reason[:200]})")
        if isinstance(outcome, Failed):
            self.failed(outcome.message)
        else:
            self.waiting.append((given, outcome))

    def failed(self, message: str) -> None:
        self.report.failed(message)
        self.failures += 1

    def commit(self) -> None:
        self.store.add_videos(self.model[0], self.waiting)
        for given, result in self.waiting:
            self.report.committed(given, result)
        self.waiting = []
