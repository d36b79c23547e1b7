#!/usr/bin/env python3
"""Keras' own Adam and batch norm against keras_ad's fused ones, side by side on each detector's training step.

    python scripts/bench_fused_ops.py [--detectors cae,anogan,ganomaly2d,piad,lntra] [--setting small]
                                      [--repeats 2] [--out bench_fused_ops.md]

Each detector is built from a shipped config of `keras-ad bench` (untrained, random data of the config's
shape, PIAD's VGG19 random) in two forms: as keras_ad trains it, with FusedAdam and the fused
BatchNormalization (docs/stack.md#5-fused-adam, #5-fused-batch-norm), and with Keras' own: keras.optimizers.Adam
of the same settings and batch norm with `fused=False`. For each form: the ops of the traced training step,
the first `train_on_batch` (tracing, graph optimisation and one step: what every `fit` pays first) and the
steps/s after it. The forms alternate, `--repeats` fresh models each, and the table keeps each one's fastest
first step and steps/s, with the ratios Keras / keras_ad.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

DETECTORS = ("cae", "anogan", "ganomaly2d", "piad", "lntra")  # PatchCore trains no weights


def build(detector, setting, fused):
    """(model compiled for its first phase, its config); `fused=False`: Keras' Adam and batch norm."""
    import keras

    from keras_ad.benchmark import build_setting, compile_first_phase
    from keras_ad.detectors.blocks import BatchNormalization

    model, cfg = build_setting(detector, setting)
    compile_first_phase(model, cfg)
    if not fused:
        for layer in model._flatten_layers():
            if isinstance(layer, BatchNormalization):
                layer.fused = False
        settings = {name: getattr(model, name).get_config() for name in model.optimizer_variables()}
        model.install_optimizers(lambda name: keras.optimizers.Adam.from_config(settings[name]))
    return model, cfg


def measure(detector, setting, fused, min_seconds):
    """(ops in the training step's graph, seconds of the first train_on_batch, steps/s after it)."""
    import tensorflow as tf

    from keras_ad.benchmark import timed, training_batch
    from keras_ad.tracing import graph_function

    model, cfg = build(detector, setting, fused)
    batch = training_batch(model, cfg)
    started = time.perf_counter()
    model.train_on_batch(batch)
    first = time.perf_counter() - started
    steps = 1.0 / timed(lambda x: model.train_on_batch(x), batch, 3, min_seconds)
    step = graph_function(model.train_step).get_concrete_function(tf.TensorSpec(batch.shape, tf.float32))
    return len(step.graph.get_operations()), first, steps


def markdown(rows, header) -> str:
    lines = [header, "",
             "| detector | step ops: Keras | keras_ad | first step s: Keras | keras_ad | × | steps/s: Keras | "
             "keras_ad | × |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (keras_ops, keras_first, keras_steps), (ops, first, steps) in rows:
        lines.append(f"| {name} | {keras_ops} | {ops} | {keras_first:.2f} | {first:.2f} | {keras_first / first:.2f} | "
                     f"{keras_steps:.1f} | {steps:.1f} | {steps / keras_steps:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", default=",".join(DETECTORS), help="comma-separated, of " + ", ".join(DETECTORS))
    parser.add_argument("--setting", default="small", choices=("small", "paper"), help="which shipped config")
    parser.add_argument("--repeats", type=int, default=2, help="fresh models per form and detector")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="least time timing each form's steps/s")
    parser.add_argument("--out", default="bench_fused_ops.md", help="markdown file to write")
    args = parser.parse_args(argv)
    names = args.detectors.split(",")
    unknown = [n for n in names if n not in DETECTORS]
    if unknown or args.repeats < 1:
        parser.error(f"--detectors: choose from {', '.join(DETECTORS)}" if unknown else "--repeats must be >= 1")

    from keras_ad.benchmark import publish

    started = time.perf_counter()
    rows = []
    for name in names:
        best = {}
        for _ in range(args.repeats):
            for fused in (False, True):
                ops, first, steps = measure(name, args.setting, fused, args.min_seconds)
                old = best.get(fused, (ops, first, 0.0))
                best[fused] = (ops, min(first, old[1]), max(steps, old[2]))
                print(f"{name} {'keras_ad' if fused else 'Keras':8s} {ops:6d} ops, first step {first:.2f} s, "
                      f"{steps:.1f} steps/s", file=sys.stderr, flush=True)
        rows.append((name, best[False], best[True]))
    header = (f"Training steps of the `{args.setting}` configs of `keras-ad bench`, Keras' Adam and batch norm against "
              f"keras_ad's fused ones; {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads; "
              f"best of {args.repeats}, measured in one process in {time.perf_counter() - started:.0f} s.")
    publish(markdown(rows, header), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
