"""The occurrence rule: "last seen" is the latest track that is the object, not the best match."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from conftest import SHARED, need_shared
from queries.engine import QueryEngine
from vqsearch.models.base import ModelConfig

DAVIS = SHARED / "data" / "davis2016-val"


def _engine(**thresholds) -> QueryEngine:
    config = ModelConfig(name="test", **thresholds)
    return QueryEngine(None, SimpleNamespace(config=config))


def test_a_weaker_later_sighting_is_an_occurrence():
    engine = _engine(visual_threshold=0.33, visual_margin=2.0)
    background = {i: 0.1 + 0.01 * (i % 15) for i in range(100, 160)}  # 0.10 .. 0.24
    scores = {**background, 1: 0.80, 2: 0.48, 3: 0.30}  # the crop's source, a reappearance, a look-alike
    assert engine.occurrences(scores, {"visual"}) == [1, 2]


def test_the_margin_over_the_background_is_required():
    engine = _engine(visual_threshold=0.33, visual_margin=2.0)
    busy = {i: 0.5 + 0.002 * (i % 20) for i in range(60)}  # everything looks alike: 0.50 .. 0.54
    assert engine.occurrences({**busy, 99: 0.55}, {"visual"}) == [99]
    assert engine.occurrences(busy, {"visual"}) == []  # all above the threshold, none stands out
    assert engine.occurrences({}, {"visual"}) == []


def test_each_kind_of_query_has_its_own_rule():
    engine = _engine(visual_threshold=0.9, text_threshold=0.2, joint_threshold=0.5)
    scores = {1: 0.3, 2: 0.6, 3: 0.95}
    assert engine.occurrences(scores, {"visual"}) == [3]
    assert engine.occurrences(scores, {"text"}) == [3, 2, 1]
    assert engine.occurrences(scores, {"text", "visual"}) == [3, 2]


def test_a_text_query_over_one_video_takes_its_own_margin():
    engine = _engine(text_threshold=0.2, text_margin=2.0, text_margin_in_video=1.0)
    background = {i: 0.3 + 0.01 * (i % 11) for i in range(100, 166)}  # 0.30 .. 0.40, MAD 0.03
    scores = {**background, 1: 0.50, 2: 0.42}  # floors: 0.35 + 1.0 x 0.044 = 0.39; + 2.0 x 0.044 = 0.44
    assert engine.occurrences(scores, {"text"}) == [1]
    assert engine.occurrences(scores, {"text"}, one_video=True)[:2] == [1, 2]


def test_a_query_answers_from_the_videos_that_look_most_like_it():
    scores = {1: 0.95, 2: 0.50, 3: 0.60, 4: 0.80, 5: 0.70}
    videos = {1: 10, 2: 10, 3: 20, 4: 30, 5: 30}  # video 20's best (0.60) is under 0.8 x 0.95
    assert QueryEngine.in_likely_videos([1, 2, 3, 4, 5], scores, videos, 0.8) == [1, 2, 4, 5]
    assert QueryEngine.in_likely_videos([1, 2, 3], scores, videos, 0.0) == [1, 2, 3]  # every video


@pytest.mark.slow
def test_crop_source_seen_again_later_answers_the_later_sighting(tmp_path):
    """Real DAVIS episodes where the crop's own source is the best match: the answer is the
    short reappearance after three or four other sequences (one of the same kind)."""
    import decord

    from indexer.pipeline import index_video
    from indexer.video import probe
    from queries.vq2d.davis import build_davis_episodes
    from queries.vq2d.formats import iter_valid_queries, load_annotations
    from queries.vq2d.runner import cut_crop
    from vqsearch.models.factory import create_model
    from vqsearch.store import Store

    davis = need_shared(DAVIS)
    annotations = load_annotations(build_davis_episodes(davis, tmp_path / "episodes", episodes=4, progress=False))
    model = create_model()
    checked = 0
    for query in iter_valid_queries(annotations):
        qs = query.query_set
        clip = tmp_path / "episodes" / "clips" / f"{query.clip_uid}.mp4"
        store = Store.open(tmp_path / query.clip_uid, create=True)
        store.add_video(model.name, str(clip), index_video(model, replace(probe(clip), frames=qs.query_frame + 1), 5.0))
        engine = QueryEngine(store, model)
        token = engine.encode_crop(cut_crop(decord.VideoReader(str(clip))[qs.visual_crop.frame_number].asnumpy(), query))
        last, ranked = engine.answer({"visual": token}, top_k=1)
        truth = range(qs.response_track[0].frame_number, qs.response_track[-1].frame_number + 1)
        if ranked[0].end_frame >= truth.start:
            continue  # the source is not the best match here: not the case under test
        checked += 1
        assert last is not None and last.start_frame in truth and last.end_frame in truth, query.clip_uid
    assert checked >= 2
