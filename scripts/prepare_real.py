#!/usr/bin/env python
"""Turn a local copy of a public real-defect data set into the folder layouts keras_ad reads.

    python scripts/prepare_real.py elpv --source ~/src/elpv-dataset --out data/real
    python scripts/prepare_real.py mvtec_loco --source ~/data/mvtec_loco/juice_bottle --out data/real

What each set becomes, and the split rule (docs/data/real.md has the details and the licences):
- `elpv` (ELPV solar cells, CC BY-NC-SA 4.0: a clone of github.com/zae-bayern/elpv-dataset or its
  `src/elpv_dataset/data` folder): one `folder`-layout set per module type, `elpv_mono` and
  `elpv_poly`. Cells with defect probability 0 are good; a seeded `--test-fraction` of them goes to
  test/good, the rest to train/good. Probability 1 goes to test/defective, 2/3 to
  test/likely_defective, 1/3 (the experts' "probably fine") is left out. No masks: image labels only.
- `mvtec_loco` (one MVTec LOCO AD category, CC BY-NC-SA 4.0): an `mvtec`-layout set named after the
  category. train/good stays train/good; test/<defect> with its ground truth becomes test/<defect> and
  ground_truth/<defect>/<stem>_mask.png (the union of the image's masks, any non-zero pixel is
  defect). The category's validation/good images become test/good when the copy has no test/good
  (some public copies drop it), else they join train/good.

Files are copied unchanged (PNG in, PNG out); masks are rewritten as 0/255 PNGs. An existing output
category is never replaced: remove it first. The split depends on `--seed` only.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys

import numpy as np

ELPV_GOOD, ELPV_LIKELY, ELPV_DEFECTIVE = 0.0, 2 / 3, 1.0


class PrepareError(Exception):
    """A source folder that is not the data set it claims to be; the message says what is missing."""


def elpv_labels(source: str) -> tuple[str, list[tuple[str, float, str]]]:
    """(images folder's parent, [(relative image path, defect probability, module type)]) of an ELPV copy."""
    for folder in (source, os.path.join(source, "src", "elpv_dataset", "data")):
        labels = os.path.join(folder, "labels.csv")
        if os.path.isfile(labels):
            break
    else:
        raise PrepareError(f"{source}: no labels.csv (looked in it and in src/elpv_dataset/data); pass a clone "
                           f"of github.com/zae-bayern/elpv-dataset")
    rows = []
    with open(labels, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3:
                continue
            rows.append((parts[0], float(parts[1]), parts[2]))
    if not rows:
        raise PrepareError(f"{labels}: no 'path probability type' rows")
    return folder, rows


def split_good(paths: list[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, test): a seeded random `test_fraction` of `paths` (sorted first, so the file order on
    disk does not matter) is held out for testing."""
    paths = sorted(paths)
    order = np.random.default_rng(seed).permutation(len(paths))
    n_test = int(round(test_fraction * len(paths)))
    test = {paths[i] for i in order[:n_test]}
    return [p for p in paths if p not in test], [p for p in paths if p in test]


def prepare_elpv(source: str, out: str, test_fraction: float, seed: int, log=print) -> list[str]:
    folder, rows = elpv_labels(source)
    written = []
    for kind in sorted({r[2] for r in rows}):
        name = f"elpv_{kind}"
        target = _new_category(out, name)
        mine = [r for r in rows if r[2] == kind]
        good = [p for p, prob, _ in mine if np.isclose(prob, ELPV_GOOD)]
        train, test_good = split_good(good, test_fraction, seed)
        groups = {os.path.join("train", "good"): train, os.path.join("test", "good"): test_good,
                  os.path.join("test", "defective"): [p for p, prob, _ in mine if np.isclose(prob, ELPV_DEFECTIVE)],
                  os.path.join("test", "likely_defective"): [p for p, prob, _ in mine if np.isclose(prob, ELPV_LIKELY)]}
        for sub, paths in groups.items():
            _copy_all([os.path.join(folder, p) for p in paths], os.path.join(target, sub))
        log(f"{name}: " + ", ".join(f"{sub} {len(paths)}" for sub, paths in groups.items()))
        written.append(target)
    return written


def prepare_mvtec_loco(source: str, out: str, log=print) -> list[str]:
    source = os.path.abspath(source.rstrip(os.sep))
    train_good = os.path.join(source, "train", "good")
    if not os.path.isdir(train_good) or not os.path.isdir(os.path.join(source, "test")):
        raise PrepareError(f"{source}: expected one MVTec LOCO category (train/good, test/<defect>, ground_truth); "
                           f"pass e.g. .../juice_bottle")
    name = os.path.basename(source)
    target = _new_category(out, name)
    validation = _images(os.path.join(source, "validation", "good"))
    test_good = _images(os.path.join(source, "test", "good"))
    _copy_all(_images(train_good), os.path.join(target, "train", "good"))
    if test_good:
        _copy_all(test_good, os.path.join(target, "test", "good"))
        _copy_all(validation, os.path.join(target, "train", "good"), prefix="validation_")
    else:
        _copy_all(validation, os.path.join(target, "test", "good"))
    counts = {"train/good": len(os.listdir(os.path.join(target, "train", "good"))),
              "test/good": len(test_good or validation)}
    for defect in sorted(os.listdir(os.path.join(source, "test"))):
        folder = os.path.join(source, "test", defect)
        if defect == "good" or not os.path.isdir(folder):
            continue
        images = _images(folder)
        _copy_all(images, os.path.join(target, "test", defect))
        for image in images:
            stem = os.path.splitext(os.path.basename(image))[0]
            mask = _union_mask(os.path.join(source, "ground_truth", defect), stem, image)
            _save_mask(mask, os.path.join(target, "ground_truth", defect, f"{stem}_mask.png"))
        counts[f"test/{defect}"] = len(images)
    log(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return [target]


def _union_mask(ground_truth: str, stem: str, image_path: str) -> np.ndarray:
    """The image's defect mask: <stem>.png, <stem>_mask.png, or every PNG of the folder <stem>/ (the
    official LOCO layout, one file per defect region), any non-zero pixel being defect."""
    from PIL import Image

    candidates = [os.path.join(ground_truth, f"{stem}{suffix}") for suffix in (".png", "_mask.png")]
    folder = os.path.join(ground_truth, stem)
    files = [c for c in candidates if os.path.isfile(c)] or _images(folder)
    if not files:
        raise PrepareError(f"{image_path}: no ground truth in {ground_truth} ({stem}.png, {stem}_mask.png or {stem}/)")
    with Image.open(image_path) as im:
        size = im.size
    mask = np.zeros(size[::-1], bool)
    for path in files:
        with Image.open(path) as im:
            if im.size != size:
                raise PrepareError(f"{path}: mask is {im.size[0]}x{im.size[1]}, its image {size[0]}x{size[1]}")
            mask |= np.asarray(im.convert("L")) > 0
    return mask


def _save_mask(mask: np.ndarray, path: str):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def _images(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")) and not n.startswith("."))


def _copy_all(paths, folder, prefix=""):
    os.makedirs(folder, exist_ok=True)
    for path in paths:
        shutil.copyfile(path, os.path.join(folder, prefix + os.path.basename(path)))


def _new_category(out: str, name: str) -> str:
    target = os.path.join(out, name)
    if os.path.exists(target):
        raise PrepareError(f"{target}: exists; remove it or choose another --out (nothing is replaced)")
    return target


def write_manifest(out: str, rows: list[dict]):
    """<out>/prepared.csv: one line per prepared category, for the record."""
    path = os.path.join(out, "prepared.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["category", "kind", "source", "seed", "test_fraction"])
        if new:
            writer.writeheader()
        writer.writerows(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("elpv", "mvtec_loco"), help="which data set --source holds")
    parser.add_argument("--source", required=True, help="local clone or download of the data set")
    parser.add_argument("--out", required=True, help="folder that receives one sub-folder per category")
    parser.add_argument("--seed", type=int, default=0, help="seed of the good-image test split (elpv)")
    parser.add_argument("--test-fraction", type=float, default=0.25,
                        help="good images held out for testing (elpv; mvtec_loco keeps its own split)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.source):
        print(f"error: --source {args.source}: no such folder", file=sys.stderr)
        return 2
    if not 0.0 < args.test_fraction < 1.0:
        print(f"error: --test-fraction {args.test_fraction}: must be in (0, 1)", file=sys.stderr)
        return 2
    try:
        if args.kind == "elpv":
            written = prepare_elpv(args.source, args.out, args.test_fraction, args.seed)
        else:
            written = prepare_mvtec_loco(args.source, args.out)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_manifest(args.out, [{"category": os.path.basename(w), "kind": args.kind,
                               "source": os.path.abspath(args.source),
                               "seed": args.seed, "test_fraction": args.test_fraction} for w in written])
    return 0


if __name__ == "__main__":
    sys.exit(main())
