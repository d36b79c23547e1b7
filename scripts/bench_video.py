#!/usr/bin/env python3
"""LNTRA's baseline, patch and skip-frame models on the synthetic demo videos, same budget, side by side.

    python scripts/bench_video.py [--epochs 10] [--seeds 0,1,2] [--out bench_video]

Every variant trains configs/video_demo.yaml for --epochs epochs with each seed; only the pseudo
anomalies differ: none (baseline), SmoothMixS patches at p = 0.2 with max_size 0.5 and max_move 10
(patch; intruders: scikit-learn's digits here, CIFAR-100 in the paper, which needs a download), or
skip-frame clips at p = 0.2 with jumps 2-5 (skip). Writes <out>/video.md and <out>/video.json: frame-level
AUROC, offline (per-video min-max, the paper's) and online, mean ± std over seeds, and seconds per run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
VARIANTS = {
    "baseline": ["detector.skip_frame=0.0", "detector.patch=0.0"],
    "patch": ["detector.skip_frame=0.0", "detector.patch=0.2", "detector.patch_kind=smoothmix_s",
              "detector.intruders=digits", "detector.max_size=0.5", "detector.max_move=10"],
    "skip": ["detector.skip_frame=0.2", "detector.patch=0.0", "detector.jumps=[2,3,4,5]"],
}


def run_one(out, variant, seed, epochs):
    """Train + evaluate one run through the CLI; returns (report.json, seconds)."""
    from keras_ad.cli import main

    folder = os.path.join(out, "runs", f"{variant}_{seed}")
    sets = VARIANTS[variant] + [f"train.seed={seed}", f"train.epochs={epochs}", f"run.dir={folder}"]
    start = time.perf_counter()
    main(["train", "--config", os.path.join(REPO, "configs", "video_demo.yaml"), "--overwrite",
          *[a for s in sets for a in ("--set", s)]], standalone_mode=False)
    seconds = time.perf_counter() - start
    with open(os.path.join(folder, "report.json")) as f:
        return json.load(f), seconds


def table(results, epochs) -> str:
    lines = [f"LNTRA on the synthetic videos ({epochs} epochs, mean ± std over seeds)", "",
             "| model | frame AUROC offline | frame AUROC online | seconds per run |", "|---|---|---|---|"]
    for variant, runs in results.items():
        cells = []
        for key in ("frame_auroc_offline", "frame_auroc_online"):
            values = [r[key] for r in runs]
            cells.append(f"{np.mean(values):.4f} ± {np.std(values):.4f}")
        lines.append(f"| {variant} | {cells[0]} | {cells[1]} | {np.mean([r['seconds'] for r in runs]):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default="bench_video")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"error: --variants: {', '.join(unknown)} unknown; choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    results = {v: [] for v in variants}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant in variants:
            report, seconds = run_one(args.out, variant, seed, args.epochs)
            row = {"seed": seed, "seconds": seconds,
                   **{k: report[k] for k in ("frame_auroc_offline", "frame_auroc_online", "pixel_auroc")}}
            results[variant].append(row)
            print(f"{variant} seed {seed}: offline {row['frame_auroc_offline']:.4f} online "
                  f"{row['frame_auroc_online']:.4f} ({seconds:.0f} s)", flush=True)
    text = table(results, args.epochs)
    with open(os.path.join(args.out, "video.json"), "w") as f:
        json.dump({"epochs": args.epochs, "results": results}, f, indent=2)
    with open(os.path.join(args.out, "video.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
