"""Frozen torch modules run through ONNX Runtime on the CPU, exported once and cached on disk.

ONNX Runtime runs EfficientNet-Lite0 about 4x faster than PyTorch eager on this kind of CPU, and
a cached session lets `query` answer without importing torch at all.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np


def cache_dir() -> Path:
    """Where exported models live: $VQSEARCH_CACHE, else ~/.cache/vqsearch."""
    root = os.environ.get("VQSEARCH_CACHE") or Path.home() / ".cache" / "vqsearch"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_file(name: str, fingerprint: str, suffix: str) -> Path:
    """A cache file whose name changes whenever `fingerprint` does, so stale files are never read."""
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    return cache_dir() / f"{name}-{digest}{suffix}"


def session(
    name: str,
    fingerprint: str,
    export: Callable[[Path], None],
    threads: int | None = None,
):
    """An ONNX Runtime session for `name`, calling `export(path)` first if no cached file exists.

    `fingerprint` must change whenever the exported graph would (weights file, code version):
    it names the cache file. The export is written to a temporary file and renamed, so a crash
    never leaves a truncated model behind.
    """
    import onnxruntime as ort

    path = cache_file(name, fingerprint, ".onnx")
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
        os.close(fd)
        try:
            with warnings.catch_warnings():  # the exporter's deprecation chatter is not for users
                warnings.simplefilter("ignore")
                export(Path(tmp))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Memory patterns are planned and kept per input shape: query-time refinement feeds crops of
    # many shapes, and with them a query's memory grew by ~1 GB for no speed (measured).
    options.enable_mem_pattern = False
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess, **inputs: np.ndarray) -> list[np.ndarray]:
    """Run a session on named numpy inputs; returns its outputs in order."""
    return sess.run(None, inputs)
