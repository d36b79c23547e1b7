#!/usr/bin/env python3
"""Latency and throughput of one run's scoring graph in every runtime, measured side by side.

    python scripts/bench_export.py --run runs/demo [--export exports/demo] [--out bench_export.md]

Exports the run into a temporary folder first (all formats, TFLite fp32/fp16/dynamic/int8) unless
--export names a finished export with all of them. Every runtime scores the same raw uint8 test
images (pre-processing, resize, score, map and decision included): per-image latency at batch 1
(median) and throughput at batch 8, with ratios against Keras eager, the graph's FLOPs per image
(TensorFlow profiler; the decision's while loop is not counted) and the GFLOP/s achieved.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

THREADS = os.cpu_count() or 1


def runtimes(scorer, export_dir):
    """name -> callable(uint8 batch) for every runtime, all on this machine's CPU threads."""
    import tensorflow as tf

    from keras_ad.export.device import DeviceScorer
    from keras_ad.export.savedmodel import ExportedScorer

    def tensors(fn):
        return lambda x: {k: v.numpy() for k, v in fn(tf.constant(x)).items()}

    saved = ExportedScorer(os.path.join(export_dir, "saved_model"))
    out = {"Keras eager": tensors(scorer.graph), "tf.function": tensors(scorer), "SavedModel": tensors(saved)}
    for mode in ("fp32", "fp16", "dynamic", "int8"):
        out[f"TFLite {mode}"] = DeviceScorer(os.path.join(export_dir, f"model_{mode}.tflite"), num_threads=THREADS)
    out["ONNX Runtime"] = DeviceScorer(os.path.join(export_dir, "model.onnx"), num_threads=THREADS)
    return out


def markdown(rows, flops, header) -> str:
    base_latency, base_throughput = rows["Keras eager"]
    lines = [header, "",
             "| runtime | batch 1: ms / image | × vs eager | batch 8: images / s | × vs eager | GFLOP/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, (latency, throughput) in rows.items():
        lines.append(f"| {name} | {latency * 1e3:.2f} | {base_latency / latency:.1f} | {throughput:.0f} | "
                     f"{throughput / base_throughput:.1f} | {flops * throughput / 1e9:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="trained and calibrated run folder")
    parser.add_argument("--export", help="finished export folder with every format (default: export now)")
    parser.add_argument("--out", help="markdown file to write (default: <run>/bench_export.md)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per runtime and batch size")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="least time spent timing each case")
    args = parser.parse_args(argv)

    import keras_ad
    from keras_ad.benchmark import flops_per_image, publish, timed
    from keras_ad.export import bundle, parity

    started = time.perf_counter()
    scorer = keras_ad.load(args.run)
    export_dir = args.export
    if export_dir is None:
        export_dir = os.path.join(tempfile.mkdtemp(prefix="keras_ad_bench-"), "export")
        bundle.export_run(args.run, quantize=("none", "fp16", "dynamic", "int8"), out_dir=export_dir)
    data = parity.load_parity_set(scorer.cfg)
    images = data.images[data.test_slice]
    images = np.stack([im for im in images if im.shape == images[0].shape][:8])
    if len(images) < 8:
        images = np.concatenate([images] * (8 // len(images) + 1))[:8]
    flops = flops_per_image(scorer, images.shape[1:])

    rows = {}
    for name, fn in runtimes(scorer, export_dir).items():
        latency = timed(fn, images[:1], args.repeats, args.min_seconds)
        throughput = 8 / timed(fn, images, max(args.repeats // 4, 3), args.min_seconds)
        rows[name] = (latency, throughput)
        print(f"{name:14s} {latency * 1e3:8.2f} ms/image at batch 1, {throughput:7.0f} images/s at batch 8",
              file=sys.stderr, flush=True)
    header = (f"Run `{scorer.cfg.run.dir}` ({scorer.cfg.detector.name}), input uint8 {images.shape[1]}x"
              f"{images.shape[2]}x{images.shape[3]} resized in-graph to {'x'.join(map(str, scorer.image_shape))}, "
              f"{flops / 1e6:.0f} MFLOP / image; {platform.processor() or platform.machine()}, "
              f"{THREADS} CPU threads; measured in one process in {time.perf_counter() - started:.0f} s.")
    table = markdown(rows, flops, header)
    publish(table, args.out or os.path.join(args.run, "bench_export.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
