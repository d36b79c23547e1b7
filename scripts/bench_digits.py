#!/usr/bin/env python3
"""One-class AUROC on scikit-learn's digits (8x8, resized to 32x32 grey) for `piad` and `cae`, side by side.

    python scripts/bench_digits.py [--classes 0,1,...,9] [--epochs 60] [--iterations 600] [--out bench_digits]

For every normal class c: class c is normal, the nine others anomalies; each class is split 80/20 with
a seed (PIAD's protocol for small sets, docs/methods/piad.md#1a), the normal 80 % trains (10 % of it
validates), the normal 20 % and the other classes' 20 % test. Both detectors see the same splits.
`cae` trains --epochs epochs; `piad` counts iterations as its paper does (--iterations E/G steps, each
after 2 critic steps, on the set repeated to 960 images per epoch; the paper: 50k on MNIST, docs/methods/piad.md#1d).
PIAD runs with random VGG19 features here (`perceptual_weights: none`: no download on this machine);
pass --perceptual-weights FILE for the paper's. Writes <out>/digits.md and <out>/digits.json (image
AUROC per class, mean, training seconds) and keeps each run under <out>/runs/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

DETECTORS = {
    "piad": {"name": "piad", "latent_dim": 32, "generator_dims": [32] * 4, "encoder_dims": [32] * 4,
             "image_critic_dims": [32] * 4, "latent_critic_dims": [128, 128], "weight_update_every": 5},
    "cae": {"name": "cae", "loss": "ssim", "residual": "l2", "latent_dim": 100},
}


def write_digits(root):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = os.path.join(root, str(label))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray((image * 16).clip(0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i:04d}.png"))


def run_one(root, out, detector, normal_class, epochs, iterations, perceptual_weights):
    """Train + evaluate one run through the CLI; returns (image AUROC, training + evaluation seconds)."""
    import yaml

    from keras_ad.cli import main

    section = dict(DETECTORS[detector])
    length = {"epochs": epochs}
    if detector == "piad":
        section["perceptual_weights"] = perceptual_weights
        length = {"iterations": iterations, "min_epoch_images": 960}
    run_dir = os.path.join(out, "runs", f"{detector}_{normal_class}")
    cfg = {"run": {"dir": run_dir},
           "data": {"layout": "one_class", "root": root, "normal_class": str(normal_class), "image_size": 32,
                    "channels": 1, "test_fraction": 0.2, "val_fraction": 0.1},
           "detector": section,
           "train": {**length, "batch_size": 16, "augment": False},
           "postprocess": {"reduction": "detector" if detector == "piad" else "topk_mean"}}
    path = os.path.join(out, "runs", f"{detector}_{normal_class}.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    start = time.perf_counter()
    main(["train", "--config", path, "--overwrite"], standalone_mode=False)
    seconds = time.perf_counter() - start
    with open(os.path.join(run_dir, "report.json")) as f:
        return json.load(f)["image_auroc"], seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", default=",".join(map(str, range(10))), help="normal classes (default 0-9)")
    parser.add_argument("--epochs", type=int, default=60, help="epochs of each cae run (default 60)")
    parser.add_argument("--iterations", type=int, default=600, help="iterations of each piad run (default 600)")
    parser.add_argument("--detectors", default="piad,cae")
    parser.add_argument("--perceptual-weights", default="none", help="PIAD's VGG19: none or a weight file")
    parser.add_argument("--out", default="bench_digits")
    args = parser.parse_args(argv)
    classes = [int(c) for c in args.classes.split(",")]
    detectors = args.detectors.split(",")
    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown:
        print(f"error: --detectors: {', '.join(unknown)} unknown; choose from {', '.join(DETECTORS)}", file=sys.stderr)
        return 2
    root = os.path.join(args.out, "digits")
    if not os.path.isdir(root):
        write_digits(root)
    results = {d: {} for d in detectors}
    for detector in detectors:
        for c in classes:
            auroc, seconds = run_one(root, args.out, detector, c, args.epochs, args.iterations, args.perceptual_weights)
            results[detector][str(c)] = {"image_auroc": auroc, "seconds": seconds}
            print(f"{detector} normal class {c}: image AUROC {auroc:.4f} ({seconds:.0f} s)", flush=True)
    summary = {d: {"mean_image_auroc": float(np.mean([r["image_auroc"] for r in rows.values()])),
                   "total_seconds": float(sum(r["seconds"] for r in rows.values())), "per_class": rows}
               for d, rows in results.items()}
    with open(os.path.join(args.out, "digits.json"), "w") as f:
        json.dump({"cae_epochs": args.epochs, "piad_iterations": args.iterations,
                   "perceptual_weights": args.perceptual_weights, "results": summary}, f, indent=2)
    table = table_markdown(summary, classes, args)
    with open(os.path.join(args.out, "digits.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return 0


def table_markdown(summary, classes, args) -> str:
    lines = [f"One-class image AUROC on scikit-learn digits (32x32 grey; cae {args.epochs} epochs, piad "
             f"{args.iterations} iterations, VGG19 weights: {args.perceptual_weights})", "",
             "| detector | " + " | ".join(map(str, classes)) + " | mean | training + evaluation |",
             "|---|" + "---|" * (len(classes) + 2)]
    for detector, s in summary.items():
        cells = " | ".join(f"{s['per_class'][str(c)]['image_auroc']:.3f}" for c in classes)
        lines.append(f"| {detector} | {cells} | {s['mean_image_auroc']:.3f} | {s['total_seconds']:.0f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
