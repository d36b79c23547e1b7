#!/usr/bin/env python3
"""Write MNIST or CIFAR-10 as a `one_class` folder (<out>/<class>/*.png) for GANomaly's protocol.

    python scripts/export_keras_dataset.py --dataset mnist --out data/mnist
    python scripts/export_keras_dataset.py --dataset cifar10 --out data/cifar10 --file cifar-10-python.tar.gz

GANomaly pools the official train and test splits and re-splits them with a seed
(docs/methods/ganomaly.md#41), so both splits go into the class folders (`train_00001.png`, `test_00001.png`); keras_ad
then holds out `data.test_fraction` of the normal classes plus every image of `data.abnormal_class`.
Offline, download the archive elsewhere and pass it with --file. (`data.source` does the same inside
keras_ad for the one_class layout, into a cache folder.)
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_ad.data import sources
from keras_ad.errors import DataError

URLS = {
    "mnist": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
}


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
        splits = sources.read_npz(path) if args.dataset == "mnist" else sources.read_cifar10(path)
        count = sources.write_arrays(args.out, splits, sources.class_names(args.dataset))
    except (ValueError, OSError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {count} {args.dataset} images into {len(os.listdir(args.out))} class folders under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
