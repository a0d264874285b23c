"""`vqsearch bench scale`: build a store of N synthetic tracks through the store's own bulk write and
measure it: disk, build time, a cold `vqsearch query --crop` (fresh process, the store's files
evicted from the page cache) with its wall time and peak RSS, warm latencies in-process, recall@10
of the stored index against exact search on real track tokens, and whether "last seen" of a
planted object seen more than 10,000 times is the one exact search gives.

Exact answers come from the build itself: as each video streams into the store, its exact
similarities to the planted queries and to the recall queries are kept (a float per track and
query kind; a running top 10 per recall query), so they hold at any size without a flat index.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from queries.engine import QueryEngine, above_background, load_crop
from queries.scale.synthetic import FPS, FRAME, Planted, Prototypes, SyntheticStore
from vqsearch.errors import VQSearchError
from vqsearch.store import BulkVideo, Store
from vqsearch.vector_index import COMPRESS_FROM, all_vectors, is_compressed, nearest, training_size, vectors_of

PER_VIDEO = 10_000  # tracks per synthetic video (an hour or so of one person's camera)
WARM_QUERIES = 200  # per kind of query
RECALL_QUERIES = 50  # per kind of vector
DAY = 86_400.0
QUERY_KINDS = {"crop": ("visual",), "text": ("text",), "both": ("text", "visual")}


@dataclass
class Exact:
    """Exact answers, gathered as the tracks stream in (tracks numbered from 0 in stored order)."""

    planted_tokens: dict[str, np.ndarray]    # kind -> the planted object's query token
    planted: dict[str, np.ndarray]           # kind -> its exact similarity per track
    recall_queries: dict[str, np.ndarray]    # kind -> [RECALL_QUERIES, dim] real tokens
    top: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # kind -> (sims, numbers) [q, 10]
    video: list[np.ndarray] = field(default_factory=list)
    end: list[np.ndarray] = field(default_factory=list)

    def add(self, first: int, vectors: dict[str, np.ndarray], video: int, ends: np.ndarray) -> None:
        self.video.append(np.full(len(ends), video, np.int32))
        self.end.append(ends.astype(np.int32))
        for kind, token in self.planted_tokens.items():
            self.planted[kind][first:first + len(ends)] = vectors[kind] @ token
        for kind, queries in self.recall_queries.items():
            sims = queries @ vectors[kind].T
            numbers = np.broadcast_to(np.arange(first, first + len(ends)), sims.shape)
            if kind in self.top:
                sims = np.concatenate([self.top[kind][0], sims], axis=1)
                numbers = np.concatenate([self.top[kind][1], numbers], axis=1)
            best = np.argsort(-sims, axis=1)[:, :10]
            self.top[kind] = (np.take_along_axis(sims, best, 1), np.take_along_axis(numbers, best, 1))

    def save(self, path: Path, figures: dict, planted_last: int) -> None:
        """Keep the exact answers and the build's figures beside the store, to measure it again."""
        arrays = {"video": np.concatenate(self.video), "end": np.concatenate(self.end),
                  "figures": np.array(json.dumps({**figures, "planted_last": planted_last}))}
        for kind in self.planted_tokens:
            arrays |= {f"token_{kind}": self.planted_tokens[kind], f"planted_{kind}": self.planted[kind],
                       f"recall_{kind}": self.recall_queries[kind], f"top_sims_{kind}": self.top[kind][0],
                       f"top_numbers_{kind}": self.top[kind][1]}
        tmp = path.with_name(f"{path.name}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> tuple[Exact, dict]:
        """The exact answers and the build's figures that `save` kept."""
        if not path.is_file():
            raise VQSearchError(f"no {path.name} beside the store: build it with `vqsearch bench scale` first")
        with np.load(path) as saved:
            kinds = [key[len("token_"):] for key in saved.files if key.startswith("token_")]
            exact = cls({kind: saved[f"token_{kind}"] for kind in kinds},
                        {kind: saved[f"planted_{kind}"] for kind in kinds},
                        {kind: saved[f"recall_{kind}"] for kind in kinds},
                        {kind: (saved[f"top_sims_{kind}"], saved[f"top_numbers_{kind}"]) for kind in kinds},
                        [saved["video"]], [saved["end"]])
            return exact, json.loads(str(saved["figures"]))

    def last_seen(self, engine: QueryEngine, kinds: tuple[str, ...]) -> tuple[int, int]:
        """(track number of the exact last occurrence, how many tracks are occurrences) by the
        engine's rule over every track's exact score: the crop deciding for both when the model
        says so, the background that of the store's sample when it is compressed (as the engine
        measures it: `QueryEngine.sample_scores`), and only the videos whose best occurrence holds
        the model's share of the best."""
        if set(kinds) == {"visual", "text"} and not engine.model.config.joint_decides:
            kinds = ("visual",)
        scores = np.prod([np.maximum(self.planted[kind], 0.0) for kind in kinds], axis=0)
        threshold, margin, share = engine._rule(set(kinds), engine.store.video_count() == 1)  # as the engine asks
        compressed = is_compressed(engine.store.vectors(["visual"]).visual)
        background = engine.sample_scores({kind: self.planted_tokens[kind] for kind in kinds})[1] if compressed else scores
        floor = max(threshold, above_background(background, margin))
        passing = np.flatnonzero(scores >= floor)
        video, end = np.concatenate(self.video)[passing], np.concatenate(self.end)[passing]
        numbers = passing.tolist()  # the engine's own video share, over every passing track
        keep = np.isin(passing, engine.in_likely_videos(numbers, dict(zip(numbers, scores[passing].tolist())),
                                                        dict(zip(numbers, video.tolist())), share))
        passing, video, end = passing[keep], video[keep], end[keep]
        return int(passing[np.lexsort((scores[passing], end, video))[-1]]), len(passing)


def real_prototypes(real: Path) -> Prototypes:
    """Every track token of an index of real videos, by kind, rows aligned by track."""
    store = Store.open(real)
    vectors = store.vectors(["visual", "text", "colour"])
    if vectors is None or vectors.text is None or vectors.colour is None:
        raise VQSearchError(f"the index at {real} has no tracks with visual, text and colour vectors to draw from")
    ids, visual = all_vectors(vectors.visual)
    return Prototypes({"visual": visual, "text": vectors_of(vectors.text, ids), "colour": vectors_of(vectors.colour, ids)})


def planted_crop(real: Path, out: Path) -> Path:
    """A crop of a real object to plant: the middle box of the longest track of the real index."""
    import decord
    from PIL import Image

    store = Store.open(real)
    ids = store.track_ids()
    rows = store.tracks(ids)
    track = max(rows.values(), key=lambda row: (len(row.observations), -row.id))
    box = track.observations[len(track.observations) // 2]
    frame = decord.VideoReader(track.video.abs_path)[box.frame].asnumpy()
    x, y = int(box.x), int(box.y)
    Image.fromarray(frame[y:y + max(int(box.height), 8), x:x + max(int(box.width), 8)]).save(out)
    return out


def exact_path(db: Path) -> Path:
    """Where a build keeps its exact answers and figures: beside the store."""
    return db.parent / f"{db.name}-exact.npz"


def build(engine: QueryEngine, db: Path, tracks: int, real: Path, crop: Path, text: str, planted: int,
          compress_from: int, seed: int = 0) -> tuple[dict, Exact, int]:
    """Build the store with `engine`'s model; the build's figures, the exact answers and the number
    of the planted object's last sighting."""
    model = engine.model
    tokens = {"visual": engine.encode_crop(load_crop(crop)), "text": engine.encode_text(text)["text"]}
    prototypes = real_prototypes(real)
    synthetic = SyntheticStore(prototypes, Planted(tokens, prototypes.vectors["colour"].mean(axis=0)), tracks,
                               PER_VIDEO, min(planted, max(tracks // 8, 1)), seed)
    rng = np.random.default_rng(seed)
    exact = Exact(tokens, {kind: np.zeros(tracks, np.float32) for kind in tokens},
                  {kind: prototypes.vectors[kind][rng.choice(len(prototypes), min(RECALL_QUERIES, len(prototypes)),
                                                             replace=False)] for kind in tokens})
    started = time.perf_counter()
    training = synthetic.training(training_size(tracks) if tracks >= compress_from else 1)

    def videos():
        for video in range(synthetic.videos):
            vectors = synthetic.vectors(synthetic.draw(video))
            starts, ends, boxes = synthetic.times(video)
            exact.add(video * PER_VIDEO, vectors, video, ends)
            path = str(db / "synthetic" / f"video-{video:06d}.mp4")
            yield BulkVideo({"path": path, "abs_path": path, "fingerprint": "synthetic", "frames": int(ends.max()) + 1,
                             "fps": FPS, "width": FRAME[0], "height": FRAME[1], "sample_fps": 5.0,
                             "frames_sampled": int(ends.max() * 5 / FPS) + 1, "patch_tokens": 0,
                             "region_tokens": len(ends), "recorded_at": 1.7e9 + video * DAY / 8},
                            starts, ends, boxes, vectors)

    engine.store.add_many(model.name, videos(), tracks, training, compress_from,
                          text_space=Store.open(real).text_space)  # the text vectors are drawn around REAL's
    figures = {"tracks": tracks, "planted": len(synthetic.planted_tracks),
               "build_s": round(time.perf_counter() - started, 1),
               "disk_mb": round(sum(path.stat().st_size for path in db.iterdir() if path.is_file()) / 2**20, 1)}
    return figures, exact, int(synthetic.planted_tracks[-1])


def cold_query(db: Path, crop: Path) -> dict:
    """`vqsearch query --crop` in a fresh process, the store's files first evicted from the page
    cache: wall time, peak RSS (GNU time) and its answer."""
    for path in db.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "vqsearch.cli", "query", "--crop",
                           str(crop), "--db", str(db), "--json", "--no-relocate"], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise VQSearchError(f"the cold query failed: {done.stderr.strip().splitlines()[-1]}")
    return {"wall_s": round(wall, 2), "rss_mb": round(int(done.stderr.split()[-1]) / 1024),
            "answer": json.loads(done.stdout)["last_seen"]}


def warm_latency(engine: QueryEngine, exact: Exact, count: int) -> dict[str, dict[str, float]]:
    """p50 / p95 ms of `QueryEngine.answer` per kind of query (the planted tokens, then real ones,
    each asked once untimed first: the cold query evicted the store's files from the page cache):
    wall time, and the CPU time of the thread that answers, which is the wall time of a query on a
    machine no other work holds (a query runs on its own thread: FAISS and BLAS are held to one)."""
    out = {}
    for name, kinds in QUERY_KINDS.items():
        asked = [{kind: exact.planted_tokens[kind] if number == 0 else
                  exact.recall_queries[kind][number % len(exact.recall_queries[kind])] for kind in kinds}
                 for number in range(count)]
        for queries in asked[:len(exact.recall_queries[kinds[0]]) + 1]:  # warm: their lists in the page cache
            engine.answer(queries, top_k=5)
        wall, cpu = [], []
        for queries in asked:
            started, thread = time.perf_counter(), time.thread_time()
            engine.answer(queries, top_k=5)
            wall.append(1000 * (time.perf_counter() - started))
            cpu.append(1000 * (time.thread_time() - thread))
        out[name] = {f"{prefix}p{q}_ms": round(float(np.percentile(timings, q)), 1)
                     for prefix, timings in (("", wall), ("cpu_", cpu)) for q in (50, 95)}
    return out


def recall_at_10(engine: QueryEngine, exact: Exact) -> dict[str, float]:
    """Per kind: the share of the exact 10 nearest tracks that the stored index's 10 nearest hold."""
    vectors = engine.store.search_vectors(list(exact.recall_queries))
    out = {}
    for kind, queries in exact.recall_queries.items():
        index = getattr(vectors, kind)
        found = [set(nearest(index, query, 10)[0].tolist()) for query in queries]
        truth = [set((numbers + 1).tolist()) for numbers in exact.top[kind][1]]  # ids are numbers + 1
        out[kind] = round(float(np.mean([len(f & t) / 10 for f, t in zip(found, truth)])), 3)
    return out


def last_seen(engine: QueryEngine, exact: Exact, planted_last: int) -> dict[str, dict]:
    """Per kind of query: the engine's last occurrence of the planted object against exact search's
    (which may be a later chance pass of the margin rule rather than the object's last sighting)."""
    out = {}
    for name, kinds in QUERY_KINDS.items():
        truth, matching = exact.last_seen(engine, kinds)
        last, _ = engine.answer({kind: exact.planted_tokens[kind] for kind in kinds}, top_k=1)
        out[name] = {"matching": matching, "expected_track": truth + 1, "planted_last_track": planted_last + 1,
                     "answered_track": None if last is None else last.track_id,
                     "correct": last is not None and last.track_id == truth + 1}
    return out


def run_scale(db: Path, tracks: int, real: Path, crop: Path | None = None, text: str = "ball",
              planted: int = 12_000, compress_from: int = COMPRESS_FROM, warm: int = WARM_QUERIES,
              again: bool = False) -> dict:
    """Build a store of `tracks` synthetic tracks at `db` and measure it (module docstring); with
    `again`, measure the store an earlier run built there, from the exact answers it kept."""
    from vqsearch.models.factory import create_model

    if tracks < 1:
        raise VQSearchError(f"--tracks must be at least 1, got {tracks}")
    cut, crop = crop is None, crop or db.parent / f"{db.name}-planted.png"
    model = create_model(Store.open(real).model_name, "cpu")
    if again:
        exact, figures = Exact.load(exact_path(db))
        planted_last = figures.pop("planted_last")
        engine = QueryEngine(Store.open(db), model)
    else:
        db.mkdir(parents=True, exist_ok=True)
        if cut:
            planted_crop(real, crop)
        engine = QueryEngine(Store.open(db, create=True), model)
        figures, exact, planted_last = build(engine, db, tracks, real, crop, text, planted, compress_from)
        exact.save(exact_path(db), figures, planted_last)
    figures["cold_crop"] = cold_query(db, crop)
    expected = exact.last_seen(engine, QUERY_KINDS["crop"])[0] + 1
    answer = figures["cold_crop"].pop("answer")
    figures["cold_crop"]["last_seen_correct"] = answer is not None and answer["end_frame"] == int(
        np.concatenate(exact.end)[expected - 1]) and answer["video"].endswith(
        f"video-{int(np.concatenate(exact.video)[expected - 1]):06d}.mp4")
    engine.store = Store.open(db)
    figures["warm"] = warm_latency(engine, exact, warm)
    figures["recall_at_10"] = recall_at_10(engine, exact)
    figures["last_seen"] = last_seen(engine, exact, planted_last)
    figures["crop"] = str(crop)
    return figures
