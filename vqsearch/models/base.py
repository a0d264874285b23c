"""The interfaces every model is built from: a frozen backbone, a region encoder and a text encoder.

A region encoder is one interface with several implementations (training-free on the embedded
model, the learned T-REN head): merging, tracking, storage and queries only ever see this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn


class Backbone(Protocol):
    """Frozen dense image encoder: RGB frames in, a feature map per frame out."""

    dim: int
    stride: int

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Model input (H, W) for a frame of the given size, keeping its aspect ratio."""

    def features(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames [B, H, W, 3] already at `input_size` -> feature maps [B, D, H/stride, W/stride]."""


class TextEncoder(Protocol):
    """Text to L2-normalised embeddings in the space of the model's text-aligned region tokens."""

    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """[N] strings -> float32 [N, dim], unit norm."""


class RegionEncoder(nn.Module):
    """Point prompts in; k region tokens and soft masks per prompt out.

    forward(feature_maps [B, D, h, w], points [B, P, 2] as (y, x) pixels in the model's input
    resolution) returns {"tokens": [B, P, k, D], "masks": [B, P, k, h, w]} with masks
    max-normalised to 1. `project_text` maps (merged) visual tokens to text-aligned tokens, or
    is None when the model has no text side.
    """

    k: int = 1
    text_dim: int | None = None

    def project_text(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class ModelConfig:
    """Per-model settings: the paper's values for T-REN, calibrated values for the embedded model."""

    name: str
    input_long_side: int = 512          # frames are resized so the long side is this
    prompt_stride: int = 1              # one point prompt every `prompt_stride` feature cells
    merge_cosine: float = 0.975         # in-frame merge edge: token cosine above this ...
    merge_mask_iou: float = 0.8         # ... or binarised-mask IoU above this
    min_group: int = 1                  # drop in-frame groups with fewer prompt tokens than this
    track_tau: float = 0.65             # temporal merge: cosine to an active track at least this
    min_track_frames: int = 1           # tracks seen on fewer sampled frames are not stored
    visual_threshold: float = 0.5       # crop query: keep tracks with visual similarity above
    text_threshold: float = 0.3         # text query: keep tracks with text similarity above
    joint_threshold: float = 0.18       # text + crop: product of similarities above (T-REN tau_sim)
    extra: dict = field(default_factory=dict)


@dataclass
class SearchModel:
    """Everything `index` and `query` need, built by name from the registry."""

    config: ModelConfig
    backbone: Backbone
    region_encoder: RegionEncoder
    text_encoder: TextEncoder | None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def has_text(self) -> bool:
        return self.text_encoder is not None
