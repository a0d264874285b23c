"""The region-encoder interface, point prompts, the training-free encoder, masks to boxes.

One interface, several implementations (training-free here, the learned T-REN head in
`vqsearch.models.tren`): merging, tracking, storage and queries only ever see the interface.
The training-free encoder stands where the learned head goes: each
prompt's soft mask is its feature affinity to every patch, damped by distance, so a mask grows
over the patches that look like the prompted one; the region token is the mask-weighted mean
of the raw patch features (T-REN's values are raw patch tokens too).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F


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


class RegionEncoder(torch.nn.Module):
    """Point prompts in; k region tokens and soft masks per prompt out.

    forward(feature_maps [B, D, h, w], points [B, P, 2] as (y, x) pixels in the model's input
    resolution) returns {"tokens": [B, P, k, D], "masks": [B, P, k, h, w]} with masks
    max-normalised to 1. `project_text` maps (merged) visual tokens to text-aligned tokens, or
    is None when the model has no text side. A model whose text tokens come from masks instead
    (REN's training-free transfer) sets `region_pooling`; `project_text` is then not used.
    """

    k: int = 1
    text_dim: int | None = None
    region_pooling: RegionPooling | None = None

    def project_text(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def grid_points(height: int, width: int, stride: int, every: int = 1) -> torch.Tensor:
    """(y, x) pixel centres of every `every`-th feature cell: the prompt grid, [P, 2]."""
    ys = (torch.arange(0, height // stride, every) + 0.5) * stride
    xs = (torch.arange(0, width // stride, every) + 0.5) * stride
    return torch.cartesian_prod(ys, xs)


class AffinityRegionEncoder(RegionEncoder):
    """Training-free region encoder (k=1) with ConSE, region pooling or no text side."""

    def __init__(self, stride: int, temperature: float = 0.05, sigma_cells: float = 2.5, text_projection=None,
                 region_pooling: RegionPooling | None = None):
        super().__init__()
        if text_projection is not None and region_pooling is not None:
            raise ValueError("give a text projection or a region pooling, not both")
        self.k = 1
        self.stride = stride
        self.temperature = temperature
        self.sigma = sigma_cells
        self.text_projection = text_projection
        self.region_pooling = region_pooling
        side = text_projection if text_projection is not None else region_pooling
        self.text_dim = None if side is None else side.dim

    def forward(self, feature_maps: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
        b, d, h, w = feature_maps.shape
        flat = feature_maps.flatten(2).transpose(1, 2)  # [B, N, D]
        unit = F.normalize(flat, dim=-1)
        cell_y = (points[..., 0] / self.stride).long().clamp(0, h - 1)
        cell_x = (points[..., 1] / self.stride).long().clamp(0, w - 1)
        seeds = torch.gather(unit, 1, (cell_y * w + cell_x).unsqueeze(-1).expand(-1, -1, d))
        affinity = ((seeds @ unit.transpose(1, 2)) - 1.0) / self.temperature  # [B, P, N]
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        dist2 = (cell_y.unsqueeze(-1) - gy.flatten()) ** 2 + (cell_x.unsqueeze(-1) - gx.flatten()) ** 2
        masks = torch.exp(affinity - dist2 / (2 * self.sigma**2))  # 1 at the prompt's own cell
        tokens = (masks @ flat) / masks.sum(-1, keepdim=True)
        return {"tokens": tokens.unsqueeze(2), "masks": masks.view(b, -1, 1, h, w)}

    def project_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.text_projection is None:
            raise NotImplementedError("this model has no text side")
        return torch.from_numpy(self.text_projection(tokens.detach().cpu().numpy()))


def half_max_masks(masks: np.ndarray) -> np.ndarray:
    """Soft masks [M, h, w] -> binary masks [M, 4h, 4w]: upsampled 4x bilinearly, then kept at half
    their peak, so a region's edge can fall inside a coarse cell (its box, colour and detections)."""
    m = masks.shape[0]
    if m == 0:
        return np.zeros((0, 4 * masks.shape[1], 4 * masks.shape[2]), bool)
    up = F.interpolate(torch.from_numpy(np.ascontiguousarray(masks, np.float32)).unsqueeze(1), scale_factor=4,
                       mode="bilinear", align_corners=False)[:, 0].numpy()
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
