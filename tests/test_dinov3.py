"""DINOv3 backbone (Meta checkpoint layout -> timm) and the dino.txt text side, on tiny random models.

No DINOv3 weights exist on these machines: Meta-layout files are made here from small timm models
by renaming keys the way Meta's release names them (storage_tokens, ls1.gamma, qkv.bias with a
k-masking bias_mask, rope_embed.periods, mask_token), and dino.txt files by prefixing a tiny text
tower and vision head with the release's `text_model.` / `visual_model.head.`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vqsearch.errors import VQSearchError
from vqsearch.models import dinov3 as d3
from vqsearch.models.base import ModelConfig

TINY = dict(depth=2, embed_dim=64, num_heads=2)
ARCH = "vit_small_patch16_dinov3"


def _tiny(arch: str = ARCH, seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = d3.create_timm_model(arch, init_values=0.5, **TINY)
        if hasattr(model, "blocks"):  # timm inits q/v biases to zero: make them matter
            for name, p in model.named_parameters():
                if name.endswith(("q_bias", "v_bias")):
                    p.data.normal_(0, 0.5)
    return model


def _meta_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """timm state dict -> Meta's official DINOv3 key layout (the inverse of timm's filter)."""
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.endswith(("attn.q_bias", "attn.v_bias")):
            continue
        k = k.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        out[k] = v.clone()
        if k.endswith("attn.qkv.weight"):
            d = v.shape[1]
            base = k[: -len("weight")]
            q = sd.get(base.replace("qkv.", "q_bias"), torch.zeros(d))
            vb = sd.get(base.replace("qkv.", "v_bias"), torch.zeros(d))
            out[base + "bias"] = torch.cat([q, torch.zeros(d), vb]).clone()
            out[base + "bias_mask"] = torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)])
    out["mask_token"] = torch.zeros(1, model.embed_dim)
    out["rope_embed.periods"] = model.rope.periods.to(torch.bfloat16)  # Meta stores them in bf16
    return out


def _round_periods(model: torch.nn.Module) -> torch.nn.Module:
    model.rope.periods.copy_(model.rope.periods.to(torch.bfloat16).float())
    return model


def _frames(h: int = 288, w: int = 512, n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------ backbone


def test_features_non_square_shape_and_input_size():
    backbone = d3.DINOv3Backbone.from_timm(_tiny(), long_side=512)
    assert backbone.input_size(1080, 1920) == (288, 512)
    assert backbone.input_size(500, 333) == (512, 336)
    assert (backbone.stride, backbone.dim) == (16, 64)
    feats = backbone.features(_frames())
    assert feats.shape == (1, 64, 18, 32) and feats.dtype == np.float32
    # final LayerNorm with unit weight / zero bias: every patch token has ~zero mean, unit variance
    assert np.allclose(feats.mean(axis=1), 0, atol=1e-4)
    cls, regs, patches = backbone.tokens(_frames())
    assert cls.shape == (1, 64) and regs.shape == (1, 4, 64) and patches.shape == (1, 64, 18, 32)


def test_meta_layout_checkpoint_loads_and_gives_same_features(tmp_path):
    model = _round_periods(_tiny())
    meta = _meta_layout(model)
    assert "storage_tokens" in meta and "blocks.0.ls1.gamma" in meta and "blocks.0.attn.qkv.bias_mask" in meta
    path = tmp_path / "dinov3_tiny_pretrain.pth"
    torch.save(meta, path)
    loaded = d3.DINOv3Backbone(path, arch=ARCH, model_kwargs=TINY)
    torch.testing.assert_close(loaded.model.rope.periods, meta["rope_embed.periods"].float())
    frames = _frames(160, 224, n=2)
    expected = d3.DINOv3Backbone.from_timm(model).features(frames)
    np.testing.assert_allclose(loaded.features(frames), expected, atol=1e-5, rtol=1e-5)
    assert loaded.features(frames).shape == (2, 64, 10, 14)


def test_meta_layout_with_qkv_biases_needs_qkvb_arch(tmp_path):
    model = _round_periods(_tiny(ARCH + "_qkvb", seed=1))
    path = tmp_path / "qkvb.pth"
    torch.save(_meta_layout(model), path)
    with pytest.raises(d3.DINOv3CheckpointError, match="_qkvb"):
        d3.DINOv3Backbone(path, arch=ARCH, model_kwargs=TINY)
    loaded = d3.DINOv3Backbone(path, arch=ARCH + "_qkvb", model_kwargs=TINY)
    frames = _frames(64, 96)
    np.testing.assert_allclose(loaded.features(frames), d3.DINOv3Backbone.from_timm(model).features(frames),
                               atol=1e-5, rtol=1e-5)


def test_timm_layout_safetensors_loads(tmp_path):
    from safetensors.torch import save_file

    model = _tiny(seed=2)
    path = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = d3.DINOv3Backbone(path, arch=ARCH, model_kwargs=TINY)
    frames = _frames(64, 64)
    np.testing.assert_allclose(loaded.features(frames), d3.DINOv3Backbone.from_timm(model).features(frames),
                               atol=1e-6)


def test_non_state_dict_files_are_refused(tmp_path):
    pickled = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a pickled module: weights_only refuses it
    text = tmp_path / "config.pth"
    text.write_text(json.dumps({"arch": "vitl"}))
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listed)
    for path in (pickled, text, listed):
        with pytest.raises(d3.DINOv3CheckpointError, match="state dict"):
            d3.DINOv3Backbone(path, arch=ARCH, model_kwargs=TINY)
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(d3.DINOv3CheckpointError, match="not a DINOv3 backbone"):
        d3.DINOv3Backbone(other, arch=ARCH, model_kwargs=TINY)
    wrong_size = tmp_path / "wrong.pth"
    torch.save(_meta_layout(d3.create_timm_model(ARCH, depth=1, embed_dim=64, num_heads=2)), wrong_size)
    with pytest.raises(d3.DINOv3CheckpointError, match="does not fit"):
        d3.DINOv3Backbone(wrong_size, arch=ARCH, model_kwargs=TINY)


def test_missing_weights_say_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("VQSEARCH_DINOV3_DIR", str(tmp_path))
    with pytest.raises(VQSearchError) as err:
        d3.DINOv3Backbone(None)
    msg = str(err.value)
    assert d3.BACKBONE_FILE in msg and str(tmp_path / d3.BACKBONE_FILE) in msg and "dinov3:" in msg
    with pytest.raises(VQSearchError, match="elsewhere.pth"):
        d3.DINOv3Backbone(tmp_path / "elsewhere.pth")
    with pytest.raises(VQSearchError, match=d3.DINOTXT_FILE):
        d3.DinoTxtText(None)


# ---------------------------------------------------------------------------------------- dino.txt


def _tiny_text(seed: int = 0) -> d3.DinoTxtTextModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = d3.DinoTxtTextModel(context_length=77, vocab_size=49408, dim=64, heads=2, layers=2, embed_dim=128)
        torch.nn.init.normal_(model.backbone.positional_embedding, std=0.1)
        torch.nn.init.normal_(model.backbone.token_embedding.weight, std=0.1)
    return model.eval()


def _tiny_head(seed: int = 0) -> d3.DinoTxtVisionHead:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = d3.DinoTxtVisionHead(dim=64, heads=2, blocks=2, hidden=192)
        for block in head.blocks:
            block.ls1.gamma.data.fill_(0.5)
            block.ls2.gamma.data.fill_(0.5)
    return head.eval()


def _dinotxt_file(tmp_path, text: d3.DinoTxtTextModel, head: d3.DinoTxtVisionHead):
    sd = {f"text_model.{k}": v for k, v in text.state_dict().items()}
    sd |= {f"visual_model.head.{k}": v for k, v in head.state_dict().items()}
    sd["logit_scale"] = torch.tensor([2.659])
    path = tmp_path / "dinotxt_tiny.pth"
    torch.save(sd, path)
    return path


def test_text_encoder_unit_vectors_in_patch_half(tmp_path):
    model = _tiny_text()
    path = _dinotxt_file(tmp_path, model, _tiny_head())
    text = d3.DinoTxtText(path, heads=2)  # heads are not in the tensors: width / 64 unless given
    assert text.dim == 64 and text.model.embed_dim == 128
    out = text.encode(["red mug", "car keys on the table", "red mug"])
    assert out.shape == (3, 64) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert abs(float(out[0] @ out[1])) < 0.999
    np.testing.assert_allclose(out[0], out[2], atol=1e-6)
    assert text.encode([]).shape == (0, 64)
    # the released layout round-trips: same numbers as the module itself, on the EOT token
    ids = text.tokenizer(["photo of a red mug"])
    assert ids[0, 0] == 49406 and int(ids[0].argmax()) == int((ids[0] > 0).sum()) - 1
    with torch.no_grad():
        direct = model(ids)[:, 64:]
    np.testing.assert_allclose(out[0], torch.nn.functional.normalize(direct, dim=-1)[0].numpy(), atol=1e-5)
    full = d3.DinoTxtText(path, part="full", heads=2).encode(["red mug"])
    assert full.shape == (1, 128)


def test_text_tower_is_causal_and_pools_eot():
    model = _tiny_text(seed=3)
    ids = torch.zeros(2, 77, dtype=torch.long)
    ids[:, :4] = torch.tensor([49406, 320, 321, 49407])
    ids[1, 10] = 500  # a token after EOT cannot change the EOT output of a causal tower
    with torch.no_grad():
        out = model(ids)
    torch.testing.assert_close(out[0], out[1])


def test_vision_head_and_region_pooling(tmp_path):
    head = _tiny_head()
    path = _dinotxt_file(tmp_path, _tiny_text(), head)
    loaded = d3.load_dinotxt_vision_head(path, heads=2)
    tokens = torch.randn(1, 1 + 4 + 12, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens), head(tokens))
    backbone = d3.DINOv3Backbone.from_timm(_tiny())
    _, contexts = backbone.features_with_context(_frames(64, 96))
    masks = np.zeros((2, 4, 6), np.float32)
    masks[0, :2, :3] = 1.0
    masks[1, 2:, 3:] = 0.8
    pooled = d3.DinoTxtRegionPooling(loaded)(contexts[0], masks)
    assert pooled.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1, atol=1e-5)
    assert d3.DinoTxtRegionPooling(loaded)(contexts[0], masks[:0]).shape == (0, 64)


# ----------------------------------------------------------------------------------------- builder


def test_build_dinov3_model(tmp_path):
    from vqsearch.models.tren import TRENConfig, TRENHead
    from vqsearch.regions import AffinityRegionEncoder

    backbone_path = tmp_path / "backbone.pth"
    torch.save(_meta_layout(_tiny()), backbone_path)
    text_path = _dinotxt_file(tmp_path, _tiny_text(), _tiny_head())
    config = ModelConfig(name="dinov3-test", input_long_side=128,
                         extra={"arch": ARCH, "model_kwargs": TINY, "weights": str(backbone_path)})

    model = d3.build_dinov3_model(config, text_weights=text_path)
    assert model.backbone.input_size(480, 854) == (64, 128)
    assert model.backbone.features(_frames(64, 128)).shape == (1, 64, 4, 8)
    assert model.text_encoder.encode(["cup"]).shape == (1, 64)
    enc = model.region_encoder
    assert isinstance(enc, AffinityRegionEncoder) and enc.stride == 16 and enc.text_dim is None

    pooled = d3.build_dinov3_model(config, text_weights=text_path, text_pooling=True).region_encoder
    assert pooled.region_pooling is not None and pooled.text_dim == 64

    head_path = tmp_path / "tren.pth"
    torch.save(TRENHead(TRENConfig(dim=64, text_dim=64, heads=2, input_size=64, patch_size=16)).state_dict(), head_path)
    tren = d3.build_dinov3_model(config, text_weights=text_path, tren_weights=head_path).region_encoder
    assert tren.k == 3 and tren.text_dim == 64

    bad_path = tmp_path / "tren_bad.pth"
    torch.save(TRENHead(TRENConfig(dim=32, text_dim=64, heads=2, input_size=64)).state_dict(), bad_path)
    with pytest.raises(VQSearchError, match="64-d features"):
        d3.build_dinov3_model(config, text_weights=text_path, tren_weights=bad_path).region_encoder


def test_build_without_text_file_is_visual_only(tmp_path, monkeypatch):
    monkeypatch.setenv("VQSEARCH_DINOV3_DIR", str(tmp_path))
    torch.save(_meta_layout(_tiny()), tmp_path / d3.BACKBONE_FILE)
    config = ModelConfig(name="dinov3-test", input_long_side=64, extra={"arch": ARCH, "model_kwargs": TINY})
    model = d3.build_dinov3_model(config)
    assert model.text_encoder is None and not model.has_text


def test_registry_names_for_dinov3():
    from vqsearch.models import factory

    config = factory.get_config("dinov3:/w/dinov3_vitl16.pth")
    assert config.extra["weights"] == "/w/dinov3_vitl16.pth" and config.track_tau == 0.65
    tren = factory.get_config("tren:dinov3:/w/dinov3_vitl16.pth:/h/tren_region_encoder.pth")
    assert (tren.extra["inner"], tren.extra["head"]) == ("dinov3:/w/dinov3_vitl16.pth", "/h/tren_region_encoder.pth")
    with pytest.raises(VQSearchError, match="dinov3:<path"):
        factory.get_config("dinov3:")
    with pytest.raises(VQSearchError, match="not found"):
        factory.create_model("dinov3:/nowhere/dinov3_vitl16.pth")
