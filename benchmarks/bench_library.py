"""Last seen across a library: does the answer land on the object's latest sighting, in another video?

VQ2D asks inside one clip; people ask across all their videos. From the 15 DAVIS 2016 val
sequences this builds a library of 30 short videos at 5 fps: per sequence its first half (A)
and a brief reappearance (B: 5 frames, one second, from its last third), B recorded after A.
The other sequences' videos stand between and around them, several of the same kind (two dogs,
two cars, many people, a cow beside a camel and a goat).

Per sequence three queries, as a person would ask: a crop of the object from A (its mask's box
a quarter of the way in), its title as text (`queries.vq2d.davis.OBJECT_TITLES`), and both. The
right `last_seen`:
- crop and both: B, the same object's reappearance (another dog is another object);
- text: the last recorded video of any sequence with that title ("dog": dog or libby).
Recording times are drawn at random (`--orders` of them, A before B each time) and written to the
store's `recorded_at`, which orders "last seen" across videos; figures are means over orders,
in all and per sequence (which objects fail, and in which mode).

Beside the engine, on the same videos, what a user could write without the index:
- crop: per sampled frame the best stride-32 cell cosine with the crop's token; last seen is the
  last recorded video with a frame above one threshold (0.3, 0.4, 0.5 reported);
- text: ConSE as first built (the track's mean token through the classifier, the query one
  MiniLM sentence embedding); last seen is the video of the best-matching track.

    python benchmarks/bench_library.py [--work /tmp/vqsearch-library-bench] [--orders 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DAVIS = ROOT.parent / "shared" / "data" / "davis2016-val"
FPS = 5.0
REAPPEARANCE = 5               # sampled frames in B
BASELINE_THRESHOLDS = (0.3, 0.4, 0.5)


def build_library(davis: Path, work: Path) -> tuple[dict[str, tuple[Path, Path]], dict[str, np.ndarray]]:
    """{sequence: (A video, B video)} written once under `work`, and each sequence's query crop."""
    from PIL import Image

    from queries.vq2d.davis import frame_paths, list_sequences, mask_box, write_clip

    videos, crops = {}, {}
    for sequence in list_sequences(davis):
        images, masks = frame_paths(davis, sequence)
        kept = list(range(0, len(images), 5))  # DAVIS is 24 fps: about 5 fps
        half = kept[:len(kept) // 2]
        tail = kept[2 * len(kept) // 3:]
        start = len(tail) // 2 - REAPPEARANCE // 2
        parts = {"A": half, "B": [f for f in tail[max(0, start):max(0, start) + REAPPEARANCE]
                                  if mask_box(masks[f]) is not None]}
        paths = []
        for name, frames in parts.items():
            path = work / "videos" / f"{sequence}-{name}.mp4"
            if not path.is_file():
                pixels = [np.asarray(Image.open(images[f]).convert("RGB")) for f in frames]
                write_clip(pixels, path, FPS, (pixels[0].shape[1], pixels[0].shape[0]))
            paths.append(path)
        videos[sequence] = tuple(paths)
        pick = next(f for f in half[len(half) // 4:] if mask_box(masks[f]) is not None)
        x, y, w, h = mask_box(masks[pick])
        crops[sequence] = np.ascontiguousarray(np.asarray(Image.open(images[pick]).convert("RGB"))[y:y + h, x:x + w])
    return videos, crops


def frame_cells(engine, videos: list[Path], work: Path) -> dict[str, np.ndarray]:
    """Per video, its sampled frames' unit feature cells [frames, cells, dim] (the crop baseline's input)."""
    import decord

    backbone, out = engine.model.backbone, {}
    for path in videos:
        cached = work / "cells" / f"{path.stem}.npy"
        if not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            probe_reader = decord.VideoReader(str(path), num_threads=1)
            height, width = probe_reader[0].shape[:2]
            size = backbone.input_size(height, width)
            reader = decord.VideoReader(str(path), width=size[1], height=size[0], num_threads=1)
            feats = backbone.features(reader.get_batch(list(range(len(reader)))).asnumpy())
            cells = feats.reshape(feats.shape[0], feats.shape[1], -1).transpose(0, 2, 1)
            np.save(cached, cells / np.linalg.norm(cells, axis=2, keepdims=True).clip(1e-8))
        out[path.name] = np.load(cached)
    return out


def recording_orders(sequences: list[str], count: int, seed: int = 0) -> list[dict[str, float]]:
    """`count` random recording times per video name, each sequence's A before its B."""
    rng = np.random.default_rng(seed)
    orders = []
    for _ in range(count):
        names = [f"{s}-{part}.mp4" for s in sequences for part in "AB"]
        times = dict(zip(names, rng.permutation(len(names)).astype(float)))
        for s in sequences:
            a, b = f"{s}-A.mp4", f"{s}-B.mp4"
            if times[a] > times[b]:
                times[a], times[b] = times[b], times[a]
        orders.append(times)
    return orders


def set_recording_times(store, times: dict[str, float]) -> None:
    """Writes `recorded_at` per video (by file name): the benchmark's stand-in for when each was filmed."""
    from sqlalchemy import update

    from vqsearch.schema import Video

    with store.engine.begin() as connection:
        for video, _ in store.videos():
            connection.execute(update(Video).where(Video.id == video.id)
                               .values(recorded_at=times[Path(video.path).name]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", type=Path, default=DAVIS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/vqsearch-library-bench"))
    parser.add_argument("--orders", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench_text import index
    from queries.vq2d.davis import object_title

    library, crops = build_library(args.davis, args.work)
    sequences = sorted(library)
    videos = [path for pair in library.values() for path in pair]
    engine, text_tokens = index(args.work / "db", videos)  # bench_text's: same indexing, same baseline
    cells = frame_cells(engine, videos, args.work)
    titles = {s: object_title(s) for s in sequences}
    queries = []  # (mode, sequence, text, crop token)
    for s in sequences:
        token = engine.encode_crop(crops[s])
        queries += [("crop", s, None, token), ("text", s, titles[s], None), ("both", s, titles[s], token)]

    right: dict[str, list[float]] = {mode: [] for mode in ("crop", "text", "both")}
    by_sequence: dict[tuple[str, str], list[bool]] = {}  # (mode, sequence): right per order
    baseline: dict[str, list[float]] = {f"crop >{t}": [] for t in BASELINE_THRESHOLDS} | {"text best match": []}
    latencies = []
    for times in recording_orders(sequences, args.orders):
        set_recording_times(engine.store, times)
        for mode, s, text, token in queries:
            encoded = {} if text is None else engine.encode_text(text)
            if token is not None:
                encoded["visual"] = token
            began = time.perf_counter()
            last, _ = engine.answer(encoded)
            latencies.append(time.perf_counter() - began)
            if mode == "text":
                same = [f"{o}-{p}.mp4" for o in sequences if titles[o] == text for p in "AB"]
                want = max(same, key=times.get)
            else:
                want = f"{s}-B.mp4"
            right[mode].append(last is not None and Path(last.video).name == want)
            by_sequence.setdefault((mode, s), []).append(right[mode][-1])
            if mode == "crop":
                best = {name: float((c @ token).max()) for name, c in cells.items()}
                for t in BASELINE_THRESHOLDS:
                    seen = [name for name, b in best.items() if b > t]
                    baseline[f"crop >{t}"].append(bool(seen) and max(seen, key=times.get) == want)
            if mode == "text":
                plain = engine.model.text_encoder.text.encode([text])[0]
                scores = {name: float((tok @ plain).max()) for name, tok in text_tokens.items()}
                baseline["text best match"].append(max(scores, key=scores.get) in same and
                                                   max(scores, key=scores.get) == want)
    report = {"videos": len(videos), "sequences": len(sequences), "orders": args.orders,
              "engine": {mode: round(float(np.mean(v)), 3) for mode, v in right.items()},
              "baseline": {name: round(float(np.mean(v)), 3) for name, v in baseline.items()},
              "answer_ms_median": round(float(np.median(latencies)) * 1000, 1),
              "per_sequence": {s: {mode: round(float(np.mean(by_sequence[mode, s])), 3) for mode in right}
                               for s in sequences}}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['videos']} videos ({report['sequences']} sequences, first half + a 1 s reappearance), "
          f"{args.orders} recording orders; last_seen right:")
    print("| query | engine | baseline |")
    print("|---|---|---|")
    crop_base = ", ".join(f"{report['baseline'][f'crop >{t}']:.0%} (>{t})" for t in BASELINE_THRESHOLDS)
    print(f"| crop | {report['engine']['crop']:.0%} | {crop_base} |")
    print(f"| text | {report['engine']['text']:.0%} | {report['baseline']['text best match']:.0%} (best match) |")
    print(f"| crop + text | {report['engine']['both']:.0%} | - |")
    print(f"engine answer (index, no relocation), median {report['answer_ms_median']} ms")
    print("\nper sequence (title), last_seen right: crop / text / both")
    for s, modes in report["per_sequence"].items():
        print(f"  {s:20s} {titles[s]:16s} " + " / ".join(f"{modes[m]:4.0%}" for m in ("crop", "text", "both")))


if __name__ == "__main__":
    main()
