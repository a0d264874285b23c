"""DINOv3 ViT patch tokens and the dino.txt text side: T-REN's paper setting (arXiv 2604.18573).

- `DINOv3Backbone`: frames -> the ViT's final LayerNormed patch tokens [B, D, H/16, W/16]
  (CLS and the 4 register tokens dropped), ImageNet mean/std, any aspect ratio (RoPE: no
  positional table to resample; sides are rounded to multiples of 16). The network is timm's
  DINOv3 port (`vit_large_patch16_dinov3`, ...); the weights are Meta's official files
  (`dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth`: keys `cls_token`, `storage_tokens`,
  `blocks.N.attn.qkv.{weight,bias,bias_mask}`, `blocks.N.ls1.gamma`, `rope_embed.periods`, ...)
  converted by timm's own filter (`timm.models.eva.checkpoint_filter_fn`), or a timm-layout
  state dict. Meta's RoPE periods (stored rounded to bf16) are copied in, so outputs follow
  Meta's model rather than timm's float32 periods.
- dino.txt (`dinov3_vitl16_dinotxt_vision_head_and_text_encoder-a442d8f5.pth`, CLIP BPE vocab
  `bpe_simple_vocab_16e6.txt.gz`): written from a reading of facebookresearch/dinov3
  `dinov3/hub/dinotxt.py`, `dinov3/eval/text/{dinotxt_model,text_tower,text_transformer,
  vision_tower,tokenizer}.py`, `dinov3/layers/{attention,block,ffn_layers}.py`:
    text   CLIP BPE tokens (77, SOT/EOT, zero padded) -> token + learned positional embedding ->
           24 causal pre-norm blocks (LayerNorm, MHA with a bias-free qkv, GELU MLP x4; width
           1280, 20 heads) -> final LayerNorm -> linear 1280 -> 2048 (no bias) -> the token at the
           EOT position (argmax of the ids). Keys `text_model.backbone.*`,
           `text_model.head.linear_projection.weight`.
    vision head  [CLS, 4 registers, patches] (the backbone's normed last-layer tokens) -> 2
           DINOv3 blocks (no RoPE, SwiGLU FFN aligned to 64, LayerScale) -> LayerNorm; the image
           embedding is [head CLS, mean of head patches] (2 x 1024 = 2048). Keys
           `visual_model.head.*`.
  The 2048-d text embedding's first half is matched to the CLS half, its second half to the
  patch half. T-REN's text space is the second half (its `TextEncoder` keeps
  `encode_text(...)[:, 1024:]` of "photo of a <query>"), so `DinoTxtText` returns that, unit norm.
  `DinoTxtRegionPooling` is REN's training-free transfer through the vision head, as T-REN's
  `RegionTokenGenerator` builds its text-space targets.

No weights ship on these machines: without them every loader raises a VQSearchError saying which
file goes where.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vqsearch.errors import VQSearchError
from vqsearch.models.checkpoints import CheckpointError
from vqsearch.models.checkpoints import read_state_dict as read_checkpoint
from vqsearch.models.device import resolve_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_ARCH = "vit_large_patch16_dinov3"
BACKBONE_FILE = "dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth"
DINOTXT_FILE = "dinov3_vitl16_dinotxt_vision_head_and_text_encoder-a442d8f5.pth"
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
TREN_PROMPT = "photo of a "  # T-REN's TextEncoder prefixes every query with this
_WRAPPER_KEYS = ("model", "state_dict", "teacher", "module")


class DINOv3CheckpointError(CheckpointError):
    """A local file that is not a DINOv3 / dino.txt state dict."""


def weights_dir() -> Path:
    """Where the DINOv3 files are looked for by default: $VQSEARCH_DINOV3_DIR, else ~/.cache/vqsearch/dinov3."""
    root = os.environ.get("VQSEARCH_DINOV3_DIR")
    return Path(root) if root else Path.home() / ".cache" / "vqsearch" / "dinov3"


# ---------------------------------------------------------------------------------------- reading


def read_state_dict(path: str | Path, what: str = "DINOv3") -> dict[str, torch.Tensor]:
    """A local DINOv3 / dino.txt checkpoint as a state dict in Meta's names ("backbone." removed)."""
    obj = read_checkpoint(path, what, wrappers=_WRAPPER_KEYS, error=DINOv3CheckpointError)
    return {k.removeprefix("backbone."): v for k, v in obj.items()}


# --------------------------------------------------------------------------------------- backbone


def _missing_backbone(path: Path | None) -> VQSearchError:
    where = path if path is not None else weights_dir() / BACKBONE_FILE
    return VQSearchError(
        f"DINOv3 ViT-L/16 weights not found: put {BACKBONE_FILE} (from Meta's DINOv3 release, "
        f"https://github.com/facebookresearch/dinov3) at {where} or pass --model dinov3:<path to the .pth>")


def create_timm_model(arch: str = DEFAULT_ARCH, **model_kwargs) -> nn.Module:
    """An uninitialised-weights timm DINOv3 ViT (no download, no classifier head), eval mode."""
    import timm

    try:
        return timm.create_model(arch, pretrained=False, num_classes=0, **model_kwargs).eval()
    except RuntimeError as exc:  # unknown model name
        raise VQSearchError(f"unknown DINOv3 architecture {arch!r} in timm: {exc}") from None


def _has_q_bias(model: nn.Module) -> bool:
    return any(name.endswith("attn.q_bias") or name.endswith("q_proj.bias") for name, _ in model.named_parameters())


def meta_to_timm(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Meta's DINOv3 key layout -> timm's, through timm's filter (a timm-layout dict passes as is).

    Meta's ViT-S/B/L/H+ files carry a `qkv.bias` whose k third is masked to zero by `bias_mask`;
    for the distilled models q and v are zero too, and timm's default architectures have no qkv
    bias. Zero biases are dropped here (timm's filter would print an error for each); non-zero
    ones need a `*_qkvb` architecture, and say so.
    """
    if "storage_tokens" not in sd:
        if "reg_token" in sd or "cls_token" in sd:
            return dict(sd)
        raise DINOv3CheckpointError(
            "not a DINOv3 backbone state dict: neither Meta's layout (storage_tokens, blocks.N.attn.qkv.*) "
            f"nor timm's (reg_token, ...); first keys: {', '.join(list(sd)[:5])}")
    from timm.models.eva import checkpoint_filter_fn

    sd = dict(sd)
    if not _has_q_bias(model):
        for key in [k for k in sd if k.endswith("attn.qkv.bias")]:
            bias = sd[key].float()
            mask = sd.get(key.replace(".bias", ".bias_mask"))
            if mask is not None:
                bias = bias * torch.nan_to_num(mask.float(), nan=1.0)
            q, _, v = bias.chunk(3)
            if q.abs().max() > 0 or v.abs().max() > 0:
                raise DINOv3CheckpointError(
                    f"this checkpoint has non-zero qkv biases ({key}): use the timm architecture with "
                    "qkv biases (the '_qkvb' variant, e.g. vit_large_patch16_dinov3_qkvb)")
            del sd[key]
    return checkpoint_filter_fn(sd, model)


def _copy_rope_periods(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Use the checkpoint's RoPE periods (Meta stores them rounded to bf16) instead of timm's fp32."""
    periods = sd.get("rope_embed.periods")
    rope = getattr(model, "rope", None)
    if periods is None or rope is None or not hasattr(rope, "periods") or rope.periods.shape != periods.shape:
        return
    with torch.no_grad():
        rope.periods.copy_(periods.to(rope.periods.dtype))
    if getattr(rope, "feat_shape", None) is not None and getattr(rope, "pos_embed_cached", None) is not None:
        rope._cache_embed(rope.feat_shape)


def load_dinov3(weights: str | Path | None, arch: str = DEFAULT_ARCH, **model_kwargs) -> nn.Module:
    """timm DINOv3 model with weights from Meta's official file (or a timm-layout state dict)."""
    path = Path(weights) if weights is not None else weights_dir() / BACKBONE_FILE
    if not path.is_file():
        raise _missing_backbone(path if weights is not None else None)
    sd = read_state_dict(path, "DINOv3")
    model = create_timm_model(arch, **model_kwargs)
    converted = meta_to_timm(sd, model)
    result = model.load_state_dict(converted, strict=False)
    missing = [k for k in result.missing_keys if "rope" not in k]
    if missing or result.unexpected_keys:
        raise DINOv3CheckpointError(
            f"{path} does not fit timm architecture {arch}: missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]} (is it another DINOv3 size? pass the matching arch)")
    _copy_rope_periods(model, sd)
    return model.eval()


class DINOv3Backbone:
    """Backbone protocol over a timm DINOv3 ViT: final normed patch tokens, stride 16."""

    def __init__(self, weights: str | Path | None = None, arch: str = DEFAULT_ARCH, long_side: int = 512,
                 device: str | torch.device = "cpu", model_kwargs: dict | None = None,
                 model: nn.Module | None = None) -> None:
        self.device = resolve_device(device)
        if model is None:
            model = load_dinov3(weights, arch, **(model_kwargs or {}))
        self.model = model.eval().to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.long_side = long_side
        self.stride = int(self.model.patch_embed.patch_size[0])
        self.dim = int(self.model.embed_dim)
        self.batch = 8
        self.parallel = False  # torch's threads are process-wide: two calls at once would share them
        self.num_prefix_tokens = int(self.model.num_prefix_tokens)
        self.num_heads = int(self.model.blocks[0].attn.num_heads)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255.0

    @classmethod
    def from_timm(cls, model: nn.Module, long_side: int = 512, device: str | torch.device = "cpu") -> DINOv3Backbone:
        """Wrap an existing timm DINOv3 model (tests, or weights loaded elsewhere)."""
        return cls(model=model, long_side=long_side, device=device)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        s = self.stride
        scale = self.long_side / max(height, width)
        return max(s, round(height * scale / s) * s), max(s, round(width * scale / s) * s)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def tokens(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 [B, H, W, 3] -> (CLS [B, D], registers [B, R, D], patch map [B, D, h, w]), all normed, float32."""
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        b, h, w, _ = frames.shape
        if h % self.stride or w % self.stride:
            raise ValueError(f"frame size {h}x{w} is not a multiple of {self.stride}: resize to input_size() first")
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float()
        x = (x - self._mean) / self._std
        with torch.inference_mode(), self._autocast():
            out = self.model.forward_features(x).float()
        n = self.num_prefix_tokens
        patches = out[:, n:].transpose(1, 2).reshape(b, self.dim, h // self.stride, w // self.stride)
        return out[:, 0], out[:, 1:n], patches

    def features(self, frames: np.ndarray, threads: int | None = None) -> np.ndarray:
        return self.tokens(frames)[2].cpu().numpy()

    def features_with_context(self, frames: np.ndarray) -> tuple[np.ndarray, list]:
        """Features plus, per frame, (CLS [D], registers [R, D], patch map [D, h, w]) for region pooling."""
        cls, regs, patches = self.tokens(frames)
        contexts = [(cls[i], regs[i], patches[i]) for i in range(len(cls))]
        return patches.cpu().numpy(), contexts


# ------------------------------------------------------------------------------------ dino.txt text


class _CausalAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _GeluMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _TextBlock(nn.Module):
    """Pre-norm causal block, dino.txt key names (attention_norm, attention, ffn_norm, feed_forward)."""

    def __init__(self, dim: int, heads: int, hidden: int, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = _CausalAttention(dim, heads)
        self.ffn_norm = nn.LayerNorm(dim)
        self.feed_forward = _GeluMlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), self.causal)
        return x + self.feed_forward(self.ffn_norm(x))


class _TextBackbone(nn.Module):
    def __init__(self, context_length: int, vocab_size: int, dim: int, heads: int, layers: int,
                 hidden: int, causal: bool = True) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, dim))
        self.blocks = nn.ModuleList(_TextBlock(dim, heads, hidden, causal) for _ in range(layers))
        self.ln_final = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.ln_final(x)


class _TextHead(nn.Module):
    def __init__(self, dim: int, embed_dim: int) -> None:
        super().__init__()
        self.linear_projection = nn.Linear(dim, embed_dim, bias=False)


class DinoTxtTextModel(nn.Module):
    """dino.txt's text tower: state-dict keys as the release's `text_model.*` without that prefix."""

    def __init__(self, context_length: int = 77, vocab_size: int = 49408, dim: int = 1280, heads: int = 20,
                 layers: int = 24, hidden: int | None = None, embed_dim: int = 2048) -> None:
        super().__init__()
        self.context_length, self.embed_dim = context_length, embed_dim
        self.backbone = _TextBackbone(context_length, vocab_size, dim, heads, layers, hidden or 4 * dim)
        self.head = _TextHead(dim, embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [N, L] -> [N, embed_dim] (not normalised): the EOT (largest id) position."""
        x = self.head.linear_projection(self.backbone(ids))
        return x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], heads: int | None = None) -> DinoTxtTextModel:
        """Every size from the tensors; heads default to width / 64 (1280 -> 20, as released)."""
        layers = {int(m.group(1)) for k in sd if (m := re.match(r"backbone\.blocks\.(\d+)\.", k))}
        ctx, dim = sd["backbone.positional_embedding"].shape
        model = cls(
            context_length=ctx, vocab_size=sd["backbone.token_embedding.weight"].shape[0], dim=dim,
            heads=heads or max(1, dim // 64), layers=len(layers),
            hidden=sd["backbone.blocks.0.feed_forward.fc1.weight"].shape[0],
            embed_dim=sd["head.linear_projection.weight"].shape[0],
        )
        model.load_state_dict(sd, strict=True)
        return model.eval()


def _split(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _missing_dinotxt(path: Path | None) -> VQSearchError:
    where = path if path is not None else weights_dir() / DINOTXT_FILE
    return VQSearchError(
        f"dino.txt weights not found: put {DINOTXT_FILE} (from Meta's DINOv3 release, "
        f"https://github.com/facebookresearch/dinov3) at {where}")


def read_dinotxt(path: str | Path | None) -> tuple[Path, dict[str, torch.Tensor]]:
    p = Path(path) if path is not None else weights_dir() / DINOTXT_FILE
    if not p.is_file():
        raise _missing_dinotxt(p if path is not None else None)
    return p, read_state_dict(p, "dino.txt")


def _tokenizer(bpe_path: str | Path | None, context_length: int):
    """CLIP's BPE through open_clip's SimpleTokenizer (same merges, same SOT/EOT ids 49406/49407)."""
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    bpe = Path(bpe_path) if bpe_path is not None else weights_dir() / BPE_FILE
    if not bpe.is_file():
        if bpe_path is not None:
            raise VQSearchError(f"no such BPE vocabulary file: {bpe} (dino.txt uses {BPE_FILE})")
        bpe = Path(default_bpe())  # open_clip ships the same CLIP vocabulary file
    return SimpleTokenizer(bpe_path=str(bpe), context_length=context_length)


class DinoTxtText:
    """TextEncoder protocol: dino.txt text embeddings, by default T-REN's half (patch-aligned, 1024-d).

    part: "patch" (second half: T-REN's text space, what patch / region tokens align to),
    "cls" (first half) or "full" (the whole 2048-d global embedding). prompt: prefixed to every
    text (T-REN: "photo of a ").
    """

    def __init__(self, weights: str | Path | None = None, bpe_path: str | Path | None = None,
                 device: str | torch.device = "cpu", prompt: str = TREN_PROMPT, part: str = "patch",
                 model: DinoTxtTextModel | None = None, heads: int | None = None) -> None:
        if part not in ("patch", "cls", "full"):
            raise ValueError(f"part must be patch, cls or full, not {part!r}")
        self.device = resolve_device(device)
        if model is None:
            path, sd = read_dinotxt(weights)
            text_sd = _split(sd, "text_model.")
            if "backbone.token_embedding.weight" not in text_sd:
                raise DINOv3CheckpointError(
                    f"{path} is a state dict but not dino.txt's (no text_model.backbone.token_embedding.weight)")
            model = DinoTxtTextModel.from_state_dict(text_sd, heads)
        self.model = model.eval().to(self.device)
        self.tokenizer = _tokenizer(bpe_path, self.model.context_length)
        self.prompt, self.part = prompt, part
        full = self.model.embed_dim
        self.dim = full if part == "full" else full // 2

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        ids = self.tokenizer([self.prompt + t for t in texts]).to(self.device)
        with torch.inference_mode():
            emb = self.model(ids).float()
        half = emb.shape[1] // 2
        emb = emb[:, half:] if self.part == "patch" else emb[:, :half] if self.part == "cls" else emb
        return F.normalize(emb, dim=-1).cpu().numpy().astype(np.float32)


# ------------------------------------------------------------------------------ dino.txt vision head


class _SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Linear(dim, hidden, bias=bias), nn.Linear(dim, hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class _LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _HeadBlock(nn.Module):
    """A DINOv3 SelfAttentionBlock without RoPE: norm1, attn, ls1, norm2, mlp (SwiGLU), ls2."""

    def __init__(self, dim: int, heads: int, hidden: int, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _SelfAttention(dim, heads, qkv_bias)
        self.ls1, self.ls2 = _LayerScale(dim), _LayerScale(dim)
        self.mlp = _SwiGLU(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoTxtVisionHead(nn.Module):
    """dino.txt's vision head: backbone tokens [B, 1 + R + N, D] -> text-aligned tokens, same shape.

    Token 0 is the CLS (matched to the text embedding's first half); tokens after the registers
    are patch (or region) tokens, matched to the second half. Keys: the release's
    `visual_model.head.*` without that prefix.
    """

    def __init__(self, dim: int = 1024, heads: int = 16, blocks: int = 2, hidden: int = 2752,
                 qkv_bias: bool = False, projection: int | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_HeadBlock(dim, heads, hidden, qkv_bias) for _ in range(blocks))
        self.ln_final = nn.LayerNorm(dim) if blocks else nn.Identity()
        self.linear_projection = nn.Linear(dim, projection, bias=False) if projection else nn.Identity()
        self.dim = projection or dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            tokens = block(tokens)
        return self.linear_projection(self.ln_final(tokens))

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], heads: int | None = None) -> DinoTxtVisionHead:
        n = len({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
        if n == 0:
            raise DINOv3CheckpointError("dino.txt vision head without blocks: not the released layout")
        dim = sd["blocks.0.norm1.weight"].shape[0]
        proj = sd.get("linear_projection.weight")
        head = cls(dim=dim, heads=heads or max(1, dim // 64), blocks=n, hidden=sd["blocks.0.mlp.w1.weight"].shape[0],
                   qkv_bias="blocks.0.attn.qkv.bias" in sd, projection=None if proj is None else proj.shape[0])
        sd = {k: v for k, v in sd.items() if not k.endswith("bias_mask")}
        head.load_state_dict(sd, strict=True)
        return head.eval()


def load_dinotxt_vision_head(weights: str | Path | None = None, heads: int | None = None) -> DinoTxtVisionHead:
    path, sd = read_dinotxt(weights)
    head_sd = _split(sd, "visual_model.head.")
    if not head_sd:
        raise DINOv3CheckpointError(f"{path} has no visual_model.head.* keys: not dino.txt's vision head")
    return DinoTxtVisionHead.from_state_dict(head_sd, heads)


class DinoTxtRegionPooling:
    """RegionPooling: region masks -> dino.txt patch-space tokens through the vision head.

    As T-REN's `RegionTokenGenerator` makes its text-space targets: each region's backbone feature
    is the sum of the patch tokens inside its binarised mask; the frame's regions go through the
    head as one sequence after [CLS, registers]; outputs are divided by the region area. Unit norm
    here (only directions are compared). Masks are binarised at `threshold` of their max.
    """

    def __init__(self, head: DinoTxtVisionHead, threshold: float = 0.5) -> None:
        self.head, self.threshold, self.dim = head, threshold, head.dim

    def __call__(self, context, masks: np.ndarray) -> np.ndarray:
        cls, regs, patches = context
        m = torch.as_tensor(np.asarray(masks), dtype=torch.float32, device=patches.device)
        if m.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        peak = m.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        binary = (m >= self.threshold * peak).float()
        summed = torch.einsum("rhw,dhw->rd", binary, patches.float())
        seq = torch.cat([cls[None].float(), regs.float(), summed], 0)[None]
        head_device = next(self.head.parameters(), torch.zeros(0)).device
        with torch.inference_mode():
            out = self.head(seq.to(head_device))[0, 1 + regs.shape[0]:].to(patches.device)
        out = out / binary.flatten(1).sum(1, keepdim=True).clamp_min(1)
        return F.normalize(out, dim=-1).cpu().numpy().astype(np.float32)


# ------------------------------------------------------------------------------------------ model


def build_dinov3_model(config, device: str = "cpu", weights: str | Path | None = None,
                       text_weights: str | Path | None = None, tren_weights: str | Path | None = None,
                       bpe_path: str | Path | None = None, text_pooling: bool = False):
    """DINOv3 backbone + dino.txt text + a region encoder -> SearchModel.

    weights / text_weights / tren_weights default to `config.extra["weights"]` / `["text_weights"]` /
    `["tren_weights"]` (also read: "arch", "model_kwargs", "bpe_path"), then to the
    release file names in `weights_dir()`. A missing backbone file is an error; a missing dino.txt
    file, when not asked for explicitly, leaves the model without a text side (crop queries only).
    Region encoder: the T-REN head (`tren_weights`, checked against the backbone and text sizes),
    else the training-free `AffinityRegionEncoder(stride=16)`: with no text side, or, with
    `text_pooling` and dino.txt present, text tokens by `DinoTxtRegionPooling`.
    """
    from vqsearch.models.base import SearchModel

    extra = getattr(config, "extra", {}) or {}
    weights = weights if weights is not None else extra.get("weights")
    text_weights = text_weights if text_weights is not None else extra.get("text_weights")
    tren_weights = tren_weights if tren_weights is not None else extra.get("tren_weights")
    backbone = DINOv3Backbone(weights, extra.get("arch", DEFAULT_ARCH), config.input_long_side, device,
                              model_kwargs=extra.get("model_kwargs"))
    text = None
    if text_weights is not None or (weights_dir() / DINOTXT_FILE).is_file():
        text = DinoTxtText(text_weights, bpe_path=bpe_path or extra.get("bpe_path"), device=backbone.device,
                           heads=extra.get("text_heads"))

    def region_encoder():
        from vqsearch.regions import AffinityRegionEncoder

        if tren_weights is None:
            if text_pooling and text is not None:
                head = load_dinotxt_vision_head(text_weights, heads=backbone.num_heads).to(backbone.device)
                return AffinityRegionEncoder(backbone.stride, region_pooling=DinoTxtRegionPooling(head))
            return AffinityRegionEncoder(backbone.stride)
        from vqsearch.models.tren import load_tren_head_for

        return load_tren_head_for(tren_weights, backbone.dim, text.dim if text is not None else None,
                                  backbone.stride, backbone.device)

    return SearchModel(config, backbone, text, region_encoder)


__all__ = [
    "BACKBONE_FILE", "BPE_FILE", "DEFAULT_ARCH", "DINOTXT_FILE", "DINOv3Backbone", "DINOv3CheckpointError",
    "DinoTxtRegionPooling", "DinoTxtText", "DinoTxtTextModel", "DinoTxtVisionHead", "build_dinov3_model",
    "create_timm_model", "load_dinotxt_vision_head", "load_dinov3", "meta_to_timm", "read_dinotxt",
    "read_state_dict", "weights_dir",
]
