"""T-REN head: shapes, masks, checkpoints (ours and the official layout), resolution changes.

The official-layout checkpoints here are built tensor by tensor with upstream's key names and
shapes (github.com/savya08/T-REN model.py, `RegionEncoder`), and `official_forward` restates the
upstream forward pass in plain tensor ops, so the loader and the module are checked against it.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqsearch.models.tren import TRENConfig, TRENHead, load_tren_head

SMALL = TRENConfig(dim=32, text_dim=16, input_size=128, patch_size=16)  # 8 x 8 grid


def _head(cfg: TRENConfig = SMALL, seed: int = 0) -> TRENHead:
    torch.manual_seed(seed)
    head = TRENHead(cfg).eval()
    with torch.no_grad():  # make the learned query embeddings clearly distinct
        head.queries.weight.normal_()
    return head


def _inputs(b: int = 2, p: int = 5, h: int = 8, w: int = 8, d: int = 32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, d, h, w, generator=g)
    ys = torch.randint(0, h * 16, (b, p, 1), generator=g)
    xs = torch.randint(0, w * 16, (b, p, 1), generator=g)
    return feats, torch.cat([ys, xs], -1)


# ---------- the official layout, restated ----------

def _official_table(h: int, w: int, gaussian: torch.Tensor) -> torch.Tensor:
    """Upstream PositionalEmbedding2D: cell-centre coordinates (x, y) in [0, 1] -> [D, h, w]."""
    ones = torch.ones(h, w)
    y, x = (ones.cumsum(0) - 0.5) / h, (ones.cumsum(1) - 0.5) / w
    c = 2 * np.pi * ((2 * torch.stack([x, y], -1) - 1) @ gaussian)
    return torch.cat([c.sin(), c.cos()], -1).permute(2, 0, 1)


def official_state_dict(d=32, t=16, k=2, layers=3, heads=4, res=128, patch=16, gaussian=None):
    g = torch.Generator().manual_seed(3)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd: dict[str, torch.Tensor] = {"scale_embeddings.weight": rnd(k, d)}

    def lin(name: str, out: int, inp: int, bias: bool = False) -> None:
        sd[name + ".weight"] = rnd(out, inp) / math.sqrt(inp)
        if bias:
            sd[name + ".bias"] = 0.1 * rnd(out)

    def norm(name: str, n: int) -> None:
        sd[name + ".weight"], sd[name + ".bias"] = 1 + 0.1 * rnd(n), 0.1 * rnd(n)

    def attention(name: str, n_heads: int, values: bool = True) -> None:
        for proj in ("q_proj", "k_proj") + (("v_proj", "out_proj") if values else ()):
            lin(f"{name}.{proj}", d, d)
        norm(f"{name}.q_norm", d // n_heads)
        norm(f"{name}.k_norm", d // n_heads)

    for i in range(layers):
        c = f"region_attention_layers.{i}"
        norm(f"{c}.query_norm", d)
        attention(f"{c}.cross_attn", heads)
        norm(f"{c}.mlp_norm", d)
        lin(f"{c}.mlp.linear1", 2 * d, d, bias=True)
        lin(f"{c}.mlp.linear2", d, 2 * d, bias=True)
        norm(f"{c}.out_norm", d)
        norm(f"region_attention_norms.{i}", d)
        attention(f"prompt_attention_layers.{i}", heads)
        norm(f"prompt_attention_norms.{i}", d)
    attention("token_prediction_head", 1, values=False)
    lin("text_alignment_block.linear1", 2 * d, d, bias=True)
    lin("text_alignment_block.linear2", t, 2 * d, bias=True)
    if gaussian is None:
        gaussian = torch.randn((2, d // 2), generator=torch.Generator().manual_seed(42))
    sd["location_embeddings"] = _official_table(res, res, gaussian)
    sd["feature_embeddings"] = _official_table(res // patch, res // patch, gaussian).flatten(1).T
    return sd


def official_forward(sd, feats, points, heads):
    """Upstream RegionEncoder.forward in eval mode, from the official state dict."""
    k, d = sd["scale_embeddings.weight"].shape
    b, _, h, w = feats.shape
    p = points.shape[1]
    layers = len({key.split(".")[1] for key in sd if key.startswith("region_attention_layers.")})

    def ln(x, name):
        return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"])

    def attn(name, q, kk, v, n_heads, values=True):
        split = lambda x: x.reshape(x.shape[0], x.shape[1], n_heads, -1).transpose(1, 2)  # noqa: E731
        qh = ln(split(q @ sd[name + ".q_proj.weight"].T), name + ".q_norm")
        kh = ln(split(kk @ sd[name + ".k_proj.weight"].T), name + ".k_norm")
        vh = split(v @ sd[name + ".v_proj.weight"].T if values else v)
        wts = torch.softmax(qh @ kh.transpose(-1, -2) * qh.shape[-1] ** -0.5, -1)
        out = (wts @ vh).transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)
        return (out @ sd[name + ".out_proj.weight"].T if values else out), wts

    def mlp(x, name):
        x = F.gelu(x @ sd[name + ".linear1.weight"].T + sd[name + ".linear1.bias"])
        return x @ sd[name + ".linear2.weight"].T + sd[name + ".linear2.bias"]

    spatial = sd["location_embeddings"][:, points[..., 0], points[..., 1]].permute(1, 2, 0)[:, :, None]
    kv = feats.flatten(2).transpose(1, 2) + sd["feature_embeddings"]
    q = sd["scale_embeddings.weight"].expand(b, p, k, d)
    for i in range(layers):
        c = f"region_attention_layers.{i}"
        x = (q + spatial).reshape(b, p * k, d)
        x = x + attn(c + ".cross_attn", ln(x, c + ".query_norm"), kv, kv, heads)[0]
        x = ln(mlp(ln(x, c + ".mlp_norm"), c + ".mlp"), c + ".out_norm") + x
        x = ln(x, f"region_attention_norms.{i}").reshape(b * p, k, d)
        x = attn(f"prompt_attention_layers.{i}", x, x, x, heads)[0]
        q = ln(x, f"prompt_attention_norms.{i}").reshape(b, p, k, d)
    tok, wts = attn("token_prediction_head", q.reshape(b, p * k, d), kv,
                    kv - sd["feature_embeddings"], 1, values=False)
    masks = (wts / wts.max(-1, keepdim=True)[0]).reshape(b, p, k, h, w)
    tok = tok.reshape(b, p, k, d)
    return tok, masks, mlp(tok, "text_alignment_block")


# ---------- tests ----------

def test_output_shapes():
    out = _head()(*_inputs())
    assert out["tokens"].shape == (2, 5, 3, 32)
    assert out["masks"].shape == (2, 5, 3, 8, 8)
    assert out["attention"].shape == (2, 5, 3, 8, 8)
    assert out["text_tokens"].shape == (2, 5, 3, 16)


def test_masks_max_normalised_and_attention_sums_to_one():
    out = _head()(*_inputs())
    masks = out["masks"].flatten(3)
    assert torch.allclose(masks.amax(-1), torch.ones(2, 5, 3))
    assert masks.min() >= 0 and masks.max() <= 1
    assert torch.allclose(out["attention"].flatten(3).sum(-1), torch.ones(2, 5, 3), atol=1e-5)


def test_k_queries_of_a_point_differ():
    tokens = _head()(*_inputs())["tokens"]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.allclose(tokens[:, :, i], tokens[:, :, j], atol=1e-4)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_state_dict_round_trip_needs_no_config(tmp_path, suffix):
    cfg = TRENConfig(dim=32, text_dim=16, k=2, num_layers=1, heads=4, input_size=96, patch_size=12)
    head, path = _head(cfg), tmp_path / f"head{suffix}"
    if suffix == ".pth":
        torch.save(head.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file(head.state_dict(), str(path))
    loaded = load_tren_head(path)
    for field in ("dim", "text_dim", "k", "num_layers", "heads", "input_size", "patch_size"):
        assert getattr(loaded.config, field) == getattr(cfg, field)
    feats, points = _inputs(h=8, w=8, seed=5)
    points = points * 12 // 16
    a, b = head(feats, points), loaded(feats, points)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_official_checkpoint_loads_and_matches_upstream_forward(tmp_path):
    sd = official_state_dict()
    wrapped = {"epoch": 4, "iter_count": 10, "best_val_loss": torch.tensor(0.5),
               "optimizer_state": {"state": {}, "param_groups": []},
               "ren_region_encoder_state": sd}
    torch.save(wrapped, tmp_path / "tren_region_encoder.pth")
    head = load_tren_head(tmp_path / "tren_region_encoder.pth")
    c = head.config
    assert (c.dim, c.text_dim, c.k, c.num_layers, c.heads) == (32, 16, 2, 3, 4)
    assert (c.input_size, c.patch_size, c.grid) == (128, 16, 8)
    # the seed-42 matrix regenerates upstream's tables exactly
    assert torch.equal(head.patch_pe, sd["feature_embeddings"].T.reshape(32, 8, 8))
    feats, points = _inputs(p=7)
    out = head(feats, points)
    tok, masks, text = official_forward(sd, feats, points, heads=4)
    assert torch.allclose(out["tokens"], tok, atol=1e-5)
    assert torch.allclose(out["masks"], masks, atol=1e-5)
    assert torch.allclose(out["text_tokens"], text, atol=1e-5)


def test_official_table_from_another_gaussian_is_recovered(tmp_path):
    gaussian = 2.0 * torch.randn((2, 16), generator=torch.Generator().manual_seed(7))
    sd = official_state_dict(k=3, layers=2, heads=8, gaussian=gaussian)
    torch.save(sd, tmp_path / "flat.pth")
    head = load_tren_head(tmp_path / "flat.pth")
    assert torch.allclose(head.pe_gaussian, gaussian, atol=1e-5)
    feats, points = _inputs()
    tok, masks, _ = official_forward(sd, feats, points, heads=8)
    out = head(feats, points)
    assert torch.allclose(out["tokens"], tok, atol=1e-4)
    assert torch.allclose(out["masks"], masks, atol=1e-4)


class _NotAllowed:  # unpickling this needs arbitrary code: weights_only refuses it
    pass


@pytest.mark.parametrize("payload", ["list", "tensor", "object", "garbage", "foreign"])
def test_non_state_dict_files_are_refused(tmp_path, payload):
    path = tmp_path / "bad.pth"
    if payload == "list":
        torch.save([1, 2, 3], path)
    elif payload == "tensor":
        torch.save(torch.zeros(3), path)
    elif payload == "object":
        with open(path, "wb") as f:
            pickle.dump(_NotAllowed(), f, protocol=2)
    elif payload == "garbage":
        path.write_bytes(b"definitely not a checkpoint")
    else:
        torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="state dict"):
        load_tren_head(path)


def test_positional_tables_follow_a_new_feature_resolution():
    head = _head()  # built for 8 x 8
    feats, points = _inputs(h=12, w=10)
    out = head(feats, points)
    assert out["tokens"].shape == (2, 5, 3, 32)
    assert out["masks"].shape == (2, 5, 3, 12, 10)
    assert torch.allclose(out["masks"].flatten(3).amax(-1), torch.ones(2, 5, 3))
    assert torch.isfinite(out["text_tokens"]).all()
    resized = F.interpolate(head.patch_pe[None], (12, 10), mode="bilinear", align_corners=False)
    assert torch.equal(head.patch_encoding(12, 10), resized[0].flatten(1).T)
    assert torch.equal(head.patch_encoding(8, 8), head.patch_pe.flatten(1).T)


def test_project_text_shapes():
    head = _head()
    assert head.project_text(torch.randn(7, 32)).shape == (7, 16)
    assert head.project_text(torch.randn(2, 5, 3, 32)).shape == (2, 5, 3, 16)
    assert head.k == 3 and head.text_dim == 16
