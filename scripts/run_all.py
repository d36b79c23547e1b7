#!/usr/bin/env python3
"""PIAD's benchmark tables: every data set x normal class x run, ROC AUC mean ± std over runs (docs/methods/piad.md#1f).

    python scripts/run_all.py [--datasets mnist,cifar10] [--runs 3] [--out runs/piad_all]
                              [--classes 0,1] [--set detector.perceptual_weights=vgg19.weights.h5 ...]

Each run is `keras-ad train --config configs/piad_<dataset>.yaml` with its normal class, train.seed =
the run index and run.dir = <out>/<dataset>/<class>/run<k>; --set is passed on to every run. The
script is resumable: a run with a report.json is skipped, an interrupted one resumes from its last
checkpoint. CelebA gives one AUROC per attribute (its single normal class, report.json's per_defect),
LSUN a single one. --datasets ablation_cifar10_pixel_l2 (and _pixel_l2_manual, _perceptual_l1,
_perceptual_l2) runs the paper's loss ablation. Writes <out>/results.md and <out>/results.json after every run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
COIL100_CLASSES = ("79", "48", "65", "98", "73", "13", "14", "39", "57", "28", "42", "75", "44", "24", "82",
                   "56", "7", "47", "68", "30", "33", "90", "70", "87", "12", "91", "4", "22", "71", "55")  # run_all.py
DATASETS = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                      "ankle_boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "coil100": list(COIL100_CLASSES),
    "celeba": ["normal"],
    "lsun": ["normal"],
}
# the loss ablation on CIFAR-10 (docs/methods/piad.md#1c): configs/piad_ablation_cifar10_<variant>.yaml, not run by
# default
DATASETS.update({f"ablation_cifar10_{variant}": DATASETS["cifar10"]
                 for variant in ("perceptual_l1", "perceptual_l2", "pixel_l2", "pixel_l2_manual")})
PER_DEFECT = {"celeba"}  # one AUROC per anomaly class of a single run


def run_dir(out, dataset, normal_class, k):
    return os.path.join(out, dataset, normal_class, f"run{k}")


def train_one(dataset, normal_class, k, out, overrides):
    """Train + evaluate one run through the CLI (resuming a half-done one); returns its report.json."""
    from keras_ad.cli import main

    folder = run_dir(out, dataset, normal_class, k)
    report = os.path.join(folder, "report.json")
    if not os.path.isfile(report):
        sets = [f"data.normal_class={normal_class}", f"train.seed={k}", f"run.dir={folder}", *overrides]
        args = ["train", "--config", os.path.join(REPO, "configs", f"piad_{dataset}.yaml")]
        args += [a for s in sets for a in ("--set", s)]
        if glob.glob(os.path.join(folder, "checkpoints", "*", "state.json")):
            args.append("--resume")
        elif os.path.isdir(folder):
            args.append("--overwrite")  # a run stopped before its first checkpoint: nothing to keep
        try:
            main(args, standalone_mode=False)
        except SystemExit as e:  # the CLI's usage errors (printed already) and interrupts
            if e.code not in (None, 0):
                raise RuntimeError(f"{folder}: keras-ad train exited with {e.code}") from None
        if not os.path.isfile(report):
            raise RuntimeError(f"{folder}: no report.json after training; see the run's logs")
    with open(report) as f:
        return json.load(f)


def aurocs(dataset, report):
    """{column: AUROC} of one run: the image AUROC, or one per attribute for CelebA."""
    if dataset in PER_DEFECT:
        return {name: r["image_auroc"] for name, r in report["per_defect"].items()}
    return {"image_auroc": report["image_auroc"]}


def summarise(results):
    """results[dataset][class][run] = {column: auroc} -> rows of mean ± std over the runs."""
    table = {}
    for dataset, classes in results.items():
        rows = {}
        for normal_class, runs in classes.items():
            for column in sorted({c for r in runs.values() for c in r}):
                values = [r[column] for r in runs.values() if column in r]
                name = normal_class if column == "image_auroc" else column
                rows[name] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "runs": len(values)}
        if rows:
            means = [r["mean"] for r in rows.values()]
            rows["mean"] = {"mean": float(np.mean(means)), "std": float(np.std(means)), "runs": len(means)}
        table[dataset] = rows
    return table


def markdown(table) -> str:
    lines = ["# PIAD one-class ROC AUC (mean ± std over runs; the 'mean' row: over classes)", ""]
    for dataset, rows in table.items():
        lines += [f"## {dataset}", "", "| normal class | ROC AUC | runs |", "|---|---|---|"]
        lines += [f"| {name} | {r['mean']:.4f} ± {r['std']:.4f} | {r['runs']} |" for name, r in rows.items()]
        lines.append("")
    return "\n".join(lines)


def write_tables(out, results):
    table = summarise(results)
    os.makedirs(out, exist_ok=True)
    for name, text in (("results.json", json.dumps({"runs": results, "table": table}, indent=2)),
                       ("results.md", markdown(table))):
        with open(os.path.join(out, name + ".tmp"), "w") as f:
            f.write(text)
        os.replace(os.path.join(out, name + ".tmp"), os.path.join(out, name))
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="mnist,fashion_mnist,cifar10,coil100,celeba,lsun")
    parser.add_argument("--runs", type=int, default=3, help="runs per class, seeds 0..runs-1 (the paper: 3)")
    parser.add_argument("--classes", help="normal classes to run (default: every class of the data set)")
    parser.add_argument("--out", default="runs/piad_all")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="passed on to every run, e.g. detector.perceptual_weights=vgg19.weights.h5")
    args = parser.parse_args(argv)
    datasets = args.datasets.split(",")
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown or args.runs < 1:
        problem = f"--datasets: {', '.join(unknown)} unknown; choose from {', '.join(DATASETS)}" if unknown \
            else "--runs: needs at least 1"
        print(f"error: {problem}", file=sys.stderr)
        return 2
    results = {d: {} for d in datasets}
    for dataset in datasets:
        classes = args.classes.split(",") if args.classes else DATASETS[dataset]
        for normal_class in classes:
            for k in range(args.runs):
                try:
                    report = train_one(dataset, normal_class, k, args.out, args.overrides)
                except Exception as e:  # keep the table of what finished; the next call resumes
                    write_tables(args.out, results)
                    print(f"error: {dataset} class {normal_class} run {k}: {str(e).splitlines()[0]}", file=sys.stderr)
                    return 1
                results[dataset].setdefault(normal_class, {})[str(k)] = aurocs(dataset, report)
                write_tables(args.out, results)
                print(f"{dataset} {normal_class} run {k}: {aurocs(dataset, report)}", flush=True)
    print(markdown(write_tables(args.out, results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
