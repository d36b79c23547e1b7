"""Our banded-matmul SSIM against the tf.image oracle (docs/stack.md#5: keep tf.image.ssim as the oracle)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_ad.losses import reconstruction
from keras_ad.losses.ssim import blur_matrix, gaussian_blur, ms_ssim, ssim, ssim_map


def _pair(shape, seed=0, noise=0.15):
    rng = np.random.default_rng(seed)
    x = rng.random(shape).astype(np.float32)
    y = np.clip(x + noise * rng.standard_normal(shape), 0, 1).astype(np.float32)
    return x, y


@pytest.mark.parametrize("shape", [(3, 32, 32, 1), (2, 40, 48, 3)])
def test_ssim_matches_tf_image_ssim(shape):
    x, y = _pair(shape)
    np.testing.assert_allclose(ssim(x, y).numpy(), tf.image.ssim(x, y, 1.0).numpy(), atol=1e-4)


def test_valid_ssim_map_matches_tf_index_map():
    x, y = _pair((2, 40, 40, 3), seed=1)
    ours = tf.reduce_mean(ssim_map(x, y, padding="valid"), axis=-1).numpy()
    oracle = tf.image.ssim(x, y, 1.0, return_index_map=True).numpy()
    assert ours.shape == oracle.shape == (2, 30, 30)
    np.testing.assert_allclose(ours, oracle, atol=1e-4)


def test_ms_ssim_matches_tf_multiscale():
    x, y = _pair((2, 176, 176, 1), seed=2, noise=0.1)
    np.testing.assert_allclose(ms_ssim(x, y).numpy(), tf.image.ssim_multiscale(x, y, 1.0).numpy(), atol=1e-4)


def test_same_padding_keeps_size_and_is_one_on_identical_images():
    x, _ = _pair((2, 32, 32, 3))
    m = ssim_map(x, x, padding="same").numpy()
    assert m.shape == x.shape
    np.testing.assert_allclose(m, 1.0, atol=1e-5)


def test_blur_rows_sum_to_one_and_keep_constants():
    for padding in ("same", "valid"):
        np.testing.assert_allclose(blur_matrix(20, 11, 1.5, padding).sum(axis=1), 1.0, atol=1e-6)
    flat = np.full((1, 16, 16, 1), 0.3, np.float32)
    np.testing.assert_allclose(gaussian_blur(flat, 2.0).numpy(), 0.3, atol=1e-6)


def test_ssim_loss_orders_reconstructions():
    x, y_close = _pair((2, 32, 32, 1), noise=0.02)
    _, y_far = _pair((2, 32, 32, 1), noise=0.3)
    loss = reconstruction.ssim_loss
    assert np.all(loss(x, x).numpy() < 1e-6)
    assert np.all(loss(x, y_close).numpy() < loss(x, y_far).numpy())
