"""Synthetic tracks for the scale benchmark, drawn around real track tokens.

A lifetime of video is many scenes, each with its own few objects seen again and again. A
synthetic video draws a scene of `SCENE` real tracks (the prototypes, from an index of real
videos); each of its tracks mixes two of them (the first weighing 0.5-1) and adds noise that stays
in the real tokens' own subspace (random multiples of prototypes less their mean), plus a little
isotropic noise, then is normalised; its text token is made the same way from the same
prototypes' text tokens, its colour is its first prototype's. A planted object (a crop's and a
text's query tokens) is seen `planted` times, spread evenly over the store's time; its sightings
are its tokens with the same kind of noise, so its last sighting is known. Prototypes within
cosine `PLANTED_APART` of the planted crop are left out of scenes, so only planted tracks are the
planted object. Everything is a function of the seed and a video's number, so a video can be made
again (the index is trained on a sample drawn across all videos before they are stored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCENE = 40  # prototypes per synthetic video
NOISE_TERMS = 8  # prototype deviations summed into a track's noise
ISOTROPIC = 0.15  # norm of the isotropic noise
PLANTED_APART = 0.5  # prototypes this close to the planted crop stay out of scenes
BOXES = 5  # boxes per track
TRAINING_SPREAD = 4  # the training sample comes from this many times as many videos as it would fill
FPS = 30.0
FRAME = (1280, 720)


@dataclass
class Prototypes:
    """Real track tokens by kind (unit rows; colour: histograms), row i of each the same track."""

    vectors: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.vectors["visual"])


@dataclass
class Planted:
    """The planted object's query tokens (unit) by kind: visual and text."""

    tokens: dict[str, np.ndarray]
    colour: np.ndarray


@dataclass
class VideoDraw:
    """The random choices of one synthetic video, from which any of its tracks can be made."""

    first: np.ndarray    # [n] prototype each track is mostly
    second: np.ndarray   # [n] prototype mixed in
    weight: np.ndarray   # [n, 1] weight of the first
    spread: np.ndarray   # [n, 1] norm of the subspace noise
    planted: np.ndarray  # [n] bool: a sighting of the planted object
    seed: int            # of its noise


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-8)).astype(np.float32)


class SyntheticStore:
    """`videos` synthetic videos of `per_video` tracks, `planted` of them the planted object."""

    def __init__(self, prototypes: Prototypes, planted: Planted, tracks: int, per_video: int, planted_count: int,
                 seed: int = 0) -> None:
        self.prototypes, self.planted, self.seed = prototypes, planted, seed
        self.tracks, self.per_video = tracks, per_video
        self.videos = -(-tracks // per_video)
        self.pool = np.flatnonzero(prototypes.vectors["visual"] @ planted.tokens["visual"] < PLANTED_APART)
        self.means = {kind: rows.mean(axis=0) for kind, rows in prototypes.vectors.items()}
        # planted sightings: evenly spaced over the store, the last three quarters into the last video
        self.planted_tracks = np.linspace(0, tracks - 1 - min(per_video, tracks) // 4, planted_count).astype(np.int64)

    def video_size(self, video: int) -> int:
        return min(self.per_video, self.tracks - video * self.per_video)

    def draw(self, video: int) -> VideoDraw:
        n = self.video_size(video)
        rng = np.random.default_rng([self.seed, video])
        scene = rng.choice(self.pool, min(SCENE, len(self.pool)), replace=False)
        numbers = np.arange(video * self.per_video, video * self.per_video + n)
        return VideoDraw(scene[rng.integers(0, len(scene), n)], scene[rng.integers(0, len(scene), n)],
                         rng.uniform(0.5, 1.0, (n, 1)), rng.uniform(0.3, 1.0, (n, 1)),
                         np.isin(numbers, self.planted_tracks), int(rng.integers(0, 2**63)))

    def vectors(self, draw: VideoDraw) -> dict[str, np.ndarray]:
        """The vectors by kind of a drawn video's tracks."""
        first, second, weight, spread, planted = draw.first, draw.second, draw.weight, draw.spread, draw.planted
        rng = np.random.default_rng(draw.seed)
        out = {}
        for kind in ("visual", "text"):
            protos = self.prototypes.vectors[kind]
            base = weight * protos[first] + (1 - weight) * protos[second]
            base[planted] = self.planted.tokens[kind]
            noise = np.zeros(base.shape, np.float32)  # summed in float32: a float64 sum took most of the build
            for _ in range(NOISE_TERMS):
                scale = rng.standard_normal((len(first), 1)).astype(np.float32)
                noise += scale * (protos[rng.integers(0, len(protos), len(first))] - self.means[kind])
            noise *= (spread / np.sqrt(NOISE_TERMS)).astype(np.float32)
            noise += (ISOTROPIC / np.sqrt(base.shape[1]) * rng.standard_normal(base.shape)).astype(np.float32)
            out[kind] = _unit(base + noise)
        colour = self.prototypes.vectors["colour"][first].copy()
        colour[planted] = self.planted.colour
        out["colour"] = colour.astype(np.float32)
        return out

    def times(self, video: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first frames, last frames, boxes [n, BOXES, 5]) of a video's tracks: a track every few
        frames, each seen for 1-3 s, so later tracks end later."""
        n = self.video_size(video)
        rng = np.random.default_rng([self.seed, video, 1])
        starts = np.sort(rng.integers(0, 6 * n, n))
        ends = starts + rng.integers(30, 90, n)
        frames = np.linspace(starts, ends, BOXES).T.round()
        corner = rng.uniform(0, 1, (n, 1, 2)) * (np.array(FRAME) - 200)
        size = rng.uniform(40, 200, (n, 1, 2))
        boxes = np.concatenate([frames[..., None], np.broadcast_to(corner, (n, BOXES, 2)),
                                np.broadcast_to(size, (n, BOXES, 2))], axis=2)
        return starts, ends, boxes

    def training(self, count: int) -> dict[str, np.ndarray]:
        """About `count` of the stored tracks' vectors, a share of each of TRAINING_SPREAD times as
        many videos as they would fill, spread evenly over the store: what the index is trained on
        (those videos are made twice, once for this sample and once to be stored; making every
        video twice took a third of a 10M build)."""
        chosen = np.unique(np.linspace(0, self.videos - 1, min(self.videos, -(-TRAINING_SPREAD * count
                                                                                // self.per_video))).round())
        share = min(1.0, count / sum(self.video_size(int(video)) for video in chosen))
        parts = []
        for video in chosen.astype(int).tolist():
            made = self.vectors(self.draw(video))
            rows = np.random.default_rng([self.seed, video, 2]).random(len(made["visual"])) < share
            parts.append({kind: vectors[rows] for kind, vectors in made.items()})
        return {kind: np.concatenate([part[kind] for part in parts]) for kind in parts[0]}
