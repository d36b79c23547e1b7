#!/usr/bin/env python3
"""Training speed of each detector under train.precision float32, mixed_float16 and mixed_bfloat16.

    python scripts/bench_precision.py [--detectors cae,anogan,...] [--setting small|paper] [--seconds 10]
                                      [--set data.image_size=64 ...]

Builds each detector of `keras-ad bench`'s setting (its shipped config) in every precision and times
its own train_step (`train_on_batch` on random data of the config's shape, median after two warm-up
steps). Reports steps/s and the speed-up over float32 measured side by side in this run: on a GPU with
tensor cores the 16-bit policies are the point; on a CPU they show what it costs to leave them on.
"""

from __future__ import annotations

import argparse
import os

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def steps_per_second(cfg, precision, seconds):
    import keras

    from keras_ad import benchmark, detectors

    keras.utils.set_random_seed(0)
    return benchmark.train_steps_per_second(detectors.build(cfg, precision), cfg, 3, seconds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", default="cae,anogan,ganomaly2d,piad,lntra")
    parser.add_argument("--setting", default="small", choices=("small", "paper"))
    parser.add_argument("--seconds", type=float, default=10.0, help="timing per detector and precision")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every detector, e.g. data.image_size=64")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_ad import benchmark, config

    print(f"| detector ({args.setting}) | " + " | ".join(f"{p} steps/s" for p in PRECISIONS)
          + " | float16 / float32 | bfloat16 / float32 |")
    print("|---" * (len(PRECISIONS) + 3) + "|")
    for name in args.detectors.split(","):
        file, overrides = benchmark.SETTINGS[name][args.setting]
        cfg = config.load(os.path.join(benchmark.CONFIGS, file), (*overrides, *args.set))
        speed = {p: steps_per_second(cfg, p, args.seconds) for p in PRECISIONS}
        print(f"| {name} ({file}) | " + " | ".join(f"{speed[p]:.2f}" for p in PRECISIONS)
              + f" | {speed['mixed_float16'] / speed['float32']:.2f}x | "
                f"{speed['mixed_bfloat16'] / speed['float32']:.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
