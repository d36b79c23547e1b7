"""Finding the files of a data set on disk: which images train, validate and test, and their masks.

Four layouts (README, "Data layouts"):
- `mvtec`:  <root>/<category>/{train/good, test/<defect|good>, ground_truth/<defect>/<stem>_mask.png};
            every defective test image must have a mask.
- `folder`: <root>/{train/good, test/good, test/<anything else>}; masks optional, same naming as MVTec.
- `normal_abnormal`: <root>/{normal, abnormal} (GANomaly2D's frames of one scene, docs/methods/ganomaly.md#42).
- `one_class`: <root>/<class>/ for every class, one of them `data.abnormal_class` (GANomaly's
            leave-one-class-out protocol, docs/methods/ganomaly.md#41).
The last two have no test split: a seeded `data.test_fraction` of the normal images and every
abnormal image form it; no masks.
The `video` layout (frame folders of videos, LNTRA) is keras_ad.data.video's.
A root of the form `synthetic:<category>` generates the built-in demo data set (cached) first
(`synthetic:video`: the demo video set, keras_ad.data.synthetic_video);
`data.source` (one_class) writes a labelled set's class folders once (keras_ad.data.sources).
Every folder is filtered with `data.pattern` (e.g. `*.jpg`, AnoGAN's --input_fname_pattern, docs/methods/anogan.md#2a).
"""

from __future__ import annotations

import fnmatch
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
    monitor: list[TestSample] = field(default_factory=list)  # labelled, held out of test (data.monitor_fraction)


def resolve_root(data_cfg) -> str:
    """The folder that holds train/ and test/ (or the class folders) for this config, generating the demo
    data or writing data.source's class folders first if asked."""
    if data_cfg.source:
        from keras_ad.data import sources

        return sources.materialise(data_cfg.source)
    root = data_cfg.root
    if root == "synthetic:video":
        from keras_ad.data import synthetic_video

        return synthetic_video.ensure()
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
    """List the data set's files and split train/good into train and a seeded random validation part, and
    the test split into test and the labelled monitoring part of data.monitor_fraction."""
    files = _discover(data_cfg, seed, need_test)
    if data_cfg.monitor_fraction and files.test:
        files.test, files.monitor = hold_out(files.test, data_cfg.monitor_fraction, seed + 3)
    return files


def hold_out(samples, fraction, seed) -> tuple[list, list]:
    """(kept, held out): a seeded `fraction` of each kind (good and every defect type), file order kept."""
    held = set()
    for kind in sorted({s.defect for s in samples}):
        paths = [s.path for s in samples if s.defect == kind]
        held.update(split_validation(paths, fraction, seed)[1])
    return [s for s in samples if s.path not in held], [s for s in samples if s.path in held]


def _discover(data_cfg, seed, need_test) -> DatasetFiles:
    root = resolve_root(data_cfg)
    if data_cfg.layout in ("normal_abnormal", "one_class"):
        return _discover_unsplit(root, data_cfg, seed, need_test)
    good_dir = os.path.join(root, "train", GOOD)
    if not os.path.isdir(good_dir):
        raise DataError(f"{good_dir}: missing; a data set needs train/good with normal images "
                        f"(layout {data_cfg.layout}, see README 'Data layouts')")
    good = _images(good_dir, data_cfg.pattern)
    if not good:
        raise DataError(f"{good_dir}: no images (.png, .jpg, .bmp, .tif) matching {data_cfg.pattern!r} found; "
                        f"put the normal training images here (or change data.pattern)")
    train, val = split_validation(good, data_cfg.val_fraction, seed)
    test = _discover_test(root, data_cfg.layout, data_cfg.pattern) if need_test else []
    return DatasetFiles(root=root, train=train, val=val, test=test)


def has_test_split(data_cfg) -> bool:
    """Whether the data set holds test images (training checks them before its first step)."""
    return data_cfg.layout in ("normal_abnormal", "one_class") or os.path.isdir(
        os.path.join(resolve_root(data_cfg), "test"))


def _images(folder, pattern="*"):
    """The image files of `folder` whose names match `pattern`, sorted."""
    return [p for p in list_images(folder) if fnmatch.fnmatch(os.path.basename(p), pattern)]


ABNORMAL = "abnormal"


def _discover_unsplit(root, data_cfg, seed, need_test):
    """normal_abnormal / one_class: normal images -> train, validation and test; abnormal -> test."""
    if data_cfg.layout == "one_class" and data_cfg.normal_class:
        return _discover_one_normal_class(root, data_cfg, seed, need_test)
    if data_cfg.layout == "normal_abnormal":
        normal_dirs, abnormal_dir = [os.path.join(root, "normal")], os.path.join(root, ABNORMAL)
    else:
        classes = _class_folders(root)
        if data_cfg.abnormal_class not in classes:
            raise DataError(f"{root}: no class folder {data_cfg.abnormal_class!r} (data.abnormal_class); "
                            f"found {', '.join(classes) or 'none'}")
        normal_dirs = [os.path.join(root, c) for c in classes if c != data_cfg.abnormal_class]
        abnormal_dir = os.path.join(root, data_cfg.abnormal_class)
    for folder in normal_dirs + [abnormal_dir]:
        if not os.path.isdir(folder):
            raise DataError(f"{folder}: missing; the {data_cfg.layout} layout needs it (see README 'Data layouts')")
    normal = [p for folder in normal_dirs for p in _images(folder, data_cfg.pattern)]
    if not normal:
        raise DataError(f"{normal_dirs[0]}: no normal images (.png, .jpg, .bmp, .tif) found")
    rest, test_normal = split_validation(normal, data_cfg.test_fraction, seed)
    train, val = split_validation(rest, data_cfg.val_fraction, seed + 1)
    test = []
    if need_test:
        abnormal = _images(abnormal_dir, data_cfg.pattern)
        if not test_normal or not abnormal:
            raise DataError(f"{root}: a test split needs normal images (data.test_fraction > 0) and abnormal "
                            f"images in {abnormal_dir}")
        name = os.path.basename(abnormal_dir.rstrip(os.sep))
        name = ABNORMAL if name == GOOD else name  # a class called "good" must not read as normal
        test = [TestSample(p, GOOD, None) for p in test_normal] + [TestSample(p, name, None) for p in abnormal]
    return DatasetFiles(root=root, train=train, val=val, test=test)


def _class_folders(root):
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def _discover_one_normal_class(root, data_cfg, seed, need_test):
    """PIAD's protocols (docs/methods/piad.md#1a): one class normal, every other class an anomaly.

    official_split: train_* files of the normal class train, test_* files of every class test (MNIST,
    CIFAR-10). Otherwise each class is split with a seeded data.test_fraction (0.2 = the 80/20 of
    Fashion-MNIST and COIL-100). equal_anomalies: a seeded sample of the other classes' test parts, as
    many as the normal test images.
    """
    classes = _class_folders(root)
    if data_cfg.normal_class not in classes:
        raise DataError(f"{root}: no class folder {data_cfg.normal_class!r} (data.normal_class); "
                        f"found {', '.join(classes) or 'none'}")

    def split(name):
        paths = _images(os.path.join(root, name), data_cfg.pattern)
        if data_cfg.official_split:
            official = [p for p in paths if os.path.basename(p).startswith("test_")]
            return [p for p in paths if os.path.basename(p).startswith("train_")], official
        return split_validation(paths, data_cfg.test_fraction, seed)

    normal_train, normal_test = split(data_cfg.normal_class)
    if not normal_train:
        hint = " with train_ file-name prefixes (data.official_split)" if data_cfg.official_split else ""
        raise DataError(f"{os.path.join(root, data_cfg.normal_class)}: no training images{hint}")
    train, val = split_validation(normal_train, data_cfg.val_fraction, seed + 1)
    test = []
    if need_test:
        anomalies = [(p, name) for name in classes if name != data_cfg.normal_class for p in split(name)[1]]
        if data_cfg.equal_anomalies and len(anomalies) > len(normal_test):
            keep = np.sort(np.random.default_rng(seed + 2).permutation(len(anomalies))[:len(normal_test)])
            anomalies = [anomalies[i] for i in keep]
        if not normal_test or not anomalies:
            raise DataError(f"{root}: a test split needs normal and anomalous test images; check "
                            f"data.test_fraction or the test_ files of data.official_split")
        test = [TestSample(p, GOOD, None) for p in normal_test] + [
            TestSample(p, ABNORMAL if name == GOOD else name, None) for p, name in anomalies]
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


def _discover_test(root, layout, pattern="*"):
    test_dir = os.path.join(root, "test")
    if not os.path.isdir(test_dir):
        raise DataError(f"{test_dir}: missing; evaluation needs test/good and test/<defect> folders")
    samples = []
    for defect in sorted(os.listdir(test_dir)):
        folder = os.path.join(test_dir, defect)
        if not os.path.isdir(folder):
            continue
        for path in _images(folder, pattern):
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
