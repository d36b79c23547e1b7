#!/usr/bin/env python3
"""Write MNIST or CIFAR-10 as a `one_class` folder (<out>/<class>/*.png) for GANomaly's protocol.

    python scripts/export_keras_dataset.py --dataset mnist --out data/mnist
    python scripts/export_keras_dataset.py --dataset cifar10 --out data/cifar10 --file cifar-10-python.tar.gz

GANomaly pools the official train and test splits and re-splits them with a seed (detectors.md
§4.1), so both splits go into the class folders (`train_00001.png`, `test_00001.png`); keras_ad then
holds out `data.test_fraction` of the normal classes plus every image of `data.abnormal_class`.
Offline, download the archive elsewhere and pass it with --file.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tarfile

import numpy as np
from PIL import Image

URLS = {
    "mnist": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_mnist(path):
    """{split: (uint8 images [N, 28, 28], labels [N])} from Keras' mnist.npz."""
    with np.load(path) as f:
        return {"train": (f["x_train"], f["y_train"]), "test": (f["x_test"], f["y_test"])}


def read_cifar10(path):
    """{split: (uint8 images [N, 32, 32, 3], labels [N])} from the python-version tar.gz."""
    splits = {"train": ([], []), "test": ([], [])}
    with tarfile.open(path) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            name = os.path.basename(member.name)
            split = "train" if name.startswith("data_batch") else "test" if name == "test_batch" else None
            if split is None:
                continue
            batch = pickle.load(archive.extractfile(member), encoding="bytes")
            splits[split][0].append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            splits[split][1].append(np.asarray(batch[b"labels"]))
    if not splits["train"][0]:
        raise ValueError(f"{path}: no data_batch_* files inside; expected cifar-10-python.tar.gz")
    return {k: (np.concatenate(x), np.concatenate(y)) for k, (x, y) in splits.items() if x}


def class_names(dataset):
    return [str(d) for d in range(10)] if dataset == "mnist" else list(CIFAR10_CLASSES)


def write(splits, dataset, out):
    names = class_names(dataset)
    for name in names:
        os.makedirs(os.path.join(out, name), exist_ok=True)
    for split, (images, labels) in splits.items():
        for i, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image).save(os.path.join(out, names[int(label)], f"{split}_{i:05d}.png"))
    return sum(len(labels) for _, labels in splits.values())


def fetch(dataset, url):
    import keras

    name = os.path.basename(url)
    try:
        return keras.utils.get_file(name, origin=url)
    except Exception as e:  # keras raises a bare Exception on a failed download
        reason = str(e).splitlines()[0][:160]
        raise ValueError(f"cannot download {url} ({reason}); download it on a machine with internet and pass "
                         f"--file PATH (or copy it to ~/.keras/datasets/{name})") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(URLS))
    parser.add_argument("--out", required=True, help="folder to write <class>/*.png into (must not exist)")
    parser.add_argument("--file", help="a local mnist.npz or cifar-10-python.tar.gz instead of downloading")
    parser.add_argument("--url", help="download from here instead of the official address")
    args = parser.parse_args(argv)
    try:
        if os.path.exists(args.out):
            raise ValueError(f"{args.out}: exists; choose another --out or remove it")
        if args.file and not os.path.isfile(args.file):
            raise ValueError(f"{args.file}: no such file")
        path = args.file or fetch(args.dataset, args.url or URLS[args.dataset])
        splits = read_mnist(path) if args.dataset == "mnist" else read_cifar10(path)
        count = write(splits, args.dataset, args.out)
    except (ValueError, OSError, KeyError, tarfile.TarError, pickle.UnpicklingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {count} {args.dataset} images into {len(class_names(args.dataset))} class folders under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
