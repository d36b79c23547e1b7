"""Labelled data sets for the `one_class` layout, written once as <class>/ folders (`data.source`).

PIAD's benchmarks (docs/methods/piad.md#1a) come as arrays or in their own folder structures; keras_ad
turns each into the one_class layout in a cache folder, with `train_`/`test_` file-name prefixes that
carry the official split (data.official_split), and trains from there:

- `keras:mnist`, `keras:fashion_mnist`, `keras:cifar10`: keras.datasets (downloads once, needs internet)
- `<file>.npz` with x_train, y_train, x_test, y_test (Keras' mnist.npz, or any such arrays)
- `<file>.tar.gz`: CIFAR-10's python version
- `coil100:<folder>`: the obj<N>__<angle>.png files of COIL-100, class 100 renamed 0 (docs/methods/piad.md#1a)
- `celeba:<folder>` / `celeba-extended:<folder>`: img_align_celeba/, list_attr_celeba.txt and
  list_eval_partition.txt; class `normal` (none of the attributes) and one class per attribute
- `lsun:<folder>`: bedroom_train/, bedroom_val/ and conference_room_val/ image folders
Folder sources are linked, not copied. A half-written cache is never used: it is written under a
temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile

import numpy as np

from keras_ad.data import cache_home
from keras_ad.data.images import list_images
from keras_ad.errors import DataError

KERAS_DATASETS = {"mnist": "mnist.npz", "fashion_mnist": "the four fashion-mnist .gz files",
                  "cifar10": "cifar-10-python.tar.gz"}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                         "bag", "ankle_boot")
CELEBA_ATTRIBUTES = ("Bald", "Mustache", "Bangs", "Eyeglasses", "Wearing_Hat")  # docs/methods/piad.md#1a
CELEBA_EXTENDED = CELEBA_ATTRIBUTES + ("Bags_Under_Eyes", "Goatee", "Heavy_Makeup", "Sideburns")
LSUN_FOLDERS = {"bedroom_train": ("normal", "train"), "bedroom_val": ("normal", "test"),
                # validation splits test, as in ADGAN (docs/methods/piad.md#1a)
                "conference_room_val": ("conference_room", "test")}
NORMAL = "normal"


def materialise(source: str, cache_dir: str | None = None, log=print) -> str:
    """The one_class folder of `source`, written on first use (a changed file gets a new folder)."""
    kind, _, location = source.partition(":") if _is_prefixed(source) else ("file", "", source)
    location = location if kind == "keras" else os.path.abspath(os.path.expanduser(location))
    key = location
    if os.path.isfile(location):
        key += f":{os.path.getsize(location)}:{os.path.getmtime(location)}"
    folder = os.path.join(cache_dir or os.path.join(cache_home(), "sources"),
                          f"{kind}-{hashlib.sha1(key.encode()).hexdigest()[:12]}")
    if os.path.isdir(folder):
        return folder
    writer = _writer(kind, location, source)
    partial = folder + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    log(f"data.source {source}: writing the one_class folders once into {folder}")
    try:
        count = writer(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    os.replace(partial, folder)
    log(f"data.source {source}: {count} images")
    return folder


def _is_prefixed(source):
    prefix = source.split(":", 1)[0]
    return ":" in source and prefix in ("keras", "coil100", "celeba", "celeba-extended", "lsun")


def _writer(kind, location, source):
    """A function that fills a folder from the source, after checking the source exists."""
    if kind == "keras":
        if location not in KERAS_DATASETS:
            raise DataError(f"data.source {source}: unknown Keras data set; known: "
                            f"{', '.join('keras:' + k for k in KERAS_DATASETS)}")
        return lambda out: write_arrays(out, load_keras(location), class_names(location))
    if kind != "file" and not os.path.isdir(location):
        raise DataError(f"data.source {source}: {location} is not a folder")
    if kind == "coil100":
        return lambda out: link_coil100(location, out)
    if kind in ("celeba", "celeba-extended"):
        attributes = CELEBA_EXTENDED if kind == "celeba-extended" else CELEBA_ATTRIBUTES
        return lambda out: link_celeba(location, out, attributes)
    if kind == "lsun":
        return lambda out: link_lsun(location, out)
    if not os.path.isfile(location):
        raise DataError(f"data.source {source}: no such file; give a .npz (x_train, y_train, x_test, y_test), "
                        f"cifar-10-python.tar.gz, keras:<name> or <kind>:<folder> (README 'Data layouts')")
    if location.endswith(".npz"):
        return lambda out: write_arrays(out, read_npz(location), None)
    if location.endswith((".tar.gz", ".tgz")):
        return lambda out: write_arrays(out, read_cifar10(location), CIFAR10_CLASSES)
    raise DataError(f"data.source {source}: expected a .npz or cifar-10-python.tar.gz file")


def class_names(dataset):
    return {"cifar10": CIFAR10_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES}.get(dataset)


# ---------------------------------------------------------------- arrays
def load_keras(name):
    """{split: (images, labels)} from keras.datasets; offline, says which file to give instead."""
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as e:  # urllib / HTTP errors, raised as bare Exception by keras.utils.get_file
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise DataError(f"data.source keras:{name}: cannot download ({reason}); fetch {KERAS_DATASETS[name]} on a "
                        f"machine with internet into ~/.keras/datasets/, or set data.source to a .npz with "
                        f"x_train, y_train, x_test, y_test") from None
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


def read_npz(path):
    """{split: (uint8 images, labels)} from a .npz holding x_train, y_train, x_test, y_test."""
    names = [f"{xy}_{split}" for split in ("train", "test") for xy in "xy"]
    try:
        with np.load(path) as f:
            missing = [name for name in names if name not in f.files]
            if missing:
                raise DataError(f"{path}: no array {', '.join(missing)}; a .npz source needs x_train, y_train, "
                                f"x_test, y_test")
            return {split: (f[f"x_{split}"], f[f"y_{split}"]) for split in ("train", "test")}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read as .npz ({e})") from None


def read_cifar10(path):
    """{split: (uint8 images [N, 32, 32, 3], labels [N])} from CIFAR-10's python-version tar.gz."""
    splits = {"train": ([], []), "test": ([], [])}
    try:
        with tarfile.open(path) as archive:
            for member in sorted(archive.getmembers(), key=lambda m: m.name):
                name = os.path.basename(member.name)
                split = "train" if name.startswith("data_batch") else "test" if name == "test_batch" else None
                if split is None:
                    continue
                batch = pickle.load(archive.extractfile(member), encoding="bytes")
                pixels = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32)
                splits[split][0].append(pixels.transpose(0, 2, 3, 1))
                splits[split][1].append(np.asarray(batch[b"labels"]))
    except (tarfile.TarError, pickle.UnpicklingError, KeyError, OSError) as e:
        raise DataError(f"{path}: cannot read as cifar-10-python.tar.gz ({e})") from None
    if not splits["train"][0]:
        raise DataError(f"{path}: no data_batch_* files inside; expected cifar-10-python.tar.gz")
    return {k: (np.concatenate(x), np.concatenate(y)) for k, (x, y) in splits.items() if x}


def write_arrays(out, splits, names=None):
    """PNG files <out>/<class>/<split>_<index>.png; classes named by `names[label]` or the label."""
    from PIL import Image

    count = 0
    for split, (images, labels) in splits.items():
        images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
            raise DataError(f"x_{split}: expected uint8 images [N, H, W(, C)] and N labels; got "
                            f"{images.dtype} {images.shape} and {labels.shape[0]} labels")
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = os.path.join(out, names[int(label)] if names else str(label))
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image).save(
                os.path.join(folder, f"{split}_{i:05d}.png"))
            count += 1
            if count % 10000 == 0:
                print(f"  {count} images written", flush=True)
    return count


# ---------------------------------------------------------------- folders (linked)
def _link(target, out, cls, name):
    folder = os.path.join(out, cls)
    os.makedirs(folder, exist_ok=True)
    os.symlink(os.path.abspath(target), os.path.join(folder, name))


def link_coil100(root, out):
    """obj<N>__<angle>.png -> <N mod 100>/ (label 100 renamed 0, docs/methods/piad.md#1a); split by
    data.test_fraction."""
    count = 0
    for path in list_images(root):
        name = os.path.basename(path)
        if name.startswith("obj") and "__" in name and name[3:name.index("__")].isdigit():
            _link(path, out, str(int(name[3:name.index("__")]) % 100), name)
            count += 1
    if not count:
        raise DataError(f"{root}: no obj<N>__<angle>.png files; point coil100: at the unpacked coil-100 folder")
    return count


def _celeba_table(path, skip):
    try:
        with open(path) as f:
            lines = f.read().splitlines()[skip:]
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); celeba: needs the files of torchvision's CelebA "
                        f"folder") from None
    return [line.split() for line in lines if line.strip()]


def link_celeba(root, out, attributes):
    """docs/methods/piad.md#1a: normal = none of the attributes (train split -> train_, test split -> test_); class A =
    test images with attribute A and none of the others (one AUC per attribute from report.json's per_defect)."""
    images = os.path.join(root, "img_align_celeba")
    partition = dict(_celeba_table(os.path.join(root, "list_eval_partition.txt"), 0))
    table = _celeba_table(os.path.join(root, "list_attr_celeba.txt"), 1)
    header, rows = table[0], table[1:]
    missing = [a for a in attributes if a not in header]
    if missing:
        raise DataError(f"{root}/list_attr_celeba.txt: no attribute column {', '.join(missing)}")
    columns = [header.index(a) + 1 for a in attributes]  # rows start with the file name
    count = 0
    for row in rows:
        name, split = row[0], {"0": "train", "2": "test"}.get(partition.get(row[0]))
        present = [a for a, c in zip(attributes, columns) if row[c] == "1"]
        if split is None or len(present) > 1 or (present and split == "train"):
            continue
        _link(os.path.join(images, name), out, present[0] if present else NORMAL, f"{split}_{name}")
        count += 1
    return count


def link_lsun(root, out):
    """bedroom_train -> normal/train_*, bedroom_val -> normal/test_*, conference_room_val -> test anomalies."""
    count = 0
    for folder, (cls, split) in LSUN_FOLDERS.items():
        path = os.path.join(root, folder)
        if not os.path.isdir(path):
            raise DataError(f"{path}: missing; lsun: needs {', '.join(LSUN_FOLDERS)} as image folders (export the "
                            f"LMDB databases with the LSUN tools first)")
        for image in list_images(path):
            _link(image, out, cls, f"{split}_{os.path.basename(image)}")
            count += 1
    return count
