"""`vqsearch serve`'s JSON API on the three real sample videos, through FastAPI's test client.

The served app is built with a token, as on a shared network: every call here carries it, and the
token's own tests leave it out or get it wrong. Every bad request gets {"error": "<one line>"}
with its 4xx status and leaves the index byte-identical.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tree

pytestmark = pytest.mark.slow

TOKEN = "test-token-4f1c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def client(sample_db: Path):
    from fastapi.testclient import TestClient

    from vqsearch.serve.app import create_app

    with TestClient(create_app(sample_db, token=TOKEN), headers=AUTH) as client:
        yield client


@pytest.fixture(scope="module")
def ids(client) -> dict[str, int]:
    """Video ids by file name."""
    return {Path(v["video"]).name: v["id"] for v in client.get("/api/videos").json()["videos"]}


def png(image: np.ndarray | Image.Image) -> bytes:
    out = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(out, format="PNG")
    return out.getvalue()


def ask(client, files: dict | None = None, **form) -> dict:
    response = client.post("/api/query", data={k: str(v) for k, v in form.items()}, files=files)
    assert response.status_code == 200, response.text
    return response.json()


def test_health_and_videos(client, ids):
    health = client.get("/api/health").json()
    assert health == {"ok": True, "model": "lite0-conse", "videos": 3, "tracks": health["tracks"]}
    videos = client.get("/api/videos").json()["videos"]
    assert sorted(ids) == ["02_cups.mp4", "04_coffee.mp4", "bedroom.mp4"]
    assert sum(v["tracks"] for v in videos) == health["tracks"] > 0
    cups = next(v for v in videos if v["id"] == ids["02_cups.mp4"])
    assert (cups["frames"], cups["fps"], cups["width"], cups["height"]) == (300, 29.97, 1280, 720)
    assert cups["model"] == "lite0-conse"
    assert cups["frames_sampled"] == 51 and cups["compression"] >= 100


def test_text_query_answers_from_the_index(client, ids):
    answer = ask(client, text="coffee mug", top_k=3)
    assert answer["query"] == {"text": "coffee mug", "crop": None}
    last = answer["last_seen"]
    assert Path(last["video"]).name == "04_coffee.mp4" and last["video_id"] == ids["04_coffee.mp4"]
    assert len(answer["results"]) == 3 and all("video_id" in hit for hit in answer["results"])
    assert Path(answer["results"][0]["video"]).name == "04_coffee.mp4"
    # the timeline's occurrences hold the last sighting, each in its video's frames and times
    assert any(o["video_id"] == last["video_id"] and o["start_frame"] == last["start_frame"]
               and o["end_frame"] == last["end_frame"] for o in answer["occurrences"])
    for occurrence in answer["occurrences"]:
        assert 0 <= occurrence["start_frame"] <= occurrence["end_frame"] < 300
        assert occurrence["end_time"] == pytest.approx(occurrence["end_frame"] / 29.97, abs=0.02)


def test_crop_query_finds_the_ball_and_relocation_tightens_its_boxes(client, ids, ball_crop):
    crop = {"crop": ("ball.png", ball_crop.read_bytes(), "image/png")}
    fast = ask(client, files=crop)
    assert fast["query"] == {"text": None, "crop": "ball.png"}
    assert fast["last_seen"]["video_id"] == ids["02_cups.mp4"]
    assert 280 <= fast["last_seen"]["start_frame"] <= fast["last_seen"]["end_frame"] <= 299
    tight = ask(client, files=crop, relocate="true")["last_seen"]
    assert tight["video_id"] == ids["02_cups.mp4"]
    assert [b["frame"] for b in tight["boxes"]] == list(range(tight["start_frame"], tight["end_frame"] + 1))
    at = next(b for b in tight["boxes"] if b["frame"] == 295)  # the ball: x=725, y=482, 78 x 80 px
    x1, y1 = max(at["x"], 725), max(at["y"], 482)
    inter = max(0, min(at["x"] + at["width"], 803) - x1) * max(0, min(at["y"] + at["height"], 562) - y1)
    assert inter / (at["width"] * at["height"] + 78 * 80 - inter) >= 0.5


def test_text_and_crop_together_and_one_video(client, ids, ball_crop):
    both = ask(client, files={"crop": ("ball.png", ball_crop.read_bytes(), "image/png")}, text="ball")
    assert both["last_seen"]["video_id"] == ids["02_cups.mp4"] and 280 <= both["last_seen"]["start_frame"] <= 299
    only = ask(client, text="ball", video_id=ids["bedroom.mp4"], top_k=4)
    assert {hit["video_id"] for hit in only["results"]} == {ids["bedroom.mp4"]}


def test_frames_decode_at_their_size_with_the_box_drawn(client, ids):
    cups = ids["02_cups.mp4"]
    full = client.get(f"/api/videos/{cups}/frames/295.jpg")
    assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(full.content)).size == (1280, 720)
    small = client.get(f"/api/videos/{cups}/frames/295.jpg", params={"box": "725,482,78,80", "width": 640})
    image = np.asarray(Image.open(io.BytesIO(small.content)).convert("RGB")).astype(int)
    assert image.shape == (360, 640, 3)
    edge = image[241:281, 362]  # the box's left side at half scale: bright green, whatever the frame there
    assert (edge[:, 1] > 180).all() and (edge[:, 1] - edge[:, 0] > 80).all()
    bedroom = client.get(f"/api/videos/{ids['bedroom.mp4']}/frames/199.jpg")
    assert Image.open(io.BytesIO(bedroom.content)).size == (960, 540)


BIG = png(np.zeros((4200, 4200, 3), np.uint8))  # 17.6 megapixels, a small file
NOISE = png(np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8))
CASES = [
    # (what, method, path, request arguments, status, the error says)
    ("no text, no crop", "post", "/api/query", {"data": {"top_k": "3"}}, 422, "give text, crop or both"),
    ("blank text", "post", "/api/query", {"data": {"text": "   "}}, 422, "text is empty"),
    ("top_k 0", "post", "/api/query", {"data": {"text": "cup", "top_k": "0"}}, 422, "top_k"),
    ("top_k not a number", "post", "/api/query", {"data": {"text": "cup", "top_k": "five"}}, 422, "top_k"),
    ("unknown video id", "post", "/api/query", {"data": {"text": "cup", "video_id": "99"}}, 404, "no video with id 99"),
    ("path as video id", "post", "/api/query", {"data": {"text": "cup", "video_id": "../index.sqlite"}}, 422,
     "video_id"),
    ("crop not an image", "post", "/api/query", {"files": {"crop": ("notes.png", b"not an image", "image/png")}}, 422,
     "cannot read crop image notes.png"),
    ("crop truncated", "post", "/api/query", {"files": {"crop": ("cut.png", NOISE[:4000], "image/png")}}, 422,
     "cannot read crop image cut.png"),
    ("crop over 16 megapixels", "post", "/api/query", {"files": {"crop": ("big.png", BIG, "image/png")}}, 422,
     "megapixels"),
    ("upload over 10 MB", "post", "/api/query", {"files": {"crop": ("huge.png", b"\0" * (11 * 2**20), "image/png")}},
     413, "over 10 MB"),
    ("crop sent as text", "post", "/api/query", {"data": {"crop": "/etc/passwd"}}, 422, "crop"),
    ("frame past the end", "get", "/api/videos/{cups}/frames/300.jpg", {}, 404, "frames 0-299, not 300"),
    ("negative frame", "get", "/api/videos/{cups}/frames/-1.jpg", {}, 404, "not -1"),
    ("frame not a number", "get", "/api/videos/{cups}/frames/one.jpg", {}, 422, "frame"),
    ("frames of an unknown video", "get", "/api/videos/99/frames/0.jpg", {}, 404, "no video with id 99"),
    ("path as a video id", "get", "/api/videos/..%2Findex.sqlite/frames/0.jpg", {}, 404, "no such page"),
    ("path in a video id", "get", "/api/videos/1%2F..%2F2/frames/0.jpg", {}, 404, "no such page"),
    ("box of three numbers", "get", "/api/videos/{cups}/frames/0.jpg?box=1,2,3", {}, 422, "x,y,w,h"),
    ("box of no size", "get", "/api/videos/{cups}/frames/0.jpg?box=1,2,0,5", {}, 422, "positive width"),
    ("box not finite", "get", "/api/videos/{cups}/frames/0.jpg?box=nan,2,3,4", {}, 422, "finite"),
    ("box outside", "get", "/api/videos/{cups}/frames/0.jpg?box=2000,2,30,40", {}, 422, "outside the 1280x720"),
    ("width too small", "get", "/api/videos/{cups}/frames/0.jpg?width=3", {}, 422, "width"),
    ("unknown job", "get", "/api/jobs/nope", {}, 404, "no job 'nope'"),
    ("index: no path", "post", "/api/index", {"json": {}}, 422, "path"),
    ("index: empty path", "post", "/api/index", {"json": {"path": ""}}, 422, "path"),
    ("index: not JSON", "post", "/api/index", {"content": b"{nope", "headers": {"Content-Type": "application/json"}},
     422, "request body: JSON decode error"),
    ("remove an unknown video", "delete", "/api/videos/99", {}, 404, "no video with id 99"),
    ("remove by path", "delete", "/api/videos/%2Fwork%2Fx.mp4", {}, 404, "no such page"),
    ("unknown route", "get", "/api/nothing", {}, 404, "no such page: /api/nothing"),
    ("wrong method", "put", "/api/videos", {}, 405, "PUT is not allowed on /api/videos"),
    ("no token", "get", "/api/videos", {"headers": {"Authorization": ""}}, 401, "needs its token"),
    ("wrong token", "get", "/api/health", {"headers": {"Authorization": "Bearer nope"}}, 401, "needs its token"),
    ("token not as bearer", "get", "/api/health", {"headers": {"Authorization": f"Basic {TOKEN}"}}, 401,
     "needs its token"),
    ("query without a token", "post", "/api/query", {"data": {"text": "cup"}, "headers": {"Authorization": ""}}, 401,
     "needs its token"),
    ("frame without a token", "get", "/api/videos/{cups}/frames/0.jpg", {"headers": {"Authorization": ""}}, 401,
     "needs its token"),
    ("index without a token", "post", "/api/index", {"json": {"path": "/etc/passwd"}, "headers": {"Authorization": ""}},
     401, "needs its token"),
]


def test_a_bad_request_is_one_line_and_changes_nothing(client, ids, sample_db):
    before = tree(sample_db)
    for what, method, path, kwargs, status, says in CASES:
        response = client.request(method.upper(), path.format(cups=ids["02_cups.mp4"]), **kwargs)
        assert response.status_code == status, f"{what}: {response.status_code} {response.text}"
        body = response.json()
        assert list(body) == ["error"] and isinstance(body["error"], str), what
        assert "\n" not in body["error"] and says in body["error"], f"{what}: {body['error']}"
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/jobs").json() == {"jobs": []}  # no bad request started a job
    assert tree(sample_db) == before


def test_a_chunked_body_over_the_cap_is_refused_as_it_arrives(client):
    chunks = (b"x" * 2**20 for _ in range(11))  # no Content-Length: counted as it comes
    response = client.post("/api/query", content=chunks, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413 and "over 10 MB" in response.json()["error"]


def test_the_page_and_the_docs_load_without_a_token_and_from_here_only(client):
    bare = {"Authorization": ""}
    page = client.get("/", headers=bare)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for path in ("/", "/static/app.js", "/static/style.css", "/docs", "/redoc"):
        text = client.get(path, headers=bare).text
        assert "http://" not in text and "https://" not in text, path  # nothing fetched from outside
    for asset in ("/static/favicon.svg", "/docs-static/swagger-ui-bundle.js", "/docs-static/redoc.standalone.js"):
        assert client.get(asset, headers=bare).status_code == 200, asset
    schema = client.get("/openapi.json", headers=bare).json()
    assert {"/api/health", "/api/videos", "/api/query", "/api/index", "/api/jobs/{job_id}", "/api/videos/{video_id}",
            "/api/videos/{video_id}/frames/{frame}.jpg"} <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "relocate" in str(schema["components"]["schemas"])
