"""Fast SSIM and MS-SSIM with full-size maps, by Gaussian blurs written as banded matrix products.

`tf.image.ssim` is 10-40x slower to train on CPU, gives only VALID-size maps and does not export to
TFLite builtins or ONNX (docs/stack.md#4). Here a separable Gaussian blur is `G_h @ X @ G_w^T` with
constant banded matrices: plain MatMuls that every runtime has. `padding="valid"` reproduces
`tf.image.ssim` (the oracle in the tests); `padding="same"` reflects at the border so the map keeps
the image size without dark-edge artefacts.

Defaults are those of tf.image.ssim and of the MVTec papers: 11x11 window, sigma 1.5, K1 0.01, K2 0.03.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from keras_ad.image_ops import separable_apply

FILTER_SIZE = 11
FILTER_SIGMA = 1.5
K1, K2 = 0.01, 0.03
# tf.image.ssim_multiscale's weights (Wang et al. 2003), finest scale first.
MSSSIM_POWER_FACTORS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_kernel_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of `size` taps (same formula as tf.image.ssim)."""
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(coords ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


@functools.lru_cache(maxsize=64)
def blur_matrix(n: int, size: int, sigma: float, padding: str) -> np.ndarray:
    """Matrix M such that M @ v is the 1-D Gaussian blur of a length-n signal v.

    "valid": (n - size + 1) x n, no padding. "same": n x n with reflect padding folded in.
    """
    kernel = gaussian_kernel_1d(size, sigma)
    radius = size // 2
    if padding == "valid":
        m = np.zeros((n - size + 1, n))
        for i in range(n - size + 1):
            m[i, i:i + size] = kernel
        return m.astype(np.float32)
    if padding != "same":
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    m = np.zeros((n, n))
    for i in range(n):
        for k, w in enumerate(kernel):
            j = i + k - radius
            j = -j if j < 0 else j  # reflect without repeating the edge pixel
            j = 2 * (n - 1) - j if j >= n else j
            m[i, min(max(j, 0), n - 1)] += w
    return m.astype(np.float32)


def gaussian_blur(images, sigma: float, size: int | None = None, padding: str = "same"):
    """Gaussian blur of [N, H, W, C] images by two banded MatMuls (W axis, then H axis)."""
    size = size or 2 * int(round(3 * sigma)) + 1
    h, w = images.shape[1], images.shape[2]
    return separable_apply(images, tf.constant(blur_matrix(h, size, sigma, padding)),
                           tf.constant(blur_matrix(w, size, sigma, padding)))


def _ssim_components(x, y, max_val, padding, filter_size, filter_sigma):
    """Per-pixel luminance and contrast-structure terms, [N, H', W', C] each."""
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.float32)
    blur = functools.partial(gaussian_blur, sigma=filter_sigma, size=filter_size, padding=padding)
    c1 = (K1 * max_val) ** 2
    c2 = (K2 * max_val) ** 2
    # (Co)variances are E[xy] - E[x]E[y]: centring each image first loses far fewer digits to that
    # cancellation, so runtimes that sum in a different order (TFLite, ONNX) agree to ~1e-6, not 1e-4.
    mean_x = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    mean_y = tf.reduce_mean(y, axis=[1, 2], keepdims=True)
    xc, yc = x - mean_x, y - mean_y
    # One blur over the five stacked moments instead of five blurs.
    moments = blur(tf.concat([xc, yc, xc * xc, yc * yc, xc * yc], axis=-1))
    mu_xc, mu_yc, xx, yy, xy = tf.split(moments, 5, axis=-1)
    mu_x, mu_y = mu_xc + mean_x, mu_yc + mean_y  # the blur's rows sum to one
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    cs = (2.0 * (xy - mu_xc * mu_yc) + c2) / (xx - mu_xc * mu_xc + yy - mu_yc * mu_yc + c2)
    return luminance, cs


def ssim_map(x, y, max_val=1.0, padding="same", filter_size=FILTER_SIZE, filter_sigma=FILTER_SIGMA):
    """SSIM per pixel and channel, [N, H, W, C] ('same') or [N, H-10, W-10, C] ('valid')."""
    luminance, cs = _ssim_components(x, y, max_val, padding, filter_size, filter_sigma)
    return luminance * cs


def ssim(x, y, max_val=1.0, padding="valid"):
    """Mean SSIM per image, [N]; with 'valid' padding this equals tf.image.ssim."""
    return tf.reduce_mean(ssim_map(x, y, max_val, padding), axis=[1, 2, 3])


def ms_ssim(x, y, max_val=1.0, scales=5):
    """Multi-scale SSIM per image, [N]; with 5 scales this equals tf.image.ssim_multiscale.

    With fewer scales the first `scales` power factors are renormalised to sum to one.
    """
    weights = np.asarray(MSSSIM_POWER_FACTORS[:scales], np.float32)
    if scales < len(MSSSIM_POWER_FACTORS):
        weights = weights / weights.sum()
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.float32)
    values = []
    for scale in range(scales):
        luminance, cs = _ssim_components(x, y, max_val, "valid", FILTER_SIZE, FILTER_SIGMA)
        if scale < scales - 1:
            values.append(tf.reduce_mean(cs, axis=[1, 2]))
            x = tf.nn.avg_pool2d(x, 2, 2, "VALID")
            y = tf.nn.avg_pool2d(y, 2, 2, "VALID")
        else:
            values.append(tf.reduce_mean(luminance * cs, axis=[1, 2]))
    stacked = tf.nn.relu(tf.stack(values, axis=-1))  # N, C, scales
    per_channel = tf.reduce_prod(stacked ** weights, axis=-1)
    return tf.reduce_mean(per_channel, axis=-1)
