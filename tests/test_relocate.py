"""VQ2D steps 3-5 on real frames: tight boxes and a response track without SAM 2, and with a tiny SAM 2."""

from __future__ import annotations

import numpy as np
import pytest

from queries import relocate as relocate_module
from queries.engine import QueryEngine, load_crop
from queries.localize import refine_box
from queries.relocate import NO_SAM2_MESSAGE, relocate
from queries.tracker import fill_frames, track_object

pytestmark = pytest.mark.slow

BALL_295 = (725.0, 482.0, 78.0, 80.0)  # the yellow ball at frame 295 of 02_cups.mp4, by hand


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.fixture(scope="module")
def engine(videos, tmp_path_factory):
    from indexer.pipeline import index_video
    from indexer.video import probe
    from vqsearch.models.factory import create_model
    from vqsearch.store import Store

    model = create_model()
    store = Store.open(tmp_path_factory.mktemp("db"), create=True)
    path = videos / "02_cups.mp4"
    store.add_video(model.name, str(path), index_video(model, probe(path), 5.0))
    return QueryEngine(store, model)


@pytest.fixture(scope="module")
def frames(videos):
    import decord

    reader = decord.VideoReader(str(videos / "02_cups.mp4"), num_threads=1)
    return {f: reader[f].asnumpy() for f in (0, 288, 294, 295, 299)}


def test_similarity_map_box_is_tight_on_the_ball(engine, ball_crop, frames):
    """From a region box three times too large and off-centre, the refined box fits the ball."""
    token = engine.encode_crop(load_crop(ball_crop))
    coarse = (640.0, 400.0, 240.0, 280.0)
    assert iou(coarse, BALL_295) < 0.1
    found = refine_box(engine.model.backbone, frames[295], coarse, token)
    assert iou(found.box, BALL_295) >= 0.5
    assert found.score > 0.4


def test_without_sam2_the_answer_is_tracked_with_tight_boxes(engine, ball_crop, monkeypatch, capsys):
    monkeypatch.setattr(relocate_module, "_said", False)
    queries = {"visual": engine.encode_crop(load_crop(ball_crop))}
    coarse, _ = engine.answer(queries)
    hit = relocate(engine, queries)
    relocate(engine, queries)
    assert capsys.readouterr().err.count(NO_SAM2_MESSAGE) == 1
    assert 280 <= hit.start_frame <= 288 and 294 <= hit.end_frame <= 299
    frames = [b.frame for b in hit.boxes]
    assert frames == list(range(hit.start_frame, hit.end_frame + 1))  # a box on every frame
    box = next(b for b in hit.boxes if b.frame == 295)
    assert iou((box.x, box.y, box.width, box.height), BALL_295) >= 0.5
    # tighter than the index's own box for the same occurrence
    coarse_box = min(coarse.boxes, key=lambda b: abs(b.frame - 295))
    assert box.width * box.height < coarse_box.width * coarse_box.height


def test_tracker_stops_where_the_object_is_lost(engine, ball_crop, videos):
    """CSRT from the ball at frame 0 follows it while it is visible, not into the shuffling."""
    import decord

    from indexer.video import sample_indices

    reader = decord.VideoReader(str(videos / "02_cups.mp4"), width=640, height=360, num_threads=1)
    token = engine.encode_crop(load_crop(ball_crop))
    sampled = [f for f in sample_indices(300, 29.97, 5.0) if f <= 120]
    track = track_object(lambda ids: reader.get_batch(ids).asnumpy(), sampled, 0, (366.0, 428.0, 72.0, 70.0),
                         (720, 1280), (360, 640), engine.encode_crop, token)
    assert 0 in track and len(track) >= 2
    assert max(track) <= 30  # a cup covers the ball near frame 25 and the shuffling starts
    for box in track.values():  # the ball does not move before it is covered
        assert abs(box[0] + box[2] / 2 - 402) < 40 and abs(box[1] + box[3] / 2 - 463) < 60


def test_fill_frames_interpolates():
    filled = fill_frames({2: (0.0, 0.0, 10.0, 10.0), 5: (3.0, 3.0, 10.0, 10.0)})
    assert list(filled) == [2, 3, 4, 5]
    assert filled[3] == pytest.approx((1.0, 1.0, 10.0, 10.0))
    assert fill_frames({}) == {}


def test_tiny_sam2_tracks_the_last_candidate_on_every_frame(engine, ball_crop):
    torch = pytest.importorskip("torch")
    from test_sam2_stages import tiny_model

    from queries.sam2_stages import SAM2Stages

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sam2 = SAM2Stages(tiny_model(), chunk_frames=16)
        queries = {"visual": engine.encode_crop(load_crop(ball_crop))}
        hit = relocate(engine, queries, until_frame=299, sam2=sam2)
    finally:
        torch.set_num_threads(threads)
    # SAM 2 starts from the chosen track's last sampled frame and answers with a box on every
    # frame it follows (random weights: which track the augmented round picks is arbitrary)
    anchor = engine.store.tracks([hit.track_id])[hit.track_id].observations[-1].frame
    assert [b.frame for b in hit.boxes] == list(range(hit.start_frame, hit.end_frame + 1))
    assert hit.start_frame <= anchor <= hit.end_frame <= 299
    for box in hit.boxes:
        assert 0 <= box.x and box.x + box.width <= 1280 + 1e-6 and 0 <= box.y and box.y + box.height <= 720 + 1e-6
    assert np.isclose(hit.end_time, hit.end_frame / 29.97, atol=1e-3)
