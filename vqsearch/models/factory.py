"""One registry of models by name (as open_clip's factory): a config, and a builder from it.

The index records the model name it was built with; `query` rebuilds that model from here.
"""

from __future__ import annotations

from typing import Callable

from vqsearch.errors import VQSearchError
from vqsearch.models.base import ModelConfig, SearchModel

DEFAULT_MODEL = "lite0-conse"

# Thresholds of the embedded model were calibrated on ../shared/data/videos (see README, "Models").
CONFIGS: dict[str, ModelConfig] = {
    DEFAULT_MODEL: ModelConfig(
        name=DEFAULT_MODEL,
        input_long_side=512,
        prompt_stride=1,
        merge_cosine=0.68,
        merge_mask_iou=0.5,
        min_group=1,
        track_tau=0.15,
        min_track_frames=2,
        visual_threshold=0.4,
        text_threshold=0.5,
        joint_threshold=0.2,
        relative_threshold=0.9,
    ),
}


def _build_lite0_conse(config: ModelConfig, device: str) -> SearchModel:
    from vqsearch.models.conse import ConSE, label_embeddings
    from vqsearch.models.efficientnet import EfficientNetLite0, imagenet_classifier
    from vqsearch.models.minilm import MiniLMTextEncoder
    from vqsearch.regions import AffinityRegionEncoder

    backbone = EfficientNetLite0(config.input_long_side)
    text = MiniLMTextEncoder()

    def region_encoder() -> AffinityRegionEncoder:
        conse = ConSE(*imagenet_classifier(), label_embeddings(text, "all-MiniLM-L6-v2"))
        return AffinityRegionEncoder(backbone.stride, text_projection=conse)

    return SearchModel(config, backbone, text, region_encoder)


_BUILDERS: dict[str, Callable[[ModelConfig, str], SearchModel]] = {DEFAULT_MODEL: _build_lite0_conse}


def model_names() -> list[str]:
    return sorted(CONFIGS)


def get_config(name: str) -> ModelConfig:
    if name not in CONFIGS:
        raise VQSearchError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    return CONFIGS[name]


def create_model(name: str = DEFAULT_MODEL, device: str = "cpu") -> SearchModel:
    """Build a model by name, ready to index (and to encode queries)."""
    config = get_config(name)
    return _BUILDERS[name](config, device)
