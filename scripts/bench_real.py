#!/usr/bin/env python
"""The real-data benchmark: every image detector's recommended config on real defect sets, against a
per-pixel Gaussian baseline measured in the same run.

    python scripts/prepare_real.py elpv --source ~/src/elpv-dataset --out data/real      # once per set
    python scripts/bench_real.py --data data/real [--sets elpv_mono,juice_bottle] [--detectors cae,piad]
                                 [--runs runs/bench_real] [--out bench_real.md] [--set key=value ...]

Each set is a sub-folder of --data in the mvtec layout (with ground_truth/) or the folder layout.
Each detector trains with `configs/<detector>_folder.yaml` unchanged but for data.root, the layout,
the channels (grey when the training images are) and data.image_size, whose short side is the
config's and whose long side follows the set's aspect ratio, rounded to what the architecture takes
(docs/protocol.md#image-size); --set applies to every run. The training budget is the config's
(train.augmented_images or train.epochs). Finished runs (their report.json) are reused.

The baseline: the mean and standard deviation of every pixel and channel of the good training images,
after the same pre-processing as `cae` (size and channels); the map is the channel mean of
|x - mean| / (std + 0.01) (0.01: 2.5 grey levels, so pixels that never vary do not divide by ~0), the
image score its maximum. Writes --out (markdown) and <--out>.json; prints progress and the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
DETECTORS = ("cae", "ganomaly2d", "anogan", "piad", "patchcore")
BASELINE = "per-pixel Gaussian"
BASELINE_STD_FLOOR = 0.01
COLUMNS = ("image_auroc", "pixel_auroc", "aupro", "f1_max")


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the sets
def describe_set(data_dir: str, name: str) -> dict:
    """Layout, root/category, channels and aspect ratio (height / width) of one prepared set."""
    from PIL import Image

    from keras_ad.data.images import list_images

    folder = os.path.join(data_dir, name)
    train = list_images(os.path.join(folder, "train", "good"))
    if not train:
        raise ValueError(f"{folder}/train/good: no images; prepare the set first (scripts/prepare_real.py)")
    with Image.open(train[0]) as im:
        width, height = im.size
        grey = im.mode in ("L", "I;16", "I", "F", "1")
    if os.path.isdir(os.path.join(folder, "ground_truth")):
        data = {"layout": "mvtec", "root": os.path.abspath(data_dir), "category": name}
    else:
        data = {"layout": "folder", "root": os.path.abspath(folder)}
    return {"name": name, "data": data, "channels": 1 if grey else 3, "aspect": height / width}


def fit_shape(detector: str, short_side: int, aspect: float) -> list[int]:
    """[height, width] with the config's short side and the set's aspect ratio, the long side rounded to
    the architecture's rule: powers of two (cae), multiples of 16 (ganomaly2d, anogan, patchcore); piad is
    square."""
    if detector == "piad" or math.isclose(aspect, 1.0, rel_tol=0.05):
        return [short_side, short_side]
    long_side = short_side * max(aspect, 1 / aspect)
    if detector == "cae":
        long_side = 2 ** round(math.log2(long_side))
    else:
        long_side = max(16, 16 * round(long_side / 16))
    return [long_side, short_side] if aspect > 1 else [short_side, long_side]


def detector_overrides(detector: str, described: dict, short_side: int | None) -> list[str]:
    from keras_ad import config

    cfg = config.load(config_path(detector))
    side = short_side or min(cfg.data.image_shape)
    shape = fit_shape(detector, side, described["aspect"])
    data = {**described["data"], "channels": described["channels"], "image_size": json.dumps(shape)}
    if described["data"]["layout"] == "folder":
        data["category"] = "null"
    return [f"data.{k}={v}" for k, v in data.items()]


def config_path(detector: str) -> str:
    return os.path.join(REPO, "configs", f"{detector}_folder.yaml")


# ---------------------------------------------------------------- the baseline
def gaussian_baseline(cfg, files) -> dict:
    """Metrics and timings of the per-pixel Gaussian on the test split (see the module docstring)."""
    from keras_ad import metrics
    from keras_ad.data import pipeline

    train, _, _ = pipeline.load_images(files.train + files.val, cfg.data, "baseline training images")
    started = time.perf_counter()
    mean, std = train.mean(axis=0), train.std(axis=0) + BASELINE_STD_FLOOR
    fit_minutes = (time.perf_counter() - started) / 60
    test = pipeline.load_test_set(files, cfg.data)
    started = time.perf_counter()
    maps = (np.abs(test["images"] - mean) / std).mean(axis=-1)
    scores = maps.reshape(len(maps), -1).max(axis=1)
    seconds = time.perf_counter() - started
    summary = metrics.summary(test["labels"], scores, test["masks"], maps, test["has_mask"],
                              cfg.evaluate.pro_fpr_limit)
    return {**{k: summary[k] for k in COLUMNS}, "train_minutes": fit_minutes,
            "images_per_s": len(maps) / max(seconds, 1e-9), "image_size": list(cfg.data.image_shape)}


# ---------------------------------------------------------------- one detector
def run_detector(detector: str, described: dict, runs: str, overrides: list[str]) -> dict:
    """Train (or reuse) one run, then time the scoring of its test split; its row of the table."""
    import keras_ad
    from keras_ad.cli import main
    from keras_ad.data import layouts, pipeline

    folder = os.path.join(runs, described["name"], detector)
    record = os.path.join(folder, "bench_real.json")
    if not os.path.isfile(record):
        args = ["train", "--config", config_path(detector), "--set", f"run.dir={folder}"]
        args += [a for s in overrides for a in ("--set", s)]
        if os.path.isdir(os.path.join(folder, "checkpoints")):
            args.append("--resume")
        elif os.path.isdir(folder):
            args.append("--overwrite")  # a start that failed before its first checkpoint
        started = time.perf_counter()
        try:
            main(args, standalone_mode=False)
        except SystemExit as e:
            if e.code not in (None, 0):
                raise RuntimeError(f"{folder}: keras-ad train exited with {e.code}") from None
        with open(record, "w") as f:
            json.dump({"train_minutes": (time.perf_counter() - started) / 60}, f)
    with open(os.path.join(folder, "report.json")) as f:
        report = json.load(f)
    with open(record) as f:
        minutes = json.load(f)["train_minutes"]
    scorer = keras_ad.load(folder)
    test = pipeline.load_test_set(layouts.discover(scorer.cfg.data, seed=scorer.cfg.train.seed), scorer.cfg.data)
    scorer.score_preprocessed(test["images"][:scorer.batch_size])  # trace once, outside the timing
    started = time.perf_counter()
    scorer.score_preprocessed(test["images"])
    speed = len(test["images"]) / (time.perf_counter() - started)
    return {**{k: report.get(k) for k in COLUMNS}, "train_minutes": minutes, "images_per_s": speed,
            "image_size": list(scorer.cfg.data.image_shape), "run": folder}


# ---------------------------------------------------------------- the table
def _cell(value, digits=3):
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown(results: dict, header: str) -> str:
    lines = [header, "", "| set | method | input | image AUROC | pixel AUROC | AUPRO | F1-max | training min | "
             "scoring images/s |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, rows in results.items():
        for method, r in rows.items():
            size = "x".join(map(str, r["image_size"]))
            lines.append(f"| {name} | {method} | {size} | " + " | ".join(_cell(r[k]) for k in COLUMNS) +
                         f" | {_cell(r['train_minutes'], 1)} | {_cell(r['images_per_s'], 1)} |")
    return "\n".join(lines) + "\n"


def write(out: str, results: dict, header: str) -> str:
    from keras_ad.runs import atomic_write

    table = markdown(results, header)
    atomic_write(out, table)
    atomic_write(out + ".json", json.dumps(results, indent=2, default=float) + "\n")
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder of prepared sets (scripts/prepare_real.py)")
    parser.add_argument("--sets", help="comma-separated sub-folders of --data (default: every one)")
    parser.add_argument("--detectors", default=",".join(DETECTORS))
    parser.add_argument("--runs", default="runs/bench_real", help="where the runs go (<runs>/<set>/<detector>)")
    parser.add_argument("--out", default="bench_real.md")
    parser.add_argument("--short-side", type=int, help="override every config's short image side (smoke tests)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="a config override for every run")
    args = parser.parse_args(argv)
    detectors = [d for d in args.detectors.split(",") if d]
    unknown = [d for d in detectors if not os.path.isfile(config_path(d))]
    if unknown:
        print(f"error: --detectors: no configs/<name>_folder.yaml for {', '.join(unknown)}; choose from "
              f"{', '.join(DETECTORS)}", file=sys.stderr)
        return 2
    if not os.path.isdir(args.data):
        print(f"error: --data {args.data}: no such folder; prepare the sets with scripts/prepare_real.py",
              file=sys.stderr)
        return 2
    names = args.sets.split(",") if args.sets else sorted(
        n for n in os.listdir(args.data) if os.path.isdir(os.path.join(args.data, n, "train", "good")))
    try:
        sets = [describe_set(args.data, n) for n in names]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not sets:
        print(f"error: --data {args.data}: no prepared sets (sub-folders with train/good)", file=sys.stderr)
        return 2

    import platform

    from keras_ad import config
    from keras_ad.data import layouts

    header = (f"Real-data benchmark on {platform.processor() or platform.machine()} ({os.cpu_count()} CPU threads): "
              f"each detector's configs/<detector>_folder.yaml, its own training budget; the baseline is a "
              f"per-pixel Gaussian of the good training images at the cae's input size.")
    results, started = {}, time.perf_counter()
    total, done = len(sets) * (len(detectors) + 1), 0
    for described in sets:
        rows = results.setdefault(described["name"], {})
        base_overrides = detector_overrides("cae", described, args.short_side) + args.overrides
        cfg = config.load(config_path("cae"), base_overrides)
        done += 1
        log(f"[{done}/{total}] {described['name']} / {BASELINE} ...")
        rows[BASELINE] = gaussian_baseline(cfg, layouts.discover(cfg.data, seed=cfg.train.seed))
        for detector in detectors:
            done += 1
            log(f"[{done}/{total}] {described['name']} / {detector}: training with configs/{detector}_folder.yaml "
                f"({time.perf_counter() - started:.0f} s so far) ...")
            overrides = detector_overrides(detector, described, args.short_side) + args.overrides
            try:
                rows[detector] = run_detector(detector, described, args.runs, overrides)
            except Exception as e:  # keep what finished; a rerun reuses it
                write(args.out, results, header)
                print(f"error: {described['name']} / {detector}: {str(e).splitlines()[0]}", file=sys.stderr)
                return 1
            write(args.out, results, header)
    print(write(args.out, results, header + f" Total {(time.perf_counter() - started) / 60:.0f} min."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
