"""Image ops of the scoring graph written so that TFLite builtins and ONNX both have them.

`tf.image.resize(antialias=True)` lowers to ScaleAndTranslate and skimage's connected components run
on the host; neither reaches a device runtime. Here resizing is two MatMuls with weight matrices
computed in-graph from the (possibly dynamic) input size, and the minimum-defect-area rule is a
max-pool label propagation followed by a sort. Both match their reference implementations exactly
or to float rounding (tests/test_image_ops.py).
"""

from __future__ import annotations

import tensorflow as tf

RESIZE_METHODS = ("bilinear", "area", "nearest")


def resize_matrix(n_in, n_out, method: str):
    """[n_out, n_in] weights W with W @ signal = the resized signal, as tf.image.resize computes it.

    bilinear: triangle kernel widened by the down-scale factor (antialias=True, half-pixel centres);
    area: exact overlap of output and input pixels; nearest: half-pixel centres, no antialiasing.
    """
    rows = n_out
    n_in = tf.cast(n_in, tf.float32)
    n_out = tf.cast(n_out, tf.float32)
    scale = n_in / n_out  # input pixels per output pixel
    out_index = tf.range(n_out)[:, None]
    in_index = tf.range(n_in)[None, :]
    if method == "bilinear":
        centre = (out_index + 0.5) * scale
        weights = tf.maximum(0.0, 1.0 - tf.abs(in_index + 0.5 - centre) / tf.maximum(scale, 1.0))
    elif method == "area":
        start, end = out_index * scale, (out_index + 1.0) * scale
        weights = tf.maximum(0.0, tf.minimum(end, in_index + 1.0) - tf.maximum(start, in_index))
    elif method == "nearest":
        source = tf.minimum(tf.floor((out_index + 0.5) * scale), n_in - 1.0)
        weights = tf.cast(tf.equal(in_index, source), tf.float32)
    else:
        raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}")
    weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
    # A constant row count keeps the output size static for the converters (TFLite needs it for convs).
    return tf.reshape(weights, [rows, -1]) if isinstance(rows, int) else weights


def matmul_last_axis(x, matrix):
    """x [..., n] -> [..., m] for a [m, n] matrix, as one plain 2-D MatMul.

    A broadcasting batched MatMul would be shorter, but oneDNN in TF 2.21 segfaults on it for some
    batch sizes (seen with [N, 1, 64, 64] and N = 10), and a 2-D MatMul maps 1:1 to TFLite and ONNX.
    """
    flat = tf.matmul(tf.reshape(x, [-1, _dim(x, -1)]), matrix, transpose_b=True)
    return tf.reshape(flat, [_dim(x, i) for i in range(x.shape.rank - 1)] + [_dim(matrix, 0)])


def _dim(x, axis):
    """A dimension as a Python int when static: the converters then keep it static too (TFLite needs
    static channels for its convolutions)."""
    return x.shape[axis] if x.shape[axis] is not None else tf.shape(x)[axis]


def separable_apply(images, rows_matrix, cols_matrix):
    """[N, H, W, C] -> [N, H', W', C]: `rows_matrix` [H', H] on the height axis, `cols_matrix` [W', W] on width."""
    x = tf.transpose(images, [0, 3, 1, 2])  # N, C, H, W
    x = matmul_last_axis(x, cols_matrix)  # N, C, H, W'
    x = matmul_last_axis(tf.transpose(x, [0, 1, 3, 2]), rows_matrix)  # N, C, W', H'
    return tf.transpose(x, [0, 3, 2, 1])


def resize(images, size, method: str = "bilinear"):
    """Resize [N, H, W, C] float images to [N, height, width, C] (`size`: a side or (height, width));
    H and W may be unknown until run time."""
    height, width = (size, size) if isinstance(size, int) else size
    shape = tf.shape(images)
    return separable_apply(images, resize_matrix(shape[1], height, method), resize_matrix(shape[2], width, method))


def defect_decision(maps, threshold, min_area: int):
    """The calibrated rule (docs/methods/cae.md#3g) in-graph: (is_anomalous [N] bool, defect_area [N] int32).

    A pixel is abnormal when map > threshold; an image is defective iff an 8-connected region of
    abnormal pixels has at least `min_area` pixels; `defect_area` counts the pixels of such regions.
    Regions are found by propagating the largest pixel index through 3x3 max-pools until nothing
    changes (the number of rounds is the longest path inside a region); sorting the labels then puts
    each region's pixels side by side, and a region is large enough iff a run of `min_area` equal
    labels exists.
    """
    abnormal = tf.cast(maps > threshold, tf.float32)
    if min_area <= 1:
        area = tf.reduce_sum(abnormal, axis=[1, 2])
        return area > 0, tf.cast(area, tf.int32)
    shape = tf.shape(maps)
    n, n_pixels = shape[0], shape[1] * shape[2]
    mask = abnormal[..., None]
    pixel_index = tf.reshape(tf.range(1, n_pixels + 1, dtype=tf.float32), [1, shape[1], shape[2], 1])

    def spread(labels, _):
        grown = tf.nn.max_pool2d(labels, 3, 1, "SAME") * mask
        return grown, tf.reduce_any(tf.not_equal(grown, labels))

    labels, _ = tf.while_loop(lambda labels, changed: changed, spread, (mask * pixel_index, tf.constant(True)))
    ordered = tf.math.top_k(tf.reshape(labels, [n, n_pixels]), k=n_pixels).values  # descending
    first, last = ordered[:, :n_pixels - min_area + 1], ordered[:, min_area - 1:]
    full_run_starts = tf.cast(tf.logical_and(tf.equal(first, last), first > 0), tf.float32)
    # Pixel i lies in a large region iff a full run starts in [i - min_area + 1, i]: a sliding-window sum.
    runs_so_far = tf.concat([tf.zeros([n, 1]), tf.cumsum(full_run_starts, axis=1)], axis=1)
    runs_so_far = tf.concat([runs_so_far, tf.tile(runs_so_far[:, -1:], [1, min_area - 1])], axis=1)
    window_start = tf.concat([tf.zeros([n, min_area - 1]), runs_so_far[:, :n_pixels - min_area + 1]], axis=1)
    in_large_region = (runs_so_far[:, 1:] - window_start) > 0
    defect_area = tf.reduce_sum(tf.cast(in_large_region, tf.int32), axis=1)
    return defect_area > 0, defect_area
