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


def test_two_backbone_frames_at_once_give_the_same_features_in_order():
    """Indexing runs the embedded backbone on two OpenVINO streams at once: the batches must come
    back in the order they went in, each with the features one stream alone gives."""
    from types import SimpleNamespace

    import numpy as np

    from indexer.pipeline import backbone_stage
    from vqsearch.models.efficientnet import EfficientNetLite0

    runtime.set_threads(2)
    try:
        backbone = EfficientNetLite0()
        model = SimpleNamespace(backbone=backbone, region_encoder=SimpleNamespace(region_pooling=None))
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (1, 96, 160, 3), dtype=np.uint8) for _ in range(6)]
        chunks = [([n], f) for n, f in enumerate(frames)]
        alone = [b.features for b in backbone_stage(iter(chunks), model, threads=1, workers=1)]
        batches = list(backbone_stage(iter(chunks), model, threads=1, workers=2))
        assert backbone.session(1)._streams == 2
        assert [b.frames for b in batches] == [[n] for n in range(6)]
        for batch, features in zip(batches, alone):
            np.testing.assert_array_equal(batch.features, features)
        assert not np.allclose(alone[0], alone[1])  # different frames, different features
    finally:
        runtime.set_threads(None)
