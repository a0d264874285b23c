"""ConSE (Norouzi et al., ICLR 2014): text-aligned region tokens from a classifier and a text encoder.

A region's text token is the probability-weighted sum of the text embeddings of its top
ImageNet labels, so a query like "coffee mug" lands near regions the classifier calls a mug;
the COCO detector's labels join it (`vqsearch.models.detector`), so people have a label too.
Queries meet those tokens in the same label space (`LabelSpaceQueries`): a query whose head noun
is a WordNet ancestor of labels ("dog" above 118 breeds and COCO's dog, "woman" above COCO's
person) is embedded mostly as the mean of those labels' embeddings, the sum a region of any of
them would carry.
"""

from __future__ import annotations

import importlib.util
from functools import cached_property
from pathlib import Path

import numpy as np

from vqsearch.models import runtime
from vqsearch.models.base import TextEncoder

_LABELS_VERSION = "imagenet-coco-names-v2"
_VOCABULARY_VERSION = "above-else-climb-4-60"  # Nouns.vocabulary's rule
LABEL_SPACE = "all-MiniLM-L6-v2"  # the text encoder whose label embeddings make the tokens


def imagenet_labels() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def label_names() -> list[str]:
    """The label space: ImageNet's 1000 class names (ConSE's classifier), then COCO's 80 (the detector)."""
    from vqsearch.models.detector import CocoDetector

    return imagenet_labels() + list(CocoDetector.labels)


def label_synsets() -> list[int | None]:
    """WordNet noun offsets of `label_names()`, in the same order (None: no synset)."""
    from vqsearch.models.detector import COCO_CLASSES

    return [*imagenet_synsets(), *(offset for _, offset in COCO_CLASSES)]


def label_embeddings(text_encoder: TextEncoder, fingerprint: str) -> np.ndarray:
    """Text embeddings of the label names, computed once and cached."""
    def write(path: Path) -> None:
        np.save(path, text_encoder.encode(label_names()).astype(np.float32))

    return np.load(runtime.cached("labels", fingerprint + _LABELS_VERSION, ".npy", write))


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


def imagenet_synsets() -> list[int]:
    """WordNet noun offsets of the 1000 ImageNet classes, in class order, from timm's data file
    (read without importing timm, which would import torch into every query)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        raise RuntimeError("timm is not installed: it carries ImageNet's WordNet ids")
    lines = (Path(spec.origin).parent / "data" / "_info" / "imagenet_synsets.txt").read_text().split()
    return [int(wnid[1:]) for wnid in lines]


class LabelSpaceQueries:
    """A text encoder for ConSE tokens: query phrase -> head noun -> the labels (ImageNet classes,
    COCO classes) it stands for in WordNet (`Nouns.vocabulary`: below it, else above it, else
    near it) -> the mean of their label embeddings, mixed with the plain embedding of the whole
    phrase (`HEAD_WEIGHT`). A query without such a head noun is embedded plainly. The head noun
    rule is `vqsearch.models.wordnet.parse_phrase`.

    The lemma -> labels table is built once from WordNet and cached; without WordNet installed
    (and no cached table) every query is embedded plainly.
    """

    HEAD_WEIGHT = 0.75  # the head's share of the query token; the phrase keeps its modifiers' say

    def __init__(self, text: TextEncoder) -> None:
        self.text = text
        self.dim = text.dim

    @cached_property
    def labels(self) -> np.ndarray:
        """The label embeddings region tokens are made of (cached on disk by the first index)."""
        return label_embeddings(self.text, LABEL_SPACE)

    @cached_property
    def vocabulary(self) -> tuple[dict[str, list[int]], dict[str, str]]:
        """({lemma: label indices it stands for (`Nouns.vocabulary`)}, {irregular plural: lemma})."""
        import json

        from vqsearch.models.wordnet import Nouns, wordnet_dir

        root = wordnet_dir()
        if root is None:
            return {}, {}
        def write(path: Path) -> None:
            nouns = Nouns(root)
            path.write_text(json.dumps({"classes": nouns.vocabulary(label_synsets()), "exceptions": nouns.exceptions}))

        stamp = runtime.stamp(root / "data.noun", root / "index.noun")
        path = runtime.cached("wordnet-labels", stamp + _LABELS_VERSION + _VOCABULARY_VERSION, ".json", write)
        table = json.loads(path.read_text())
        return table["classes"], table["exceptions"]

    def classes(self, query: str) -> list[int]:
        """Labels the query's head noun stands for in WordNet (none: no head noun)."""
        from vqsearch.models.wordnet import head_noun

        classes, exceptions = self.vocabulary
        head = head_noun(query, classes, exceptions)
        return classes[head] if head is not None else []

    def context(self, query: str) -> np.ndarray | None:
        """The token of what the query says is around its head ("kite surfer": a kite; "children on
        a bed": a bed), the mean of those nouns' heads; None when it names nothing else."""
        from vqsearch.colours import SYNONYMS
        from vqsearch.models.wordnet import parse_phrase

        classes, exceptions = self.vocabulary
        _, others = parse_phrase(query, classes, exceptions)
        heads = [self._head(classes[noun]) for noun in others if noun not in SYNONYMS]
        if not heads:
            return None
        mean = np.mean(heads, axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-8)).astype(np.float32)

    def _head(self, below: list[int]) -> np.ndarray:
        """The head's token: the mean embedding of the labels it covers, unit norm."""
        head = self.labels[below].mean(0)
        return head / max(float(np.linalg.norm(head)), 1e-8)

    def encode(self, texts: list[str]) -> np.ndarray:
        out = self.text.encode(texts).astype(np.float32)
        for row, query in enumerate(texts):
            below = self.classes(query)
            if below:
                mixed = self.HEAD_WEIGHT * self._head(below) + (1 - self.HEAD_WEIGHT) * out[row]
                out[row] = mixed / max(float(np.linalg.norm(mixed)), 1e-8)
        return out
