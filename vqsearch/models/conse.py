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
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from vqsearch.models import runtime
from vqsearch.models.base import TextEncoder

_LABELS_VERSION = "imagenet-definitions-coco-names-v3"
_VOCABULARY_VERSION = "above-else-climb-4-60-specific"  # Nouns.vocabulary's rule
LABEL_SPACE = "all-MiniLM-L6-v2"  # the text encoder whose label embeddings make the tokens
TEXT_SPACE = f"{LABEL_SPACE}/{_LABELS_VERSION}"  # recorded by an index: its text tokens and queries must share it


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
    """Text embeddings of the labels (`label_texts`), computed once and cached."""
    def write(path: Path) -> None:
        np.save(path, text_encoder.encode(label_texts()).astype(np.float32))

    return np.load(runtime.cached("labels", fingerprint + _LABELS_VERSION, ".npy", write))


def label_texts() -> list[str]:
    """What each label is embedded from, in `label_names()` order: an ImageNet class as its WordNet
    synonyms and definition, a COCO class as its name. Why: ImageNet's short names are ambiguous
    ("pot" is a flowerpot, "kite" a hawk) and a kettle query matched a flowerpot by name alone."""
    from vqsearch.models.detector import CocoDetector

    lemmas, definitions = _timm_table("imagenet_synset_to_lemma.txt"), _timm_table("imagenet_synset_to_definition.txt")
    imagenet = [f"{lemmas[wnid]}: {definitions[wnid]}" for wnid in _timm_info("imagenet_synsets.txt").split()]
    return imagenet + list(CocoDetector.labels)


def _timm_info(name: str) -> str:
    """A data file timm ships about ImageNet's WordNet classes (read without importing timm, which
    would import torch into every query)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        raise RuntimeError("timm is not installed: it carries ImageNet's WordNet ids")
    return (Path(spec.origin).parent / "data" / "_info" / name).read_text(encoding="utf-8")


def _timm_table(name: str) -> dict[str, str]:
    """{WordNet id: text} from one of timm's tab-separated ImageNet files."""
    return dict(line.split("\t", 1) for line in _timm_info(name).splitlines() if "\t" in line)


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
    """WordNet noun offsets of the 1000 ImageNet classes, in class order (timm's data file)."""
    return [int(wnid[1:]) for wnid in _timm_info("imagenet_synsets.txt").split()]


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
    SPECIFIC_HEAD_WEIGHT = 0.5  # a head more specific than its labels ("dancer": person) leaves the phrase more say
    IMPLIED_SIMILARITY = 0.5    # a person word implies the labels at least this near its phrase ...
    IMPLIED_WITHIN = 0.1        # ... and within this of the nearest

    def __init__(self, text: TextEncoder) -> None:
        self.text = text
        self.dim = text.dim

    @cached_property
    def labels(self) -> np.ndarray:
        """The label embeddings region tokens are made of (cached on disk by the first index)."""
        return label_embeddings(self.text, LABEL_SPACE)

    @cached_property
    def _table(self) -> dict:
        """The WordNet table (`Nouns.vocabulary`), built once and cached: "classes" {lemma: label
        indices it stands for}, "specific" [lemmas more specific than their labels], "exceptions"
        {irregular plural: lemma}; empty without WordNet."""
        import json

        from vqsearch.models.wordnet import Nouns, wordnet_dir

        root = wordnet_dir()
        if root is None:
            return {"classes": {}, "specific": [], "exceptions": {}}
        def write(path: Path) -> None:
            nouns = Nouns(root)
            classes, specific = nouns.vocabulary(label_synsets())
            path.write_text(json.dumps({"classes": classes, "specific": specific, "exceptions": nouns.exceptions}))

        stamp = runtime.stamp(root / "data.noun", root / "index.noun")
        path = runtime.cached("wordnet-labels", stamp + _LABELS_VERSION + _VOCABULARY_VERSION, ".json", write)
        return json.loads(path.read_text())

    @property
    def vocabulary(self) -> tuple[dict[str, list[int]], dict[str, str]]:
        """({lemma: label indices it stands for}, {irregular plural: lemma})."""
        return self._table["classes"], self._table["exceptions"]

    @cached_property
    def specific(self) -> frozenset[str]:
        """Lemmas more specific than any label: their labels are the kind above them ("surfer": person)."""
        return frozenset(self._table["specific"])

    @cached_property
    def people(self) -> frozenset[int]:
        """The labels of people (COCO's person, ImageNet's groom, scuba diver, ballplayer)."""
        return frozenset(self._table["classes"].get("person", ()))

    @lru_cache(maxsize=16)
    def parse(self, query: str) -> tuple[str | None, list[str]]:
        """(head noun, the other nouns) of a query as WordNet lemmas (`vqsearch.models.wordnet.parse_phrase`;
        read by `encode` and `context`: parsed once)."""
        from vqsearch.models.wordnet import parse_phrase

        classes, exceptions = self.vocabulary
        return parse_phrase(query, classes, exceptions)

    def head(self, query: str) -> str | None:
        """The query's head noun as a WordNet lemma."""
        return self.parse(query)[0]

    def classes(self, query: str) -> list[int]:
        """Labels the query's head noun stands for in WordNet (none: no head noun)."""
        head = self.head(query)
        return self.vocabulary[0][head] if head is not None else []

    def context(self, query: str) -> np.ndarray | None:
        """The token of what the query says is around its head, the mean of: the heads of the other
        nouns it names ("kite surfer": a kite; "children on a bed": a bed) and, for a person word
        more specific than "person", the labels that word implies (`implied`); None: neither."""
        from vqsearch.colours import SYNONYMS

        classes, _ = self.vocabulary
        head, others = self.parse(query)
        tokens = [self._head(classes[noun]) for noun in others if noun not in SYNONYMS]
        if head in self.specific and set(classes[head]) <= self.people:
            tokens += list(self.implied(query))
        if not tokens:
            return None
        mean = np.mean(tokens, axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-8)).astype(np.float32)

    def implied(self, query: str) -> np.ndarray:
        """Label embeddings [n, dim] of what a person word implies beside the person: the labels
        nearest the whole phrase other than people, at least IMPLIED_SIMILARITY and within
        IMPLIED_WITHIN of the nearest ("surfer": surfboard; "scooter rider": motor scooter; "dancer",
        "woman": none). A person word names a person by what they do, and that is seen beside them:
        every person is labelled a person alike."""
        similarities = self.labels @ self.phrase(query)
        similarities[list(self.people)] = -np.inf
        floor = max(self.IMPLIED_SIMILARITY, float(similarities.max()) - self.IMPLIED_WITHIN)
        near = self.labels[similarities >= floor]
        return near / np.linalg.norm(near, axis=1, keepdims=True).clip(1e-8)

    def _head(self, below: list[int]) -> np.ndarray:
        """The head's token: the mean embedding of the labels it covers, unit norm."""
        head = self.labels[below].mean(0)
        return head / max(float(np.linalg.norm(head)), 1e-8)

    @lru_cache(maxsize=16)
    def phrase(self, query: str) -> np.ndarray:
        """The plain embedding of a whole query (read by `encode` and `implied`: embedded once)."""
        return self.text.encode([query])[0].astype(np.float32)

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.stack([self.phrase(query) for query in texts]) if texts else np.zeros((0, self.dim), np.float32)
        for row, query in enumerate(texts):
            head = self.head(query)
            if head is not None:
                w = self.SPECIFIC_HEAD_WEIGHT if head in self.specific else self.HEAD_WEIGHT
                mixed = w * self._head(self.vocabulary[0][head]) + (1 - w) * out[row]
                out[row] = mixed / max(float(np.linalg.norm(mixed)), 1e-8)
        return out
