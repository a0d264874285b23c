"""Colour names of regions, and colour words of queries, in the eleven basic colour terms.

Why: a person asks for "the red mug", and neither ImageNet labels nor a sentence embedding of
the query keep the colour. Berlin and Kay's eleven basic terms are the colours every language
names; each has a few focal and muted sRGB prototypes. A pixel's term distribution is a Gaussian
of its CIELAB distance (lightness at half weight) to each term's nearest prototype, looked up in
a 32^3 RGB table; a
region's colour is the mean distribution over the pixels of its half-max mask (a histogram that
sums to 1), kept beside its frame's (`colour_evidence`). Colour words of a query, synonyms
included, pick terms of those histograms.
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np

TERMS = ("black", "white", "grey", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")

# Focal and common shades per term (sRGB), muted ones included: real objects under room light are
# rarely the focal colour.
_PROTOTYPES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "black": ((0, 0, 0), (28, 28, 30), (40, 35, 30)),
    "white": ((255, 255, 255), (232, 232, 226), (210, 214, 220)),
    "grey": ((128, 128, 128), (168, 168, 168), (90, 92, 95), (140, 135, 125)),
    "red": ((210, 20, 30), (160, 20, 25), (230, 60, 50), (120, 15, 20), (170, 70, 70)),
    "orange": ((255, 140, 0), (235, 110, 30), (250, 170, 70), (200, 90, 20), (210, 140, 90)),
    "yellow": ((255, 230, 0), (245, 215, 60), (250, 240, 120), (210, 190, 30), (220, 210, 140)),
    "green": ((0, 160, 0), (60, 120, 40), (120, 200, 80), (30, 80, 40), (0, 130, 100), (120, 150, 110)),
    "blue": ((0, 60, 200), (40, 100, 180), (100, 150, 220), (20, 30, 100), (0, 150, 200), (110, 130, 170),
             (150, 175, 210)),
    "purple": ((120, 40, 160), (90, 30, 110), (170, 110, 200), (140, 60, 120), (140, 110, 150)),
    "pink": ((255, 150, 190), (230, 100, 150), (250, 190, 200), (210, 60, 130), (225, 180, 180)),
    "brown": ((120, 70, 30), (150, 100, 60), (90, 55, 35), (190, 150, 110), (170, 110, 60)),
}

# Words a person uses for a colour -> the basic terms it covers.
SYNONYMS: dict[str, tuple[str, ...]] = {
    **{term: (term,) for term in TERMS},
    "gray": ("grey",), "silver": ("grey", "white"), "charcoal": ("grey", "black"),
    "crimson": ("red",), "scarlet": ("red",), "maroon": ("red", "brown"), "burgundy": ("red", "purple"),
    "golden": ("yellow", "orange"), "gold": ("yellow", "orange"), "amber": ("orange", "yellow"),
    "lime": ("green", "yellow"), "olive": ("green", "brown"), "turquoise": ("blue", "green"),
    "teal": ("blue", "green"), "cyan": ("blue", "green"), "navy": ("blue",), "azure": ("blue",),
    "violet": ("purple",), "lilac": ("purple", "pink"), "lavender": ("purple", "pink"),
    "magenta": ("pink", "purple"), "beige": ("brown", "white"), "tan": ("brown",), "cream": ("white", "yellow"),
    "ivory": ("white",), "khaki": ("brown", "green"),
}

_SIGMA = 12.0   # CIELAB units: a pixel 12 away from a term's nearest prototype keeps e^-0.5 of it
_LIGHTNESS = 0.5  # lightness counts half in the distance (as CMC l:c = 2:1): hue names a colour
_LEVELS = 32    # RGB table resolution per channel
FULL_SHARE = 0.25  # a region a quarter of a colour is of that colour ...
FULL_LIFT = 8.0    # ... and so is one with eight times the scene's share of it
DIM = 2 * len(TERMS)  # a colour descriptor: the region's histogram, the frame's


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 [..., 3] -> CIELAB [..., 3] (D65 white)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def term_distribution(lab: np.ndarray) -> np.ndarray:
    """CIELAB colours [N, 3] -> distributions over TERMS [N, 11]."""
    scale = np.array([_LIGHTNESS, 1.0, 1.0])
    distances = np.stack([
        np.linalg.norm((lab[:, None, :] - srgb_to_lab(np.array(_PROTOTYPES[t]))[None]) * scale, axis=-1).min(1)
        for t in TERMS], 1)
    weights = np.exp(-0.5 * ((distances - distances.min(1, keepdims=True)) / _SIGMA) ** 2)
    return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


@cache
def _table() -> np.ndarray:
    """[32^3, 11] term distributions of the RGB cube's cell centres."""
    step = 256 // _LEVELS
    centres = np.arange(_LEVELS) * step + step // 2
    cube = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1).reshape(-1, 3)
    return term_distribution(srgb_to_lab(cube))


def pixel_terms(frame: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    """uint8 frame [H, W, 3] -> term distributions [gh*gw, 11] averaged over a gh x gw grid of cells."""
    gh, gw = grid_hw
    h, w = frame.shape[:2]
    ys = (np.arange(gh * 2) * h // (gh * 2))
    xs = (np.arange(gw * 2) * w // (gw * 2))
    sample = frame[ys][:, xs] // (256 // _LEVELS)  # 2 x 2 pixels per cell
    index = (sample[..., 0].astype(np.int32) * _LEVELS + sample[..., 1]) * _LEVELS + sample[..., 2]
    terms = _table()[index]  # [2gh, 2gw, 11]
    return terms.reshape(gh, 2, gw, 2, len(TERMS)).mean((1, 3)).reshape(gh * gw, len(TERMS))


def region_colours(frame: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """A frame and binary region masks [M, H, W] covering it -> colour descriptors [M, 22]: each
    region's colour histogram, then the whole frame's (the scene the region stands out from).

    The frame is sampled at the masks' grid (a few thousand pixels): about a millisecond a frame.
    """
    m, h, w = inside.shape
    terms = pixel_terms(frame, (h, w))
    flat = inside.reshape(m, -1).astype(np.float32)
    regions = flat @ terms / flat.sum(1, keepdims=True).clip(1)
    scene = np.broadcast_to(terms.mean(0), regions.shape)
    return np.concatenate([regions, scene], 1).astype(np.float32)


def colour_evidence(descriptors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """How much each region (descriptors [N, 22]) is of the asked colours (`colour_query`), in [0, 1].

    A coarse region holds its object and what surrounds it, so either sign counts: the colours
    fill `FULL_SHARE` of the region, or the region holds `FULL_LIFT` times the scene's share of
    them (a small yellow ball in a region of white table).
    """
    share = descriptors[:, : len(TERMS)] @ query
    scene = descriptors[:, len(TERMS):] @ query
    lift = np.log((share + 0.01) / (scene + 0.01)) / np.log(FULL_LIFT)
    return np.clip(np.maximum(share / FULL_SHARE, lift), 0.0, 1.0)


def colour_words(query: str) -> tuple[list[str], str]:
    """(basic terms named in the query, the query without its colour words).

    "my red mug" -> (["red"], "my mug"); "light blue cup" -> (["blue"], "light cup").
    """
    words = re.findall(r"[\w'-]+", query.lower())
    terms: list[str] = []
    rest = []
    for word in words:
        stem = word.removesuffix("ish")  # reddish, bluish, greenish
        name = next((w for w in (word, stem, stem[:-1], stem + "e") if w in SYNONYMS), None)
        if name is not None and (name == word or word.endswith("ish")):
            terms += [t for t in SYNONYMS[name] if t not in terms]
        else:
            rest.append(word)
    return terms, " ".join(rest)


def colour_query(terms: list[str]) -> np.ndarray:
    """A query vector over TERMS: a region's histogram dotted with it is the share of those colours."""
    vector = np.zeros(len(TERMS), np.float32)
    for term in terms:
        vector[TERMS.index(term)] = 1.0
    return vector
