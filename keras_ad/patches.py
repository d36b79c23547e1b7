"""Texture patches: a sliding window over an image and the stitching of its maps, inside the scoring graph.

The MVTec AD paper trains the texture autoencoders on 128x128 patches of 512x512 images and scores by
reconstructing patches at stride 30 and averaging the overlapping maps (docs/protocol.md#patches).
Here the windows are static slices and the stitching a sum of zero-padded maps divided by a constant
coverage count, so TFLite builtins and ONNX carry it as plain StridedSlice, Pad, Add and Mul.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def window_starts(side: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of `window` pixels every `stride` along `side` pixels; the last window
    ends at the edge, so every pixel is covered."""
    starts = list(range(0, side - window + 1, stride))
    if starts[-1] != side - window:
        starts.append(side - window)
    return starts


def windows(image_shape, patch_shape, stride) -> list[tuple[int, int]]:
    """(top, left) of every scoring window, row by row."""
    rows = window_starts(image_shape[0], patch_shape[0], stride[0])
    cols = window_starts(image_shape[1], patch_shape[1], stride[1])
    return [(top, left) for top in rows for left in cols]


def coverage(image_shape, patch_shape, stride) -> np.ndarray:
    """How many windows cover each pixel, float32 [H, W] (at least 1 everywhere)."""
    count = np.zeros(image_shape, np.float32)
    for top, left in windows(image_shape, patch_shape, stride):
        count[top:top + patch_shape[0], left:left + patch_shape[1]] += 1
    return count


def tile(images, image_shape, patch_shape, stride):
    """[N, H, W, C] -> [P * N, h, w, C]: the P windows of every image, window-major."""
    h, w = patch_shape
    return tf.concat([images[:, top:top + h, left:left + w, :]
                      for top, left in windows(image_shape, patch_shape, stride)], axis=0)


def stitch(maps, image_shape, patch_shape, stride):
    """[P * N, h, w] maps of `tile`'s windows -> [N, H, W], each pixel the mean of the windows covering it."""
    height, width = image_shape
    h, w = patch_shape
    places = windows(image_shape, patch_shape, stride)
    n = tf.shape(maps)[0] // len(places)
    total = None
    for index, (top, left) in enumerate(places):
        part = tf.pad(maps[index * n:(index + 1) * n], [[0, 0], [top, height - h - top], [left, width - w - left]])
        total = part if total is None else total + part
    return total * tf.constant(1.0 / coverage(image_shape, patch_shape, stride))


def reduce_windows(scores, n_windows: int):
    """[P * N] per-window image scores -> [N]: the most anomalous window of each image."""
    return tf.reduce_max(tf.reshape(scores, [n_windows, -1]), axis=0)
