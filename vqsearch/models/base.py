"""What every model is built from: a frozen backbone, a region encoder, a text encoder, a config.

Nothing here imports torch: `query` loads this to answer from OpenVINO and FAISS alone.
The region-encoder interface itself lives in `vqsearch.regions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Protocol

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vqsearch.models.detector import Detector
    from vqsearch.regions import RegionEncoder


class Backbone(Protocol):
    """Frozen dense image encoder: RGB frames in, a feature map per frame out."""

    dim: int
    stride: int
    batch: int  # frames per `features` call that index fastest (1 on the CPU graph: its activations fit in cache)
    parallel: bool  # `features` calls may run at once while indexing, each on its `threads` (an OpenVINO stream each)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Model input (H, W) for a frame of the given size, keeping its aspect ratio."""

    def features(self, frames: np.ndarray, threads: int | None = None) -> np.ndarray:
        """uint8 frames [B, H, W, 3] already at `input_size` -> float32 maps [B, D, H/stride, W/stride].
        `threads`: CPU threads for this call where a backbone sets them per call (OpenVINO graphs;
        None: its own setting); torch's are process-wide (`indexer.pipeline.track_frames`)."""


class TextEncoder(Protocol):
    """Text to L2-normalised embeddings in the space of the model's text-aligned region tokens."""

    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """[N] strings -> float32 [N, dim], unit norm."""


@dataclass(frozen=True)
class ModelConfig:
    """Per-model settings: the paper's values for T-REN, calibrated values for the embedded model."""

    name: str
    input_long_side: int = 512          # frames are resized so the long side is this
    crop_long_side: int = 96            # query crops are resized so the long side is this
    prompt_stride: int = 1              # one point prompt every `prompt_stride` feature cells
    merge_cosine: float = 0.975         # in-frame merge edge: token cosine above this ...
    merge_mask_iou: float = 0.8         # ... or binarised-mask IoU above this
    min_group: int = 1                  # drop in-frame groups with fewer prompt tokens than this
    track_tau: float = 0.65             # temporal merge: cosine to an active track at least this
    min_track_frames: int = 1           # tracks seen on fewer sampled frames are not stored
    visual_threshold: float = 0.5       # crop query: a track is an occurrence at this similarity ...
    text_threshold: float = 0.3         # text query: ... at this text similarity ...
    joint_threshold: float = 0.18       # text + crop: ... at this product of both (T-REN tau_sim) ...
    visual_margin: float = 0.0          # ... and this many robust standard deviations above the
    text_margin: float = 0.0            #     median score of the query over the searched tracks
    joint_margin: float = 0.0           #     (the background), per kind of query
    text_margin_in_video: float | None = None  # text query over one video (--video, an index of one):
                                        #     this margin instead (None: text_margin)
    visual_video_share: float = 0.0     # only the videos whose best occurrence scores this share of
    text_video_share: float = 0.0       #     the best one anywhere hold occurrences, per kind of
    joint_video_share: float = 0.0      #     query (0: every video)
    joint_decides: bool = True          # text + crop: the product decides occurrences (T-REN); off:
                                        #     the crop's own rule does, the product only ranks
    detect_fps: float = 1.0             # frames a second the detector sees (models that have one)
    extra: dict = field(default_factory=dict)


@dataclass
class SearchModel:
    """Everything `index` and `query` need, built by name from the registry.

    The region encoder and the detector are built on first use: `query` never needs them, and
    building them can cost seconds (weights, label embeddings).
    """

    config: ModelConfig
    backbone: Backbone
    text_encoder: TextEncoder | None
    build_region_encoder: Callable[[], RegionEncoder]
    build_detector: Callable[[], Detector] | None = None
    text_space: str | None = None  # what the text tokens are made of, when it can change under one
                                   # model name (the embedded model's label texts); None: the name says

    @cached_property
    def region_encoder(self) -> RegionEncoder:
        return self.build_region_encoder()

    @cached_property
    def detector(self) -> Detector | None:
        return self.build_detector() if self.build_detector is not None else None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def has_text(self) -> bool:
        return self.text_encoder is not None
