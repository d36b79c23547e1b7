#!/usr/bin/env python3
"""AnoGAN's latent search, measured side by side in one run: batched versus per image, and the edge
variants' AUROC versus the full search.

    python scripts/bench_anogan.py --run runs/anogan_demo [--images 64] [--batch 32] [--steps 500]
    python scripts/bench_anogan.py --config configs/anogan_mvtec_capsule.yaml [--set KEY=VALUE ...]

Speed: the same number of Adam steps for `--images` test images, three ways:
  batched      keras_ad's search, `--batch` images per tf.while_loop (what scoring runs);
  per image    the same in-graph loop, one image at a time;
  seed form    one image at a time and one optimiser step per Python call (a tf.Variable z and a
               Keras Adam, as the seed code ran it with sess.run), on `--seed-form-images` images.
Times are seconds per image; the speed-ups are ratios of them. Each form's FLOP/s (TensorFlow's
profiler count of one step) against the dense matmul rate measured in the same run bounds what
batching can gain on the device (no batch runs faster than that rate).

With --run, AUROC on the run's test split: the full search (the run's settings), the edge variant (z = E(x),
no search: what TFLite and ONNX run) and E(x) followed by `--refine-steps` search steps.
--config times an untrained build of a config instead (a step's time does not depend on the weights),
so the paper's settings can be measured without data. Writes a markdown table to stdout and JSON to
--out (default <run>/bench/anogan.json, or ./bench_anogan.json with --config).
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

    def make_step(optimizer, x, x_features):
        @tf.function  # as the seed wrote it, AutoGraph on: this times the seed's form (docs/stack.md#5-autograph)
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(detector.search_loss(x, x_features, z)[0])
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
    from keras_ad import metrics
    from keras_ad.tracing import graph_function

    variants = {f"full search ({detector.search_steps} steps, {detector.search_init} start)":
                (detector.search_init, detector.search_steps),
                "edge: z = E(x), no search (TFLite / ONNX)": ("encoder", 0),
                f"E(x) + {refine_steps} search steps": ("encoder", refine_steps)}
    rows = {}
    for name, (init, steps) in variants.items():
        fn = graph_function(lambda x, init=init, steps=steps: detector.scored_search(x, init, steps)[:2])
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


def search_step_flops(detector, image_shape) -> int:
    """FLOPs of one search step for one image: G(z), f(G(z)), L(z) and its gradient with respect to z
    (f(x) is computed once per search; Adam's arithmetic on z adds a few hundred more)."""
    import tensorflow as tf

    from keras_ad import benchmark
    from keras_ad.tracing import graph_function

    def gradient(x, x_features, z):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(z)
            loss = tf.reduce_sum(detector.search_loss(x, x_features, z)[0])
        return tape.gradient(loss, z)

    specs = (tf.TensorSpec([1, *image_shape]), tf.TensorSpec([1, *detector.features.output.shape[1:]]),
             tf.TensorSpec([1, detector.latent_dim]))
    return benchmark.graph_flops(graph_function(gradient).get_concrete_function(*specs))


def compute_device() -> str:
    """What TensorFlow runs the search on: the first GPU's name, else the CPU and its thread count."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
    return f"CPU ({platform.machine()}, {os.cpu_count()} threads)"


def load_detector(args):
    """(detector, cfg, test split or None): a trained run's, or an untrained build of --config (speed only)."""
    import keras_ad
    from keras_ad import config, detectors
    from keras_ad.data import layouts, pipeline
    from keras_ad.errors import UsageError

    if args.config:
        cfg = config.load(args.config, args.set)
        return (detectors.build(cfg) if cfg.detector.name == "anogan" else None), cfg, None
    scorer = keras_ad.load(args.run)
    if not hasattr(scorer, "detector"):
        raise UsageError(f"{args.run}: an export, not a run folder; give the trained run it came from")
    cfg = scorer.cfg
    if cfg.detector.name != "anogan":
        return None, cfg, None
    return scorer.detector, cfg, pipeline.load_test_set(layouts.discover(cfg.data, seed=cfg.train.seed), cfg.data)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a trained anogan run folder: speed and the variants' AUROC")
    source.add_argument("--config", help="an anogan config, built untrained: speed only (no data needed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override with --config, e.g. detector.filters=64")
    parser.add_argument("--images", type=int, default=64, help="images timed per form (default 64)")
    parser.add_argument("--batch", type=int, default=32, help="batch of the batched search (default 32)")
    parser.add_argument("--steps", type=int, default=None, help="search steps (default: the run's)")
    parser.add_argument("--seed-form-images", type=int, default=8, help="images for the seed-form loop (default 8)")
    parser.add_argument("--refine-steps", type=int, default=50, help="steps after E(x) for the refined variant")
    parser.add_argument("--out", default=None, help="JSON result (default <run>/bench/anogan.json, "
                                                     "with --config bench_anogan.json)")
    args = parser.parse_args(argv)
    if args.set and not args.config:
        parser.error("--set needs --config")

    import tensorflow as tf

    from keras_ad import benchmark
    from keras_ad.errors import UsageError
    from keras_ad.tracing import graph_function

    try:
        detector, cfg, test = load_detector(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if detector is None:
        print(f"error: {args.run or args.config}: an {cfg.detector.name} model; this benchmark needs anogan",
              file=sys.stderr)
        return 2
    steps = detector.search_steps if args.steps is None else args.steps
    shape = (*cfg.data.model_shape, cfg.data.channels)
    if test is None:  # untrained: the time of a step does not depend on the weights or the pixels
        images = np.random.default_rng(0).random((args.images, *shape), dtype=np.float32)
    else:
        images = np.resize(test["images"], (args.images, *shape)).astype(np.float32)

    device = compute_device()
    search = graph_function(lambda x: detector.search(x, steps=steps)[0], reduce_retracing=True)
    print(f"timing {args.images} images x {steps} steps on {device}: batched (batch {args.batch}) ...",
          file=sys.stderr, flush=True)
    batched = per_image_seconds(search, images, args.batch)
    print("timing per image (in-graph loop) ...", file=sys.stderr, flush=True)
    per_image = per_image_seconds(search, images, 1)
    print(f"timing the seed's form on {args.seed_form_images} images ...", file=sys.stderr, flush=True)
    seed_form = seed_form_seconds(detector, images[:args.seed_form_images], steps)
    print("measuring the matmul rate ...", file=sys.stderr, flush=True)
    matmul = benchmark.matmul_flops_per_second()
    flops = search_step_flops(detector, shape) * steps  # per image
    rows = {}
    if test is not None:
        print("scoring the test split with each variant ...", file=sys.stderr, flush=True)
        rows = auroc_rows(detector, test, args.refine_steps, args.batch)

    seconds = {"batched": batched, "per_image": per_image, "seed_form": seed_form}
    result = {"run": os.path.abspath(args.run) if args.run else None,
              "config": os.path.abspath(args.config) if args.config else None, "overrides": args.set,
              "trained": test is not None, "device": device, "tensorflow": tf.__version__,
              "image_size": cfg.data.image_size, "channels": cfg.data.channels, "filters": cfg.detector.filters,
              "latent_dim": cfg.detector.latent_dim, "steps": steps, "images": args.images, "batch": args.batch,
              "seconds_per_image": seconds,
              "speedup_vs_per_image": per_image / batched, "speedup_vs_seed_form": seed_form / batched,
              "flops_per_image": flops, "matmul_flops_per_second": matmul,
              "flops_per_second": {form: flops / s for form, s in seconds.items()},
              # no batch can run faster than the matmul rate, so this bounds the batched speed-up here
              "batching_ceiling": matmul / (flops / per_image),
              "variants": rows, "test_images": int(len(test["images"])) if test is not None else 0}
    out = args.out or (os.path.join(args.run, "bench", "anogan.json") if args.run else "bench_anogan.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(table(result))
    print(f"\nJSON: {out}")
    return 0


def table(result) -> str:
    s, rate, matmul = result["seconds_per_image"], result["flops_per_second"], result["matmul_flops_per_second"]
    weights = "trained" if result["trained"] else "untrained (speed only)"
    lines = [f"AnoGAN latent search, {result['images']} images x {result['steps']} Adam steps, "
             f"{result['image_size']}px, filters {result['filters']}, {weights}, {result['device']}", "",
             "| form | s / image | GFLOP/s | % of matmul | speed-up of batched |", "|---|---|---|---|---|"]
    forms = ((f"batched, batch {result['batch']}", "batched", None),
             ("per image, in-graph loop", "per_image", "speedup_vs_per_image"),
             ("per image, one step per call (seed)", "seed_form", "speedup_vs_seed_form"))
    for name, form, speedup in forms:
        gain = f"{result[speedup]:.1f}x" if speedup else "1"
        lines.append(f"| {name} | {s[form]:.4f} | {rate[form] / 1e9:.1f} | {100 * rate[form] / matmul:.0f} | {gain} |")
    lines += ["", f"{result['flops_per_image'] / result['steps'] / 1e6:.0f} MFLOP per image and step; "
              f"matmul {matmul / 1e9:.0f} GFLOP/s here, so no batch can beat the per-image loop by more than "
              f"{result['batching_ceiling']:.1f}x on this device."]
    if result["variants"]:
        lines += ["", f"| variant ({result['test_images']} test images) | image AUROC | pixel AUROC | s / image |",
                  "|---|---|---|---|"]
        for name, row in result["variants"].items():
            lines.append(f"| {name} | {row['image_auroc']:.4f} | {row['pixel_auroc']:.4f} | "
                         f"{row['seconds_per_image']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
