"""In-frame merge and temporal track merge on hand-made tokens, masks and similarities."""

import numpy as np

from vqsearch.merge import FrameRegions, TrackBuilder, merge_in_frame


def _masks(*cells, shape=(4, 4)):
    out = np.zeros((len(cells), *shape), np.float32)
    for i, group in enumerate(cells):
        for y, x in group:
            out[i, y, x] = 1.0
    return out


def test_merge_by_cosine_and_by_mask_iou_transitively():
    tokens = np.array([[1, 0, 0], [0.999, 0.04, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    # token 2 shares its mask exactly with token 3 (IoU 1) though their tokens are orthogonal
    masks = _masks([(0, 0)], [(0, 1)], [(3, 3), (3, 2)], [(3, 3), (3, 2)])
    points = np.arange(8, dtype=np.float32).reshape(4, 2)
    regions = merge_in_frame(tokens, masks, points, cosine=0.975, mask_iou=0.8)
    assert len(regions.tokens) == 2
    merged = sorted(regions.tokens.tolist())
    np.testing.assert_allclose(merged, [[0.0, 0.5, 0.5], [0.9995, 0.02, 0.0]], atol=1e-6)
    assert regions.masks.shape == (2, 4, 4)


def test_small_groups_dropped_and_points_kept():
    tokens = np.array([[1, 0], [1, 0.001], [0, 1]], np.float32)
    masks = _masks([(0, 0)], [(1, 1)], [(2, 2)])
    points = np.array([[1, 1], [2, 2], [3, 3]], np.float32)
    regions = merge_in_frame(tokens, masks, points, cosine=0.975, mask_iou=0.8, min_group=2)
    assert len(regions.tokens) == 1
    assert tuple(regions.points[0]) in {(1.0, 1.0), (2.0, 2.0)}


def _frame(tokens):
    tokens = np.asarray(tokens, np.float32)
    return FrameRegions(tokens, np.ones((len(tokens), 2, 2), np.float32), np.zeros((len(tokens), 2), np.float32))


def test_tracks_match_one_to_one_greedy_and_keep_running_mean():
    builder = TrackBuilder(tau=0.5)
    boxes = np.zeros((2, 4), np.float32)
    builder.add_frame(0, _frame([[1, 0], [0, 1]]), boxes)
    # both new tokens are closest to track 0; greedy one-to-one gives the better one to track 0
    builder.add_frame(6, _frame([[0.9, 0.1], [0.7, 0.7]]), boxes)
    assert [t.frames for t in builder.tracks] == [[0, 6], [0, 6]]
    np.testing.assert_allclose(builder.tracks[0].token, [0.95, 0.05])
    np.testing.assert_allclose(builder.tracks[1].token, [0.35, 0.85])


def test_unmatched_regions_start_tracks_and_inactive_tracks_stay_closed():
    builder = TrackBuilder(tau=0.9)
    one = np.zeros((1, 4), np.float32)
    builder.add_frame(0, _frame([[1, 0]]), one)
    builder.add_frame(1, _frame([[0, 1]]), one)          # below tau: a new track
    builder.add_frame(2, _frame([[1, 0]]), one)          # track 0 is no longer active
    assert [t.frames for t in builder.tracks] == [[0], [1], [2]]


def test_detections_own_tracks_link_from_one_detector_frame_to_the_next_by_label():
    def found(tokens, labels):
        n = len(tokens)
        evidence = np.zeros((n, 80), np.float32)
        evidence[np.arange(n), labels] = 0.9
        return FrameRegions(np.asarray(tokens, np.float32), np.ones((n, 2, 2), np.float32),
                            np.zeros((n, 2), np.float32), labels=evidence)

    builder = TrackBuilder(tau=0.5)
    builder.add_detected(0, found([[1, 0], [0, 1]], [0, 41]), np.zeros((2, 4)))   # a person, a cup
    builder.add_frame(5, FrameRegions(np.ones((0, 2)), np.ones((0, 2, 2)), np.ones((0, 2))), np.zeros((0, 4)))
    builder.add_detected(10, found([[0.9, 0.1], [1, 0]], [0, 41]), np.zeros((2, 4)))  # the person; a cup like him
    person, cup, other_cup = builder.tracks
    assert person.frames == [0, 10] and cup.frames == [0] and other_cup.frames == [10]
    assert all(t.detected for t in builder.tracks) and not builder.active
    builder.add_detected(20, found([], []), np.zeros((0, 4)), seen=frozenset({0}))  # the person, stood for by a region
    builder.add_detected(30, found([[1, 0]], [0]), np.zeros((1, 4)))  # ... goes on; the cups' chains ended
    assert len(builder.tracks) == 3 and person.frames == [0, 10, 30]
    builder.add_detected(40, found([], []), np.zeros((0, 4)))  # not seen at all: the chain ends
    builder.add_detected(50, found([[1, 0]], [0]), np.zeros((1, 4)))
    assert len(builder.tracks) == 4 and builder.tracks[3].frames == [50]
    builder.add_frame(55, FrameRegions(np.ones((0, 2)), np.ones((0, 2, 2)), np.ones((0, 2))), np.zeros((0, 4)), cut=True)
    builder.add_detected(60, found([[1, 0]], [0]), np.zeros((1, 4)))  # a shot cut lies between
    assert len(builder.tracks) == 5 and builder.tracks[3].frames == [50]
