#!/usr/bin/env python3
"""AnoGAN's latent search, measured side by side in one run: batched versus per image, and the edge
variants' AUROC versus the full search.

    python scripts/bench_anogan.py --run runs/anogan_demo [--images 64] [--batch 32] [--steps 500]

Speed: the same number of Adam steps for `--images` test images, three ways:
  batched      keras_ad's search, `--batch` images per tf.while_loop (what scoring runs);
  per image    the same in-graph loop, one image at a time;
  seed form    one image at a time and one optimiser step per Python call (a tf.Variable z and a
               Keras Adam, as the seed code ran it with sess.run), on `--seed-form-images` images.
Times are seconds per image; the speed-ups are ratios of them.

AUROC on the run's test split: the full search (the run's settings), the edge variant (z = E(x),
no search: what TFLite and ONNX run) and E(x) followed by `--refine-steps` search steps.
Writes a markdown table to stdout and JSON to --out (default <run>/bench/anogan.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def per_image_seconds(fn, images, batch):
    """Seconds per image of `fn` over `images` in batches of `batch`, after one traced warm-up batch."""
    fn(images[:batch])
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        np.asarray(fn(images[i:i + batch]))
    return (time.perf_counter() - start) / len(images)


def seed_form_seconds(detector, images, steps):
    """The seed's loop: per image a fresh z variable and Adam, one optimiser step per Python call."""
    import keras
    import tensorflow as tf

    z = tf.Variable(tf.zeros([1, detector.latent_dim]))
    lam = detector.discrimination_weight

    def make_step(optimizer, x, x_features):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                generated = detector.generator(z, training=False)
                residual = tf.reduce_sum(tf.abs(x - generated))
                discrimination = tf.reduce_sum(tf.abs(x_features - detector.features(generated, training=False)))
                loss = (1 - lam) * residual + lam * discrimination
            optimizer.apply_gradients([(tape.gradient(loss, z), z)])
            return loss
        return step

    start = time.perf_counter()
    for image in images:
        x = tf.constant(image[None] * 2.0 - 1.0)
        z.assign(detector.initial_latents[:1])
        optimizer = keras.optimizers.Adam(detector.search_lr, beta_1=0.5, epsilon=1e-8)
        step = make_step(optimizer, x, detector.features(x, training=False))
        for _ in range(steps):
            step()
    return (time.perf_counter() - start) / len(images)


def auroc_rows(detector, test, refine_steps, batch):
    import tensorflow as tf

    from keras_ad import metrics

    variants = {f"full search ({detector.search_steps} steps, {detector.search_init} start)":
                (detector.search_init, detector.search_steps),
                "edge: z = E(x), no search (TFLite / ONNX)": ("encoder", 0),
                f"E(x) + {refine_steps} search steps": ("encoder", refine_steps)}
    rows = {}
    for name, (init, steps) in variants.items():
        fn = tf.function(lambda x, init=init, steps=steps: detector.scored_search(x, init, steps)[:2])
        start = time.perf_counter()
        parts = [fn(test["images"][i:i + batch]) for i in range(0, len(test["images"]), batch)]
        seconds = (time.perf_counter() - start) / len(test["images"])
        scores = np.concatenate([p[0].numpy() for p in parts])
        maps = np.concatenate([p[1].numpy() for p in parts])
        keep = test["has_mask"]
        pixel = (metrics.pixel_auroc(test["masks"][keep], maps[keep])
                 if test["masks"][keep].any() else float("nan"))
        rows[name] = {"image_auroc": metrics.image_auroc(test["labels"], scores), "pixel_auroc": pixel,
                      "seconds_per_image": seconds}
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a trained anogan run folder")
    parser.add_argument("--images", type=int, default=64, help="images timed per form (default 64)")
    parser.add_argument("--batch", type=int, default=32, help="batch of the batched search (default 32)")
    parser.add_argument("--steps", type=int, default=None, help="search steps (default: the run's)")
    parser.add_argument("--seed-form-images", type=int, default=8, help="images for the seed-form loop (default 8)")
    parser.add_argument("--refine-steps", type=int, default=50, help="steps after E(x) for the refined variant")
    parser.add_argument("--out", default=None, help="JSON result (default <run>/bench/anogan.json)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    import keras_ad
    from keras_ad.data import layouts, pipeline

    scorer = keras_ad.load(args.run)
    detector, cfg = scorer.detector, scorer.cfg
    if cfg.detector.name != "anogan":
        print(f"error: {args.run}: an {cfg.detector.name} run; this benchmark needs an anogan run", file=sys.stderr)
        return 2
    steps = detector.search_steps if args.steps is None else args.steps
    test = pipeline.load_test_set(layouts.discover(cfg.data, seed=cfg.train.seed), cfg.data)
    images = np.resize(test["images"], (args.images, *test["images"].shape[1:])).astype(np.float32)

    search = tf.function(lambda x: detector.search(x, steps=steps)[0], reduce_retracing=True)
    print(f"timing {args.images} images x {steps} steps: batched (batch {args.batch}) ...", file=sys.stderr, flush=True)
    batched = per_image_seconds(search, images, args.batch)
    print("timing per image (in-graph loop) ...", file=sys.stderr, flush=True)
    per_image = per_image_seconds(search, images, 1)
    print(f"timing the seed's form on {args.seed_form_images} images ...", file=sys.stderr, flush=True)
    seed_form = seed_form_seconds(detector, images[:args.seed_form_images], steps)
    print("scoring the test split with each variant ...", file=sys.stderr, flush=True)
    rows = auroc_rows(detector, test, args.refine_steps, args.batch)

    result = {"run": os.path.abspath(args.run), "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads",
              "tensorflow": tf.__version__, "image_size": cfg.data.image_size, "filters": cfg.detector.filters,
              "steps": steps, "images": args.images, "batch": args.batch,
              "seconds_per_image": {"batched": batched, "per_image": per_image, "seed_form": seed_form},
              "speedup_vs_per_image": per_image / batched, "speedup_vs_seed_form": seed_form / batched,
              "variants": rows, "test_images": int(len(test["images"]))}
    out = args.out or os.path.join(args.run, "bench", "anogan.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(table(result))
    print(f"\nJSON: {out}")
    return 0


def table(result) -> str:
    s = result["seconds_per_image"]
    lines = [f"AnoGAN latent search, {result['images']} images x {result['steps']} Adam steps, "
             f"{result['image_size']}px, filters {result['filters']}, {result['machine']}", "",
             "| form | s / image | speed-up of batched |", "|---|---|---|",
             f"| batched, batch {result['batch']} | {s['batched']:.4f} | 1 |",
             f"| per image, in-graph loop | {s['per_image']:.4f} | {result['speedup_vs_per_image']:.1f}x |",
             f"| per image, one step per call (seed) | {s['seed_form']:.4f} | {result['speedup_vs_seed_form']:.1f}x |",
             "", f"| variant ({result['test_images']} test images) | image AUROC | pixel AUROC | s / image |",
             "|---|---|---|---|"]
    for name, row in result["variants"].items():
        lines.append(f"| {name} | {row['image_auroc']:.4f} | {row['pixel_auroc']:.4f} | {row['seconds_per_image']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
