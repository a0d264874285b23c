"""The COCO detector (people and everyday objects) and how its detections reach track tokens."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import VIDEOS, need_shared
from vqsearch.models.detector import COCO_CLASSES, CocoDetector, Detection, region_labels, with_labels


def test_coco_classes_and_their_wordnet_synsets():
    """Each class is tied to a synset that its name (or its WordNet lemma) has as a sense."""
    from vqsearch.models.wordnet import DEFAULT_DIR, Nouns, wordnet_dir

    assert len(COCO_CLASSES) == 80 and len({name for name, _ in COCO_CLASSES}) == 80
    nouns = Nouns(need_shared(wordnet_dir() or DEFAULT_DIR))
    lemmas = {"fire hydrant": "fireplug", "wine glass": "wineglass", "sports ball": "ball", "skis": "ski",
              "hot dog": "hotdog", "donut": "doughnut", "potted plant": "pot_plant", "tv": "television",
              "remote": "remote_control", "cell phone": "cellular_telephone", "hair drier": "hair_dryer",
              "teddy bear": "teddy"}
    for name, offset in COCO_CLASSES:
        if offset is not None:
            lemma = lemmas.get(name, name.replace(" ", "_"))
            assert offset in nouns.senses[lemma], name


@pytest.fixture(scope="module")
def detector() -> CocoDetector:
    return CocoDetector(embeddings=np.eye(80, dtype=np.float32))  # no classifier beside it


def test_children_on_the_bed_are_people(detector):
    """bedroom.mp4 shows two children jumping on a bed: the detector finds a person and the bed."""
    import decord

    frame = decord.VideoReader(str(need_shared(VIDEOS / "bedroom.mp4")), width=512, height=288)[30].asnumpy()
    found = detector(frame)
    names = {detector.labels[d.label] for d in found if d.score > 0.5}
    assert {"person", "bed"} <= names, found
    person = max((d for d in found if detector.labels[d.label] == "person"), key=lambda d: d.score)
    x0, y0, x1, y1 = person.box
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and (x1 - x0) * (y1 - y0) < 0.5


def test_detections_are_opencv_dnns(detector):
    """The prediction layers on OpenVINO, then OpenCV's DetectionOutput in numpy, find what OpenCV
    DNN (what ran the detector before) finds in the same files: the same labels, scores and boxes."""
    import cv2
    import decord

    from vqsearch.models.detector import _ID_TO_CLASS, model_files

    net = cv2.dnn.readNetFromTensorflow(*(str(file) for file in model_files()))
    for name, index in (("bedroom.mp4", 30), ("02_cups.mp4", 120), ("04_coffee.mp4", 200)):
        frame = decord.VideoReader(str(need_shared(VIDEOS / name)), width=512, height=288)[index].asnumpy()
        net.setInput(cv2.dnn.blobFromImage(frame, size=(300, 300), swapRB=False))
        expected = sorted((_ID_TO_CLASS[int(label)], score, *np.clip(box, 0, 1))
                          for _, label, score, *box in net.forward()[0, 0]
                          if score >= detector.min_score and int(label) in _ID_TO_CLASS)
        found = sorted((d.label, d.score, *d.box) for d in detector(frame))
        assert [d[0] for d in found] == [d[0] for d in expected] and expected, name
        assert np.allclose(found, expected, atol=1e-4), name


def test_regions_take_the_label_of_the_box_they_sit_in():
    inside = np.zeros((3, 10, 10), bool)
    inside[0, 2:5, 2:5] = True      # all inside the box
    inside[1, 0:10, 0:10] = True    # the whole frame: mostly outside
    inside[2, 2:5, 3:6] = True      # two thirds inside
    box = Detection(0, 0.9, (0.2, 0.2, 0.5, 0.5))
    evidence = region_labels([box], inside)
    assert evidence.shape == (3, 80)
    assert evidence[0, 0] == pytest.approx(0.9)
    assert evidence[1, 0] == 0.0
    assert evidence[2, 0] == pytest.approx(0.9 * (2 * 6 / 9 - 1))
    assert region_labels([], inside).sum() == 0


def test_detections_take_their_share_of_the_text_token():
    from types import SimpleNamespace

    text = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    detector = SimpleNamespace(embeddings=np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32), beside=None)
    evidence = np.array([[0.0, 0.0], [0.9, 0.0]], np.float32)
    mixed = with_labels(text, evidence, detector)
    assert np.allclose(mixed[0], [1, 0, 0])
    assert np.allclose(mixed[1], np.array([0.1, 0.9, 0.0]) / np.hypot(0.1, 0.9), atol=1e-6)
    assert np.allclose(np.linalg.norm(mixed, axis=1), 1.0)
    # a track the classifier is sure of (its token is one of the classifier's labels) keeps it
    detector.beside = np.array([[1.0, 0.0, 0.0]], np.float32)
    assert np.allclose(with_labels(text, evidence, detector)[1], [1, 0, 0])
    detector.beside = np.array([[0.97, np.sqrt(1 - 0.97 ** 2), 0.0]], np.float32)  # cosine 0.97: half the share
    assert np.allclose(with_labels(text, evidence, detector)[1], np.array([0.55, 0.45, 0.0]) / np.hypot(0.55, 0.45),
                       atol=1e-5)


def test_short_tracks_between_detector_frames_are_labelled_from_their_last_frame():
    from indexer.pipeline import LateLabels
    from vqsearch.merge import FrameRegions, Track

    seen = []

    class Fake:
        labels = CocoDetector.labels

        def __call__(self, frame, threads=None):
            seen.append(int(frame[0, 0, 0]))
            return [Detection(0, 0.8, (0.0, 0.0, 0.5, 0.5))]

    late = LateLabels(Fake(), every=5, min_frames=2, frame_hw=(100, 200))
    for frame in range(7):
        late.keep(frame, np.full((4, 4, 3), frame, np.uint8), None)
    regions = FrameRegions(np.ones((1, 3), np.float32), np.ones((1, 2, 2), np.float32), np.zeros((1, 2), np.float32))
    short, inside_box, labelled = Track(np.zeros(3)), Track(np.zeros(3)), Track(np.zeros(3))
    for frame in (5, 6):
        short.add(frame, regions, 0, np.array([120.0, 60.0, 40.0, 30.0]))      # outside the person's box
        inside_box.add(frame, regions, 0, np.array([10.0, 10.0, 40.0, 30.0]))  # inside it
    labelled.add(6, FrameRegions(regions.tokens, regions.masks, regions.points, labels=np.ones((1, 80))), 0,
                 np.zeros(4))
    late.label([short, inside_box, labelled])
    assert seen == [6]  # one detector call for the frame they ended on; the labelled track needs none
    assert short.labelled_frames == 1 and short.label_evidence(80).sum() == 0
    assert inside_box.label_evidence(80)[0] == pytest.approx(0.8)
    assert labelled.label_evidence(80).sum() == 80
    assert sorted(late.frames) == [1, 2, 3, 4, 5, 6]  # a buffer of every + 1 frames
