"""From file lists to model inputs: decode in parallel, pre-process once, then tf.data for training.

Training images that fit `data.cache_mb` are decoded once on a thread pool, passed through
`keras_ad.scoring.preprocess` (the same function the exported scorer runs) and held in memory at the
model's size. Larger sets stream: tf.data shuffles the file paths and decodes, pre-processes and
augments each image in parallel per epoch, so memory stays flat whatever the set's size.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import tensorflow as tf

from keras_ad.data.images import read_image, read_many, read_mask
from keras_ad.errors import DataError
from keras_ad.scoring import crop_center, preprocess
from keras_ad.tracing import dataset_function


def load_images(paths, data_cfg, what="images", chunk=64, failed=None):
    """Decode and pre-process `paths` -> (float32 [N, h, w, C] in [0, 1], kept paths, original sizes);
    `failed` (a dict) collects {path: reason} of unreadable files instead of stopping (read_many)."""
    if paths:
        print(f"loading {len(paths)} {what} ...", file=sys.stderr, flush=True)
    raw, kept = read_many(paths, lambda p: read_image(p, data_cfg.channels), data_cfg.skip_unreadable,
                          failed=failed)
    size, channels = data_cfg.image_shape, data_cfg.channels
    out = np.zeros((len(raw), *size, channels), np.float32)
    by_shape = {}
    for i, image in enumerate(raw):
        by_shape.setdefault(image.shape, []).append(i)
    for indices in by_shape.values():  # one batched call per image size (MVTec: a single size)
        for start in range(0, len(indices), chunk):
            part = indices[start:start + chunk]
            out[part] = preprocess(np.stack([raw[i] for i in part]), size, channels, data_cfg.resize,
                                   data_cfg.center_crop).numpy()
    return out, [paths[i] for i in kept], [r.shape[:2] for r in raw]


def load_masks(samples, original_sizes, image_shape, center_crop=None):
    """Ground truth at the model's size (cropped as its image), bool [N, h, w]; all-false for good images
    and missing masks. An empty mask of a defective image (real sets have them) is a warning naming the
    files: the image still counts as defective for the image metrics and adds no region to AUPRO."""
    masks = np.zeros((len(samples), *image_shape), bool)
    empty = []
    for i, (sample, shape) in enumerate(zip(samples, original_sizes)):
        if sample.mask_path is None:
            continue
        mask = read_mask(sample.mask_path, shape).astype(np.float32)
        if not mask.any():
            empty.append(sample.mask_path)
            continue
        mask = mask[None, ..., None]
        if center_crop:
            mask = crop_center(mask, center_crop)
        resized = tf.image.resize(mask, image_shape, "bilinear", antialias=True)
        masks[i] = resized.numpy()[0, ..., 0] >= 0.5
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        print(f"warning: {len(empty)} defective test image(s) with an empty mask, counted as defective for the "
              f"image metrics, no region for AUPRO: {shown}", file=sys.stderr, flush=True)
    return masks


def check_test_files(files, data_cfg) -> None:
    """Decode every test image and read its mask before training starts, so a corrupt file or a mask of
    the wrong size is one line now, not after hours of training (evaluation reads them again)."""
    if not files.test:
        return
    print(f"checking {len(files.test)} test images and their masks ...", file=sys.stderr, flush=True)

    def check(sample):
        try:
            image = read_image(sample.path, data_cfg.channels)
        except DataError:
            if data_cfg.skip_unreadable:  # evaluation will skip it with a warning
                return True
            raise
        if sample.mask_path is not None:
            read_mask(sample.mask_path, image.shape[:2])
        return True

    problems = {}
    read_many(files.test, check, failed=problems)
    if problems:
        first = next(iter(problems.values())).removeprefix("unreadable: ")
        more = f" (and {len(problems) - 1} more test files)" if len(problems) > 1 else ""
        raise DataError(f"{first}{more}; fix the test split before training")


def load_test_set(files, data_cfg, split="test"):
    """Test images (`split` "monitor": the labelled ones held out of the test split), labels [N], defect
    names, masks [N, h, w] and whether each image has a mask."""
    samples = getattr(files, split)
    images, kept_paths, sizes = load_images([s.path for s in samples], data_cfg, f"{split} images")
    by_path = {s.path: s for s in samples}
    samples = [by_path[p] for p in kept_paths]
    masks = load_masks(samples, sizes, data_cfg.image_shape, data_cfg.center_crop)
    return {
        "images": images,
        "paths": kept_paths,
        "labels": np.array([s.label for s in samples], np.int32),
        "defects": [s.defect for s in samples],
        "masks": masks,
        "has_mask": np.array([s.label == 0 or s.mask_path is not None for s in samples]),
    }


def augment(image, seed, rotation_deg, shift, brightness):
    """docs/methods/cae.md#3a: rotation +-rotation_deg, shift +-shift of the size, nearest fill, brightness factor
    U(1-b, 1+b)."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    height, width = tf.unstack(tf.cast(tf.shape(image)[:2], tf.float32))
    angle = tf.random.stateless_uniform([], seeds[0], -1.0, 1.0) * rotation_deg * math.pi / 180.0
    dx, dy = tf.unstack(tf.random.stateless_uniform([2], seeds[1], -shift, shift) * tf.stack([width, height]))
    factor = tf.random.stateless_uniform([], seeds[2], 1.0 - brightness, 1.0 + brightness)
    # Output pixel (x, y) samples the input at R^-1 ((x, y) - c - t) + c, c the centre, t the shift.
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    tx = cx - cos * (cx + dx) - sin * (cy + dy)
    ty = cy + sin * (cx + dx) - cos * (cy + dy)
    transform = tf.stack([cos, sin, tx, -sin, cos, ty, 0.0, 0.0])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")[0]
    return tf.clip_by_value(out * factor, 0.0, 1.0)


def random_patch(image, seed, patch_shape):
    """A random `patch_shape` window of one [H, W, C] image (texture patches, docs/protocol.md#patches)."""
    return tf.image.stateless_random_crop(image, [*patch_shape, image.shape[-1]], seed)


def central_patch(images, patch_shape):
    """The central `patch_shape` window of [..., H, W, C] images (validation loss and sample grids)."""
    height, width = images.shape[-3], images.shape[-2]
    top, left = (height - patch_shape[0]) // 2, (width - patch_shape[1]) // 2
    return images[..., top:top + patch_shape[0], left:left + patch_shape[1], :]


def decoded_bytes(n_images: int, data_cfg) -> int:
    """Memory that `n_images` take once decoded at the model's size (float32)."""
    height, width = data_cfg.image_shape
    return n_images * height * width * data_cfg.channels * 4


def fits_cache(n_images: int, data_cfg) -> bool:
    """Whether the decoded images stay within data.cache_mb (else they stream from disk every epoch)."""
    return decoded_bytes(n_images, data_cfg) <= data_cfg.cache_mb * 2 ** 20


def file_decoder(data_cfg):
    """path (a string tensor) -> float32 [h, w, C] in [0, 1]: the file read as `load_images` reads it
    (PIL, via the device scorer's decoder), then `preprocess`, inside tf.data."""
    size, channels = data_cfg.image_shape, data_cfg.channels

    def decode(path):
        raw = tf.numpy_function(lambda p: read_image(p.decode(), channels), [path], tf.uint8, stateful=False)
        raw.set_shape([None, None, channels])
        x = preprocess(raw[None], size, channels, data_cfg.resize, data_cfg.center_crop)[0]
        x.set_shape([*size, channels])
        return x

    return decode


def training_dataset(images, train_cfg, batch_size=None, shuffle=True, augment_images=None, decode=None,
                     skip_errors=False, patch_shape=None):
    """tf.data over training images: shuffle, repeat up to train.min_epoch_images (each pass shuffled
    anew), decode (parallel, when `images` are file paths and `decode` reads one), augment (parallel),
    cut one random `patch_shape` window per image when given, batch (drop remainder), prefetch.
    `skip_errors`: drop files that fail to decode (data.skip_unreadable)."""
    batch_size = batch_size or train_cfg.batch_size
    repeats = -(-train_cfg.min_epoch_images // len(images)) if len(images) else 1
    if len(images) * max(repeats, 1) < batch_size:
        raise DataError(f"only {len(images)} training images but a training step takes {batch_size}; "
                        f"add images or lower train.batch_size")
    ds = tf.data.Dataset.from_tensor_slices(images)
    if shuffle:
        ds = ds.shuffle(len(images), seed=train_cfg.seed, reshuffle_each_iteration=True)
    if repeats > 1:
        ds = ds.repeat(repeats).take(train_cfg.min_epoch_images)
    ds = _decoded(ds, decode, skip_errors)
    augmented = train_cfg.augment if augment_images is None else augment_images
    if augmented or patch_shape:
        def transform(x, seed):
            augment_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2)) if patch_shape \
                else (seed, None)
            if augmented:
                x = augment(x, augment_seed, train_cfg.rotation_deg, train_cfg.shift, train_cfg.brightness)
            return random_patch(x, crop_seed, patch_shape) if patch_shape else x

        seeds = tf.data.Dataset.random(seed=train_cfg.seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(dataset_function(transform), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(images, batch_size, decode=None, skip_errors=False, patch_shape=None):
    """Un-augmented, ordered batches (validation loss), the central `patch_shape` window of each image when
    given; file paths are decoded in parallel by `decode`."""
    ds = _decoded(tf.data.Dataset.from_tensor_slices(images), decode, skip_errors)
    if patch_shape:
        ds = ds.map(dataset_function(lambda x: central_patch(x, patch_shape)))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _decoded(ds, decode, skip_errors):
    """`ds` of file paths decoded in parallel by `decode` (dropping files that fail when `skip_errors`);
    `ds` itself when it holds decoded images (`decode` None)."""
    if decode is None:
        return ds
    ds = ds.map(dataset_function(decode), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.ignore_errors() if skip_errors else ds


def training_data(cfg, files, batch_size):
    """(training tf.data, its image count, 8 sample images, validation tf.data or None, its count):
    decoded once into memory when the training and validation images fit data.cache_mb, else
    streamed from disk (decoded per epoch, in parallel). With texture patches, the model sees one random
    patch per training image and the central patch of each validation and sample image."""
    d = cfg.data
    patch = d.model_shape if d.patch_size else None
    if fits_cache(len(files.train) + len(files.val), d):
        train, _, _ = load_images(files.train, d, "training images")
        val, _, _ = load_images(files.val, d, "validation images")
        val_ds = eval_dataset(val, cfg.train.batch_size, patch_shape=patch) if len(val) else None
        samples = (val if len(val) else train)[:8].copy()  # a copy: a view would keep `train` alive
        train_ds = training_dataset(train, cfg.train, batch_size, patch_shape=patch)
        return train_ds, len(train), _sample_view(samples, patch), val_ds, len(val)
    size_mb = decoded_bytes(len(files.train) + len(files.val), d) / 2 ** 20
    print(f"streaming {len(files.train)} training and {len(files.val)} validation images from disk: decoded "
          f"they take {size_mb:.0f} MiB, more than data.cache_mb ({d.cache_mb})", file=sys.stderr, flush=True)
    decode, skip = file_decoder(d), d.skip_unreadable
    train_ds = training_dataset(np.array(files.train), cfg.train, batch_size, decode=decode, skip_errors=skip,
                                patch_shape=patch)
    val_ds = eval_dataset(np.array(files.val), cfg.train.batch_size, decode, skip, patch) if files.val else None
    samples, _, _ = load_images((files.val or files.train)[:8], d, "sample images")
    return train_ds, len(files.train), _sample_view(samples, patch), val_ds, len(files.val)


def _sample_view(samples, patch_shape):
    """What the sample grids show the model: whole images, or their central patches."""
    return np.ascontiguousarray(central_patch(samples, patch_shape)) if patch_shape else samples
