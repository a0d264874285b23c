"""The region encoder's numpy arithmetic against torch's (the reference it replaced on the index path)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vqsearch.regions import AffinityRegionEncoder, grid_points, half_max_masks, mask_boxes


def test_half_max_masks_upsample_as_torch_bilinear_does():
    masks = np.random.default_rng(0).random((4, 9, 16)).astype(np.float32)
    up = F.interpolate(torch.from_numpy(masks)[:, None], scale_factor=4, mode="bilinear", align_corners=False)[:, 0]
    expected = (up >= 0.5 * up.flatten(1).amax(1)[:, None, None]).numpy()
    got = half_max_masks(masks)
    assert got.shape == (4, 36, 64) and (got != expected).mean() < 1e-3  # ties at the threshold only


def test_affinity_masks_peak_at_their_prompt_and_tokens_are_mask_means():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 8, 3, 5)).astype(np.float32)
    points = grid_points(96, 160, 32)
    assert points.shape == (15, 2) and tuple(points[0]) == (16.0, 16.0) and tuple(points[-1]) == (80.0, 144.0)
    tokens, masks = AffinityRegionEncoder(32).encode(features, points)
    assert tokens.shape == (2, 15, 8) and masks.shape == (2, 15, 3, 5)
    np.testing.assert_allclose(masks.reshape(2, 15, 15).max(-1), 1.0, rtol=2e-5)  # float32 rounding
    assert (masks.reshape(2, 15, 15).argmax(-1) == np.arange(15)).all()
    flat = features.reshape(2, 8, 15).transpose(0, 2, 1)
    weights = masks.reshape(2, 15, 15)
    np.testing.assert_allclose(tokens, weights @ flat / weights.sum(-1, keepdims=True), rtol=1e-5)


def test_mask_boxes_are_in_frame_pixels():
    inside = np.zeros((1, 36, 64), bool)
    inside[0, 9:18, 16:32] = True
    np.testing.assert_allclose(mask_boxes(inside, (720, 1280)), [[320, 180, 320, 180]])
