"""Colour names of regions and colour words of queries (vqsearch.colours)."""

from __future__ import annotations

import numpy as np

from conftest import need_shared, VIDEOS
from vqsearch.colours import (TERMS, colour_evidence, colour_query, colour_words, region_colours, srgb_to_lab,
                              term_distribution)


def _term(rgb) -> str:
    return TERMS[int(term_distribution(srgb_to_lab(np.array([rgb])))[0].argmax())]


def test_focal_and_everyday_shades_get_their_names():
    cases = {(220, 30, 40): "red", (30, 90, 200): "blue", (250, 220, 40): "yellow", (40, 140, 50): "green",
             (245, 245, 245): "white", (20, 20, 20): "black", (130, 130, 130): "grey", (240, 130, 20): "orange",
             (130, 50, 160): "purple", (240, 160, 190): "pink", (120, 80, 40): "brown"}
    for rgb, name in cases.items():
        assert _term(rgb) == name, (rgb, _term(rgb))


def test_distributions_are_soft_and_sum_to_one():
    dist = term_distribution(srgb_to_lab(np.array([[200, 100, 30], [128, 128, 128]])))
    assert np.allclose(dist.sum(1), 1.0, atol=1e-5)
    orange_brown = dist[0]
    assert orange_brown[TERMS.index("orange")] > 0.1 and orange_brown[TERMS.index("brown")] > 0.1


def test_region_histograms_follow_their_masks():
    frame = np.zeros((64, 128, 3), np.uint8)
    frame[:, :64] = (210, 20, 30)
    frame[:, 64:] = (20, 60, 200)
    inside = np.zeros((2, 16, 32), bool)
    inside[0, :, :16] = True        # the red half
    inside[1, :, 12:] = True        # mostly blue
    described = region_colours(frame, inside)
    hist, scene = described[:, :11], described[:, 11:]
    assert np.allclose(hist.sum(1), 1.0, atol=1e-5) and np.allclose(scene.sum(1), 1.0, atol=1e-5)
    assert hist[0, TERMS.index("red")] > 0.9
    assert hist[1, TERMS.index("blue")] > 0.7 and hist[1, TERMS.index("red")] > 0.1
    assert np.allclose(scene[0], scene[1]) and 0.4 < scene[0, TERMS.index("red")] < 0.6


def test_a_colour_counts_when_it_fills_the_region_or_stands_out_from_the_scene():
    yellow = colour_query(["yellow"])
    def described(share: float, scene: float) -> np.ndarray:
        region = np.zeros(22, np.float32)
        region[TERMS.index("yellow")], region[TERMS.index("white")] = share, 1 - share
        region[11 + TERMS.index("yellow")], region[11 + TERMS.index("white")] = scene, 1 - scene
        return region
    evidence = colour_evidence(np.stack([described(0.6, 0.5), described(0.05, 0.002), described(0.05, 0.05),
                                         described(0.0, 0.0)]), yellow)
    assert evidence[0] == 1.0          # fills the region
    assert evidence[1] > 0.7           # a small ball, 25x the scene's yellow
    assert 0.1 < evidence[2] < 0.5     # a little, as much as everywhere
    assert evidence[3] == 0.0


def test_colour_words_with_synonyms():
    assert colour_words("my red mug") == (["red"], "my mug")
    assert colour_words("Gray cat") == (["grey"], "cat")
    assert colour_words("navy and golden scarf") == (["blue", "yellow", "orange"], "and scarf")
    assert colour_words("reddish box")[0] == ["red"]
    assert colour_words("coffee mug") == ([], "coffee mug")
    share = colour_query(["red", "pink"]) @ np.eye(len(TERMS))[TERMS.index("pink")]
    assert share == 1.0


def test_real_objects_in_the_sample_video():
    """The yellow ball and a red cup of 02_cups.mp4, frame 0, named by their pixels."""
    import decord

    frame = decord.VideoReader(str(need_shared(VIDEOS / "02_cups.mp4")))[0].asnumpy()
    h, w = frame.shape[:2]
    inside = np.zeros((2, h // 4, w // 4), bool)
    inside[0, 440 // 4:490 // 4, 375 // 4:430 // 4] = True   # the ball (x 366-438, y 428-498)
    inside[1, 330 // 4:450 // 4, 530 // 4:640 // 4] = True   # the middle red cup
    hist = region_colours(frame, inside)[:, :11]
    assert TERMS[int(hist[0].argmax())] == "yellow", hist[0]
    assert TERMS[int(hist[1].argmax())] == "red", hist[1]
