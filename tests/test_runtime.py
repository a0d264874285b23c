"""Model files cached on disk, and the CPU threads the models get."""

from __future__ import annotations

from pathlib import Path

import pytest

from vqsearch.models import runtime


def test_a_cached_model_and_its_weights_file_land_together(tmp_path, monkeypatch):
    """An OpenVINO model is an .xml and a .bin: both move into place, the .bin first, and a failed
    write leaves neither."""
    monkeypatch.setenv("VQSEARCH_CACHE", str(tmp_path))

    def write(path: Path) -> None:
        path.write_text("graph")
        path.with_suffix(".bin").write_text("weights")

    path = runtime.cached("model", "v1", ".xml", write, companions=(".bin",))
    assert path.read_text() == "graph" and path.with_suffix(".bin").read_text() == "weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.with_suffix(".bin").name])

    def fail(path: Path) -> None:
        path.with_suffix(".bin").write_text("half the weights")
        raise OSError("disk full")

    with pytest.raises(OSError):
        runtime.cached("other", "v1", ".xml", fail, companions=(".bin",))
    assert len(list(tmp_path.iterdir())) == 2


def test_indexing_gives_the_backbone_and_the_detector_half_the_cores_each():
    try:
        for threads, each in ((4, 2), (2, 1), (1, 1), (3, 1)):
            runtime.set_threads(threads)
            assert runtime.pipeline_threads() == each
    finally:
        runtime.set_threads(None)
