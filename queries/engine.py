"""The query engine: text and/or crop -> query tokens -> track similarities -> ranked hits and last_seen.

T-REN's rule: with both a text and a crop, a track's score is the product of its visual and textual
similarities; the embedded model ranks by it but lets the crop alone decide which tracks are
occurrences (`joint_decides` off): its ConSE factor varies more between views of one object than
between look-alikes, and deciding by the product lost brief reappearances (README). A text query
over one video (`--video`, an index of one) takes the model's `text_margin_in_video`. A track is an
occurrence of the queried object when its score passes the model's calibrated threshold for that
kind of query AND stands out from the query's background: at least `margin` robust standard
deviations (1.4826 x median absolute deviation) above the median score of the query over the
searched tracks. Neither depends on the best match, so the crop's own source does not outshine a
later, weaker sighting. Across videos a query asks one more thing: its occurrences lie only in the
videos whose best occurrence scores at least a share of the best one anywhere (`*_video_share`; the
embedded model: 0.8). Scores are weak evidence across a library: a goat scored 0.93 for "dog" (the
dog 0.94), a horse 0.55 against a camel's crop (the camel's own reappearance 0.47). Within a video
the rule above alone decides, so a weaker later sighting there still counts. Colour words in a text
query ("my red mug") weigh the score by the evidence that the track is of those colours
(`vqsearch.colours.colour_evidence`): a track of that colour keeps its score, one without it keeps
half (coarse regions blur colours: a blue dress measured 10-15 % blue). The answer to "where did I
last see it" is the occurrence that ends last (videos ordered by recording time).

How tracks are searched (`vqsearch.vector_index`). A small store (flat vectors), and any search
restricted to some tracks (`--video`, VQ2D's query frame), scores every searched track: the rule is
exact. A compressed store (from `COMPRESS_FROM` tracks) cannot: its background (median and spread)
is that of its fixed random sample of tracks (`background_tracks`, ~4096, scored with the same rule,
colours and context included), and only what the answer needs is searched, so the cost follows
the likely videos' tracks (or those recorded after them) and one video's, never every match. The
answer needs three things: the best occurrence (from the 512 nearest tracks, the shortlist, ranked
by their fine codes, which also give the results and, with context, the tracks weighed by it);
which videos are likely, i.e. hold a track at the video share of the best or more: when the
tracks recorded after the shortlist's latest likely video are few (`LATER_SHARE`), every one of
them at that score, in every list (a later likely video is found wherever its tracks lie), else a
range search at that score in the lists around the query, as deep as they hold such tracks more
densely than the background does (`within`); and every occurrence of the latest likely video,
whose tracks are one block of ids, searched for in every list at the lowest score an occurrence
can have (`Walk.blocks`: a chance match of the margin rule may lie in any list, and the last one
may be the answer), reading only that block's stretch of each list. A track's score is its
similarity, or the product of both, times weights of at most 1 (colour, context), so a track at
some score has a similarity at least that score: the range searches use the scores as radii.
Occurrences of the other videos, however many, are not looked for: they cannot be the last. With
both a text and a crop, the crop decides (above) and the product ranks the shortlist and the last
occurrence, their text similarities decoded from the text index; when the product decides, every
track found has its text similarity decoded. "Last seen" reads the videos' rows and the chosen
video's occurrences only (`Store.latest_track`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from queries.hits import Answer, Hit
from vqsearch.colours import colour_evidence
from vqsearch.errors import VQSearchError
from vqsearch.models.base import SearchModel
from vqsearch.store import Store
from vqsearch.list_walk import Walk
from vqsearch.vector_index import is_compressed, nearest, scores_of, vectors_of

SHORTLIST = 512  # a compressed store's nearest tracks scored besides the occurrences, for the results
COLOUR_FLOOR = 0.5  # a track without the asked colour(s) keeps this much of its score: 32 px regions blur colours
CONTEXT_TRACKS = 512  # tracks weighed by what is seen with them, and context tracks looked at
# the tracks recorded after the shortlist's latest likely video are searched in every list while they
# are at most this share of the store, else the walk. CPU p95 of text queries at 10M: 142 ms by the
# walk alone, 82 ms with 0.5 %, 52 ms with 1 % (crop 84-94 ms either way); at 1M 10k tracks cost
# 2-3 ms less than the walk, at 100k 40k tracks 10 ms more. The walk's cost grows with the matches.
LATER_SHARE = 0.01

# (engine, encoded queries, last occurrence, video restriction) -> the occurrence, relocated
Relocate = Callable[["QueryEngine", dict, Hit, Optional[Path]], Optional[Hit]]


MAX_CROP_PIXELS = 4096 * 4096  # a crop is resized to 96 px: more only costs memory (1.6 GB at 12k x 12k)


@dataclass(frozen=True)
class UploadedCrop:
    """A crop image sent as bytes (`vqsearch serve`), named as its sender named it."""

    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name


def load_crop(path: Path | UploadedCrop) -> np.ndarray:
    """An RGB uint8 image, or one clear error; its size is checked before it is decoded."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(path, Path) and not path.is_file():
        raise VQSearchError(f"no such crop image: {path}")
    try:
        with Image.open(io.BytesIO(path.data) if isinstance(path, UploadedCrop) else path) as image:  # the header only
            if image.width * image.height > MAX_CROP_PIXELS:
                raise VQSearchError(f"crop image {path} is {image.width}x{image.height} pixels, more than "
                                    f"{MAX_CROP_PIXELS // 10**6} megapixels: crop it to the object")
            return np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError:  # PIL's own header check, far above ours
        raise VQSearchError(f"crop image {path} is more than {MAX_CROP_PIXELS // 10**6} megapixels: "
                            "crop it to the object") from None
    except (UnidentifiedImageError, OSError) as error:
        uploaded = isinstance(path, UploadedCrop) and isinstance(error, UnidentifiedImageError)  # PIL names no file
        raise VQSearchError(f"cannot read crop image {path}: {'not an image' if uploaded else error}") from None


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

    def encode_text(self, text: str) -> dict[str, np.ndarray]:
        """{"text": the text token, "colour": the colour-term vector when the query names colours,
        "context": the token of what the query says is around its object, when the text encoder
        parses phrases (`LabelSpaceQueries.context`)}."""
        from vqsearch.colours import colour_query, colour_words

        if self.model.text_encoder is None:
            raise VQSearchError(f"model {self.model.name!r} has no text side: query with --crop")
        space = self.model.text_space
        if space is not None and self.store.video_count() and self.store.text_space != space:
            raise VQSearchError(f"this index's text tokens were made with {self.store.text_space or 'older label texts'}"
                                f", this vqsearch asks with {space}: index the videos again into a new --db to "
                                "query by text (--crop still works)")
        encoder = self.model.text_encoder
        encoded = {"text": encoder.encode([text])[0].astype(np.float32)}
        terms, _ = colour_words(text)
        if terms:
            encoded["colour"] = colour_query(terms)
        context = encoder.context(text) if hasattr(encoder, "context") else None
        if context is not None:
            encoded["context"] = context
        return encoded

    def search(self, text: str | None = None, crop: Path | UploadedCrop | None = None, video: Path | None = None,
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

    def encode_queries(self, text: str | None, crop: Path | UploadedCrop | None) -> dict[str, np.ndarray]:
        """{"text": .., "colour": .., "context": .., "visual": ..} query vectors for what was given."""
        queries = {}
        if text is not None:
            queries.update(self.encode_text(text.strip()))
        if crop is not None:
            queries["visual"] = self.encode_crop(load_crop(crop))
        return queries

    def answer(self, queries: dict[str, np.ndarray], video: Path | None = None, top_k: int = 5,
               until_frame: int | None = None) -> tuple[Hit | None, list[Hit]]:
        """(last_seen, ranked results) for encoded queries (`encode_queries`).

        `until_frame` answers as of that frame (VQ2D): only tracks that started by then count.
        """
        selection = self._selection(video, until_frame)
        indexes = self._indexes(queries)
        if indexes is None:
            return None, []
        one_video = video is not None or self.store.video_count() == 1
        if selection is None and is_compressed(indexes[next(k for k in ("visual", "text") if k in queries)]):
            last, scores = self._compressed_answer(queries, indexes, one_video)
        else:
            last, scores = self._exact_answer(queries, selection, one_video, until_frame)
        ranked = sorted(scores, key=scores.get, reverse=True)
        rows = self.store.tracks(ranked[:top_k] + ([last] if last is not None else []))  # boxes: only these
        return (Hit.from_track(rows[last], scores.get(last, 0.0), until_frame) if last is not None else None,
                [Hit.from_track(rows[i], scores[i], until_frame) for i in ranked[:top_k]])

    def _exact_answer(self, queries: dict[str, np.ndarray], selection: np.ndarray | None, one_video: bool,
                      until_frame: int | None) -> tuple[int | None, dict[int, float]]:
        """(last occurrence, scores of every searched track) when every searched track is scored:
        a flat store, or a search restricted to some tracks. The occurrences' lean rows are read."""
        scores = self._scores(queries, selection)
        kinds = set(queries) & {"text", "visual"}
        deciding = scores
        if kinds == {"text", "visual"} and not self.model.config.joint_decides:
            kinds, deciding = {"visual"}, self._scores({"visual": queries["visual"]}, selection)
        kept = self.occurrences(deciding, kinds, None, one_video)
        spans = self.store.spans(kept)
        kept = self.in_likely_videos(kept, deciding, {i: spans[i][0] for i in kept}, self._rule(kinds)[2])
        return self._last(kept, deciding, spans, until_frame), scores

    def _compressed_answer(self, queries: dict[str, np.ndarray], indexes: dict[str, object],
                           one_video: bool) -> tuple[int | None, dict[int, float]]:
        """(last occurrence, scores of the tracks to rank) of an unrestricted search of a compressed
        store (module docstring): the nearest tracks, the tracks that make a video likely (at the
        video share of the best or more), found wherever they are, and every occurrence of the
        latest likely video; the occurrences of the other videos are never looked for."""
        ranking = dict(queries)
        crop_decides = len(queries.keys() & {"text", "visual"}) == 2 and not self.model.config.joint_decides
        if crop_decides:
            queries = {"visual": queries["visual"]}
        colour, context = queries.get("colour"), queries.get("context")
        queries = {kind: query for kind, query in queries.items() if kind in ("visual", "text")}
        lead = "visual" if "visual" in queries else "text"  # with both, the visual matches are the fewer
        index, query = indexes[lead], queries[lead]
        similarities, background = self.sample_scores(queries, colour)
        leading = similarities[lead]
        walk = Walk(index, query, self.store.lists_in_id_order())
        known = walk.shortlist(SHORTLIST)
        near, near_sims = known.ids, known.fine
        shortlist = dict(zip(near.tolist(), self._weighed(near, near_sims, lead, queries, colour, indexes).tolist()))
        divisor = (self._weigh_by_context(shortlist, context, indexes["text"], None)
                   if context is not None and shortlist else 1.0)
        threshold, margin, share = self._rule(set(queries), one_video)
        floor = max(threshold, above_background(background / divisor, margin))

        def scored(ids: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """(ids, scores) of the tracks found (by similarity to the lead query) that are not in
            the shortlist: their product and weights, divided as the context divided."""
            new = ~np.isin(ids, near)
            return ids[new], self._weighed(ids[new], sims[new], lead, queries, colour, indexes) / divisor

        ids, scores = near, np.fromiter(shortlist.values(), np.float64, len(shortlist))
        last, seen = None, 0.0
        if len(scores) and scores.max() >= floor:
            radius = max(floor, share * scores.max())
            later = self.store.later_blocks(ids[scores >= radius])
            if sum(last - first + 1 for first, last in later) <= LATER_SHARE * index.ntotal:  # all, in every list
                found = scored(*walk.blocks(radius, later))
            else:  # wherever they are
                found = scored(*walk.within(radius, float(np.mean(leading >= radius)), known))
            ids, scores = np.concatenate([ids, found[0]]), np.concatenate([scores, found[1]])
            likely = max(floor, share * scores.max())
            block = self.store.latest_block(ids[scores >= likely])
            found = scored(*walk.blocks(floor, [block]))  # every occurrence of the latest likely video
            ids, first = np.unique(np.concatenate([ids, found[0]]), return_index=True)  # the shortlist's scores first
            scores = np.concatenate([scores, found[1]])[first]
            last, seen = self._last_likely(ids, scores, floor, likely, block, share)
        if crop_decides:
            return last, self._ranked(ranking, near, near_sims, last, seen, indexes)
        return last, shortlist | ({last: seen} if last is not None else {})

    def sample_scores(self, queries: dict[str, np.ndarray], colour: np.ndarray | None = None
                      ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A compressed store's background sample against these queries (visual and/or text): each
        kind's similarities and the scores (their product, weighed by the asked colours), over which
        the margin rule measures the query's background (module docstring)."""
        sample = self.store.background([*queries, *(["colour"] if colour is not None else [])])
        similarities = {kind: sample[kind] @ q for kind, q in queries.items()}
        scores = np.prod([np.maximum(values, 0.0) for values in similarities.values()], axis=0)
        if colour is not None:
            scores *= _colour_weights(sample["colour"], colour)
        return similarities, scores

    def _last_likely(self, ids: np.ndarray, scores: np.ndarray, floor: float, likely: float, block: tuple[int, int],
                     share: float) -> tuple[int | None, float]:
        """(the last occurrence, its score) among the best track of each likely video (a score of
        `likely` or more) and every occurrence (`floor` or more) in the latest one (`block`): the
        video share applied to those (`in_likely_videos`, which keeps them all)."""
        videos = self.store.video_ids(ids)  # ids ascending: the videos' blocks follow one another
        held = np.flatnonzero(scores >= likely)
        starts = np.flatnonzero(np.r_[True, videos[held][1:] != videos[held][:-1]])
        tops = np.repeat(np.maximum.reduceat(scores[held], starts), np.diff(np.r_[starts, len(held)]))
        at_top = held[scores[held] == tops]
        best = at_top[np.r_[True, videos[at_top][1:] != videos[at_top][:-1]]]  # each video's best
        mine = np.flatnonzero((scores >= floor) & (ids >= block[0]) & (ids <= block[1]))
        looked = np.union1d(best, mine)
        looked = looked[np.argsort(-scores[looked], kind="stable")]
        kept, found = ids[looked].tolist(), dict(zip(ids[looked].tolist(), scores[looked].tolist()))
        kept = self.in_likely_videos(kept, found, dict(zip(kept, videos[looked].tolist())), share)
        last = self.store.latest_track(np.array(kept, np.int64), np.array([found[i] for i in kept]))
        return last, found.get(last, 0.0)

    def _ranked(self, queries: dict[str, np.ndarray], near: np.ndarray, near_sims: np.ndarray, last: int | None,
                seen: float, indexes: dict[str, object]) -> dict[int, float]:
        """Scores by the whole query (the product, weighed) of the shortlist and the last occurrence
        (`seen`: its visual score), when the crop alone decided (`joint_decides` off): what the
        results are ranked by."""
        ids, sims = near, near_sims
        if last is not None and last not in set(near.tolist()):
            ids, sims = np.append(near, last), np.append(near_sims, seen)
        scores = dict(zip(ids.tolist(), self._weighed(ids, sims, "visual", {kind: queries[kind] for kind in
                                                                              ("visual", "text")},
                                                      queries.get("colour"), indexes).tolist()))
        if queries.get("context") is not None and scores:
            self._weigh_by_context(scores, queries["context"], indexes["text"], None)
        return scores

    def _weighed(self, ids: np.ndarray, sims: np.ndarray, lead: str, queries: dict[str, np.ndarray],
                 colour: np.ndarray | None, indexes: dict[str, object]) -> np.ndarray:
        """Scores of these tracks of a compressed store, given their similarities to the lead query:
        the product with the other query's similarity (their decoded vectors) and the colour weights."""
        scores = np.maximum(np.asarray(sims, np.float64), 0.0)
        if not len(ids):
            return scores
        for kind, query in queries.items():
            if kind != lead:
                scores *= np.maximum(vectors_of(indexes[kind], ids) @ query, 0.0)
        if colour is not None and "colour" in indexes:
            scores *= _colour_weights(vectors_of(indexes["colour"], ids), colour)
        return scores

    def _last(self, kept: list[int], scores: dict[int, float], spans: dict[int, tuple[int, int, int]],
              until_frame: int | None) -> int | None:
        """The occurrence that ends last, from lean rows (video, start, end) of every occurrence."""
        recorded = self.store.recording_times({video for video, _, _ in spans.values()})

        def seen_until(i: int) -> int:
            return spans[i][2] if until_frame is None else min(spans[i][2], until_frame)

        return max(kept, key=lambda i: (recorded[spans[i][0]], spans[i][0], seen_until(i), scores[i]), default=None)

    def occurrences(self, scores: dict[int, float], kinds: set[str], background: np.ndarray | None = None,
                    one_video: bool = False) -> list[int]:
        """Track ids that are occurrences of the query (module docstring), best first; the
        background is `scores` themselves unless given (a compressed store's sample)."""
        if not scores:
            return []
        threshold, margin, _ = self._rule(kinds, one_video)
        values = np.fromiter(scores.values(), dtype=np.float64) if background is None else background
        floor = max(threshold, above_background(values, margin))
        return sorted((i for i, s in scores.items() if s >= floor), key=scores.get, reverse=True)

    def _rule(self, kinds: set[str], one_video: bool = False) -> tuple[float, float, float]:
        """(threshold, margin, video share) of this kind of query, searched over one video or more."""
        c = self.model.config
        text_margin = c.text_margin_in_video if one_video and c.text_margin_in_video is not None else c.text_margin
        return ((c.joint_threshold, c.joint_margin, c.joint_video_share) if len(kinds) == 2 else
                (c.text_threshold, text_margin, c.text_video_share) if "text" in kinds else
                (c.visual_threshold, c.visual_margin, c.visual_video_share))

    @staticmethod
    def in_likely_videos(kept: list[int], scores: dict[int, float], videos: dict[int, int], share: float) -> list[int]:
        """The occurrences in the videos whose best occurrence scores at least `share` of the best
        one (module docstring); the other videos' occurrences are dropped. 0: every video."""
        if share <= 0 or not kept:
            return kept
        best: dict[int, float] = {}
        for i in kept:
            best[videos[i]] = max(best.get(videos[i], 0.0), scores[i])
        top = max(best.values())
        return [i for i in kept if best[videos[i]] >= share * top]

    def _selection(self, video: Path | None, until_frame: int | None = None) -> np.ndarray | None:
        """The ids of the tracks searched when restricted to one video (and those started by a
        frame); None: every track."""
        if video is None and until_frame is None:
            return None
        row = None
        if video is not None:
            row = self.store.find_video(video)
            if row is None:
                raise VQSearchError(f"video not in the index: {video}")
        return np.asarray(self.store.track_ids(row, until_frame), dtype=np.int64)

    def _indexes(self, queries: dict[str, np.ndarray]) -> dict[str, object] | None:
        """The store's indexes of the kinds these queries use (None: an empty store)."""
        vectors = self.store.search_vectors([*(kind for kind in ("visual", "text") if kind in queries),
                                             *(["colour"] if "colour" in queries else []),
                                             *(["text"] if "context" in queries else [])])
        if vectors is None:
            return None
        if "text" in queries and vectors.text is None:
            raise VQSearchError("this index has no text-aligned tokens: query with --crop")
        return vectors.present()

    def _scores(self, queries: dict[str, np.ndarray], selection: np.ndarray | None) -> dict[int, float]:
        """Per searched track id: the similarity of each query, multiplied (T-REN), negatives clipped
        to 0, then weighed by the asked colours and by context (module docstring)."""
        colour, context = queries.get("colour"), queries.get("context")
        queries = {kind: query for kind, query in queries.items() if kind in ("visual", "text")}
        indexes = self._indexes(queries | ({"colour": colour} if colour is not None else {})
                                | ({"context": context} if context is not None else {}))
        per_modality = [self._every_score(indexes[kind], query, selection) for kind, query in queries.items()]
        candidates = set().union(*per_modality)
        scores = {i: 1.0 for i in candidates}
        for found in per_modality:
            for i in candidates:
                scores[i] *= max(found[i], 0.0)
        if colour is not None and "colour" in indexes and candidates:
            ids = np.fromiter(candidates, dtype=np.int64)
            for i, weight in zip(ids.tolist(), _colour_weights(vectors_of(indexes["colour"], ids), colour).tolist()):
                scores[i] *= weight
        if context is not None and candidates:
            self._weigh_by_context(scores, context, indexes["text"], selection)
        return scores

    @staticmethod
    def _every_score(index, query: np.ndarray, selection: np.ndarray | None) -> dict[int, float]:
        """{id: similarity} of every searched track."""
        import faiss

        if is_compressed(index):
            return scores_of(index, query, selection)
        params = None if selection is None else faiss.SearchParameters(sel=faiss.IDSelectorBatch(selection))
        k = index.ntotal if selection is None else min(len(selection), index.ntotal)
        if k == 0:
            return {}
        sims, ids = index.search(query[None], k, params=params)
        return {int(i): float(s) for s, i in zip(sims[0], ids[0]) if i >= 0}

    def _weigh_by_context(self, scores: dict[int, float], context: np.ndarray, text_index,
                          selection: np.ndarray | None) -> float:
        """Weigh each of the best CONTEXT_TRACKS tracks by its best context match c among the other
        tracks of its video seen at the same time, by (1 + c) / (1 + the best c): the track seen
        with the most context keeps its score (the thresholds stay as calibrated); the rest,
        ranked below them anyway, as if nothing matched. Returns 1 + the best c, which divided every score."""
        import faiss

        best = sorted(scores, key=scores.get, reverse=True)[:CONTEXT_TRACKS]
        selector = None if selection is None else faiss.IDSelectorBatch(selection)
        near_ids, near_sims = nearest(text_index, context, min(CONTEXT_TRACKS, text_index.ntotal), selector)
        near_sims = near_sims.clip(0, None)
        spans = self.store.spans(best + near_ids.tolist())
        own = np.array([spans[i] for i in best], dtype=np.int64).reshape(-1, 3)
        near = np.array([spans[i] for i in near_ids.tolist()], dtype=np.int64).reshape(-1, 3)
        together = ((own[:, None, 0] == near[None, :, 0]) & (near[None, :, 1] <= own[:, None, 2])
                    & (near[None, :, 2] >= own[:, None, 1]) & (np.array(best)[:, None] != near_ids[None, :]))
        found = np.where(together, near_sims[None, :], 0.0).max(1, initial=0.0)
        top = 1.0 + float(found.max(initial=0.0))
        for i in scores:
            scores[i] /= top
        for i, c in zip(best, found.tolist()):
            scores[i] *= 1.0 + c
        return top


def above_background(values: np.ndarray, margin: float) -> float:
    """The score `margin` robust standard deviations (1.4826 x MAD) above the median of `values`;
    -inf without a margin."""
    if margin <= 0:
        return -np.inf
    median = float(np.median(values))
    return median + margin * 1.4826 * float(np.median(np.abs(values - median)))


def _colour_weights(descriptors: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """What a track keeps of its score for the asked colours: COLOUR_FLOOR (none) to 1."""
    return COLOUR_FLOOR + (1 - COLOUR_FLOOR) * colour_evidence(descriptors, colour)
