#!/usr/bin/env python3
"""Per-channel mean and std of VGG19 relu4_2 features over a folder of images, for PIAD's standardisation.

    python scripts/perceptual_stats.py --weights keras-imagenet --images imagenet_val/ --out stats.json
    keras-ad train ... --set detector.perceptual_weights=keras-imagenet --set detector.perceptual_stats=stats.json

The statistics PIAD's authors released are for torchvision's VGG19 (docs/methods/piad.md#1c-3); Keras' ImageNet VGG19
has other weights and another input normalisation, so its features need their own (docs/methods/piad.md#1g-2). Every
image is resized to --size (the paper's statistics come from ImageNet-sized inputs) and read through
the same pre-processing as training; mean and std are pooled over images and positions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def feature_moments(images, weights, size, batch_size=16):
    """(mean, std, count) per relu4_2 channel of uint8 images, through PIAD's own feature extractor."""
    import tensorflow as tf

    from keras_ad.backbones import vgg19
    from keras_ad.losses.perceptual import PerceptualFeatures
    from keras_ad.scoring import preprocess

    extractor = PerceptualFeatures(vgg19.relu4_2(size, weights), np.zeros(512), np.ones(512),
                                   input_mode="caffe" if weights == "keras-imagenet" else "torchvision")
    total, squares, count = np.zeros(512), np.zeros(512), 0
    for start in range(0, len(images), batch_size):
        batch = tf.concat([preprocess(image[None], size, 3) for image in images[start:start + batch_size]], 0)
        batch = batch * 2.0 - 1.0  # [0, 1] -> [-1, 1], PIAD's input range
        features = extractor(batch).numpy().reshape(-1, 512).astype(np.float64)
        total += features.sum(0)
        squares += (features ** 2).sum(0)
        count += len(features)
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean ** 2, 0.0)), count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="keras-imagenet, none, or a VGG19 (no top) weight file")
    parser.add_argument("--images", required=True, help="a folder of images (searched recursively)")
    parser.add_argument("--out", required=True, help="the JSON to write (must not exist)")
    parser.add_argument("--size", type=int, default=224, help="input side (default 224)")
    parser.add_argument("--limit", type=int, default=10000, help="at most this many images (default 10000)")
    args = parser.parse_args(argv)
    from keras_ad.data.images import read_image
    from keras_ad.errors import UsageError
    from keras_ad.export.device import is_image_file

    try:
        if os.path.exists(args.out):
            raise ValueError(f"{args.out}: exists; choose another --out or remove it")
        if not os.path.isdir(args.images):
            raise ValueError(f"{args.images}: not a folder of images")
        paths = sorted(os.path.join(d, f) for d, _, files in os.walk(args.images) for f in files if is_image_file(f))
        paths = paths[:args.limit]
        if not paths:
            raise ValueError(f"{args.images}: no images (.png, .jpg, .bmp, .tif) found")
        images = [read_image(p, 3) for p in paths]
        mean, std, count = feature_moments(images, args.weights, args.size)
    except (ValueError, OSError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(args.out, "w") as f:
        json.dump({"mean": mean.tolist(), "std": std.tolist(), "weights": args.weights, "size": args.size,
                   "n_images": len(images), "n_positions": count}, f)
    print(f"wrote relu4_2 statistics of {len(images)} images ({count} positions) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
