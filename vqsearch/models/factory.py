"""One registry of models by name (as open_clip's factory): a config, and a builder from it.

The index records the model name it was built with; `query` rebuilds that model from here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from vqsearch.errors import VQSearchError
from vqsearch.models.base import ModelConfig, SearchModel

DEFAULT_MODEL = "lite0-conse"
OPENCLIP = "openclip:"              # openclip:<architecture>:<pretrained tag | checkpoint path>
DINOV3 = "dinov3:"                  # dinov3:<backbone .pth>; dino.txt from $VQSEARCH_DINOV3_DIR
TREN = "tren:"                      # tren:<openclip:... | dinov3:... name>:<T-REN head .pth>
TINY_OPENCLIP = "openclip:tiny-random"  # test-only: a small randomly initialised (seeded) ViT
_RANDOM_ARCHS = ("tiny-random",)    # = openclip.LOCAL_ARCHS: no weights needed (kept import-free)

# T-REN's paper values (design.md); text/visual thresholds for CLIP-space cosines, uncalibrated.
_PAPER = dict(merge_cosine=0.975, merge_mask_iou=0.8, track_tau=0.65, joint_threshold=0.18,
              visual_threshold=0.5, text_threshold=0.2)

# Merge settings of the embedded model were calibrated on ../shared/data/videos, its occurrence
# rule on hard DAVIS VQ2D episodes (README, "Models" and "Where was it last seen").
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
        visual_threshold=0.33,
        text_threshold=0.4,
        joint_threshold=0.18,
        visual_margin=2.0,
        text_margin=2.0,
        text_margin_in_video=1.0,
        joint_margin=1.5,
        visual_video_share=0.8,
        text_video_share=0.9,
        joint_decides=False,
    ),
    TINY_OPENCLIP: ModelConfig(name=TINY_OPENCLIP, input_long_side=128, crop_long_side=64, **_PAPER,
                               extra={"arch": "tiny-random", "pretrained": None}),
}


def _build_lite0_conse(config: ModelConfig, device: str) -> SearchModel:
    from vqsearch.models.conse import TEXT_SPACE, ConSE, LabelSpaceQueries
    from vqsearch.models.efficientnet import EfficientNetLite0, imagenet_classifier
    from vqsearch.models.minilm import MiniLMTextEncoder

    backbone = EfficientNetLite0(config.input_long_side)
    text = LabelSpaceQueries(MiniLMTextEncoder(threads=1))  # one short query: more threads only spin

    def region_encoder():
        from vqsearch.regions import AffinityRegionEncoder  # torch: only when indexing

        weight, bias = imagenet_classifier()
        conse = ConSE(weight, bias, text.labels[: len(bias)])
        return AffinityRegionEncoder(backbone.stride, text_projection=conse)

    def detector():
        from vqsearch.models.detector import CocoDetector

        coco = len(CocoDetector.labels)
        return CocoDetector(embeddings=text.labels[-coco:], beside=text.labels[:-coco])

    return SearchModel(config, backbone, text, region_encoder, detector, text_space=TEXT_SPACE)


def _openclip_parts(name: str) -> tuple[str, str | None]:
    """openclip:<arch>:<pretrained> -> (arch, pretrained); the pretrained part may hold colons."""
    parts = name.split(":", 2)
    arch = parts[1] if len(parts) > 1 else ""
    pretrained = parts[2] if len(parts) > 2 else None
    if not arch or (not pretrained and arch not in _RANDOM_ARCHS):
        raise VQSearchError(f"bad model name {name!r}: use openclip:<architecture>:<pretrained tag or "
                            "checkpoint path>, e.g. openclip:ViT-B-16:laion2b_s34b_b88k")
    return arch, pretrained


def _openclip_config(name: str) -> ModelConfig:
    arch, pretrained = _openclip_parts(name)
    return ModelConfig(name=name, input_long_side=512, crop_long_side=224, **_PAPER,
                       extra={"arch": arch, "pretrained": pretrained})


def _tren_config(name: str) -> ModelConfig:
    """tren:<backbone model name>:<head path>; the head path is what follows the last colon."""
    inner, _, head = name[len(TREN):].rpartition(":")
    if not inner.startswith((OPENCLIP, DINOV3)) or not head:
        raise VQSearchError(f"bad model name {name!r}: use tren:<openclip:... or dinov3:... model name>:"
                            "<T-REN head .pth>")
    base = get_config(inner)
    return replace(base, name=name, extra={**base.extra, "inner": inner, "head": head})


def _dinov3_config(name: str) -> ModelConfig:
    """dinov3:<backbone .pth> (dino.txt is looked for beside the other DINOv3 files)."""
    weights = name[len(DINOV3):]
    if not weights:
        raise VQSearchError(f"bad model name {name!r}: use dinov3:<path to the DINOv3 ViT-L/16 .pth>")
    return ModelConfig(name=name, input_long_side=512, crop_long_side=224, **_PAPER,
                       extra={"weights": weights})


def _build_dinov3(config: ModelConfig, device: str) -> SearchModel:
    from vqsearch.models.dinov3 import build_dinov3_model

    return build_dinov3_model(config, device)


def _openclip_parts_built(config: ModelConfig, device: str):
    from vqsearch.models.device import resolve_device
    from vqsearch.models.openclip import OpenCLIPBackbone, OpenCLIPText, load_openclip

    dev = resolve_device(device)
    model, tokenizer = load_openclip(config.extra["arch"], config.extra["pretrained"], dev)
    return OpenCLIPBackbone(model, config.input_long_side, dev), OpenCLIPText(model, tokenizer, dev)


def _build_openclip(config: ModelConfig, device: str) -> SearchModel:
    """OpenCLIP patch tokens, training-free regions, text tokens by REN's masked CLS pooling."""
    backbone, text = _openclip_parts_built(config, device)

    def region_encoder():
        from vqsearch.models.openclip import CLIPRegionPooling
        from vqsearch.regions import AffinityRegionEncoder

        return AffinityRegionEncoder(backbone.stride, region_pooling=CLIPRegionPooling(backbone))

    return SearchModel(config, backbone, text, region_encoder)


def _build_tren(config: ModelConfig, device: str) -> SearchModel:
    """A learned T-REN head on another model's backbone, its text projector into that text space."""
    from pathlib import Path

    head_path = Path(config.extra["head"])
    if not head_path.is_file():
        raise VQSearchError(f"no such T-REN head checkpoint: {head_path}")
    base = create_model(config.extra["inner"], device)

    def region_encoder():
        from vqsearch.models.tren import load_tren_head_for

        text_dim = base.text_encoder.dim if base.text_encoder is not None else None
        return load_tren_head_for(head_path, base.backbone.dim, text_dim, base.backbone.stride, device)

    return SearchModel(config, base.backbone, base.text_encoder, region_encoder)


@dataclass(frozen=True)
class _Entry:
    config: Callable[[str], ModelConfig]
    build: Callable[[ModelConfig, str], SearchModel]


# The one registry: exact names first, then name families by prefix (longest prefix wins).
_BUILDERS: dict[str, Callable[[ModelConfig, str], SearchModel]] = {
    DEFAULT_MODEL: _build_lite0_conse,
    TINY_OPENCLIP: _build_openclip,
}
_FAMILIES: dict[str, _Entry] = {
    OPENCLIP: _Entry(_openclip_config, _build_openclip),
    DINOV3: _Entry(_dinov3_config, _build_dinov3),
    TREN: _Entry(_tren_config, _build_tren),
}
_PATTERNS = ("openclip:<architecture>:<pretrained tag or checkpoint path>",
             "dinov3:<DINOv3 ViT-L/16 .pth>",
             "tren:<openclip:... or dinov3:... name>:<T-REN head .pth>")


def model_names() -> list[str]:
    """Registered names, then the name patterns of the families."""
    return sorted(CONFIGS) + list(_PATTERNS)


def _resolve(name: str) -> tuple[ModelConfig, Callable[[ModelConfig, str], SearchModel]]:
    if name in CONFIGS:
        return CONFIGS[name], _BUILDERS[name]
    for prefix in sorted(_FAMILIES, key=len, reverse=True):
        if name.startswith(prefix):
            entry = _FAMILIES[prefix]
            return entry.config(name), entry.build
    raise VQSearchError(f"unknown model {name!r}; known models: {', '.join(model_names())}")


def get_config(name: str) -> ModelConfig:
    """The config of a model name (syntax only: no weights are looked at)."""
    return _resolve(name)[0]


def create_model(name: str = DEFAULT_MODEL, device: str = "cpu") -> SearchModel:
    """Build a model by name, ready to index (and to encode queries). device: auto, cpu or cuda."""
    config, build = _resolve(name)
    return build(config, device)
