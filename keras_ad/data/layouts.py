"""Finding the files of a data set on disk: which images train, validate and test, and their masks.

Two layouts (README, "Data layouts"):
- `mvtec`:  <root>/<category>/{train/good, test/<defect|good>, ground_truth/<defect>/<stem>_mask.png};
            every defective test image must have a mask.
- `folder`: <root>/{train/good, test/good, test/<anything else>}; masks optional, same naming as MVTec.
A root of the form `synthetic:<category>` generates the built-in demo data set (cached) first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from keras_ad.data.images import list_images
from keras_ad.errors import DataError

GOOD = "good"


@dataclass(frozen=True)
class TestSample:
    path: str
    defect: str  # "good" or the defect folder name
    mask_path: str | None

    @property
    def label(self) -> int:
        return int(self.defect != GOOD)


@dataclass
class DatasetFiles:
    """The file lists of one data set, split as training uses them."""

    root: str
    train: list[str]
    val: list[str]
    test: list[TestSample] = field(default_factory=list)


def resolve_root(data_cfg) -> str:
    """The folder that holds train/ and test/ for this config (generating the demo data if asked)."""
    root = data_cfg.root
    if root.startswith("synthetic:"):
        from keras_ad.data import synthetic

        return synthetic.ensure(root.split(":", 1)[1])
    root = os.path.expanduser(root)
    if data_cfg.layout == "mvtec" and data_cfg.category:
        root = os.path.join(root, data_cfg.category)
    if not os.path.isdir(root):
        hint = " (see scripts/download_mvtec.py)" if data_cfg.layout == "mvtec" else ""
        raise DataError(f"{root}: data folder not found; set data.root (and data.category) to your data set{hint}")
    return root


def discover(data_cfg, seed: int = 0, need_test: bool = True) -> DatasetFiles:
    """List the data set's files and split train/good into train and a seeded random validation part."""
    root = resolve_root(data_cfg)
    good_dir = os.path.join(root, "train", GOOD)
    if not os.path.isdir(good_dir):
        raise DataError(f"{good_dir}: missing; a data set needs train/good with normal images "
                        f"(layout {data_cfg.layout}, see README 'Data layouts')")
    good = list_images(good_dir)
    if not good:
        raise DataError(f"{good_dir}: no images (.png, .jpg, .bmp, .tif) found; put the normal training images here")
    train, val = split_validation(good, data_cfg.val_fraction, seed)
    test = _discover_test(root, data_cfg.layout) if need_test else []
    return DatasetFiles(root=root, train=train, val=val, test=test)


def split_validation(paths, fraction, seed):
    """Seeded random split; at least one validation image whenever fraction > 0 and two images exist."""
    if fraction <= 0 or len(paths) < 2:
        return list(paths), []
    n_val = min(len(paths) - 1, max(1, int(round(fraction * len(paths)))))
    order = np.random.default_rng(seed).permutation(len(paths))
    val_idx = set(order[:n_val].tolist())
    return ([p for i, p in enumerate(paths) if i not in val_idx],
            [p for i, p in enumerate(paths) if i in val_idx])


def _discover_test(root, layout):
    test_dir = os.path.join(root, "test")
    if not os.path.isdir(test_dir):
        raise DataError(f"{test_dir}: missing; evaluation needs test/good and test/<defect> folders")
    samples = []
    for defect in sorted(os.listdir(test_dir)):
        folder = os.path.join(test_dir, defect)
        if not os.path.isdir(folder):
            continue
        for path in list_images(folder):
            samples.append(TestSample(path, defect, _mask_for(root, defect, path, layout)))
    if not samples:
        raise DataError(f"{test_dir}: no test images; put normal ones in test/good and defective ones in test/<defect>")
    return samples


def _mask_for(root, defect, image_path, layout):
    if defect == GOOD:
        return None
    stem = os.path.splitext(os.path.basename(image_path))[0]
    mask = os.path.join(root, "ground_truth", defect, f"{stem}_mask.png")
    if os.path.isfile(mask):
        return mask
    if layout == "mvtec":
        raise DataError(f"{mask}: missing ground-truth mask for {image_path}; the mvtec layout needs one "
                        f"per defective image (use data.layout: folder if you have no masks)")
    return None
