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
import sys
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
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
                 **({"include_dashboard": False} if local else {}))
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise VQSearchError(f"cannot join the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: "
                            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    try:
        yield
    finally:
        ray.shutdown()


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
    ray = _ray()
    options = dict(max_retries=RETRIES, retry_exceptions=True, num_cpus=settings.threads)
    whole, segment, stitched = (ray.remote(**options)(work) for work in (_whole, _segment, _stitched))
    model = (model_name, device, settings.threads)
    failures = 0
    frames: dict[object, int] = {}     # a task's result -> its sampled frames, for progress
    videos: dict[object, str] = {}     # a video's result -> the path given
    for path in paths:
        try:
            info = probe(path, allow_partial)
        except VQSearchError as error:
            report.failed(str(error))
            failures += 1
            continue
        if unchanged(store, info, fps):
            report.skipped(str(path))
            continue
        spans = plan(len(sample_indices(info.frames, info.fps, fps)), fps, settings.segment_seconds)
        if len(spans) == 1:
            result = whole.remote(model, info, fps)
            frames[result] = spans[0][1]
        else:
            parts = [segment.remote(model, info, fps, span) for span in spans]
            frames.update({part: b - a for part, (a, b) in zip(parts, spans)})
            result = stitched.remote(model, info, fps, *parts)
        videos[result] = str(path)
    waiting: list[tuple[str, IndexedVideo]] = []
    since = time.monotonic()
    unfinished = list(frames.keys() | videos.keys())
    with report.progress(sum(frames.values()), f"{len(videos)} videos"):
        while unfinished:
            done, unfinished = ray.wait(unfinished, timeout=1.0, fetch_local=False)
            for ref in done:
                report.frames(frames.pop(ref, 0))
                if ref in videos:
                    given = videos.pop(ref)
                    outcome = _outcome(ray, ref, given)
                    if isinstance(outcome, Failed):
                        report.failed(outcome.message)
                        failures += 1
                    else:
                        waiting.append((given, outcome))
            if waiting and (len(waiting) >= settings.commit_every or not videos
                            or time.monotonic() - since >= COMMIT_SECONDS):
                store.add_videos(model_name, waiting)
                for given, result in waiting:
                    report.committed(given, result)
                waiting, since = [], time.monotonic()
    return failures


def _outcome(ray, ref, given: str) -> IndexedVideo | Failed:
    """A video's result, or why it failed when its retries ran out, in one line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as error:
        cause = getattr(error, "cause", None) or error
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        return Failed(f"indexing {given} failed on the cluster after {RETRIES} retries "
                      f"({type(cause).__name__}: {reason[:200]})")
