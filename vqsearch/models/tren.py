"""The learned T-REN region encoder head (Khosla et al. 2026, arXiv 2604.18573).

Point prompts become k region tokens each, in the frozen backbone's feature space, plus a soft
mask per token and a text-aligned copy of the token. Written from a reading of the official
implementation, github.com/savya08/T-REN `model.py` (classes `RegionEncoder`, `AttentionLayer`,
`CrossAttentionBlock`, `TextAlignmentBlock`, `PositionalEmbedding2D`), so that the released
checkpoint `tren_region_encoder.pth` (DINOv3 ViT-L/16, D = T = 1024, 512 px input, 32 x 32 grid,
k = 3, 2 layers, 8 heads) loads and gives the same outputs.

Computation (eval mode; dropout 0.1 everywhere in training, as upstream):
  point PE   Fourier features of the point: c = 2 * ((x + .5) / W_in, (y + .5) / H_in) - 1,
             [sin, cos](2 pi c @ G), G a fixed [2, D/2] Gaussian (seed 42, scale 1 upstream),
             so the Fourier size is D (D/2 frequencies): it is added to D-dim queries as is.
  patch PE   the same features at the centres of the trained h x w grid, stored as a table and
             bilinearly resized (align_corners=False) for other grids, as upstream does.
  queries    k learned embeddings, the same for every point, [B, P, k, D].
  layer l    q += point PE; q = LN(CrossBlock(q, patches + patch PE)) over all P*k queries;
             q = LN(SelfAttn(q)) among the k queries of each point (no residual, as upstream).
  CrossBlock x = q + Attn(LN(q), kv); out = x + LN(MLP(LN(x))), MLP D -> 2D -> D, GELU.
  Attn       bias-free q/k/v/out projections, per-head LayerNorm on q and k, softmax(qk/sqrt(d)).
  final      single-head Attn with q/k projections and q/k LayerNorms but no value and no output
             projection: keys = patches + patch PE, values = raw patch tokens -> tokens [B,P,k,D];
             its attention over the h*w patches, divided by its max, is the mask.
  text       MLP D -> 2D -> T, GELU, dropout 0.1 (`project_text`).

Checkpoint keys, official -> ours (`OFFICIAL_KEY_MAP`, regexes applied to the front of each key;
the sub-module names inside a block are the official ones, so only prefixes change):
  scale_embeddings.*                 -> queries.*
  region_attention_layers.{l}.*      -> layers.{l}.cross.*   (query_norm, cross_attn.{q,k,v,out}_proj,
                                                               cross_attn.{q,k}_norm, mlp_norm,
                                                               mlp.linear1/2, out_norm)
  region_attention_norms.{l}.*       -> layers.{l}.cross_norm.*
  prompt_attention_layers.{l}.*      -> layers.{l}.self_attn.*  ({q,k,v,out}_proj, {q,k}_norm)
  prompt_attention_norms.{l}.*       -> layers.{l}.self_norm.*
  token_prediction_head.*            -> token_head.*  (q_proj, k_proj, q_norm, k_norm)
  text_alignment_block.linear1/2.*   -> text_proj.0/3.*
  feature_embeddings [h*w, D]        -> patch_pe [D, h, w]  (reshaped)
  location_embeddings [D, R, R]      -> not kept (1 GB at 512 px): it gives R (input size) and the
                                        Gaussian matrix `pe_gaussian` [2, D/2], checked against it.
Ours only: `pe_gaussian`, `geometry` = [input size, patch size]. Upstream wraps the state dict as
{"ren_region_encoder_state": ..., "optimizer_state": ..., "epoch": ...}; the wrapper is unwrapped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vqsearch.errors import VQSearchError
from vqsearch.models.checkpoints import CheckpointError, read_state_dict

OFFICIAL_KEY_MAP: dict[str, str] = {
    r"^scale_embeddings\.": "queries.",
    r"^region_attention_layers\.(\d+)\.": r"layers.\1.cross.",
    r"^region_attention_norms\.(\d+)\.": r"layers.\1.cross_norm.",
    r"^prompt_attention_layers\.(\d+)\.": r"layers.\1.self_attn.",
    r"^prompt_attention_norms\.(\d+)\.": r"layers.\1.self_norm.",
    r"^token_prediction_head\.": "token_head.",
    r"^text_alignment_block\.linear1\.": "text_proj.0.",
    r"^text_alignment_block\.linear2\.": "text_proj.3.",
    r"^feature_embeddings$": "patch_pe",
}
_WRAPPER_KEYS = ("ren_region_encoder_state", "state_dict", "model")


class TRENCheckpointError(CheckpointError):
    """A file that is not a T-REN region encoder state dict (the CLI reports it on one line)."""


@dataclass(frozen=True)
class TRENConfig:
    """Head dimensions; the defaults are the released DINOv3 ViT-L/16 model."""

    dim: int = 1024              # D, backbone feature size (= Fourier feature size)
    text_dim: int = 1024         # T, text embedding size
    k: int = 3                   # region tokens per point prompt
    num_layers: int = 2
    heads: int = 8
    input_size: int = 512        # trained input resolution (square), pixels
    patch_size: int = 16         # backbone stride: trained grid = input_size // patch_size
    fourier_scale: float = 1.0   # std of the Gaussian matrix (used only at initialisation)
    fourier_seed: int = 42       # upstream seeds it with 42; the checkpoint decides on load
    dropout: float = 0.1

    @property
    def grid(self) -> int:
        return self.input_size // self.patch_size


def fourier_matrix(dim: int, scale: float = 1.0, seed: int = 42) -> torch.Tensor:
    """The fixed [2, dim/2] Gaussian matrix, drawn exactly as upstream (CPU generator, seed 42)."""
    return scale * torch.randn((2, dim // 2), generator=torch.Generator().manual_seed(seed))


def fourier_features(yx: torch.Tensor, size: tuple[int, int], gaussian: torch.Tensor) -> torch.Tensor:
    """(y, x) pixel positions [..., 2] in an image of `size` (H, W) -> [..., D] Fourier features.

    Pixel centres are normalised by the image size, so the same code serves point prompts at any
    input resolution and the patch grid (cell indices with size = grid shape).
    """
    yx = yx.to(gaussian.dtype)
    coords = torch.stack([(yx[..., 1] + 0.5) / size[1], (yx[..., 0] + 0.5) / size[0]], dim=-1)
    coords = 2 * coords - 1
    coords = 2 * math.pi * (coords @ gaussian)  # same op order as upstream: bit-identical tables
    return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)


def _grid_features(h: int, w: int, gaussian: torch.Tensor) -> torch.Tensor:
    """Fourier features at the centres of an h x w grid -> [D, h, w]."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pe = fourier_features(torch.stack([ys, xs], -1), (h, w), gaussian)
    return pe.permute(2, 0, 1).contiguous()


class _Attention(nn.Module):
    """Upstream attention: bias-free projections, LayerNorm on each head's q and k."""

    def __init__(self, dim: int, heads: int, dropout: float, project_out: bool = True) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False) if project_out else None
        self.out_proj = nn.Linear(dim, dim, bias=False) if project_out else None
        self.q_norm = nn.LayerNorm(dim // heads)
        self.k_norm = nn.LayerNorm(dim // heads)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if proj is not None:
                nn.init.kaiming_normal_(proj.weight, mode="fan_in", nonlinearity="linear")

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, Lq, D], [B, Lk, D], [B, Lk, D] -> ([B, Lq, D], attention [B, H, Lq, Lk] if asked)."""
        query = self.q_norm(self._split(self.q_proj(q)))
        key = self.k_norm(self._split(self.k_proj(k)))
        value = self._split(self.v_proj(v) if self.v_proj is not None else v)
        p = self.dropout if self.training else 0.0
        attn = None
        if weights:  # the explicit path: the final head needs its attention map
            attn = torch.softmax(query @ key.transpose(-2, -1) * query.shape[-1] ** -0.5, dim=-1)
            out = F.dropout(attn, p, self.training) @ value
        else:
            out = F.scaled_dot_product_attention(query, key, value, dropout_p=p)
        out = out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)
        return (self.out_proj(out) if self.out_proj is not None else out), attn


class _MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int, dropout: float) -> None:
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(dim, hidden), nn.Linear(hidden, out)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.drop(F.gelu(self.linear1(x))))


class _CrossBlock(nn.Module):
    """Pre-norm cross-attention to the patches, then a post-normed MLP, both residual."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.query_norm, self.mlp_norm, self.out_norm = (nn.LayerNorm(dim) for _ in range(3))
        self.cross_attn = _Attention(dim, heads, dropout)
        self.mlp = _MLP(dim, 2 * dim, dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        x = q + self.drop(self.cross_attn(self.query_norm(q), kv, kv)[0])
        return x + self.out_norm(self.mlp(self.mlp_norm(x)))


class _DecoderLayer(nn.Module):
    """Queries look at the patches, then the k queries of one point look at each other."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.cross = _CrossBlock(dim, heads, dropout)
        self.cross_norm = nn.LayerNorm(dim)
        self.self_attn = _Attention(dim, heads, dropout)
        self.self_norm = nn.LayerNorm(dim)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        b, p, k, d = q.shape
        x = self.cross_norm(self.cross(q.reshape(b, p * k, d), kv)).reshape(b * p, k, d)
        x = self.self_norm(self.self_attn(x, x, x)[0])  # no residual here, as upstream
        return x.reshape(b, p, k, d)


class TRENHead(nn.Module):
    """T-REN head: point prompts + frozen patch features -> k region tokens, masks, text tokens.

    A `vqsearch.regions.RegionEncoder`: `encode` and `text_tokens` take and give numpy arrays,
    running the head on the device its weights sit on (bfloat16 autocast on a GPU).
    """

    region_pooling = None

    def __init__(self, config: TRENConfig | None = None) -> None:
        super().__init__()
        cfg = config or TRENConfig()
        if cfg.dim % (2 * cfg.heads) or cfg.dim % 2:
            raise ValueError(f"dim {cfg.dim} must be even and a multiple of heads {cfg.heads}")
        self.config, self.k, self.text_dim = cfg, cfg.k, cfg.text_dim
        gaussian = fourier_matrix(cfg.dim, cfg.fourier_scale, cfg.fourier_seed)
        self.register_buffer("pe_gaussian", gaussian)
        self.register_buffer("patch_pe", _grid_features(cfg.grid, cfg.grid, gaussian))
        self.register_buffer("geometry", torch.tensor([cfg.input_size, cfg.patch_size]))
        self.queries = nn.Embedding(cfg.k, cfg.dim)
        nn.init.normal_(self.queries.weight, std=0.02)
        self.layers = nn.ModuleList(
            _DecoderLayer(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.num_layers)
        )
        self.token_head = _Attention(cfg.dim, 1, 0.0, project_out=False)
        self.text_proj = nn.Sequential(
            nn.Linear(cfg.dim, 2 * cfg.dim), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(2 * cfg.dim, cfg.text_dim),
        )

    def patch_encoding(self, h: int, w: int) -> torch.Tensor:
        """Patch positional encoding for an h x w feature map -> [h*w, D], resized if needed."""
        pe = self.patch_pe
        if pe.shape[-2:] != (h, w):
            pe = F.interpolate(pe[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        return pe.flatten(1).transpose(0, 1)

    def point_encoding(self, points: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(y, x) pixels [B, P, 2] on an h x w feature map -> [B, P, D]; input = grid * patch."""
        patch = int(self.geometry[1])
        return fourier_features(points, (h * patch, w * patch), self.pe_gaussian)

    def forward(self, feature_maps: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B, D, h, w] features, [B, P, 2] (y, x) pixel prompts -> tokens, masks, text tokens.

        Also returns "attention" [B, P, k, h, w], the final head's softmax (sums to 1 per token).
        """
        b, d, h, w = feature_maps.shape
        if points.dim() == 2:
            points = points.expand(b, -1, -1)
        p, dtype = points.shape[1], feature_maps.dtype
        tokens = feature_maps.flatten(2).transpose(1, 2)
        kv = tokens + self.patch_encoding(h, w).to(dtype)
        point_pe = self.point_encoding(points, h, w).to(dtype)[:, :, None, :]
        q = self.queries.weight.to(dtype).expand(b, p, self.k, d)
        for layer in self.layers:
            q = layer(q + point_pe, kv)
        out, attn = self.token_head(q.reshape(b, p * self.k, d), kv, tokens, weights=True)
        attn = attn.reshape(b, p, self.k, h, w)
        region_tokens = out.reshape(b, p, self.k, d)
        masks = attn / attn.flatten(3).amax(-1)[..., None, None]
        return {
            "tokens": region_tokens,
            "masks": masks,
            "attention": attn,
            "text_tokens": self.project_text(region_tokens),
        }

    def project_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Visual tokens [..., D] (merged or not) -> text-aligned tokens [..., T]."""
        return self.text_proj(tokens)

    def _run(self, fn, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        device = next(self.parameters()).device
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
            out = fn(*(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays))
        return tuple(o.float().cpu().numpy() for o in (out if isinstance(out, tuple) else (out,)))

    def encode(self, features: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        def forward(f: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self(f, p)
            return out["tokens"].flatten(1, 2), out["masks"].flatten(1, 2)

        return self._run(forward, features, points)

    def text_tokens(self, tokens: np.ndarray) -> np.ndarray:
        return self._run(self.project_text, tokens)[0]


def _gaussian_from_table(table: torch.Tensor) -> torch.Tensor:
    """Recover G [2, D/2] from an upstream [D, R, R] table: the phase steps along x and y.

    Neighbouring pixels differ by 4 pi G / R < pi in phase, so unwrapping is exact; only used when
    the checkpoint was not made with the seed-42 matrix.
    """
    half, r = table.shape[0] // 2, table.shape[-1]

    def slope(line: torch.Tensor) -> torch.Tensor:
        phase = torch.atan2(line[:half].double(), line[half:].double())
        step = torch.remainder(phase.diff(dim=1) + math.pi, 2 * math.pi) - math.pi
        return step.sum(1) / (4 * math.pi * (r - 1) / r)

    return torch.stack([slope(table[:, 0, :]), slope(table[:, :, 0])]).float()


def _table_error(gaussian: torch.Tensor, table: torch.Tensor) -> float:
    """Max difference between our features and an upstream table on a 16 x 16 pixel sample."""
    r = table.shape[-1]
    idx = torch.linspace(0, r - 1, min(r, 16)).long()
    yx = torch.stack(torch.meshgrid(idx, idx, indexing="ij"), -1)
    ours = fourier_features(yx, (r, r), gaussian)
    return float((ours - table[:, yx[..., 0], yx[..., 1]].permute(1, 2, 0).float()).abs().max())


def _from_official(sd: dict[str, torch.Tensor], patch_size: int | None) -> dict[str, torch.Tensor]:
    """Official key names and tables -> ours (see the module docstring)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == "location_embeddings":
            continue
        for pattern, repl in OFFICIAL_KEY_MAP.items():
            if re.match(pattern, key):
                key = re.sub(pattern, repl, key)
                break
        out[key] = value
    dim = out["queries.weight"].shape[1]
    grid_pe = out.pop("patch_pe")  # [h*w, D], square grid upstream
    g = math.isqrt(grid_pe.shape[0])
    out["patch_pe"] = grid_pe.reshape(g, g, dim).permute(2, 0, 1).contiguous()
    gaussian = fourier_matrix(dim)
    table = sd.get("location_embeddings")
    if table is not None:
        if _table_error(gaussian, table) > 1e-6:
            gaussian = _gaussian_from_table(table)
            if _table_error(gaussian, table) > 1e-4:
                raise TRENCheckpointError("location_embeddings are not Gaussian Fourier features")
        input_size = table.shape[-1]
    else:
        input_size = g * (patch_size or 16)
    out["pe_gaussian"] = gaussian
    out["geometry"] = torch.tensor([input_size, input_size // g])
    return out


def _infer_config(sd: dict[str, torch.Tensor]) -> dict[str, int]:
    """Every dimension from tensor shapes (ours after mapping)."""
    k, dim = sd["queries.weight"].shape
    layers = {int(m.group(1)) for key in sd if (m := re.match(r"layers\.(\d+)\.", key))}
    head_dim = sd["layers.0.cross.cross_attn.q_norm.weight"].shape[0]
    input_size, patch_size = (int(v) for v in sd["geometry"])
    return {
        "dim": dim, "k": k, "num_layers": len(layers), "heads": dim // head_dim,
        "text_dim": sd["text_proj.3.weight"].shape[0],
        "input_size": input_size, "patch_size": patch_size,
    }


def load_tren_head(path: str | Path, **config: object) -> TRENHead:
    """Load a T-REN head from the official `tren_region_encoder.pth` or a state dict of ours.

    With no `config`, every dimension comes from the checkpoint; given keywords override it
    (e.g. dropout). Files that are not state dicts raise TRENCheckpointError (a ValueError).
    """
    path = Path(path)
    sd = read_state_dict(path, "T-REN", "tren_region_encoder.pth", _WRAPPER_KEYS, TRENCheckpointError)
    if "scale_embeddings.weight" in sd:
        sd = _from_official(sd, config.get("patch_size"))  # type: ignore[arg-type]
    elif "queries.weight" not in sd:
        raise TRENCheckpointError(
            f"{path} is a state dict but not of a T-REN region encoder "
            "(no 'scale_embeddings.weight' or 'queries.weight')"
        )
    cfg = TRENConfig(**{**_infer_config(sd), **config})  # type: ignore[arg-type]
    head = TRENHead(cfg)
    head.load_state_dict(sd, strict=True)
    return head.eval()


__all__ = [
    "OFFICIAL_KEY_MAP", "TRENCheckpointError", "TRENConfig", "TRENHead", "fourier_features",
    "fourier_matrix", "load_tren_head",
]


def load_tren_head_for(path: str | Path, feature_dim: int, text_dim: int | None, patch_size: int,
                       device: str | torch.device = "cpu") -> TRENHead:
    """A T-REN head checked against the backbone (and text space) it is about to run on."""
    from vqsearch.models.device import resolve_device

    path = Path(path)
    if not path.is_file():
        raise VQSearchError(f"no such T-REN head checkpoint: {path}")
    head = load_tren_head(path)
    if head.config.dim != feature_dim or (text_dim is not None and head.text_dim != text_dim):
        raise VQSearchError(
            f"T-REN head {path} is for {head.config.dim}-d features and {head.text_dim}-d text, but the "
            f"backbone gives {feature_dim}-d features and {text_dim or 'no'}-d text")
    if head.config.patch_size != patch_size:
        raise VQSearchError(f"T-REN head {path} was trained at patch size {head.config.patch_size}, "
                            f"the backbone's is {patch_size}")
    return head.to(resolve_device(device))
