"""The query engine: text and/or crop -> query tokens -> track similarities -> ranked hits and last_seen.

T-REN's rule: with both a text and a crop, a track's score is the product of its visual and
textual similarities. A track is an occurrence of the queried object when its score passes the
model's calibrated threshold for that kind of query AND stands out from the query's background:
at least `margin` robust standard deviations (1.4826 x median absolute deviation) above the
median score of the query over the searched tracks. Neither depends on the best match, so the
crop's own source does not outshine a later, weaker sighting. The answer to "where did I last
see it" is the occurrence that ends last (videos ordered by recording time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from queries.hits import Answer, Hit
from vqsearch.errors import VQSearchError
from vqsearch.models.base import SearchModel
from vqsearch.store import Store

CANDIDATES = 4096  # nearest tracks fetched per modality before scoring

# (engine, encoded queries, last occurrence, video restriction) -> the occurrence, relocated
Relocate = Callable[["QueryEngine", dict, Hit, Optional[Path]], Optional[Hit]]


MAX_CROP_PIXELS = 4096 * 4096  # a crop is resized to 96 px: more only costs memory (1.6 GB at 12k x 12k)


def load_crop(path: Path) -> np.ndarray:
    """An RGB uint8 image, or one clear error; its size is checked before it is decoded."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise VQSearchError(f"no such crop image: {path}")
    try:
        with Image.open(path) as image:  # reads the header only
            if image.width * image.height > MAX_CROP_PIXELS:
                raise VQSearchError(f"crop image {path} is {image.width}x{image.height} pixels, more than "
                                    f"{MAX_CROP_PIXELS // 10**6} megapixels: crop it to the object")
            return np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError:  # PIL's own header check, far above ours
        raise VQSearchError(f"crop image {path} is more than {MAX_CROP_PIXELS // 10**6} megapixels: "
                            "crop it to the object") from None
    except (UnidentifiedImageError, OSError) as error:
        raise VQSearchError(f"cannot read crop image {path}: {error}") from None


class QueryEngine:
    """Answers queries against one store with the model that built it."""

    def __init__(self, store: Store, model: SearchModel) -> None:
        self.store, self.model = store, model

    def encode_crop(self, image: np.ndarray) -> np.ndarray:
        """The crop's visual token: mean of the backbone features over the resized crop, unit norm."""
        from queries.localize import fit_to_stride

        backbone = self.model.backbone
        resized = fit_to_stride(image, self.model.config.crop_long_side, backbone.stride)
        token = backbone.features(resized[None])[0].mean(axis=(1, 2))
        return (token / max(np.linalg.norm(token), 1e-8)).astype(np.float32)

    def encode_text(self, text: str) -> np.ndarray:
        if self.model.text_encoder is None:
            raise VQSearchError(f"model {self.model.name!r} has no text side: query with --crop")
        return self.model.text_encoder.encode([text])[0].astype(np.float32)

    def search(self, text: str | None = None, crop: Path | None = None, video: Path | None = None,
               top_k: int = 5, relocate: Relocate | None = None) -> Answer:
        """Ranked tracks and the last occurrence. `relocate(engine, queries, last, video)` gives the
        latter its final boxes: `queries.relocate.Relocation` (VQ2D steps 3-5), which every front
        end passes unless asked for the index's own boxes."""
        if text is not None and not text.strip():
            raise VQSearchError("empty --text query")
        if text is None and crop is None:
            raise VQSearchError("give --text, --crop or both")
        if top_k < 1:
            raise VQSearchError(f"--top-k must be at least 1, got {top_k}")
        queries = self.encode_queries(text, crop)
        last, results = self.answer(queries, video, top_k)
        if relocate is not None and last is not None:
            last = relocate(self, queries, last, video)
        return Answer(text, str(crop) if crop is not None else None, last, results)

    def encode_queries(self, text: str | None, crop: Path | None) -> dict[str, np.ndarray]:
        """{"text": .., "visual": ..} query tokens for what was given."""
        queries = {}
        if text is not None:
            queries["text"] = self.encode_text(text.strip())
        if crop is not None:
            queries["visual"] = self.encode_crop(load_crop(crop))
        return queries

    def answer(self, queries: dict[str, np.ndarray], video: Path | None = None, top_k: int = 5,
               until_frame: int | None = None) -> tuple[Hit | None, list[Hit]]:
        """(last_seen, ranked results) for encoded queries {"text": .., "visual": ..}.

        `until_frame` answers as of that frame (VQ2D): only tracks that started by then count.
        """
        scores = self._scores(queries, self._selector(video, until_frame))
        ranked = sorted(scores, key=scores.get, reverse=True)
        kept = self.occurrences(scores, set(queries))
        rows = self.store.tracks(ranked[:top_k] + kept)
        def seen_until(i: int) -> int:
            return rows[i].end_frame if until_frame is None else min(rows[i].end_frame, until_frame)

        last = max(kept, key=lambda i: (rows[i].video.recorded_at, rows[i].video.id, seen_until(i), scores[i]),
                   default=None)
        return (Hit.from_track(rows[last], scores[last], until_frame) if last is not None else None,
                [Hit.from_track(rows[i], scores[i], until_frame) for i in ranked[:top_k]])

    def occurrences(self, scores: dict[int, float], kinds: set[str]) -> list[int]:
        """Track ids that are occurrences of the query (module docstring), best first."""
        config = self.model.config
        threshold, margin = ((config.joint_threshold, config.joint_margin) if len(kinds) == 2 else
                             (config.text_threshold, config.text_margin) if "text" in kinds else
                             (config.visual_threshold, config.visual_margin))
        if not scores:
            return []
        floor = threshold
        if margin > 0:
            values = np.fromiter(scores.values(), dtype=np.float64)
            median = float(np.median(values))
            floor = max(floor, median + margin * 1.4826 * float(np.median(np.abs(values - median))))
        return sorted((i for i, s in scores.items() if s >= floor), key=scores.get, reverse=True)

    def _selector(self, video: Path | None, until_frame: int | None = None):
        """FAISS search parameters restricted to one video's tracks (and those started by a frame)."""
        if video is None and until_frame is None:
            return None
        import faiss

        row = None
        if video is not None:
            row = self.store.find_video(video)
            if row is None:
                raise VQSearchError(f"video not in the index: {video}")
        ids = np.asarray(self.store.track_ids(row, until_frame), dtype=np.int64)
        return faiss.SearchParameters(sel=faiss.IDSelectorBatch(ids)), len(ids)

    def _scores(self, queries: dict[str, np.ndarray], selector) -> dict[int, float]:
        """Per track id: the similarity of each query, multiplied (T-REN), negatives clipped to 0."""
        vectors = self.store.search_vectors()
        if vectors is None:
            return {}
        indexes = {"visual": vectors.visual, "text": vectors.text}
        if "text" in queries and vectors.text is None:
            raise VQSearchError("this index has no text-aligned tokens: query with --crop")
        params, limit = selector if selector else (None, vectors.visual.ntotal)
        k = min(CANDIDATES, limit, vectors.visual.ntotal)
        if k == 0:
            return {}
        per_modality: list[dict[int, float]] = []
        for kind, query in queries.items():
            sims, ids = indexes[kind].search(query[None], k, params=params)
            per_modality.append({int(i): float(s) for s, i in zip(sims[0], ids[0]) if i >= 0})
        candidates = set().union(*per_modality)
        scores = {i: 1.0 for i in candidates}
        for kind, query, found in zip(queries, queries.values(), per_modality):
            missing = np.array([i for i in candidates if i not in found], dtype=np.int64)
            if len(missing):
                found = {**found, **dict(zip(missing.tolist(), (indexes[kind].reconstruct_batch(missing) @ query).tolist()))}
            for i in candidates:
                scores[i] *= max(found[i], 0.0)
        return scores
