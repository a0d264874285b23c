"""SAM 2 stages on a randomly initialised TINY SAM 2 built by sam2's own builder on the CPU.

Random weights say nothing about accuracy: these tests check loading, shapes, ranges, frame
bookkeeping, coordinate scaling and determinism.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from queries.relocate import augment_queries  # noqa: E402
from queries.sam2_stages import (  # noqa: E402
    SAM2Stages, clip_box, load_sam2, mask_box, scale_box,
)
from vqsearch.errors import VQSearchError  # noqa: E402

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
# sam2.1 Hiera-T shrunk to a 256-pixel, 1.4M-parameter model (same classes, same wiring).
TINY = [
    "model.image_size=256",
    "model.image_encoder.trunk.embed_dim=16",
    "model.image_encoder.trunk.num_heads=1",
    "model.image_encoder.trunk.stages=[1,1,2,1]",
    "model.image_encoder.trunk.global_att_blocks=[3]",
    "model.image_encoder.neck.d_model=64",
    "model.image_encoder.neck.position_encoding.num_pos_feats=64",
    "model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "model.memory_attention.d_model=64",
    "model.memory_attention.num_layers=1",
    "model.memory_attention.layer.d_model=64",
    "model.memory_attention.layer.dim_feedforward=128",
    "model.memory_attention.layer.self_attention.embedding_dim=64",
    "model.memory_attention.layer.self_attention.feat_sizes=[16,16]",
    "model.memory_attention.layer.cross_attention.embedding_dim=64",
    "model.memory_attention.layer.cross_attention.feat_sizes=[16,16]",
    "model.memory_attention.layer.cross_attention.kv_in_dim=32",
    "model.memory_encoder.out_dim=32",
    "++model.memory_encoder.in_dim=64",
    "++model.memory_encoder.mask_downsampler.embed_dim=64",
    "model.memory_encoder.fuser.layer.dim=64",
    "model.memory_encoder.position_encoding.num_pos_feats=32",
]
BALL = (366.0, 428.0, 72.0, 70.0)      # the yellow ball in 02_cups.mp4 at frame 0 (original pixels)
ORIGINAL_HW = (720, 1280)
SMALL_HW = (90, 160)                   # what the test reader decodes at
CLIP = [0, 2, 4, 6, 8, 10]


def tiny_model(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return load_sam2(CONFIG, None, allow_random=True, overrides=TINY, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model is too small to gain from intra-op threads; on a busy 2-core machine they
    only spin (a 6-frame track: ~0.35 s on one thread, 1.3-5 s on two)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def stages(model):
    return SAM2Stages(model)


@pytest.fixture(scope="module")
def frame0(videos: Path) -> np.ndarray:
    import decord

    return decord.VideoReader(str(videos / "02_cups.mp4"), num_threads=1)[0].asnumpy()


@pytest.fixture(scope="module")
def small_reader(videos: Path):
    import decord

    return decord.VideoReader(str(videos / "02_cups.mp4"), width=SMALL_HW[1], height=SMALL_HW[0],
                              num_threads=1)


@pytest.fixture()
def present(model):
    """Make the random model always see the object (object-score head biased up), then restore."""
    bias = model.video.sam_mask_decoder.pred_obj_score_head.layers[-1].bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias.fill_(20.0)
    yield
    with torch.no_grad():
        bias.copy_(saved)


def toy_encoder(crop: np.ndarray) -> np.ndarray:
    crop = crop.astype(np.float32)
    return np.r_[crop.mean(axis=(0, 1)), crop.std(axis=(0, 1)), crop.shape[:2]]


def inside(box, height, width) -> bool:
    x, y, w, h = box
    return w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height


# ---- loading


def test_model_is_the_real_sam2_and_tiny(model):
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    assert isinstance(model.video, SAM2VideoPredictor)
    assert isinstance(model.image, SAM2ImagePredictor) and model.image.model is model.video
    assert model.video.image_size == 256 and not model.video.training
    assert sum(p.numel() for p in model.video.parameters()) < 2_000_000


def test_random_weights_only_when_asked():
    with pytest.raises(VQSearchError, match="no SAM 2 checkpoint given for config"):
        load_sam2(CONFIG, None)


def test_missing_checkpoint_names_file_and_config(tmp_path):
    missing = tmp_path / "sam2.1_hiera_tiny.pt"
    with pytest.raises(VQSearchError) as error:
        load_sam2(CONFIG, missing)
    assert str(missing) in str(error.value) and CONFIG in str(error.value)
    assert "not found" in str(error.value)


def test_unknown_config_is_a_clear_error(tmp_path):
    with pytest.raises(VQSearchError, match="cannot build SAM 2 from config 'configs/nope.yaml'"):
        load_sam2("configs/nope.yaml", None, allow_random=True)


def test_checkpoint_round_trip_and_mismatch(model, tmp_path, frame0):
    state = {name: tensor.clone() for name, tensor in model.video.state_dict().items()}
    path = tmp_path / "tiny.pt"
    torch.save({"model": state}, path)
    loaded = load_sam2(CONFIG, path, overrides=TINY)  # weights_only=True load
    assert loaded.checkpoint == str(path)
    for name, tensor in loaded.video.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    crop = frame0[300:600, 300:600]
    point = (100, 120)
    assert SAM2Stages(loaded).point_to_box(crop, point) == SAM2Stages(model).point_to_box(crop, point)

    state["no_mem_embed"] = torch.zeros(1, 1, 32)
    torch.save({"model": state}, path)
    with pytest.raises(VQSearchError, match=r"does not fit config .*size mismatch for no_mem_embed"):
        load_sam2(CONFIG, path, overrides=TINY)
    state.pop("no_mem_embed")
    torch.save({"model": state}, path)
    with pytest.raises(VQSearchError, match=r"does not fit config .*1 missing keys.*no_mem_embed"):
        load_sam2(CONFIG, path, overrides=TINY)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(VQSearchError, match="cannot read SAM 2 checkpoint"):
        load_sam2(CONFIG, path, overrides=TINY)


def test_config_file_on_disk(model, tmp_path):
    """A YAML path works like a packaged config name, and sam2's own hydra setup is restored."""
    import sam2
    import yaml
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(sam2.__file__).parent / CONFIG)
    for override in TINY:
        key, value = override.lstrip("+").split("=", 1)
        OmegaConf.update(cfg, key, yaml.safe_load(value), force_add=True)
    path = tmp_path / "tiny.yaml"
    path.write_text("# @package _global_\n" + OmegaConf.to_yaml(cfg))
    torch.manual_seed(0)
    from_file = load_sam2(str(path), None, allow_random=True)
    assert from_file.video.image_size == 256
    assert ([t.shape for t in from_file.video.state_dict().values()]
            == [t.shape for t in model.video.state_dict().values()])
    tiny_model()  # the packaged configs still resolve afterwards


# ---- step 3


def test_point_to_box_inside_image_and_deterministic(stages, frame0):
    height, width = frame0.shape[:2]
    box = stages.point_to_box(frame0, (400, 460))
    assert box is not None and inside(box, height, width)
    assert all(float(v).is_integer() for v in box)  # tight mask box in whole pixels
    assert stages.point_to_box(frame0.copy(), (400, 460)) == box
    small = frame0[::4, ::4]
    assert inside(stages.point_to_box(small, (100, 115)), *small.shape[:2])


def test_refine_returns_box_and_unit_token_from_encoder(stages, frame0):
    height, width = frame0.shape[:2]
    box, token = stages.refine(frame0, BALL, toy_encoder)
    assert inside(box, height, width)
    cx, cy, cw, ch = stages.context_crop(BALL, height, width)
    assert cx <= box[0] and cy <= box[1] and box[0] + box[2] <= cx + cw and box[1] + box[3] <= cy + ch
    x, y, w, h = (int(v) for v in box)
    expected = toy_encoder(frame0[y:y + h, x:x + w])
    assert token.dtype == np.float32 and token.shape == expected.shape
    assert np.isclose(np.linalg.norm(token), 1.0)
    np.testing.assert_allclose(token, expected / np.linalg.norm(expected), rtol=1e-5)
    again = stages.refine(frame0, BALL, toy_encoder)
    assert again[0] == box and np.array_equal(again[1], token)


# ---- step 4


def test_track_frames_and_original_coordinates(stages, small_reader, present):
    track = stages.track(small_reader, 6, BALL, CLIP, original_hw=ORIGINAL_HW)
    assert list(track) == sorted(track) and set(track) <= set(CLIP) and 6 in track
    assert set(track) == set(CLIP)  # the object never gets lost with the biased score head
    for box in track.values():
        assert inside(box, *ORIGINAL_HW)
        # mask boxes on the 160x90 frames, scaled by 8 into 1280x720 pixels
        assert all(float(v / 8).is_integer() for v in box)
    assert stages.track(small_reader, 6, BALL, CLIP, original_hw=ORIGINAL_HW) == track  # deterministic
    # the same masks with a twice-as-large "original" size: every box doubles exactly
    doubled = stages.track(small_reader, 6, tuple(2 * v for v in BALL), CLIP,
                           original_hw=(2 * ORIGINAL_HW[0], 2 * ORIGINAL_HW[1]))
    assert doubled == {f: tuple(2 * v for v in b) for f, b in track.items()}


def test_track_stops_where_the_object_is_lost(stages, model, small_reader, present, monkeypatch):
    """Each direction stops at the first empty mask: blank every mask after two per propagation."""
    real = model.video.propagate_in_video

    def blanking(*args, **kwargs):
        for step, (frame, ids, masks) in enumerate(real(*args, **kwargs)):
            yield frame, ids, (masks if step < 2 else torch.full_like(masks, -10.0))

    monkeypatch.setattr(model.video, "propagate_in_video", blanking)
    assert set(stages.track(small_reader, 6, BALL, CLIP, original_hw=ORIGINAL_HW)) == {4, 6, 8}
    # in chunks of 2 frames each chunk restarts the count, so nothing is lost
    monkeypatch.setattr(stages, "chunk_frames", 2)
    assert set(stages.track(small_reader, 6, BALL, CLIP, original_hw=ORIGINAL_HW)) == set(CLIP)


def test_track_lost_at_once_keeps_the_candidate(stages, small_reader, monkeypatch):
    monkeypatch.setattr(stages, "score_threshold", 1e9)
    assert stages.track(small_reader, 4, BALL, CLIP, original_hw=ORIGINAL_HW) == {4: BALL}
    with pytest.raises(ValueError, match="start frame 5"):
        stages.track(small_reader, 5, BALL, CLIP)


# ---- step 5


def test_augment_queries(small_reader):
    track = {0: (0.0, 0.0, 80.0, 80.0), 2: (800.0, 400.0, 160.0, 96.0), 4: (1.0, 1.0, 2.0, 2.0),
             6: (1200.0, 640.0, 200.0, 200.0), 8: (16.0, 24.0, 40.0, 48.0)}
    crops = augment_queries(small_reader, track, n=3, original_hw=ORIGINAL_HW)
    # usable (sides >= 8): frames 0, 2, 6, 8; spread over 3 -> 0, 6, 8; boxes at 1/8, clipped to 160x90
    assert [c.shape for c in crops] == [(10, 10, 3), (10, 10, 3), (6, 5, 3)]
    assert all(c.dtype == np.uint8 for c in crops)
    assert len(augment_queries(small_reader, track, n=10, original_hw=ORIGINAL_HW)) == 4
    assert augment_queries(small_reader, {}, n=3) == []


# ---- helpers


def test_box_helpers():
    mask = np.zeros((10, 20), bool)
    mask[2:5, 3:9] = True
    assert mask_box(mask) == (3.0, 2.0, 6.0, 3.0)
    assert mask_box(np.zeros((4, 4), bool)) is None
    assert scale_box((1, 2, 3, 4), 2, 0.5) == (2, 1, 6, 2)
    assert clip_box((-5.5, 3.2, 10, 100), 50, 60) == (0, 3, 5, 47)
    assert clip_box((70, 70, 0, 0), 50, 60) == (59, 49, 1, 1)


def test_no_weights_means_no_stages(capsys):
    assert SAM2Stages.from_config(None, None) is None
    assert capsys.readouterr().err == ""


def test_configured_but_missing_checkpoint_is_not_a_fallback(tmp_path):
    with pytest.raises(VQSearchError, match="SAM 2 checkpoint not found"):
        SAM2Stages.from_config(CONFIG, str(tmp_path / "missing.pt"))
    with pytest.raises(VQSearchError, match="without a SAM 2 config"):
        SAM2Stages.from_config(None, str(tmp_path / "missing.pt"))


def test_tracking_is_quiet(stages, small_reader, capfd):
    """sam2's tqdm bars and post-processing warnings stay off stderr."""
    capfd.readouterr()
    stages.track(small_reader, 2, BALL, CLIP[:3], original_hw=ORIGINAL_HW)
    assert capfd.readouterr().err == ""
