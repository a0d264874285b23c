"""ConSE (Norouzi et al., ICLR 2014): text-aligned region tokens from a classifier and a text encoder.

A region's text token is the probability-weighted sum of the text embeddings of its top
ImageNet labels, so a query like "coffee mug" lands near regions the classifier calls a mug.
"""

from __future__ import annotations

import numpy as np

from vqsearch.models import onnx_cache
from vqsearch.models.base import TextEncoder

_LABELS_VERSION = "imagenet-raw-names-v1"


def imagenet_labels() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def label_embeddings(text_encoder: TextEncoder, fingerprint: str) -> np.ndarray:
    """Text embeddings of the 1000 ImageNet label names, computed once and cached."""
    path = onnx_cache.cache_file("imagenet-labels", fingerprint + _LABELS_VERSION, ".npy")
    if path.exists():
        return np.load(path)
    embeddings = text_encoder.encode(imagenet_labels()).astype(np.float32)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, embeddings)
    tmp.replace(path)
    return embeddings


class ConSE:
    """Maps visual tokens (classifier input space) to unit-norm text-space tokens."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, labels: np.ndarray, top: int = 10) -> None:
        self.weight, self.bias, self.labels, self.top = weight, bias, labels, top

    @property
    def dim(self) -> int:
        return self.labels.shape[1]

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        logits = tokens @ self.weight.T + self.bias
        top = np.argpartition(-logits, self.top - 1, axis=1)[:, : self.top]
        top_logits = np.take_along_axis(logits, top, axis=1)
        probs = np.exp(top_logits - top_logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        out = np.einsum("nt,ntd->nd", probs, self.labels[top])
        return (out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-8)).astype(np.float32)
