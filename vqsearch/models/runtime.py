"""Frozen torch models run through OpenVINO on the CPU, exported to ONNX once and cached on disk.

EfficientNet-Lite0 and MiniLM are exported once; after that torch is not needed, so `query` and
the embedded model's `index` run without importing torch. OpenVINO ran Lite0 1.2-1.4x faster
than ONNX Runtime on this kind of CPU with the same outputs (cosine 1.0 on Lite0's feature maps):
it computes in float32 here, never in the bfloat16 it would pick by itself on a CPU with AMX.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from vqsearch.errors import VQSearchError


def cache_dir() -> Path:
    """Where converted models live: $VQSEARCH_CACHE, else ~/.cache/vqsearch."""
    root = os.environ.get("VQSEARCH_CACHE") or Path.home() / ".cache" / "vqsearch"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_file(name: str, fingerprint: str, suffix: str) -> Path:
    """A cache file whose name changes whenever `fingerprint` does, so stale files are never read."""
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    return cache_dir() / f"{name}-{digest}{suffix}"


def cached(name: str, fingerprint: str, suffix: str, write: Callable[[Path], None],
           companions: tuple[str, ...] = ()) -> Path:
    """The cache file for (`name`, `fingerprint`), made first by `write(path)` if there is none.

    `write` writes a temporary file (its name ends in `suffix`) that is then renamed into place,
    so a crash never leaves a truncated file behind, nor two processes a mixed one. `companions`:
    suffixes of files `write` puts beside it (an OpenVINO model's ".bin" weights beside its
    ".xml"), moved into place first, so the main file's presence says all of them are there.
    """
    path = cache_file(name, fingerprint, suffix)
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp" + suffix)
        os.close(fd)
        beside = [(Path(tmp).with_suffix(extra), path.with_suffix(extra)) for extra in companions]
        try:
            write(Path(tmp))
            for written, final in beside:
                os.replace(written, final)
            os.replace(tmp, path)
        finally:
            for leftover in [Path(tmp), *(written for written, _ in beside)]:
                if leftover.exists():
                    leftover.unlink()
    return path


def stamp(*files: Path) -> str:
    """Sizes and modification times of files: a fingerprint that changes when one is replaced."""
    return ":".join(f"{stat.st_size}:{stat.st_mtime_ns}" for stat in (file.stat() for file in files))


_threads: int | None = None


def set_threads(threads: int | None) -> None:
    """CPU threads for the models from now on (`vqsearch index --threads`; None: every core): the
    OpenVINO graphs compiled after this, and torch's while `index_video` runs."""
    global _threads
    if threads is not None and threads < 1:
        raise VQSearchError(f"--threads must be at least 1, got {threads}")
    _threads = threads


def default_threads() -> int:
    return _threads or os.cpu_count() or 1


def pipeline_threads() -> int:
    """CPU threads for each model while indexing: the backbone and the detector run at once, beside
    decoding and the regions (`indexer.pipeline`), so each gets half the cores. Why: on 2 cores a
    backbone on both cost 52 ms of CPU a sampled frame against 46 on one (its two threads wait on
    each other whenever another stage holds a core), for the same wall time."""
    return max(1, default_threads() // 2)


def streams(threads: int) -> int:
    """How many inferences on `threads` CPU threads each run at once: one per share of the cores
    (`compiled` gives a model that many streams; indexing keeps that many backbone frames in flight)."""
    return max(1, default_threads() // threads)


_compiling = threading.Lock()


class Frozen:
    """A compiled model whose inference requests are shared: each inference already uses the
    cores it was given, and every request holds its own activations (hundreds of MB), so a request
    is made only when all the others are busy, up to one per stream the model was compiled with."""

    def __init__(self, compiled, streams: int = 1) -> None:
        self.compiled = compiled
        self._idle = [compiled.create_infer_request()]
        self._made, self._streams = 1, streams
        self._free = threading.Condition()

    def run(self, **inputs: np.ndarray) -> list[np.ndarray]:
        """Outputs in the model's order, as arrays the caller owns."""
        with self._free:
            while not self._idle and self._made == self._streams:
                self._free.wait()
            if self._idle:
                request = self._idle.pop()
            else:
                request, self._made = self.compiled.create_infer_request(), self._made + 1
        try:
            result = request.infer(inputs)
            return [np.array(result[output]) for output in self.compiled.outputs]
        finally:
            with self._free:
                self._idle.append(request)
                self._free.notify()


def compiled(name: str, fingerprint: str, export: Callable[[Path], None], threads: int | None = None,
             suffix: str = ".onnx") -> Frozen:
    """The model `name` compiled for the CPU, calling `export(path)` first if no cached model file
    exists (`cached`): ONNX, or with `suffix` ".xml" an OpenVINO model (its ".bin" beside it).
    `fingerprint` must change whenever the exported graph would (weights file, code version).
    `threads`: CPU threads for one inference (default: every core); on fewer threads than the
    cores, one stream (its own copy of the graph) per share of them, so that many inferences run
    at once (`indexer.pipeline`: two backbone frames and the detector beside them).
    """
    import openvino as ov

    def quiet_export(path: Path) -> None:
        with warnings.catch_warnings():  # the exporter's deprecation chatter is not for users
            warnings.simplefilter("ignore")
            export(path)

    path = cached(name, fingerprint, suffix, quiet_export, companions=(".bin",) if suffix == ".xml" else ())
    threads = threads or default_threads()
    at_once = streams(threads)
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads * at_once,
              "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": at_once, "CACHE_DIR": str(cache_dir() / "openvino")}
    with _compiling:
        model = ov.Core().compile_model(str(path), "CPU", config)
        # pybind11 sets up its numpy bridge on first use, and two threads doing that at once
        # deadlocked (each holding what the other waits for: the GIL, a static's guard); done
        # here, before any inference, one thread at a time.
        ov.Tensor(np.zeros(1, np.float32)).data
    return Frozen(model, at_once)


class Compiled:
    """A model compiled (`compiled`) on first use for each thread count asked for: indexing runs
    it on part of the cores (`pipeline_threads`), a query on all of them."""

    def __init__(self, name: str, fingerprint: str, export: Callable[[Path], None], suffix: str = ".onnx") -> None:
        self.name, self.fingerprint, self.export, self.suffix = name, fingerprint, export, suffix
        self._by_threads: dict[tuple[int, int], Frozen] = {}
        self._lock = threading.Lock()

    def __call__(self, threads: int | None = None) -> Frozen:
        """The model on `threads` CPU threads (default: `default_threads()`)."""
        threads = threads or default_threads()
        with self._lock:
            key = (threads, default_threads())  # the streams depend on both
            if key not in self._by_threads:
                self._by_threads[key] = compiled(self.name, self.fingerprint, self.export, threads, self.suffix)
            return self._by_threads[key]
