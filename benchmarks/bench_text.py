"""Text queries as people ask them, on the shared data: does the right video come first?

Two sets, each indexed into its own store with the embedded model:
- the three sample videos with everyday queries (objects, colours, people), each naming the
  video it is about;
- the 15 DAVIS 2016 val sequences, each written as one 5 fps video, each queried by its object
  title (`queries.vq2d.davis.OBJECT_TITLES`; "dog" is right for both dog and libby), and again by
  other words people use for those objects (`DAVIS_WORDS`: synonyms, kinds, parts of a title).
A query's videos are ranked by their best track's score; reported: top-1, mean reciprocal rank,
whether `last_seen` lands in a right video, warm query latency (index search, no relocation) and
the cold latency of a fresh `vqsearch query --text --no-relocate` process.
Beside the engine, on the same tracks: the baseline, ConSE as it was first built (the track's
mean token through the ImageNet classifier, the query as one MiniLM sentence embedding).

    python benchmarks/bench_text.py [--work /tmp/vqsearch-text-bench] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

# (query, the sample videos it is about): objects, colours and people, as a person would type them.
# All three videos show a person, so person queries say which one.
SAMPLE_QUERIES: list[tuple[str, str]] = [
    ("yellow ball", "02_cups.mp4"),
    ("ball", "02_cups.mp4"),
    ("red plastic cups", "02_cups.mp4"),
    ("red cup", "02_cups.mp4"),
    ("woman in an orange top", "02_cups.mp4"),
    ("kettle", "04_coffee.mp4"),
    ("coffee mug", "04_coffee.mp4"),
    ("blue mug", "04_coffee.mp4"),
    ("steel kettle pouring", "04_coffee.mp4"),
    ("coffee", "04_coffee.mp4"),
    ("person in a white shirt", "04_coffee.mp4 bedroom.mp4"),  # the boy's shirt is white too
    ("bed", "bedroom.mp4"),
    ("quilt", "bedroom.mp4"),
    ("children jumping on a bed", "bedroom.mp4"),
    ("child", "bedroom.mp4"),
    ("pillow", "bedroom.mp4"),
    ("pink pillow", "bedroom.mp4"),
    ("girl in a blue dress", "bedroom.mp4"),
]

# Other words for the DAVIS sequences' objects, as people also ask: synonyms, kinds, parts of a title.
DAVIS_WORDS: list[tuple[str, str]] = [
    ("swan", "blackswan"), ("bird", "blackswan"), ("bicycle", "bmx-trees"), ("cyclist", "bmx-trees"),
    ("cattle", "cows"), ("puppy", "dog libby"), ("horse", "horsejump-high"), ("jockey", "horsejump-high"),
    ("surfer", "kite-surf"), ("kite", "kite-surf"), ("parachute", "paragliding-launch"),
    ("motor scooter", "scooter-black"), ("moped", "scooter-black"), ("go-kart", "soapbox"),
]


def index(store_dir: Path, videos: list[Path]):
    """The engine over a store of these videos, and the baseline's text tokens per video (cached)."""
    from indexer.pipeline import index_video
    from indexer.video import probe
    from queries.engine import QueryEngine
    from vqsearch.models.factory import create_model
    from vqsearch.store import Store

    model = create_model()
    store = Store.open(store_dir, create=True)
    baseline, first = {}, None
    for path in videos:
        cached = store_dir / f"baseline-names-{path.stem}.npy"
        if store.find_video(path) is None or not cached.is_file():
            result = index_video(model, probe(path), 5.0)
            store.add_video(model.name, str(path), result)
            tokens = (np.stack([t.token for t in result.tracks]) if result.tracks
                      else np.zeros((0, model.backbone.dim)))
            first = first or first_conse(model)
            np.save(cached, first(tokens.astype(np.float32)))
        baseline[path.name] = np.load(cached)
    return QueryEngine(store, model), baseline


def first_conse(model):
    """ConSE as first built, the baseline: the ImageNet classifier over its classes' bare names."""
    from vqsearch.models.conse import ConSE, imagenet_labels
    from vqsearch.models.efficientnet import imagenet_classifier

    weight, bias = imagenet_classifier()
    return ConSE(weight, bias, model.text_encoder.text.encode(imagenet_labels()).astype(np.float32))


def ranking(ranked: list[tuple[str, list[str], set[str]]]) -> dict:
    """Top-1, mean reciprocal rank and the rank-1 misses over (query, videos best first, right videos)."""
    top1 = rr = 0.0
    misses = []
    for text, order, right in ranked:
        rank = next((i + 1 for i, name in enumerate(order) if name in right), None)
        top1 += rank == 1
        rr += 1 / rank if rank else 0.0
        if rank != 1:
            misses.append(f"{text!r} -> {order[0] if order else None} (right at rank {rank})")
    n = len(ranked)
    return {"queries": n, "top1": top1 / n, "mrr": round(rr / n, 3), "misses": misses}


def evaluate_baseline(model, tokens: dict[str, np.ndarray], queries: list[tuple[str, set[str]]]) -> dict:
    """Top-1 and MRR of the baseline: videos ranked by their best track's cosine to the plain query."""
    ranked = []
    for text, right in queries:
        query = model.text_encoder.text.encode([text])[0]
        best = {name: float((t @ query).max()) if len(t) else -1.0 for name, t in tokens.items()}
        ranked.append((text, sorted(best, key=best.get, reverse=True), right))
    return ranking(ranked)


def davis_videos(work: Path) -> dict[Path, str]:
    """One 5 fps video per DAVIS sequence -> its object title."""
    from PIL import Image

    from queries.vq2d.davis import frame_paths, list_sequences, object_title, write_clip

    davis = SHARED / "davis2016-val"
    out = {}
    for sequence in list_sequences(davis):
        path = work / "davis" / f"{sequence}.mp4"
        if not path.is_file():
            images, _ = frame_paths(davis, sequence)
            frames = [np.asarray(Image.open(p).convert("RGB")) for p in images[::5]]
            write_clip(frames, path, 5.0, Image.open(images[0]).size)
        out[path] = object_title(sequence)
    return out


def evaluate(engine, queries: list[tuple[str, set[str]]]) -> dict:
    """Top-1, MRR, last_seen in a right video, and warm latency over (query, right video names)."""
    last_right = 0.0
    latencies, ranked = [], []
    for text, right in queries:
        start = time.perf_counter()
        engine.search(text=text)  # as `vqsearch query --no-relocate` asks
        latencies.append(time.perf_counter() - start)
        answer = engine.search(text=text, top_k=10_000)
        order: list[str] = []
        for hit in answer.results:  # ranked by score: the first hit of each video ranks it
            name = Path(hit.video).name
            if name not in order:
                order.append(name)
        ranked.append((text, order, right))
        last_right += answer.last_seen is not None and Path(answer.last_seen.video).name in right
    n = len(queries)
    return {**ranking(ranked), "last_seen_right": last_right / n,
            "warm_ms_median": round(statistics.median(latencies) * 1000, 1)}


def cold_seconds(store_dir: Path, queries: list[str]) -> float:
    """Median wall time of a fresh `vqsearch query --text Q --no-relocate` process (the index's answer,
    as the page and `--no-relocate` give it; relocation decodes video and is timed in bench_index)."""
    times = []
    for text in queries:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vqsearch.cli", "query", "--text", text, "--db", str(store_dir),
                        "--no-relocate", "--json"], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/vqsearch-text-bench"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    samples, samples_baseline = index(args.work / "samples-db", sorted((SHARED / "videos").glob("*.mp4")))
    titles = davis_videos(args.work)
    davis, davis_baseline = index(args.work / "davis-db", sorted(titles))
    sets = {
        "sample videos": (samples, samples_baseline, [(q, set(v.split())) for q, v in SAMPLE_QUERIES]),
        # a title is right for every video it names
        "DAVIS titles": (davis, davis_baseline, [(title, {p.name for p, t in titles.items() if t == title})
                                                 for title in titles.values()]),
        "DAVIS words": (davis, davis_baseline, [(q, {f"{name}.mp4" for name in v.split()}) for q, v in DAVIS_WORDS]),
    }
    report = {name: {"engine": evaluate(engine, queries), "baseline": evaluate_baseline(engine.model, tokens, queries)}
              for name, (engine, tokens, queries) in sets.items()}
    cold = cold_seconds(args.work / "samples-db", [q for q, _ in SAMPLE_QUERIES[::3]])
    if args.json:
        print(json.dumps({**report, "cold_seconds_median": round(cold, 2)}))
        return
    print("| set | queries | baseline top-1 | baseline MRR | top-1 | MRR | last_seen in a right video | warm ms (median) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, both in report.items():
        r, b = both["engine"], both["baseline"]
        print(f"| {name} | {r['queries']} | {b['top1']:.0%} | {b['mrr']:.3f} | {r['top1']:.0%} | {r['mrr']:.3f} | "
              f"{r['last_seen_right']:.0%} | {r['warm_ms_median']} |")
    print(f"cold `vqsearch query --text --no-relocate` (fresh process, sample videos' index): median {cold:.2f} s")
    for name, both in report.items():
        for side in ("baseline", "engine"):
            print(f"{name}, {side}: misses at rank 1: {', '.join(both[side]['misses']) or 'none'}")


if __name__ == "__main__":
    main()
