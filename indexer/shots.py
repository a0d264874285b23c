"""Shot cuts: where a video jumps to another scene, so no track (and no response track) crosses one.

A cut between two consecutive frames is a large change of what is shown (the cosine of the
frames' mean backbone features) that is also a change of colours (the Bhattacharyya distance of
coarse RGB histograms), or a very large change of what is shown alone. Measured at 5 fps
(issue 7): on the three sample videos (no cuts) the feature cosine never fell below 0.867 and the
colour distance never rose above 0.025; at the 90 sequence joins of DAVIS episodes the cosine was
at most 0.61 and the colour distance at least 0.088, while inside a sequence they were at least
0.69 and at most 0.044.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CUT_COSINE = 0.8          # a cut changes what is shown: mean-feature cosine below this ...
CUT_COLOUR = 0.06         # ... and the colours: histogram distance above this
CUT_COSINE_ALONE = 0.5    # or what is shown changes so much that colours need not change


def colour_histogram(frame: np.ndarray) -> np.ndarray:
    """A frame's 8x8x8 RGB histogram (every 4th pixel), summing to 1."""
    q = (np.asarray(frame)[::4, ::4] // 32).reshape(-1, 3).astype(np.int64)
    hist = np.bincount(q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2], minlength=512).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - Bhattacharyya coefficient of two histograms: 0 for the same colours, 1 for disjoint."""
    return float(1.0 - np.sqrt(a * b).sum())


@dataclass
class FrameLook:
    """What a cut is judged on: the unit mean backbone feature and the colour histogram."""

    feature: np.ndarray
    colours: np.ndarray

    @classmethod
    def of(cls, frame: np.ndarray, feature_map: np.ndarray) -> FrameLook:
        """A frame [H, W, 3] and its backbone feature map [D, h, w]."""
        mean = feature_map.reshape(feature_map.shape[0], -1).mean(1)
        return cls(mean / max(float(np.linalg.norm(mean)), 1e-8), colour_histogram(frame))


def is_cut(before: FrameLook, after: FrameLook) -> bool:
    """Whether a shot cut lies between two consecutive (sampled) frames."""
    colours = colour_distance(before.colours, after.colours)
    cosine = float(before.feature @ after.feature)
    return cosine < CUT_COSINE_ALONE or (cosine < CUT_COSINE and colours > CUT_COLOUR)
