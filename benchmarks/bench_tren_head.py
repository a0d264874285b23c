"""T-REN head cost against its backbone, for 16x16, 24x24 and 32x32 prompt grids.

The paper (one A40, 512 px, DINOv3 ViT-L/16 + dino.txt) reports 67.7 ms for the backbone and
69.4 / 74.8 / 84.2 ms with the head at 16x16 / 24x24 / 32x32 prompts: +2.5% to +24%.
Here: the same architectures (timm's DINOv3 ViT-L/16, the released head configuration:
D = T = 1024, k = 3, L = 2, 8 heads), randomly initialised, on this machine's CPU; the figure
that carries over is the ratio, measured in one run.

    python benchmarks/bench_tren_head.py [--arch vit_large_patch16_dinov3] [--repeats 3] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def _best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_large_patch16_dinov3")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from vqsearch.models.dinov3 import DINOv3Backbone, create_timm_model
    from vqsearch.models.tren import TRENConfig, TRENHead
    from vqsearch.regions import grid_points

    torch.manual_seed(0)
    backbone = DINOv3Backbone.from_timm(create_timm_model(args.arch), long_side=args.size)
    frames = torch.randint(0, 255, (1, args.size, args.size, 3), dtype=torch.uint8).numpy()
    with torch.inference_mode():
        backbone_s = _best(lambda: backbone.features(frames), args.repeats)
        features = torch.from_numpy(backbone.features(frames))
        head = TRENHead(TRENConfig(dim=backbone.dim, text_dim=backbone.dim, input_size=args.size,
                                   patch_size=backbone.stride)).eval()
        rows = []
        for grid in (16, 24, 32):
            points = grid_points(args.size, args.size, args.size // grid)[None]
            head_s = _best(lambda: head(features, points), args.repeats)
            rows.append({"grid": f"{grid}x{grid}", "prompts": points.shape[1], "head_ms": round(head_s * 1000, 1),
                         "head_over_backbone_pct": round(100 * head_s / backbone_s, 1)})
    report = {"arch": args.arch, "input": args.size, "threads": torch.get_num_threads(),
              "backbone_ms": round(backbone_s * 1000, 1),
              "head_params_pct_of_backbone": round(100 * sum(p.numel() for p in head.parameters())
                                                   / sum(p.numel() for p in backbone.model.parameters()), 1),
              "grids": rows, "paper_pct": {"16x16": 2.5, "24x24": 10.5, "32x32": 24.4}}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{args.arch} at {args.size}px, {report['threads']} threads: backbone {report['backbone_ms']} ms; "
          f"head parameters {report['head_params_pct_of_backbone']}% of the backbone's")
    print(f"{'grid':>6}{'prompts':>9}{'head ms':>10}{'head / backbone':>17}{'paper (A40)':>13}")
    for row in rows:
        print(f"{row['grid']:>6}{row['prompts']:>9}{row['head_ms']:>10}{row['head_over_backbone_pct']:>16}%"
              f"{report['paper_pct'][row['grid']]:>12}%")


if __name__ == "__main__":
    main()
