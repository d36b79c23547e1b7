#!/usr/bin/env python3
"""Peak memory and speed of the training input pipeline for growing data sets, cached vs streamed.

    python scripts/bench_pipeline.py [--sizes 1000,10000] [--image-size 256] [--data DIR] [--out FILE]

Writes N synthetic 256x256 RGB JPEGs per size (once, under --data), then, for each size and mode, runs
one epoch of `keras_ad.data.pipeline.training_data` (decode, pre-process, docs/methods/cae.md#3a augmentation, batch 16)
in a fresh process and reports its peak resident memory (ru_maxrss), the resident memory before the
data was touched, and images/s. Modes: `stream` (data.cache_mb: 0, decoded per epoch in tf.data) and
`cache` (decoded once into memory; only where the set fits the default data.cache_mb).

    python scripts/bench_pipeline.py --fit patchcore [--sizes 10000]

measures PatchCore's whole fit instead (mode `patchcore`): the streamed feature pass and the bounded-memory
coreset of configs/patchcore_demo.yaml's detector at --image-size, through keras_ad.training.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def write_images(folder, n, size):
    """n smooth random RGB images (gradients and discs) as JPEG in folder/train/good, skipped if present."""
    from PIL import Image

    target = os.path.join(folder, "train", "good")
    if os.path.isdir(target) and len(os.listdir(target)) >= n:
        return
    os.makedirs(target, exist_ok=True)
    rng = np.random.default_rng(0)
    gy, gx = np.mgrid[0:size, 0:size]
    yy, xx = gy / size, gx / size
    for i in range(n):
        a, b, c = rng.random(3)
        image = np.stack([a * xx + (1 - a) * yy, b * yy, c * xx * yy], -1)
        cy, cx, r = rng.random(3) * [size, size, size / 4]
        image[(gy - cy) ** 2 + (gx - cx) ** 2 < r ** 2] = rng.random(3)
        Image.fromarray((image * 255).astype(np.uint8)).save(os.path.join(target, f"{i:05d}.jpg"), quality=90)


def rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def fit_patchcore(folder, size):
    """PatchCore's fit (feature pass + coreset) on `folder`, streamed, in this process; prints a JSON line."""
    import tempfile

    from keras_ad import config, training
    from keras_ad.runs import Run

    configs = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs")
    cfg = config.load(os.path.join(configs, "patchcore_demo.yaml"),
                      [f"data.root={folder}", f"data.image_size={size}", "data.cache_mb=0", "data.val_fraction=0.0",
                       f"run.dir={tempfile.mkdtemp(prefix='bench_patchcore-')}"])
    before = rss_mb()
    start = time.perf_counter()
    model = training.train(cfg, Run.create(cfg))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": len(os.listdir(os.path.join(folder, "train", "good"))), "mode": "patchcore",
                      "rss_before_mb": before, "peak_rss_mb": peak, "seconds": seconds,
                      "images_per_s": len(os.listdir(os.path.join(folder, "train", "good"))) / seconds,
                      "bank_rows": int(model.unique_rows.numpy()), "patch_features": model.builder.seen}))


def child(folder, size, mode):
    """One epoch in this process; prints a JSON line."""
    if mode == "patchcore":
        return fit_patchcore(folder, size)
    from keras_ad import config
    from keras_ad.data import layouts, pipeline

    data = {"root": folder, "layout": "folder", "image_size": size, "channels": 3, "val_fraction": 0.0}
    if mode == "stream":
        data["cache_mb"] = 0
    cfg = config.validate({"data": data, "train": {"batch_size": 16}})
    files = layouts.discover(cfg.data, seed=0, need_test=False)
    before = rss_mb()
    start = time.perf_counter()
    train_ds, n_train, _, _, _ = pipeline.training_data(cfg, files, 16)
    seen = sum(int(batch.shape[0]) for batch in train_ds)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": n_train, "mode": mode, "rss_before_mb": before, "peak_rss_mb": peak,
                      "images_per_s": seen / seconds, "seconds": seconds}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="data set sizes (images)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--data", default=os.path.join(os.path.expanduser("~"), ".cache", "keras_ad", "bench_pipeline"))
    parser.add_argument("--out", default="bench_pipeline.md")
    parser.add_argument("--fit", choices=("patchcore",), help="measure this detector's fit instead of one epoch")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.image_size, args.child[1])
        return 0

    from keras_ad import config
    from keras_ad.data.pipeline import fits_cache

    default_data = config.validate({"data": {"root": args.data, "image_size": args.image_size, "channels": 3}}).data

    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        folder = os.path.join(args.data, f"{n}_{args.image_size}")
        print(f"writing {n} images to {folder} (once) ...", file=sys.stderr, flush=True)
        write_images(folder, n, args.image_size)
        for mode in (args.fit,) if args.fit else ("stream", "cache"):
            if mode == "cache" and not fits_cache(n, default_data):
                continue  # would stream anyway under the default data.cache_mb
            proc = subprocess.run([sys.executable, __file__, "--child", folder, mode, "--image-size",
                                   str(args.image_size)], capture_output=True, text=True, check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{n} images, {mode}: peak RSS {row['peak_rss_mb']:.0f} MiB (before data "
                  f"{row['rss_before_mb']:.0f}), "
                  f"{row['images_per_s']:.0f} images/s", file=sys.stderr, flush=True)
    what = ("PatchCore's fit (streamed feature pass, bounded-memory coreset), configs/patchcore_demo.yaml's detector"
            if args.fit else "Training input pipeline, one epoch, augmentation on")
    lines = [f"{what}, {args.image_size}x{args.image_size} RGB JPEGs, batch 16, "
             f"{os.cpu_count()} CPU threads (`python "
             f"scripts/bench_pipeline.py{' --fit ' + args.fit if args.fit else ''}`):", "",
             "| images | mode | peak RSS MiB | RSS before data MiB | images/s |", "|---:|---|---:|---:|---:|"]
    lines += [f"| {r['images']} | {r['mode']} | {r['peak_rss_mb']:.0f} | {r['rss_before_mb']:.0f} | "
              f"{r['images_per_s']:.0f} |" for r in rows]
    table = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
