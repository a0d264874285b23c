"""VQ2D on hard DAVIS episodes: the engine (crop, text, both) against a naive baseline, same data.

The episodes come from `vqsearch bench make-davis` (crop from the first appearance, three or
four other sequences in between with one of the target's kind, a 3-6 frame reappearance). The
engine runs through `vqsearch bench vq2d` (the same code as the CLI); the baseline is what anyone
could write with the same backbone and no index:

    per frame up to the query frame, the best cosine of any stride-32 feature cell with the crop's
    token; the answer is the last run of consecutive frames above one fixed threshold (0.5, from
    design.md's measurement: 0.5-0.6 where an object is visible, 0.1-0.25 elsewhere), with a box
    of the crop's size centred on the best cell of each frame; its score is the run's mean.

Both are scored with the official metric definitions (`queries/vq2d/metrics.py`).

    python benchmarks/bench_vq2d.py [--seeds 0 1] [--episodes 16] [--modes crop text both]
                                    [--work /tmp/vq2d-bench] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DAVIS = ROOT.parent / "shared" / "data" / "davis2016-val"
METRICS = ("stAP@0.25", "stAP", "tAP@0.25", "tAP", "success", "recovery")
MODE_FLAGS = {"crop": ["--no-text"], "text": ["--no-crop"], "both": []}
BASELINE_THRESHOLD = 0.5


def vqsearch(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "vqsearch.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"vqsearch {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def baseline_predictions(annotations_path: Path, clips: Path, threshold: float) -> tuple[dict, float]:
    """The naive per-frame baseline's predictions (official layout) and its seconds per query."""
    import decord

    from queries.engine import QueryEngine
    from queries.vq2d.formats import PredictedBox, PredictedTrack, build_predictions, iter_valid_queries, load_annotations
    from queries.vq2d.runner import cut_crop
    from vqsearch.models.factory import create_model

    model = create_model()
    backbone = model.backbone
    encoder = QueryEngine(None, model)  # only its crop encoder
    annotations = load_annotations(annotations_path)
    tracks, start, count = {}, time.perf_counter(), 0
    for query in iter_valid_queries(annotations):
        count += 1
        qs = query.query_set
        reader = decord.VideoReader(str(clips / f"{query.clip_uid}.mp4"), num_threads=1)
        height, width = reader[0].shape[:2]
        crop = cut_crop(reader[qs.visual_crop.frame_number].asnumpy(), query)
        token = encoder.encode_crop(crop)
        size = backbone.input_size(height, width)
        frames = list(range(qs.query_frame + 1))
        small = decord.VideoReader(str(clips / f"{query.clip_uid}.mp4"), width=size[1], height=size[0], num_threads=1)
        best, where = [], []
        for i in range(0, len(frames), 8):
            feats = backbone.features(small.get_batch(frames[i:i + 8]).asnumpy())
            feats /= np.linalg.norm(feats, axis=1, keepdims=True).clip(1e-8)
            sims = np.einsum("bdhw,d->bhw", feats, token)
            for s in sims:
                cell = np.unravel_index(np.argmax(s), s.shape)
                best.append(float(s[cell]))
                where.append(((cell[1] + 0.5) * width / s.shape[1], (cell[0] + 0.5) * height / s.shape[0]))
        above = np.flatnonzero(np.asarray(best) > threshold)
        if len(above) == 0:
            tracks[query.key] = PredictedTrack((), 0.0)
            continue
        end = above[-1]
        begin = end
        while begin - 1 >= 0 and best[begin - 1] > threshold:
            begin -= 1
        sx = width / qs.visual_crop.original_width if qs.visual_crop.original_width else 1.0
        sy = height / qs.visual_crop.original_height if qs.visual_crop.original_height else 1.0
        w, h = qs.visual_crop.width * sx, qs.visual_crop.height * sy
        boxes = []
        for f in range(begin, end + 1):
            cx, cy = where[f]
            x1, y1 = min(max(cx - w / 2, 0), width - w), min(max(cy - h / 2, 0), height - h)
            boxes.append(PredictedBox(f, round(x1 / sx, 2), round(y1 / sy, 2), round((x1 + w) / sx, 2),
                                      round((y1 + h) / sy, 2)))
        tracks[query.key] = PredictedTrack(tuple(boxes), round(float(np.mean(best[begin:end + 1])), 6))
    return build_predictions(annotations, tracks, fill_missing=True), (time.perf_counter() - start) / max(count, 1)


def evaluate(annotations: Path, predictions: Path) -> dict:
    return json.loads(vqsearch("bench", "vq2d-eval", "--annotations", str(annotations), "--predictions",
                               str(predictions), "--json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", type=Path, default=DAVIS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--modes", nargs="+", default=list(MODE_FLAGS), choices=list(MODE_FLAGS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/vq2d-bench"))
    parser.add_argument("--baseline-threshold", type=float, default=BASELINE_THRESHOLD)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from queries.vq2d.formats import write_predictions

    rows = []
    for seed in args.seeds:
        out = args.work / f"seed{seed}"
        annotations = out / "vq_davis.json"
        if not annotations.is_file():
            vqsearch("bench", "make-davis", "--davis", str(args.davis), "--out", str(out),
                     "--episodes", str(args.episodes), "--seed", str(seed))
        queries = len(json.loads(annotations.read_text())["videos"])
        predictions, per_query = baseline_predictions(annotations, out / "clips", args.baseline_threshold)
        write_predictions(out / "baseline.json", predictions)
        rows.append({"seed": seed, "system": "naive baseline", "query": "crop", **evaluate(annotations, out / "baseline.json"),
                     "s/query": round(per_query, 3)})
        for mode in args.modes:
            path = out / f"engine-{mode}.json"
            for stale in out.glob(f".{path.name}.work"):
                subprocess.run(["rm", "-rf", str(stale)], check=True)
            summary = json.loads(vqsearch("bench", "vq2d", "--annotations", str(annotations), "--clips",
                                          str(out / "clips"), "--out", str(path), "--json", *MODE_FLAGS[mode]))
            rows.append({"seed": seed, "system": "vqsearch", "query": mode, **evaluate(annotations, path),
                         "s/query": round(summary["seconds"] / queries, 3)})
    if args.json:
        print(json.dumps(rows))
        return
    head = ["seed", "system", "query", *METRICS, "s/query"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) and k not in ("success", "recovery")
                                else f"{row[k]:.1f}" if k in ("success", "recovery") else str(row[k])
                                for k in head) + " |")


if __name__ == "__main__":
    main()
