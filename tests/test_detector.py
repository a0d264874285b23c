"""The COCO detector (people and everyday objects) and how its detections reach track tokens."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import VIDEOS, need_shared
from vqsearch.models.detector import (COCO_CLASSES, CocoDetector, Detection, corners_to_boxes, detected_regions,
                                      region_labels, with_labels)


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


def test_a_detection_no_region_stands_for_gets_a_region_of_its_own():
    from vqsearch.merge import FrameRegions

    # a 4 x 4 feature grid of an input 64 px high, 128 wide; one prompt per cell
    ys, xs = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    points = np.stack([(ys.ravel() + 0.5) * 16, (xs.ravel() + 0.5) * 32], 1).astype(np.float32)
    tokens = np.eye(16, 8, dtype=np.float32) + 0.1
    masks = np.ones((16, 4, 4), np.float32)
    # the merge made one region of the whole frame (the sea around a surfer)
    sea = FrameRegions(tokens.mean(0, keepdims=True), masks[:1], points[:1], groups=np.zeros(16, np.int64))
    whole = np.ones((1, 16, 16), bool)

    def regions_for(detections, merged=sea, inside=whole):
        return detected_regions(detections, merged, inside, tokens, masks, points, (64, 128))

    person = Detection(0, 0.9, (0.25, 0.25, 0.75, 0.75))
    found, own, corners = regions_for([person, Detection(0, 0.8, (0.3, 0.25, 0.75, 0.75)),  # the same one again
                                       Detection(41, 0.4, (0.0, 0.0, 0.5, 0.5))])           # not confident
    assert len(found.tokens) == 1 and np.allclose(corners, [person.box])
    members = [5, 6, 9, 10]  # the prompts in the box
    assert np.allclose(own[0], tokens[members].mean(0))   # what it looks like: its text side
    assert np.allclose(found.tokens[0], sea.tokens[0])    # its visual token: the merge's
    assert found.masks[0][1:3, 1:3].all() and found.masks[0].sum() == 4  # cut to the box
    assert tuple(found.points[0]) in {tuple(p) for p in points[members]}
    assert np.allclose(corners_to_boxes(corners, (480, 640)), [[160, 120, 320, 240]])
    # a region mostly inside the box stands for it (it takes the label); so do an object's parts
    part = np.zeros((1, 16, 16), bool)
    part[0, 5:9, 5:9] = True
    assert len(regions_for([person], inside=np.concatenate([whole, part]))[0].tokens) == 0
    # a box holding no prompt says nothing
    assert len(regions_for([Detection(0, 0.9, (0.0, 0.0, 0.05, 0.05))])[0].tokens) == 0


def test_the_mug_in_a_hand_gets_a_track_of_its_own():
    """In 04_coffee.mp4 the merge joins the mug to the hand around it; the detector sees a cup there
    on every detector frame, and those detections make one track of the mug."""
    from pathlib import Path

    from indexer.pipeline import track_frames
    from indexer.video import probe
    from vqsearch.models.factory import create_model

    tracked = track_frames(create_model(), probe(Path(need_shared(VIDEOS / "04_coffee.mp4"))), 5.0)
    cup = [name for name, _ in COCO_CLASSES].index("cup")
    mugs = [t for t in tracked.tracks if t.detected and t.label_evidence(80).argmax() == cup]
    longest = max(mugs, key=lambda t: len(t.frames))
    assert len(longest.frames) >= 8 and longest.frames == sorted(longest.frames)
    x, y, w, h = np.mean(longest.boxes, 0)  # the mug's box, in the lower right of the 1280 x 720 frame
    assert 600 < x + w / 2 < 1000 and 350 < y + h / 2 < 600 and w < 300 and h < 300


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
    # ... but not a detection's own region: it is what was detected
    assert np.allclose(with_labels(text, evidence, detector, np.array([False, True]))[1],
                       np.array([0.1, 0.9, 0.0]) / np.hypot(0.1, 0.9), atol=1e-6)
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
    # the run was for tracks given their labels: its detections may get regions of their own,
    # from what was kept of the frame, once
    assert late.fresh == [6] and late.take_fresh() == [] and late.fresh == []  # nothing kept for regions
    late.keep(7, np.full((4, 4, 3), 7, np.uint8), None, region_inputs=("kept",))
    late.label([_ended_at(7, regions)])
    assert late.take_fresh() == [(7, late.found[7], ("kept",))] and late.take_fresh() == []
    late.keep(8, np.full((4, 4, 3), 8, np.uint8), None, region_inputs=("kept",))
    late.label([_ended_at(8, regions)], hold=True)  # a held label's run (a segment's edge) is not
    assert seen == [6, 7, 8] and late.take_fresh() == []


def _ended_at(frame, regions):
    from vqsearch.merge import Track

    track = Track(np.zeros(3))
    for f in (frame - 1, frame):
        track.add(f, regions, 0, np.array([10.0, 10.0, 40.0, 30.0]))
    return track
