"""The region-encoder interface, point prompts, the training-free encoder, masks to boxes.

One interface, several implementations (training-free here, the learned T-REN head in
`vqsearch.models.tren`): merging, tracking, storage and queries only ever see the interface,
which speaks numpy, so the embedded model indexes without importing torch (a learned head
converts at its own border). The training-free encoder stands where the learned head goes: each
prompt's soft mask is its feature affinity to every patch, damped by distance, so a mask grows
over the patches that look like the prompted one; the region token is the mask-weighted mean
of the raw patch features (T-REN's values are raw patch tokens too).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np


class RegionPooling(Protocol):
    """Region masks -> text-aligned region tokens through the backbone's own global pooling.

    REN's training-free transfer (e.g. `vqsearch.models.openclip.CLIPRegionPooling`). It needs
    more than visual tokens, so the pipeline calls it once per frame, after the in-frame merge,
    with that frame's backbone context: a backbone that goes with a pooling has
    `features_with_context(frames) -> (features, contexts)`, `contexts[b]` being frame b's.
    """

    dim: int

    def __call__(self, context: Any, masks: np.ndarray) -> np.ndarray:
        """One frame's context, masks [M, h, w] -> float32 [M, dim], unit norm."""


class RegionEncoder(Protocol):
    """Point prompts in; k region tokens and soft masks per prompt out.

    `text_tokens` maps (merged) visual tokens to text-aligned tokens; a model with no text side
    has `text_dim` None. A model whose text tokens come from masks instead (REN's training-free
    transfer) sets `region_pooling`; `text_tokens` is then not used.
    """

    k: int
    text_dim: int | None
    region_pooling: RegionPooling | None

    def encode(self, features: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feature maps [B, D, h, w], prompts [P, 2] as (y, x) pixels of the model's input ->
        float32 tokens [B, P*k, D] and masks [B, P*k, h, w], each mask's peak 1 (prompt-major)."""

    def text_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """Visual tokens [M, D] -> float32 text-aligned tokens [M, text_dim]."""


def grid_points(height: int, width: int, stride: int, every: int = 1) -> np.ndarray:
    """(y, x) pixel centres of every `every`-th feature cell: the prompt grid, float32 [P, 2]."""
    ys = (np.arange(0, height // stride, every) + 0.5) * stride
    xs = (np.arange(0, width // stride, every) + 0.5) * stride
    return np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)


class AffinityRegionEncoder:
    """Training-free region encoder (k=1) with ConSE, region pooling or no text side."""

    k = 1

    def __init__(self, stride: int, temperature: float = 0.05, sigma_cells: float = 2.5,
                 text_projection: Callable[[np.ndarray], np.ndarray] | None = None,
                 region_pooling: RegionPooling | None = None):
        if text_projection is not None and region_pooling is not None:
            raise ValueError("give a text projection or a region pooling, not both")
        self.stride = stride
        self.temperature = temperature
        self.sigma = sigma_cells
        self.text_projection = text_projection
        self.region_pooling = region_pooling
        side = text_projection if text_projection is not None else region_pooling
        self.text_dim = None if side is None else side.dim

    def encode(self, features: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b, d, h, w = features.shape
        flat = features.reshape(b, d, h * w).transpose(0, 2, 1)  # [B, N, D]
        unit = flat / np.linalg.norm(flat, axis=-1, keepdims=True).clip(1e-12)
        cell_y = np.clip((points[:, 0] / self.stride).astype(np.int64), 0, h - 1)
        cell_x = np.clip((points[:, 1] / self.stride).astype(np.int64), 0, w - 1)
        seeds = unit[:, cell_y * w + cell_x]  # [B, P, D]
        gy, gx = np.divmod(np.arange(h * w), w)
        dist2 = (cell_y[:, None] - gy) ** 2 + (cell_x[:, None] - gx) ** 2  # [P, N]
        logits = (seeds @ unit.transpose(0, 2, 1) - 1.0) / self.temperature - dist2 / (2 * self.sigma**2)
        masks = np.exp(logits.astype(np.float32))  # 1 at the prompt's own cell
        tokens = (masks @ flat) / masks.sum(-1, keepdims=True)
        return tokens.astype(np.float32), masks.reshape(b, -1, h, w)

    def text_tokens(self, tokens: np.ndarray) -> np.ndarray:
        if self.text_projection is None:
            raise NotImplementedError("this model has no text side")
        return self.text_projection(tokens)


def _upsample_matrix(size: int, scale: int) -> np.ndarray:
    """[size*scale, size] bilinear interpolation weights, half-pixel centres (align_corners=False)."""
    out = np.zeros((size * scale, size), np.float32)
    source = ((np.arange(size * scale) + 0.5) / scale - 0.5).clip(0, None)
    low = np.minimum(source.astype(np.int64), size - 1)
    high = np.minimum(low + 1, size - 1)
    frac = (source - low).astype(np.float32)
    rows = np.arange(size * scale)
    np.add.at(out, (rows, low), 1 - frac)
    np.add.at(out, (rows, high), frac)
    return out


def half_max_masks(masks: np.ndarray) -> np.ndarray:
    """Soft masks [M, h, w] -> binary masks [M, 4h, 4w]: upsampled 4x bilinearly, then kept at half
    their peak, so a region's edge can fall inside a coarse cell (its box, colour and detections)."""
    m, h, w = masks.shape
    if m == 0:
        return np.zeros((0, 4 * h, 4 * w), bool)
    up = _upsample_matrix(h, 4) @ masks.astype(np.float32) @ _upsample_matrix(w, 4).T
    return up >= 0.5 * up.reshape(m, -1).max(1).clip(1e-8)[:, None, None]


def mask_boxes(inside: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Boxes [M, 4] as (x, y, w, h) in original-frame pixels of binary masks [M, H, W] covering the frame."""
    m, h, w = inside.shape
    sy, sx = frame_hw[0] / h, frame_hw[1] / w
    boxes = np.zeros((m, 4), dtype=np.float32)
    for i in range(m):
        ys, xs = np.nonzero(inside[i])
        x0, y0, x1, y1 = xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy
        boxes[i] = (x0, y0, x1 - x0, y1 - y0)
    return boxes
