"""Colour words and context nouns weigh text scores (queries/engine.py), on a real store."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from indexer.pipeline import IndexedVideo
from indexer.video import VideoInfo
from queries.engine import COLOUR_FLOOR, QueryEngine
from vqsearch.colours import TERMS
from vqsearch.merge import FrameRegions, Track
from vqsearch.models.base import ModelConfig
from vqsearch.store import Store

OBJECT, CONTEXT, OTHER = np.eye(4, dtype=np.float32)[:3]


class Words:
    """A text encoder that knows three words: "cup" (the object), "kite" (context), anything else."""

    dim = 4

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.stack([OBJECT if "cup" in t else OTHER for t in texts])

    def context(self, text: str) -> np.ndarray | None:
        return CONTEXT if "kite" in text else None


def _colour(name: str) -> np.ndarray:
    described = np.zeros(2 * len(TERMS), np.float32)
    described[TERMS.index(name)] = 1.0
    described[len(TERMS) + TERMS.index("white")] = 1.0  # the scene: white
    return described


def _store(tmp_path: Path, tracks: list[tuple[int, int, np.ndarray, str]], threshold: float = 0.3) -> QueryEngine:
    """One video whose tracks are (first frame, last frame, text vector, colour)."""
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not decoded")
    made = []
    for start, end, _, _ in tracks:
        track = Track(np.zeros(4, np.float32))
        regions = FrameRegions(np.ones((1, 4), np.float32), np.ones((1, 2, 2), np.float32), np.zeros((1, 2), np.float32))
        for frame in (start, end):
            track.add(frame, regions, 0, np.array([0.0, 0.0, 10.0, 10.0]))
        made.append(track)
    text = np.stack([t[2] for t in tracks]).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    result = IndexedVideo(VideoInfo(video, 100, 25.0, 64, 48), 5.0, 20, 240, len(tracks), made,
                          np.eye(len(tracks), 4, dtype=np.float32), text,
                          np.stack([_colour(t[3]) for t in tracks]), 0.1)
    store = Store.open(tmp_path / "db", create=True)
    store.add_video("words", str(video), result)
    model = SimpleNamespace(config=ModelConfig(name="words", text_threshold=threshold), text_encoder=Words(), name="words",
                            text_space=None)
    return QueryEngine(store, model)


def _scores(engine: QueryEngine, text: str) -> dict[int, float]:
    answer = engine.search(text=text, top_k=10)
    return {(hit.start_frame, hit.end_frame): hit.score for hit in answer.results}


def test_a_colour_word_keeps_the_tracks_of_that_colour(tmp_path):
    engine = _store(tmp_path, [(0, 10, OBJECT, "red"), (20, 30, OBJECT, "blue"), (40, 50, OTHER, "red")])
    plain = _scores(engine, "cup")
    assert plain[(0, 10)] == plain[(20, 30)] == pytest.approx(1.0)
    red = _scores(engine, "red cup")
    assert red[(0, 10)] == pytest.approx(1.0)
    assert red[(20, 30)] == pytest.approx(COLOUR_FLOOR)
    blue = engine.search(text="navy cup")  # a synonym
    assert (blue.results[0].start_frame, blue.last_seen.start_frame) == (20, 20)


def test_context_nouns_prefer_the_object_seen_with_them(tmp_path):
    near = 0.8 * CONTEXT + 0.6 * OTHER  # cosine 0.8 with the context
    engine = _store(tmp_path, [(0, 10, OBJECT, "white"), (20, 30, OBJECT, "white"), (5, 8, near, "white")],
                    threshold=0.6)
    plain = _scores(engine, "cup")
    assert plain[(0, 10)] == pytest.approx(plain[(20, 30)])
    scores = _scores(engine, "cup with a kite")
    assert scores[(0, 10)] == pytest.approx(1.0)                 # seen with the kite: keeps its score
    assert scores[(20, 30)] == pytest.approx(1.0 / 1.8, abs=1e-4)  # alone
    assert engine.search(text="cup").last_seen.start_frame == 20
    assert engine.search(text="cup with a kite").last_seen.start_frame == 0  # the later one is no longer it
