"""OpenCLIP ViT backbones by name: dense patch tokens, the matching text tower, REN's region pooling.

- `OpenCLIPBackbone`: frames -> the visual transformer's patch tokens after its final LayerNorm,
  [B, D, h, w], stride = patch size, any aspect ratio (the positional embedding is resampled
  bicubically to the frame's patch grid), the model's own mean/std. bf16 autocast on CUDA.
- `OpenCLIPText`: the matching tokenizer + `encode_text`, unit norm, in CLIP's joint space.
- `CLIPRegionPooling`: REN's training-free transfer. The tower's own final pooling is re-run once
  per region with its attention restricted to the region's patches: the CLS token through the
  last transformer block (a copy of it per region, attending to the real CLS and to the region's
  patches only), or the attention-pool queries (`attn_pool` towers), or a masked mean (`avg`
  towers); then `ln_post` and `proj`. With a full mask this is exactly `encode_image`.
  Region masks are binarised at half their max (default) or used soft as an additive log-mask.

Weights: an OpenCLIP pretrained tag (downloaded by open_clip where the machine can reach the hub)
or a local checkpoint, read only as a state dict (torch.load(weights_only=True) or safetensors).
`tiny-random` is a small randomly initialised (seeded) ViT for tests: no weights anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vqsearch.errors import VQSearchError
from vqsearch.models.checkpoints import CheckpointError
from vqsearch.models.checkpoints import read_state_dict as read_checkpoint
from vqsearch.models.device import resolve_device

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# A test-only architecture, built from an open_clip model config dict with a fixed seed.
TINY_RANDOM = "tiny-random"
LOCAL_ARCHS: dict[str, dict] = {
    TINY_RANDOM: {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16,
                       "mlp_ratio": 2.0},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                     "mlp_ratio": 2.0},
    },
}
_CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt")


class OpenCLIPCheckpointError(CheckpointError):
    """A local file that is not an OpenCLIP state dict."""


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


# ---------------------------------------------------------------------------------------- weights


def is_checkpoint_path(pretrained: str) -> bool:
    """A pretrained string names a local file (rather than an OpenCLIP tag)."""
    return (os.sep in pretrained or "/" in pretrained or pretrained.lower().endswith(_CHECKPOINT_SUFFIXES)
            or Path(pretrained).exists())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A local OpenCLIP checkpoint as a state dict, or OpenCLIPCheckpointError."""
    return read_checkpoint(path, "OpenCLIP", "open_clip_pytorch_model.bin or open_clip_model.safetensors",
                           error=OpenCLIPCheckpointError)


def _seeded(build, seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def load_openclip(arch: str, pretrained: str | None, device: str | torch.device = "cpu"):
    """(model, tokenizer) for an OpenCLIP architecture and a tag, a local checkpoint or None.

    None is only allowed for the local test architectures (random init, seeded: the same model
    in every process, so an index and its queries agree).
    """
    import open_clip

    device = resolve_device(device)
    if arch in LOCAL_ARCHS:
        cfg = LOCAL_ARCHS[arch]
        model = _seeded(lambda: open_clip.model.CLIP(**cfg))
        open_clip.model.set_model_preprocess_cfg(
            model, {"size": cfg["vision_cfg"]["image_size"], "mean": OPENAI_MEAN, "std": OPENAI_STD})
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
        if pretrained:
            read_state_dict(pretrained)  # refuse anything that is not a state dict before open_clip reads it
            _load_local(model, arch, pretrained)
        return model.to(device).eval(), tokenizer
    if arch not in open_clip.list_models():
        raise VQSearchError(f"unknown OpenCLIP architecture {arch!r} (see open_clip.list_models(), "
                            f"e.g. ViT-B-16, ViT-L-14)")
    if not pretrained:
        raise VQSearchError(f"give OpenCLIP weights for {arch}: openclip:{arch}:<pretrained tag or "
                            f"checkpoint path>; tags: {', '.join(open_clip.list_pretrained_tags_by_model(arch))}")
    if is_checkpoint_path(pretrained):
        read_state_dict(pretrained)  # checked before the (possibly large) model is built
        model = open_clip.create_model(arch, pretrained=None)
        _load_local(model, arch, pretrained)
    else:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if not open_clip.pretrained.is_pretrained_cfg(arch, pretrained):
            raise VQSearchError(f"no OpenCLIP pretrained tag {pretrained!r} for {arch}; "
                                f"tags: {', '.join(tags) or 'none'}")
        try:
            model = open_clip.create_model(arch, pretrained=pretrained)
        except Exception as exc:
            raise VQSearchError(_download_help(arch, pretrained, exc)) from None
    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as exc:  # an HF tokenizer that must be downloaded
        raise VQSearchError(f"cannot load the tokenizer of OpenCLIP {arch} ({type(exc).__name__}: {exc}); "
                            "it must be in the Hugging Face cache for offline use") from None
    return model.to(device).eval(), tokenizer


def _load_local(model, arch: str, path: str) -> None:
    """open_clip's own loader (format conversions, position-embedding resizing), strict; the file
    has been checked to be a state dict by `read_state_dict`."""
    import open_clip

    try:
        open_clip.load_checkpoint(model, path, strict=True, weights_only=True)
    except RuntimeError as exc:
        raise OpenCLIPCheckpointError(
            f"{path} is a state dict but not of OpenCLIP {arch}: {str(exc).splitlines()[0][:300]}") from None


def _download_help(arch: str, tag: str, exc: Exception) -> str:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if cfg.get("hf_hub"):
        where = f"https://huggingface.co/{cfg['hf_hub'].rstrip('/')} (open_clip_pytorch_model.bin or open_clip_model.safetensors)"
    else:
        where = cfg.get("url") or "the checkpoint"
    return (f"cannot get OpenCLIP weights {arch}:{tag} ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
            f"download {where} on a machine with internet access and pass "
            f"--model openclip:{arch}:/path/to/open_clip_pytorch_model.bin")


# --------------------------------------------------------------------------------------- backbone


@dataclass
class CLIPContext:
    """What region pooling needs from a backbone pass of a batch of frames.

    `pre_last` is the token sequence entering the last transformer block, `final` the one leaving
    it, both [B, 1 + h*w, width] (CLS first); `grid` is (h, w). Index it for one frame's context.
    """

    pre_last: torch.Tensor
    final: torch.Tensor
    grid: tuple[int, int]

    def __len__(self) -> int:
        return self.pre_last.shape[0]

    def __getitem__(self, i: int) -> CLIPContext:
        return CLIPContext(self.pre_last[i:i + 1], self.final[i:i + 1], self.grid)


class OpenCLIPBackbone:
    """A frozen open_clip ViT as a dense backbone (see the module docstring)."""

    def __init__(self, model, long_side: int = 512, device: str | torch.device = "cpu") -> None:
        from open_clip.transformer import VisionTransformer

        visual = model.visual
        if not isinstance(visual, VisionTransformer):
            raise VQSearchError(f"only open_clip's own ViT image towers are supported, not {type(visual).__name__}")
        ph, pw = visual.patch_size
        if ph != pw:
            raise VQSearchError(f"non-square patches {visual.patch_size} are not supported")
        self.device = resolve_device(device)
        self.visual = visual.to(self.device).eval().requires_grad_(False)
        self.stride = ph
        self.batch = 8
        self.parallel = False  # torch's threads are process-wide: two calls at once would share them
        self.dim = visual.conv1.out_channels
        self.long_side = long_side
        cfg = getattr(visual, "preprocess_cfg", {}) or {}
        mean = cfg.get("mean", getattr(visual, "image_mean", None)) or OPENAI_MEAN
        std = cfg.get("std", getattr(visual, "image_std", None)) or OPENAI_STD
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._pos: dict[tuple[int, int], torch.Tensor] = {}
        # patch tokens are normalised by ln_post unless it works in another width (attn-pool towers)
        ln = visual.ln_post
        self._ln_post_tokens = isinstance(ln, torch.nn.LayerNorm) and tuple(ln.normalized_shape) == (self.dim,)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        p = self.stride
        scale = self.long_side / max(height, width)
        return max(p, round(height * scale / p) * p), max(p, round(width * scale / p) * p)

    def positional_embedding(self, h: int, w: int) -> torch.Tensor:
        """The tower's [1 + gh*gw, width] positional embedding resampled to an h x w patch grid."""
        if (h, w) not in self._pos:
            pe = self.visual.positional_embedding
            gh, gw = self.visual.grid_size
            if (h, w) != (gh, gw):
                grid = pe[1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2).float()
                grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False,
                                     antialias=h < gh or w < gw)
                pe = torch.cat([pe[:1], grid[0].permute(1, 2, 0).reshape(h * w, -1).to(pe.dtype)])
            self._pos[(h, w)] = pe.detach()
        return self._pos[(h, w)]

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> normalised float [B, 3, H, W] on the device."""
        x = torch.from_numpy(np.require(frames, np.uint8, ["C", "W"])).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    def _block(self, block, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if getattr(self.visual.transformer, "batch_first", True):
            return block(x, attn_mask=mask)
        return block(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)

    def tokens(self, pixels: torch.Tensor) -> CLIPContext:
        """Normalised pixels [B, 3, H, W] (multiples of the patch size) -> token sequences."""
        v = self.visual
        x = v.conv1(pixels.to(v.conv1.weight.dtype))
        b, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(h, w).to(x.dtype)
        x = v.ln_pre(x)  # patch dropout is the identity in eval mode
        blocks = v.transformer.resblocks
        for block in blocks[:-1]:
            x = self._block(block, x)
        return CLIPContext(x, self._block(blocks[-1], x), (h, w))

    def _dense(self, context: CLIPContext) -> torch.Tensor:
        patches = context.final[:, 1:]
        if self._ln_post_tokens:
            patches = self.visual.ln_post(patches)
        else:
            patches = F.layer_norm(patches.float(), (self.dim,))
        h, w = context.grid
        return patches.float().reshape(-1, h, w, self.dim).permute(0, 3, 1, 2)

    def features_with_context(self, frames: np.ndarray) -> tuple[np.ndarray, CLIPContext]:
        """uint8 frames [B, H, W, 3] -> (float32 [B, D, h, w], the pass's CLIPContext)."""
        with torch.inference_mode(), _autocast(self.device):
            context = self.tokens(self.preprocess(frames))
            dense = self._dense(context)
        return dense.cpu().numpy().astype(np.float32, copy=False), context

    def features(self, frames: np.ndarray, threads: int | None = None) -> np.ndarray:
        return self.features_with_context(frames)[0]


class OpenCLIPText:
    """Text tower of the same model: strings -> unit-norm embeddings in CLIP's joint space."""

    def __init__(self, model, tokenizer, device: str | torch.device = "cpu") -> None:
        self.model, self.tokenizer = model, tokenizer
        self.device = resolve_device(device)
        self.dim = int(model.visual.output_dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode(), _autocast(self.device):
            out = self.model.encode_text(tokens)
        out = F.normalize(out.float(), dim=-1)
        return out.cpu().numpy().astype(np.float32)


# -------------------------------------------------------------------------- REN region pooling


class CLIPRegionPooling:
    """REN's training-free transfer: region masks -> region tokens in CLIP's joint space.

    Call with one frame's CLIPContext and its region masks [M, h', w'] (any resolution; resized
    to the patch grid) -> unit-norm float32 tokens [M, dim], comparable with OpenCLIPText.
    """

    def __init__(self, backbone: OpenCLIPBackbone, soft: bool = False, min_weight: float = 1e-4,
                 chunk: int = 256) -> None:
        v = backbone.visual
        self.backbone, self.visual, self.soft = backbone, v, soft
        self.min_log = float(np.log(min_weight))
        self.chunk = chunk
        self.dim = int(v.output_dim)
        if v.attn_pool is not None:
            self.mode = "attn_pool"
            if getattr(v, "attn_pool_type", "") not in ("", "parallel", "cascade"):
                raise VQSearchError(f"unsupported attention pool {v.attn_pool_type!r}")
        elif v.pool_type in ("tok", "avg"):
            self.mode = v.pool_type
        else:
            raise VQSearchError(f"OpenCLIP tower with pool_type {v.pool_type!r} has no global pooling to restrict")

    def key_bias(self, masks: torch.Tensor) -> torch.Tensor:
        """Masks [M, h, w] -> additive attention bias over the h*w patches [M, h*w]: 0 inside."""
        flat = masks.flatten(1).float()
        peak = flat.amax(1, keepdim=True).clamp_min(1e-8)
        if self.soft:
            return torch.log((flat / peak).clamp_min(np.exp(self.min_log)))
        return torch.where(flat >= 0.5 * peak, 0.0, float("-inf"))

    def __call__(self, context: CLIPContext, masks: np.ndarray | torch.Tensor) -> np.ndarray:
        m = torch.as_tensor(masks, dtype=torch.float32)
        if len(m) == 0:
            return np.zeros((0, self.dim), np.float32)
        device = self.backbone.device
        h, w = context.grid
        if tuple(m.shape[-2:]) != (h, w):
            m = F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        bias = self.key_bias(m.to(device))
        out = []
        with torch.inference_mode(), _autocast(device):
            for start in range(0, len(bias), self.chunk):
                out.append(self._pool(context, bias[start:start + self.chunk]).float())
        tokens = F.normalize(torch.cat(out), dim=-1)
        return tokens.cpu().numpy().astype(np.float32)

    def _pool(self, context: CLIPContext, bias: torch.Tensor) -> torch.Tensor:
        v = self.visual
        if self.mode == "tok":
            pooled = v.ln_post(self._masked_cls(context.pre_last[0], bias))
        elif self.mode == "avg":
            patches = context.final[0, 1:]
            weights = torch.exp(bias).to(patches.dtype)  # 0 outside (binary) or the soft mask
            weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-8)
            pooled = v.ln_post(weights @ patches) if v.final_ln_after_pool else weights @ v.ln_post(patches)
        else:
            pooled = self._masked_attn_pool(context.final[0], bias)
        return pooled @ v.proj if v.proj is not None else pooled

    def _masked_cls(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """The last block, run with one CLS copy per region prepended; each copy attends to the
        real CLS and to its region's patches; the real tokens do not see the copies."""
        r, n = len(bias), x.shape[0]  # n = 1 + h*w
        seq = torch.cat([x[:1].expand(r, -1), x], dim=0)[None]
        mask = torch.zeros(r + n, r + n, device=x.device, dtype=torch.float32)
        mask[:, :r] = float("-inf")          # nobody attends to the copies ...
        mask[:r, r + 1:] = bias              # ... copies see their region's patches ...
        mask[:r, r] = 0.0                    # ... and the real CLS (as the CLS sees itself)
        out = self.backbone._block(self.visual.transformer.resblocks[-1], seq, mask)
        return out[0, :r]

    def _masked_attn_pool(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Attention-pool towers: the pooler's queries see the CLS token and the region's patches."""
        v = self.visual
        key_bias = torch.cat([torch.zeros_like(bias[:, :1]), bias], dim=1)  # [R, 1 + h*w]
        if v.attn_pool_contrastive is None:  # original OpenCLIP CoCa setup
            x = v.ln_post(_pooler(v.attn_pool, x, key_bias))
            return v._global_pool(x)[0]
        x = v.ln_post(x)
        if v.attn_pool_type == "parallel":
            return _pooler(v.attn_pool_contrastive, x, key_bias)[:, 0]
        tokens = _pooler(v.attn_pool, x, key_bias)  # cascade: mask the first pooler only
        return v.attn_pool_contrastive(tokens)[:, 0]


def _pooler(pooler, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
    """open_clip AttentionalPooler over one frame's tokens x [S, C], once per key bias [R, S]."""
    r, s = key_bias.shape
    keys = pooler.ln_k(x)[None].expand(r, -1, -1)
    queries = pooler.ln_q(pooler.query)[None].expand(r, -1, -1)
    heads, nq = pooler.attn.num_heads, queries.shape[1]
    mask = key_bias[:, None, :].expand(r, nq, s).repeat_interleave(heads, dim=0).to(queries.dtype)
    return pooler.attn(queries, keys, keys, attn_mask=mask, need_weights=False)[0]


__all__ = [
    "CLIPContext", "CLIPRegionPooling", "LOCAL_ARCHS", "OpenCLIPBackbone", "OpenCLIPCheckpointError",
    "OpenCLIPText", "TINY_RANDOM", "is_checkpoint_path", "load_openclip", "read_state_dict",
]
