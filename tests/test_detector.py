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
    return CocoDetector(embeddings=np.eye(80, dtype=np.float32))


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
    text = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    embeddings = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    evidence = np.array([[0.0, 0.0], [0.9, 0.0]], np.float32)
    mixed = with_labels(text, evidence, embeddings)
    assert np.allclose(mixed[0], [1, 0, 0])
    assert np.allclose(mixed[1], np.array([0.1, 0.9, 0.0]) / np.hypot(0.1, 0.9), atol=1e-6)
    assert np.allclose(np.linalg.norm(mixed, axis=1), 1.0)
