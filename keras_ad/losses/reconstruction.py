"""Reconstruction losses and residual maps shared by the detectors; images in [0, 1].

Losses (docs/methods/cae.md#3c) return one value per image, [N], so that training reduces them with
`tf.nn.compute_average_loss` (correct gradients under tf.distribute, docs/stack.md#3). Residual maps
return [N, H, W].
"""

import tensorflow as tf

from keras_ad.losses.ssim import ms_ssim, ssim, ssim_map


def mse(x, x_hat):
    """Keras `mean_squared_error`: mean over pixels and channels."""
    return tf.reduce_mean(tf.square(x - x_hat), axis=[1, 2, 3])


def l2(x, x_hat):
    """Sum of squared errors of the image (the repo sums over the whole batch, docs/methods/cae.md#3c; per image here
    so the scale does not depend on the batch size, docs/methods/cae.md#3i-7)."""
    return tf.reduce_sum(tf.square(x - x_hat), axis=[1, 2, 3])


def ssim_loss(x, x_hat):
    """(1 - SSIM) / 2 with tf.image.ssim's window (11x11, sigma 1.5), as the repo @30bff558 (docs/methods/cae.md#3c)."""
    return (1.0 - ssim(x, x_hat, padding="valid")) / 2.0


def make_mssim_loss(scales=5):
    """1 - MS-SSIM (tf.image.ssim_multiscale weights), docs/methods/cae.md#3c."""
    def mssim_loss(x, x_hat):
        return 1.0 - ms_ssim(x, x_hat, scales=scales)
    return mssim_loss


def get(name, mssim_scales=5):
    losses = {"mse": mse, "l2": l2, "ssim": ssim_loss, "mssim": make_mssim_loss(mssim_scales)}
    return losses[name]


def residual_map(images, reconstruction_, kind):
    """[N, H, W] map averaged over channels; brighter and darker defects both count (docs/methods/cae.md#3i-1)."""
    if kind == "ssim":
        per_channel = 1.0 - ssim_map(images, reconstruction_, padding="same")
    elif kind == "l2":
        per_channel = tf.square(images - reconstruction_)
    elif kind == "l1":
        per_channel = tf.abs(images - reconstruction_)
    else:
        raise ValueError(f"unknown residual {kind!r}")
    return tf.reduce_mean(per_channel, axis=-1)
