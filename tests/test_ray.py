"""`vqsearch index --ray` (issue 10, part 4) on a local Ray cluster of 2 CPUs: segments planned and
stitched, several videos in one commit, whole videos as tasks giving exactly the tracks of
`vqsearch index`, segments giving nearly them, a transient fault retried, a permanent one
reported while the others commit, a killed driver losing nothing it committed."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLE_VIDEOS, vqsearch
from indexer.pipeline import Edges, Tracked
from indexer.segments import plan, stitch
from indexer.shots import FrameLook
from ray_hooks import attempts
from test_store import _indexed, video_files  # noqa: F401 (a fixture)
from vqsearch.errors import VQSearchError
from vqsearch.merge import FrameRegions, Track
from vqsearch.store import Store

NAMES = SAMPLE_VIDEOS


def test_a_long_video_is_planned_in_segments_of_at_most_the_length_asked():
    assert plan(51, 5.0, 120.0) == [(0, 51)]
    assert plan(51, 5.0, 4.0) == [(0, 17), (17, 34), (34, 51)]
    hour = plan(3600 * 5, 5.0, 120.0)
    assert len(hour) == 30 and hour[-1][1] == 18000 and all(b - a == 600 for a, b in hour)
    assert all(b - a <= 35 for a, b in plan(1001, 5.0, 7.0))


def _look(feature: list[float]) -> FrameLook:
    return FrameLook(np.asarray(feature, np.float32), np.full(512, 1 / 512))


def _part(frames: range, tokens: list[list[float]], active: list[int], held: dict, look: list[float]) -> Tracked:
    """A segment over `frames` whose track n holds token n on every frame (no detector labels)."""
    tracks = []
    for token in tokens:
        track = Track(np.zeros(2, np.float32))
        regions = FrameRegions(np.asarray([token], np.float32), np.ones((1, 2, 2), np.float32), np.zeros((1, 2)))
        for frame in frames:
            track.add(frame, regions, 0, np.zeros(4))
        tracks.append(track)
    edges = Edges(frames[0], frames[-1], _look(look), _look(look), [np.asarray(t, np.float32) for t in tokens],
                  active, held)
    return Tracked(tracks, len(frames), 10 * len(frames), len(tokens) * len(frames), 1.0, [], edges)


def test_segments_are_stitched_by_the_temporal_merge_rule():
    label = np.eye(3, dtype=np.float32)[1]
    def first() -> Tracked:
        return _part(range(0, 3), [[1, 0], [0, 1]], active=[0, 1], held={1: label}, look=[1, 0])

    second = _part(range(3, 6), [[0.1, 1], [1, 0.05], [-1, 0]], active=[0, 1, 2], held={2: label}, look=[1, 0])
    tracks = stitch([first(), second], tau=0.15, min_frames=2)
    # tokens (0, 1) and (1, 0) continue; (-1, 0) is below tau against both and starts a track
    assert [t.frames for t in tracks.tracks] == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5], [3, 4, 5]]
    assert tracks.frames_sampled == 6 and tracks.cuts == []
    # a held label goes to the track that ends with its part: not the continued track's, but the new one's
    assert [t.labelled_frames for t in tracks.tracks] == [0, 0, 1]
    # a shot cut between the segments: nothing continues, and the cut is recorded
    cut = _part(range(3, 6), [[1, 0]], active=[0], held={}, look=[0, 1])
    tracks = stitch([first(), cut], tau=0.15, min_frames=2)
    assert [t.frames for t in tracks.tracks] == [[0, 1, 2], [0, 1, 2], [3, 4, 5]] and tracks.cuts == [(2, 3)]


def test_several_videos_are_committed_in_one_generation(tmp_path, video_files):  # noqa: F811
    store = Store.open(tmp_path / "db", create=True)
    store.add_video("m", "a.mp4", _indexed(video_files[0], 3, 0))
    store.add_videos("m", [("b.mp4", _indexed(video_files[1], 2, 1)), ("a.mp4", _indexed(video_files[0], 4, 2))])
    assert store.health().generation == 2 and not store.health().problems
    assert [(v.path, n) for v, n in store.videos()] == [("b.mp4", 2), ("a.mp4", 4)]  # a.mp4 replaced


def test_without_ray_installed_index_ray_says_how_to_install_it(tmp_path, videos):
    blocker = tmp_path / "no-ray" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = os.environ | {"PYTHONPATH": str(blocker.parent)}
    done = subprocess.run([sys.executable, "-m", "vqsearch.cli", "index", str(videos / "bedroom.mp4"), "--ray",
                           "--db", str(tmp_path / "db")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "pip install 'vqsearch[ray]'" in done.stderr and not (tmp_path / "db").exists()


def test_ray_options_go_with_ray(tmp_path, videos):
    from vqsearch.cli import app

    with pytest.raises(VQSearchError, match="go with --ray"):
        app(["index", str(videos / "bedroom.mp4"), "--segment-seconds", "5", "--db", str(tmp_path)],
            standalone_mode=False)


# --- on a local cluster of 2 CPUs ---------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster() -> str:
    """A local Ray cluster for this module, its workers with `ray_hooks`' faults; its address."""
    if os.environ.get("CI") == "true":
        import ray  # under CI Ray must be there: `.[test]` installs it
    else:
        ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"worker_process_setup_hook": "ray_hooks.inject_faults",
                          "env_vars": {"PYTHONPATH": str(Path(__file__).parent)}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def run_here(*args: str) -> None:
    """`vqsearch index --ray --json ARGS` in this process, on the module's cluster."""
    from vqsearch.cli import app

    app(["index", "--ray", "--json", *args], standalone_mode=False)


def index_here(capsys, *args: str) -> dict:
    """`run_here`'s JSON."""
    run_here(*args)
    return json.loads(capsys.readouterr().out)


def _content(root: Path) -> dict[str, list]:
    """Every video's tracks in order: their frames and boxes, and their vectors of every kind."""
    store = Store.open(root)
    vectors = store.vectors().present()
    content = {}
    for video, _ in store.videos():
        ids = sorted(store.track_ids(video))
        rows = store.tracks(ids)
        content[Path(video.path).name] = [
            ([(o.frame, o.x, o.y, o.width, o.height) for o in rows[i].observations],
             {kind: index.reconstruct(i) for kind, index in vectors.items()}) for i in ids]
    return content


def _same_tracks(one: list, other: list) -> bool:
    return len(one) == len(other) and all(a[0] == b[0] and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])
                                          for a, b in zip(one, other))


def _answer(db: Path, *query: str) -> dict:
    done = vqsearch("query", *query, "--no-relocate", "--json", "--db", str(db))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["last_seen"]


@pytest.mark.slow
def test_whole_videos_as_tasks_give_exactly_the_tracks_of_vqsearch_index(cluster, sample_db, videos, tmp_path, capsys):
    db = tmp_path / "db"
    summary = index_here(capsys, *(str(videos / name) for name in NAMES), "--db", str(db), "--commit-every", "2")
    assert sorted(Path(v["video"]).name for v in summary["videos"]) == sorted(NAMES)
    assert Store.open(db).health().generation == 2  # two commits: a batch of two, then the last
    plain, on_ray = _content(sample_db), _content(db)
    assert [len(plain[name]) for name in NAMES] == [69, 69, 38]
    assert all(_same_tracks(plain[name], on_ray[name]) for name in NAMES)
    # a rerun finds every file indexed and unchanged, and skips it
    assert index_here(capsys, *(str(videos / name) for name in NAMES), "--db", str(db)) == {
        "videos": [], "skipped": [str(videos / name) for name in NAMES]}


@pytest.mark.slow
def test_segments_stitched_answer_as_the_single_pass(cluster, sample_db, videos, tmp_path, capsys, ball_crop):
    """Segments of 4 s (3, 3 and 2 per video): the same sampled frames, nearly as many tracks, and the
    same last sightings, in overlapping windows, of the ball by its crop and of a kettle and a quilt by name
    (not the mug: in view the whole video, its tracks score at the occurrence floor, and which of them
    passes it depends on where the segments cut)."""
    db = tmp_path / "db"
    summary = index_here(capsys, *(str(videos / name) for name in NAMES), "--db", str(db), "--segment-seconds", "4")
    plain, stitched = _content(sample_db), _content(db)
    for name in NAMES:
        covered = [sorted({frame for frames, _ in tracks for frame, *_ in frames}) for tracks in (plain[name],
                                                                                                 stitched[name])]
        assert covered[0] == covered[1]
        assert abs(len(stitched[name]) - len(plain[name])) <= 0.1 * len(plain[name])
    assert sorted(v["frames_sampled"] for v in summary["videos"]) == [34, 48, 51]
    for query in (["--crop", str(ball_crop)], ["--text", "kettle"], ["--text", "quilt"]):
        one, other = _answer(sample_db, *query), _answer(db, *query)
        assert one["video"] == other["video"], query
        assert max(one["start_frame"], other["start_frame"]) <= min(one["end_frame"], other["end_frame"]), query


@pytest.mark.slow
def test_a_transient_fault_is_retried(cluster, sample_db, videos, tmp_path, capsys):
    """Each work unit of a cut-up 02_cups and a whole bedroom fails once, and is retried."""
    cups, bedroom = tmp_path / "flaky_cups.mp4", tmp_path / "flaky_bedroom.mp4"
    cups.write_bytes((videos / "02_cups.mp4").read_bytes())
    bedroom.write_bytes((videos / "bedroom.mp4").read_bytes())
    summary = index_here(capsys, str(cups), str(bedroom), "--db", str(tmp_path / "db"), "--segment-seconds", "7")
    assert sorted(Path(v["video"]).name for v in summary["videos"]) == ["flaky_bedroom.mp4", "flaky_cups.mp4"]
    assert (attempts(cups, 0), attempts(cups, 26), attempts(bedroom, 0)) == (2, 2, 2)
    assert _same_tracks(_content(tmp_path / "db")["flaky_bedroom.mp4"], _content(sample_db)["bedroom.mp4"])


@pytest.mark.slow
def test_a_video_that_fails_is_reported_and_the_others_commit(cluster, videos, tmp_path, capsys):
    broken, notes = tmp_path / "broken.mp4", tmp_path / "notes.mp4"
    broken.write_bytes((videos / "bedroom.mp4").read_bytes())
    notes.write_text("not a video")
    with pytest.raises(VQSearchError, match="2 of the 3 videos failed"):
        run_here(str(broken), str(videos / "04_coffee.mp4"), str(notes), "--db", str(tmp_path / "db"))
    out, err = capsys.readouterr()
    assert [Path(v["video"]).name for v in json.loads(out)["videos"]] == ["04_coffee.mp4"]  # what is indexed
    err = err.splitlines()
    assert len(err) == 2 and any("cannot read video" in line and "notes.mp4" in line for line in err), err
    assert any("cannot decode" in line and "broken.mp4" in line for line in err), err
    assert attempts(broken) == 1  # a user-facing error is not retried
    assert [Path(v.path).name for v, _ in Store.open(tmp_path / "db").videos()] == ["04_coffee.mp4"]


def _generation(db: Path) -> int:
    try:
        connection = sqlite3.connect(f"file:{db / 'index.sqlite'}?mode=ro", uri=True)
        row = connection.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        connection.close()
        return int(row[0]) if row else 0
    except sqlite3.Error:
        return 0


def _stopped_after_a_commit(command: list[str], db: Path, signum: int) -> subprocess.CompletedProcess:
    """`vqsearch COMMAND`, sent `signum` as soon as it has committed once more."""
    done = _generation(db)
    driver = subprocess.Popen([sys.executable, "-m", "vqsearch.cli", *command], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 240
    while _generation(db) == done and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signum)
    out, err = driver.communicate(timeout=60)
    return subprocess.CompletedProcess(driver.args, driver.returncode, out, err)


def _listed(db: Path) -> list[str]:
    checked = vqsearch("check", "--db", str(db), "--json")
    assert checked.returncode == 0 and json.loads(checked.stdout)["sound"], checked.stdout
    return [Path(v["video"]).name for v in json.loads(vqsearch("list", "--db", str(db), "--json").stdout)["videos"]]


@pytest.mark.slow
def test_a_stopped_or_killed_driver_loses_no_committed_video_and_a_rerun_finishes(cluster, sample_db, videos,
                                                                                  tmp_path):
    """The driver (joined to the module's cluster, one task at a time, a commit per video) is stopped
    by SIGTERM after its first commit, then run again and killed by SIGKILL after its next: each
    time the index is sound and holds what was committed; a third run indexes only the rest, with
    the tracks `vqsearch index` gives."""
    db = tmp_path / "db"
    command = ["index", *(str(videos / name) for name in NAMES), "--db", str(db), "--ray",
               "--ray-address", cluster, "--commit-every", "1", "--threads", "2", "--json"]
    stopped = _stopped_after_a_commit(command, db, signal.SIGTERM)
    assert stopped.returncode == 143 and stopped.stderr.splitlines()[-1] == "vqsearch: terminated", stopped.stderr
    first = _listed(db)
    assert len(first) == 1
    killed = _stopped_after_a_commit(command, db, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    kept = _listed(db)
    assert len(kept) == 2 and kept[0] == first[0], kept
    finished = vqsearch(*command)
    assert finished.returncode == 0, finished.stderr
    summary = json.loads(finished.stdout)
    assert sorted(Path(p).name for p in summary["skipped"]) == sorted(kept)
    assert [Path(v["video"]).name for v in summary["videos"]] == sorted(set(NAMES) - set(kept))
    plain, on_ray = _content(sample_db), _content(db)
    assert all(_same_tracks(plain[name], on_ray[name]) for name in NAMES)


def _ray_processes() -> set[int]:
    """Ray's own processes on this machine (servers, agents, workers)."""
    listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in listing.splitlines()
            if any(part in line for part in ("ray::", "raylet", "gcs_server", "ray/dashboard", "ray/_private",
                                             "ray/autoscaler"))}


@pytest.mark.slow
def test_a_local_cluster_is_started_for_the_run_and_stopped(videos, tmp_path):
    """Without an address `index --ray` starts a cluster on this machine's cores and stops it."""
    before = _ray_processes()
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "vqsearch.cli", "index", str(videos / "bedroom.mp4"), "--ray",
                           "--db", str(tmp_path / "db"), "--json"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert [v["tracks"] for v in json.loads(done.stdout)["videos"]] == [38]
    deadline = time.monotonic() + 20
    while _ray_processes() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _ray_processes() - before
