"""Index jobs and removals through `vqsearch serve`'s API, on a new index the server starts without.

A job indexes a real sample video in the background while the API keeps answering; the served
engine then finds it, as it finds what a `vqsearch index` beside it wrote. A job for a file that is not there fails with one line; a write while
another writer holds the index is refused (409, or a failed job) and changes nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import tree, vqsearch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(client, index directory): an app over a directory that holds no index yet."""
    from fastapi.testclient import TestClient

    from vqsearch.serve.app import create_app

    root = tmp_path_factory.mktemp("served") / "db"
    with TestClient(create_app(root)) as client:
        yield client, root


def wait(client, job: str, timeout: float = 300) -> dict:
    """Poll a job until it ends; every poll answers at once, whatever the job is doing."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        started = time.monotonic()
        state = client.get(f"/api/jobs/{job}").json()
        assert time.monotonic() - started < 2.0, "the API waited for the job"
        assert 0.0 <= state["progress"] <= 1.0
        if state["state"] in ("done", "failed"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not end in {timeout} s")


def test_an_empty_server_says_so(served):
    client, root = served
    assert client.get("/api/health").json() == {"ok": True, "model": None, "videos": 0, "tracks": 0}
    assert client.get("/api/videos").json() == {"videos": []}
    empty = client.post("/api/query", data={"text": "bed"})
    assert empty.status_code == 409 and "is empty: index a video first" in empty.json()["error"]
    assert not root.exists()


def test_a_bad_path_job_fails_in_one_line(served, videos):
    client, root = served
    started = client.post("/api/index", json={"path": str(videos / "missing.mp4")})
    assert started.status_code == 202
    failed = wait(client, started.json()["job"])
    assert failed["state"] == "failed" and failed["result"] is None
    assert failed["error"] == f"no such video file: {videos / 'missing.mp4'}"
    assert not root.exists()  # nothing was made for it


def test_a_job_indexes_a_video_that_the_engine_then_finds(served, videos):
    client, root = served
    path = str(videos / "bedroom.mp4")
    job = client.post("/api/index", json={"path": path}).json()["job"]
    assert client.get("/api/health").status_code == 200  # reads answer while it runs
    done = wait(client, job)
    assert done["state"] == "done" and done["progress"] == 1.0 and done["error"] is None
    assert done["result"]["video"] == path and done["result"]["frames_sampled"] == 34 and done["result"]["tracks"] > 0
    assert any(j["job"] == job for j in client.get("/api/jobs").json()["jobs"])
    [video] = client.get("/api/videos").json()["videos"]
    assert (video["video"], video["frames"], video["tracks"]) == (path, 200, done["result"]["tracks"])
    answer = client.post("/api/query", data={"text": "bed"}).json()
    assert answer["last_seen"]["video_id"] == video["id"]


def test_a_write_while_another_writer_holds_the_index_changes_nothing(served, videos):
    from vqsearch.store import Store

    client, root = served
    [video] = client.get("/api/videos").json()["videos"]
    before = tree(root)
    with Store.writer(root):  # as a `vqsearch index` running beside the server
        refused = client.delete(f"/api/videos/{video['id']}")
        job = client.post("/api/index", json={"path": str(videos / "02_cups.mp4")}).json()["job"]
        failed = wait(client, job)
    assert refused.status_code == 409 and "another vqsearch is writing" in refused.json()["error"]
    assert failed["state"] == "failed" and "another vqsearch is writing" in failed["error"]
    assert {k: v for k, v in tree(root).items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}


def test_the_engine_sees_what_another_process_indexed(served, videos, ball_crop):
    client, root = served
    done = vqsearch("index", str(videos / "02_cups.mp4"), "--db", str(root))  # the CLI beside the server
    assert done.returncode == 0, done.stderr
    assert len(client.get("/api/videos").json()["videos"]) == 2
    answer = client.post("/api/query", files={"crop": ("ball.png", ball_crop.read_bytes(), "image/png")}).json()
    assert Path(answer["last_seen"]["video"]).name == "02_cups.mp4"


def test_removing_videos_by_id(served):
    client, root = served
    for video in client.get("/api/videos").json()["videos"]:
        removed = client.delete(f"/api/videos/{video['id']}")
        assert removed.status_code == 200 and removed.json() == {"removed": video["video"]}
        assert client.delete(f"/api/videos/{video['id']}").status_code == 404
    assert client.get("/api/videos").json() == {"videos": []}
    gone = client.post("/api/query", data={"text": "bed"})
    assert gone.status_code == 200 and gone.json()["last_seen"] is None
