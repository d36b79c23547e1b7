#!/usr/bin/env python
"""PatchCore on a device: scoring latency and AUROC against the memory bank's size, measured in one run.

    python scripts/bench_patchcore.py [--config configs/patchcore_demo.yaml] [--sizes 500,1000,2000,10000]
                                      [--runs runs/bench_patchcore] [--out bench_patchcore.md]

For each `detector.memory_bank_size` the config is fitted (one feature pass), calibrated, evaluated and
exported (TFLite fp32 and int8, ONNX; the export's parity check runs as always); the table gives the
unique coreset rows, the Keras image and pixel AUROC, the int8 TFLite's image AUROC (from the export
report, scored on the same test images), and the per-image latency at batch 1 of TFLite fp32, TFLite
int8 and ONNX Runtime on this machine's CPU threads (median of repeated calls on one test image).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
ARTEFACTS = {"TFLite fp32": "model_fp32.tflite", "TFLite int8": "model_int8.tflite", "ONNX": "model.onnx"}


def measure(config_path, size, runs, overrides) -> dict:
    """Fit, evaluate and export one bank size; its row of the table."""
    import numpy as np

    from keras_ad import benchmark
    from keras_ad.cli import main
    from keras_ad.export import device, parity

    run = os.path.join(runs, f"bank{size}")
    out = os.path.join(runs, f"bank{size}_export")
    sets = [f"detector.memory_bank_size={size}", f"run.dir={run}", *overrides]
    for args in (["train", "--config", config_path, "--overwrite", *[a for s in sets for a in ("--set", s)]],
                 ["export", "--run", run, "--format", "tflite,onnx", "--quantize", "none,int8", "--out", out,
                  "--overwrite"]):
        try:
            main(args, standalone_mode=False)
        except SystemExit as e:  # a failed parity check exits 1 after writing its report: keep the row
            if e.code not in (None, 0, 1):
                raise RuntimeError(f"keras-ad {args[0]} exited with {e.code}") from None
    with open(os.path.join(run, "report.json")) as f:
        report = json.load(f)
    with open(os.path.join(out, "export_report.json")) as f:
        exported = json.load(f)
    import keras_ad

    image = np.stack(parity.load_parity_set(keras_ad.load(run).cfg).images[-1:])
    latency = {name: benchmark.timed(device.DeviceScorer(os.path.join(out, file), num_threads=os.cpu_count()),
                                     image, 20, 2.0) for name, file in ARTEFACTS.items()}
    int8 = exported["artefacts"]["model_int8.tflite"]
    return {"bank_size": size, "unique_rows": int(keras_ad.load(run).detector.unique_rows.numpy()),
            "image_auroc": report["image_auroc"], "pixel_auroc": report["pixel_auroc"],
            "int8_image_auroc": int8["image_auroc"], "int8_passed": int8["passed"],
            "latency_ms": {k: v * 1e3 for k, v in latency.items()}}


def markdown(rows, header) -> str:
    lines = [header, "", "| memory_bank_size | coreset rows | image AUROC | pixel AUROC | int8 image AUROC | "
             + " | ".join(f"{name} ms" for name in ARTEFACTS) + " |",
             "|---:|---:|---:|---:|---:|" + "---:|" * len(ARTEFACTS)]
    for r in rows:
        lines.append(f"| {r['bank_size']} | {r['unique_rows']} | {r['image_auroc']:.4f} | {r['pixel_auroc']:.4f} | "
                     f"{r['int8_image_auroc']:.4f}{'' if r['int8_passed'] else ' (check failed)'} | "
                     + " | ".join(f"{r['latency_ms'][name]:.1f}" for name in ARTEFACTS) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "patchcore_demo.yaml"))
    parser.add_argument("--sizes", default="500,1000,2000,10000", help="memory_bank_size values")
    parser.add_argument("--runs", default="runs/bench_patchcore")
    parser.add_argument("--out", default="bench_patchcore.md")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        print(f"error: --sizes {args.sizes}: give comma-separated integers, e.g. 500,1000", file=sys.stderr)
        return 2
    if not os.path.isfile(args.config):
        print(f"error: --config {args.config}: no such file", file=sys.stderr)
        return 2
    rows = []
    for size in sizes:
        print(f"memory_bank_size {size}: fitting, evaluating, exporting ...", file=sys.stderr, flush=True)
        rows.append(measure(args.config, size, args.runs, args.overrides))
    header = (f"PatchCore ({os.path.relpath(args.config, REPO)}) against its bank size on "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads; latency: one uint8 "
              f"test image, batch 1, pre-processing to decision (`python scripts/bench_patchcore.py`).")
    table = markdown(rows, header)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
