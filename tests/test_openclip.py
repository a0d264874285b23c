"""OpenCLIP backbones by name: dense tokens, text, REN's region pooling, weights, the registry, the CLI.

Everything runs on randomly initialised small open_clip configurations: no weights are downloaded.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vqsearch.errors import VQSearchError
from vqsearch.models import factory
from vqsearch.models.device import resolve_device  # noqa: E402
from vqsearch.models.openclip import (
    LOCAL_ARCHS, TINY_RANDOM, CLIPRegionPooling, OpenCLIPBackbone, OpenCLIPCheckpointError, OpenCLIPText,
    load_openclip, read_state_dict,
)

open_clip = pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def tiny():
    return load_openclip(TINY_RANDOM, None)


def _frames(b: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, h, w, 3), dtype=np.uint8)


def _variant(**vision) -> torch.nn.Module:
    cfg = copy.deepcopy(LOCAL_ARCHS[TINY_RANDOM])
    cfg["vision_cfg"].update(vision)
    torch.manual_seed(0)
    return open_clip.model.CLIP(**cfg).eval()


# ---------- backbone ----------

def test_backbone_shapes_stride_and_aspect(tiny):
    model, _ = tiny
    backbone = OpenCLIPBackbone(model, long_side=128)
    assert backbone.stride == 16 and backbone.dim == 64
    assert backbone.input_size(720, 1280) == (64, 128)      # long side 128, multiples of 16
    assert backbone.input_size(1280, 720) == (128, 64)
    assert backbone.input_size(600, 800) == (96, 128)
    feats = backbone.features(_frames(3, 80, 128))
    assert feats.shape == (3, 64, 5, 8) and feats.dtype == np.float32
    # tokens after the final LayerNorm: zero mean, unit variance per token (ln_post is identity-init)
    assert np.allclose(feats.mean(1), 0, atol=1e-4) and np.allclose(feats.std(1), 1, atol=1e-2)
    tall = backbone.features(_frames(1, 128, 48))
    assert tall.shape == (1, 64, 8, 3)


def test_native_size_matches_open_clip_forward(tiny):
    model, _ = tiny
    backbone = OpenCLIPBackbone(model, long_side=64)
    frames = _frames(2, 64, 64)
    with torch.no_grad():
        ref = model.visual.forward_intermediates(backbone.preprocess(frames), indices=[1],
                                                 normalize_intermediates=True)["image_intermediates"][0]
    np.testing.assert_allclose(backbone.features(frames), ref.numpy(), atol=1e-5)


def test_positional_embedding_interpolation(tiny):
    model, _ = tiny
    backbone = OpenCLIPBackbone(model)
    pe = model.visual.positional_embedding  # 4 x 4 grid + CLS
    assert torch.equal(backbone.positional_embedding(4, 4), pe)
    wide = backbone.positional_embedding(5, 8)
    assert wide.shape == (1 + 40, 64)
    assert torch.equal(wide[0], pe[0])                      # the CLS position is kept as is
    grid = wide[1:].reshape(5, 8, 64)
    assert not torch.allclose(grid[0, 0], grid[-1, -1])
    # a smooth resampling: corners stay close to the trained corners
    trained = pe[1:].reshape(4, 4, 64)
    for (y, x), (ty, tx) in {(0, 0): (0, 0), (4, 7): (3, 3)}.items():
        assert torch.nn.functional.cosine_similarity(grid[y, x], trained[ty, tx], dim=0) > 0.5
    small = backbone.positional_embedding(2, 3)
    assert small.shape == (1 + 6, 64) and torch.isfinite(small).all()


def test_mean_std_from_the_model(tiny):
    model, _ = tiny
    backbone = OpenCLIPBackbone(model)
    frames = np.full((1, 16, 16, 3), 255, np.uint8)
    x = backbone.preprocess(frames)
    mean, std = model.visual.preprocess_cfg["mean"], model.visual.preprocess_cfg["std"]
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), (1 - np.array(mean)) / np.array(std), rtol=1e-5)


# ---------- text ----------

def test_text_encoder_unit_norm_and_deterministic(tiny):
    model, tokenizer = tiny
    text = OpenCLIPText(model, tokenizer)
    out = text.encode(["a coffee mug", "a red ball", "a coffee mug"])
    assert out.shape == (3, 32) and out.dtype == np.float32 and text.dim == 32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(out[0], out[2], atol=1e-6)
    assert not np.allclose(out[0], out[1])
    again, _ = load_openclip(TINY_RANDOM, None)  # seeded: the same model in every process
    np.testing.assert_allclose(OpenCLIPText(again, tokenizer).encode(["a coffee mug"])[0], out[0], atol=1e-6)


# ---------- REN's training-free transfer ----------

def _image_embedding(model, backbone, frames):
    with torch.no_grad():
        return model.encode_image(backbone.preprocess(frames), normalize=True).reshape(len(frames), -1).numpy()


@pytest.mark.parametrize("soft", [False, True])
def test_full_mask_region_token_is_the_image_embedding(tiny, soft):
    model, _ = tiny
    backbone = OpenCLIPBackbone(model, long_side=64)
    frames = _frames(2, 64, 64, seed=3)
    _, contexts = backbone.features_with_context(frames)
    pooling = CLIPRegionPooling(backbone, soft=soft)
    assert pooling.mode == "tok" and pooling.dim == 32
    image = _image_embedding(model, backbone, frames)
    for b in range(2):
        tokens = pooling(contexts[b], np.full((2, 4, 4), 0.7, np.float32))
        np.testing.assert_allclose(tokens, np.stack([image[b]] * 2), atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(tokens, axis=1), 1, atol=1e-5)


def test_different_masks_give_different_tokens(tiny):
    model, _ = tiny
    backbone = OpenCLIPBackbone(model, long_side=128)
    _, contexts = backbone.features_with_context(_frames(1, 80, 128, seed=4))
    masks = np.zeros((4, 5, 8), np.float32)
    masks[0, :2, :4] = 1
    masks[1, 3:, 4:] = 1
    masks[2, :2, :4] = 0.9          # the same region as 0 once binarised at half max
    masks[2, 4, 7] = 0.3
    masks[3, :, :] = 1
    pooling = CLIPRegionPooling(backbone)
    tokens = pooling(contexts[0], masks)
    assert tokens.shape == (4, 32)
    np.testing.assert_allclose(tokens[0], tokens[2], atol=1e-5)
    sims = tokens @ tokens.T
    assert sims[0, 1] < 0.9999 and sims[0, 3] < 0.9999 and sims[1, 3] < 0.9999
    # masks at another resolution are resized to the patch grid; no regions -> empty
    up = np.kron(masks[:2], np.ones((4, 4), np.float32))
    np.testing.assert_allclose(pooling(contexts[0], up), tokens[:2], atol=1e-5)
    assert pooling(contexts[0], np.zeros((0, 5, 8), np.float32)).shape == (0, 32)
    # soft masks weigh patches: a soft mask peaked on region 0 lands nearer token 0 than region 1
    soft = CLIPRegionPooling(backbone, soft=True)(contexts[0], masks[:1] * 0.99 + 0.01)
    assert soft[0] @ tokens[0] > soft[0] @ tokens[1]


@pytest.mark.parametrize("vision", [
    {"attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 2},
    {"attentional_pool": "parallel", "attn_pooler_queries": 4, "attn_pooler_heads": 2, "width": 32,
     "head_width": 16},
    {"pool_type": "avg"},
    {"pool_type": "avg", "final_ln_after_pool": True},
    {"qk_norm": True, "ls_init_value": 0.1},       # open_clip's custom attention block
])
def test_other_poolings_full_mask_equals_image_embedding(vision):
    model = _variant(**vision)
    backbone = OpenCLIPBackbone(model, long_side=64)
    frames = _frames(1, 64, 64, seed=5)
    feats, contexts = backbone.features_with_context(frames)
    assert feats.shape[1:] == (backbone.dim, 4, 4)
    pooling = CLIPRegionPooling(backbone)
    np.testing.assert_allclose(pooling(contexts[0], np.ones((1, 4, 4))), _image_embedding(model, backbone, frames),
                               atol=1e-5)
    half = np.zeros((1, 4, 4)); half[0, :2] = 1
    assert float(pooling(contexts[0], half)[0] @ _image_embedding(model, backbone, frames)[0]) < 0.9999


# ---------- weights ----------

def test_local_state_dict_loads_torch_and_safetensors(tiny, tmp_path):
    model, _ = tiny
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["visual.proj"] = sd["visual.proj"] + 1.0
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"epoch": 3, "name": "x", "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    loaded, _ = load_openclip(TINY_RANDOM, str(path))
    assert torch.equal(loaded.visual.proj, sd["visual.proj"])
    from safetensors.torch import save_file

    st = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    built = factory.create_model(f"openclip:{TINY_RANDOM}:{st}")
    assert torch.equal(built.backbone.visual.proj, sd["visual.proj"])


def test_non_state_dict_checkpoints_are_refused(tmp_path):
    pickled = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)                  # a pickled module: weights_only refuses
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listed)
    text = tmp_path / "notes.bin"
    text.write_text("not a checkpoint")
    raw = tmp_path / "raw.pkl.bin"
    raw.write_bytes(pickle.dumps({"a": 1}))
    for path in (pickled, listed, text, raw):
        with pytest.raises(OpenCLIPCheckpointError, match="not .*state dict"):
            read_state_dict(path)
    # refused before any model is built, through the registry too
    with pytest.raises(VQSearchError, match="holds pickled objects, refused"):
        factory.create_model(f"openclip:ViT-B-16:{pickled}")
    with pytest.raises(VQSearchError, match="no such OpenCLIP checkpoint"):
        factory.create_model(f"openclip:ViT-B-16:{tmp_path / 'missing.bin'}")
    wrong = tmp_path / "wrong.pth"
    torch.save({"foo.weight": torch.zeros(3)}, wrong)
    with pytest.raises(OpenCLIPCheckpointError, match="not of OpenCLIP tiny-random"):
        load_openclip(TINY_RANDOM, str(wrong))


def test_unknown_architecture_and_tag_are_clear_errors():
    with pytest.raises(VQSearchError, match="unknown OpenCLIP architecture"):
        load_openclip("ViT-Q-99", "x.bin")
    with pytest.raises(VQSearchError, match="no OpenCLIP pretrained tag 'nope' for ViT-B-16; tags: .*laion2b_s34b_b88k"):
        load_openclip("ViT-B-16", "nope")


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(VQSearchError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(VQSearchError, match="no CUDA"):
            resolve_device("cuda")


# ---------- registry ----------

def test_registry_names_and_configs():
    assert factory.get_config(factory.DEFAULT_MODEL).name == "lite0-conse"
    assert factory._RANDOM_ARCHS == tuple(LOCAL_ARCHS)
    tag = factory.get_config("openclip:ViT-B-16:laion2b_s34b_b88k")
    assert (tag.merge_cosine, tag.merge_mask_iou, tag.track_tau, tag.joint_threshold) == (0.975, 0.8, 0.65, 0.18)
    assert tag.extra == {"arch": "ViT-B-16", "pretrained": "laion2b_s34b_b88k"}
    assert factory.get_config("openclip:ViT-L-14:/w/a:b.bin").extra["pretrained"] == "/w/a:b.bin"
    tren = factory.get_config("tren:openclip:ViT-B-16:laion2b_s34b_b88k:/heads/tren.pth")
    assert tren.extra["head"] == "/heads/tren.pth" and tren.extra["arch"] == "ViT-B-16" and tren.track_tau == 0.65
    assert factory.get_config("openclip:tiny-random").input_long_side == 128
    for bad in ("openclip:ViT-B-16", "openclip:", "tren:openclip:ViT-B-16", "tren:x:y", "clip"):
        with pytest.raises(VQSearchError):
            factory.get_config(bad)
    assert "openclip:tiny-random" in factory.model_names()


def test_create_tiny_model_and_text_side():
    model = factory.create_model("openclip:tiny-random", device="cpu")
    assert model.has_text and model.backbone.stride == 16
    encoder = model.region_encoder
    assert encoder.region_pooling is not None and encoder.text_dim == 32 == model.text_encoder.dim


def test_track_text_tokens_are_averaged():
    from vqsearch.merge import FrameRegions, TrackBuilder

    builder = TrackBuilder(0.5)
    for frame, text in ((0, [1.0, 0.0]), (1, [0.0, 1.0])):
        regions = FrameRegions(np.ones((1, 3), np.float32), np.ones((1, 2, 2), np.float32),
                               np.zeros((1, 2), np.float32), np.array([text], np.float32))
        builder.add_frame(frame, regions, np.zeros((1, 4), np.float32))
    (track,) = builder.tracks
    np.testing.assert_allclose(track.text_token, [0.5, 0.5])


def _tren_head(path: Path) -> None:
    from vqsearch.models.tren import TRENConfig, TRENHead

    torch.manual_seed(0)
    head = TRENHead(TRENConfig(dim=64, text_dim=32, k=2, num_layers=1, heads=2, input_size=64, patch_size=16))
    torch.save(head.state_dict(), path)


def test_tren_on_openclip_indexes_a_real_video(videos, tmp_path):
    from indexer.pipeline import index_video
    from indexer.video import probe

    head = tmp_path / "tren_head.pth"
    _tren_head(head)
    model = factory.create_model(f"tren:openclip:tiny-random:{head}")
    assert model.region_encoder.k == 2 and model.region_encoder.region_pooling is None
    result = index_video(model, probe(videos / "04_coffee.mp4"), fps=1.0)
    assert len(result.tracks) > 0 and result.visual.shape[1] == 64 and result.text.shape[1] == 32
    np.testing.assert_allclose(np.linalg.norm(result.text, axis=1), 1, atol=1e-5)
    with pytest.raises(VQSearchError, match="no such T-REN head"):
        factory.create_model(f"tren:openclip:tiny-random:{tmp_path / 'none.pth'}")


# ---------- the command line, end to end ----------

def _cli(*args: str, db: Path) -> dict:
    run = subprocess.run([sys.executable, "-m", "vqsearch.cli", *args, "--db", str(db), "--json"],
                         capture_output=True, text=True, env=os.environ.copy())
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _check_answer(answer: dict, text: str | None, crop: str | None) -> None:
    assert answer["query"] == {"text": text, "crop": crop}
    assert answer["results"], answer
    for hit in answer["results"] + ([answer["last_seen"]] if answer["last_seen"] else []):
        assert Path(hit["video"]).name == "04_coffee.mp4"
        assert 0 <= hit["start_frame"] <= hit["end_frame"] and hit["start_time"] <= hit["end_time"]
        assert np.isfinite(hit["score"]) and hit["boxes"]
        for box in hit["boxes"]:
            assert set(box) == {"frame", "x", "y", "width", "height"} and box["width"] > 0 < box["height"]
    scores = [r["score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.slow
def test_cli_index_and_query_with_tiny_openclip(videos, tmp_path):
    import decord
    from PIL import Image

    db = tmp_path / "db"
    video = videos / "04_coffee.mp4"
    summary = _cli("index", str(video), "--model", "openclip:tiny-random", db=db)["videos"][0]
    assert summary["frames_sampled"] == 48 and summary["tracks"] > 0
    assert summary["patch_tokens"] == 48 * 4 * 8   # 720 x 1280 -> 64 x 128 input, stride 16
    listed = _cli("list", db=db)["videos"]
    assert [v["model"] for v in listed] == ["openclip:tiny-random"]
    crop = tmp_path / "crop.png"
    Image.fromarray(decord.VideoReader(str(video))[60].asnumpy()[200:420, 500:760]).save(crop)
    _check_answer(_cli("query", "--text", "coffee mug", "--top-k", "3", db=db), "coffee mug", None)
    _check_answer(_cli("query", "--crop", str(crop), db=db), None, str(crop))
    _check_answer(_cli("query", "--text", "mug", "--crop", str(crop), db=db), "mug", str(crop))


@pytest.mark.slow
def test_cli_index_and_query_with_the_tren_head(videos, tmp_path):
    """`--model tren:openclip:...:<head.pth>`: the learned head on the OpenCLIP backbone, end to end."""
    head = tmp_path / "tren_head.pth"
    _tren_head(head)
    name = f"tren:openclip:tiny-random:{head}"
    db = tmp_path / "db"
    summary = _cli("index", str(videos / "04_coffee.mp4"), "--model", name, "--fps", "2", db=db)["videos"][0]
    assert summary["frames_sampled"] == 20 and summary["tracks"] > 0
    assert [v["model"] for v in _cli("list", db=db)["videos"]] == [name]
    _check_answer(_cli("query", "--text", "kettle", "--model", name, db=db), "kettle", None)
