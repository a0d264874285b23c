"""Indexing and query benchmark on the sample videos (embedded model, this machine's CPU).

Prints per video: sampled frames per second for the backbone alone (frames already decoded),
for decoding + backbone, and for the whole indexing pipeline (decode, backbone, regions,
merges, tracks, text tokens), the pipeline's cost over each, speed against real time, compression (patch tokens per stored track token),
then query latency warm (in process: the index search alone, and with the relocation that gives
the last occurrence tight boxes) and cold (a fresh `vqsearch query`). All figures come
from one run, so ratios compare like with like on a noisy machine.

    python benchmarks/bench_index.py [--videos DIR] [--fps 5] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"pipeline_over_backbone": 1.25, "realtime_factor": 5.0, "compression": 100.0, "query_ms": 100.0}


def bench_video(model, path: Path, fps: float, repeats: int) -> dict:
    from indexer.pipeline import index_video, prefetch
    from indexer.video import probe, sample_indices, stream

    info = probe(path)
    indices = sample_indices(info.frames, info.fps, fps)
    size = model.backbone.input_size(info.height, info.width)
    batches = [frames for _, frames in stream(info, indices, size)]
    backbone, decoded, pipeline = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for frames in batches:
            model.backbone.features(frames)
        backbone.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _, frames in prefetch(stream(info, indices, size)):
            model.backbone.features(frames)
        decoded.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = index_video(model, info, fps)
        pipeline.append(time.perf_counter() - start)
    b, d, p = min(backbone), min(decoded), min(pipeline)
    return {
        "video": path.name, "frames_sampled": len(indices), "input": f"{size[1]}x{size[0]}",
        "backbone_fps": round(len(indices) / b, 1), "decode_backbone_fps": round(len(indices) / d, 1),
        "pipeline_fps": round(len(indices) / p, 1),
        "pipeline_over_backbone": round(p / b, 3), "pipeline_over_decode_backbone": round(p / d, 3),
        "realtime_factor": round(info.duration / p, 2),
        "patch_tokens": result.patch_tokens, "tracks": len(result.tracks),
        "compression": round(result.patch_tokens / max(len(result.tracks), 1), 1),
    }, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=ROOT.parent / "shared" / "data" / "videos")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from queries.engine import QueryEngine
    from queries.relocate import Relocation
    from vqsearch.models.factory import DEFAULT_MODEL, create_model
    from vqsearch.store import Store

    start = time.perf_counter()
    model = create_model(DEFAULT_MODEL)
    model.region_encoder  # load weights and label embeddings before timing
    model.backbone.features(np.zeros((1, 288, 512, 3), np.uint8))
    load_seconds = time.perf_counter() - start
    db = Path(tempfile.mkdtemp(prefix="vqsearch-bench-"))
    store = Store.open(db, create=True)
    rows = []
    for path in sorted(args.videos.glob("*.mp4")):
        row, result = bench_video(model, path, args.fps, args.repeats)
        store.add_video(model.name, str(path), result)
        rows.append(row)

    engine = QueryEngine(Store.open(db), model)
    crop = _ball_crop(args.videos / "02_cups.mp4", db)
    latencies, relocated = {}, {}
    for name, kwargs in {"text": {"text": "coffee mug"}, "crop": {"crop": crop},
                         "text+crop": {"text": "ball", "crop": crop}}.items():
        for relocate, out, repeats in ((None, latencies, 10), (Relocation(), relocated, 3)):
            engine.search(**kwargs, relocate=relocate)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                engine.search(**kwargs, relocate=relocate)
                times.append(time.perf_counter() - start)
            out[name] = round(statistics.median(times) * 1000, 1)
    cold = {}
    for name, flags in {"text": ["--text", "coffee mug"], "crop": ["--crop", str(crop)]}.items():
        for extra in ([], ["--no-relocate"]):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "vqsearch.cli", "query", *flags, *extra, "--db", str(db), "--json"],
                           check=True, capture_output=True)
            cold[name + (" --no-relocate" if extra else "")] = round(time.perf_counter() - start, 2)

    report = {"model": model.name, "model_load_seconds": round(load_seconds, 2), "videos": rows,
              "query_ms_warm": latencies, "query_ms_warm_with_relocation": relocated,
              "query_seconds_cold_cli": cold,
              "totals": {
                  "pipeline_over_backbone": round(max(r["pipeline_over_backbone"] for r in rows), 3),
                  "realtime_factor": min(r["realtime_factor"] for r in rows),
                  "compression": min(r["compression"] for r in rows),
                  "query_ms": max(latencies.values())}}
    report["targets_met"] = {
        key: (value <= TARGETS[key] if key in ("pipeline_over_backbone", "query_ms") else value >= TARGETS[key])
        for key, value in report["totals"].items()}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"model {model.name} (load {load_seconds:.1f}s), {args.fps} fps sampling, best of {args.repeats}")
    print(f"{'video':<14}{'frames':>7}{'input':>9}{'backbone':>10}{'+decode':>9}{'pipeline':>10}"
          f"{'/backbone':>10}{'/+decode':>9}{'x realtime':>11}{'tracks':>7}{'compression':>12}")
    for r in rows:
        print(f"{r['video']:<14}{r['frames_sampled']:>7}{r['input']:>9}{r['backbone_fps']:>10}"
              f"{r['decode_backbone_fps']:>9}{r['pipeline_fps']:>10}{r['pipeline_over_backbone']:>10}"
              f"{r['pipeline_over_decode_backbone']:>9}{r['realtime_factor']:>11}{r['tracks']:>7}"
              f"{r['compression']:>11}x")
    print("(fps = sampled frames per second)")
    print("query latency, warm (ms): index search", latencies, " with relocation (tight boxes, tracking)",
          relocated, " cold CLI (s):", cold)
    for key, met in report["targets_met"].items():
        print(f"target {key}: {report['totals'][key]} ({'met' if met else 'MISSED'}; target {TARGETS[key]})")


def _ball_crop(video: Path, out_dir: Path) -> Path:
    import decord
    from PIL import Image

    frame = decord.VideoReader(str(video))[0].asnumpy()
    path = out_dir / "ball.png"
    Image.fromarray(frame[428:498, 366:438]).save(path)
    return path


if __name__ == "__main__":
    main()
