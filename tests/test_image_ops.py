"""The export-friendly image ops against their references: tf.image.resize and skimage's labelling."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from keras_ad import calibration, image_ops


@pytest.mark.parametrize("method", image_ops.RESIZE_METHODS)
@pytest.mark.parametrize("size_in", [(128, 128), (100, 77), (32, 32), (20, 45)])
def test_resize_matches_tf_image_resize(method, size_in):
    images = tf.random.stateless_uniform((2, *size_in, 3), seed=(1, 2))
    expected = tf.image.resize(images, (32, 32), method=method, antialias=method != "nearest")
    np.testing.assert_allclose(image_ops.resize(images, 32, method), expected, atol=3e-6)


def test_resize_runs_with_sizes_unknown_until_run_time():
    resize = tf.function(lambda x: image_ops.resize(x, 16),
                         input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
    for shape in [(1, 40, 30, 1), (3, 16, 16, 1)]:
        images = tf.random.stateless_uniform(shape, seed=(3, 4))
        np.testing.assert_allclose(resize(images), tf.image.resize(images, (16, 16), antialias=True), atol=3e-6)


def _reference_decision(maps, threshold, min_area):
    areas = [calibration.region_areas(m > threshold) for m in maps]
    defect_area = np.array([a[a >= min_area].sum() for a in areas])
    return defect_area > 0, defect_area


@pytest.mark.parametrize("min_area", [1, 2, 7, 40, 200])
@pytest.mark.parametrize("threshold", [0.5, 0.53, 0.58])
def test_defect_decision_matches_connected_components(min_area, threshold):
    rng = np.random.default_rng(min_area)
    maps = ndimage.gaussian_filter(rng.random((12, 40, 40)), (0, 2, 2)).astype(np.float32)
    anomalous, area = image_ops.defect_decision(tf.constant(maps), tf.constant(threshold), min_area)
    expected_anomalous, expected_area = _reference_decision(maps, threshold, min_area)
    assert area.numpy().tolist() == expected_area.tolist()
    assert anomalous.numpy().tolist() == expected_anomalous.tolist()


def test_defect_decision_follows_snaking_regions_and_diagonals():
    maps = np.zeros((2, 9, 9), np.float32)
    maps[0, ::2, :] = 1.0  # rows 0, 2, 4, 6, 8 joined into one snake by alternating end pixels
    maps[0, 1::4, -1] = 1.0
    maps[0, 3::4, 0] = 1.0
    maps[1, range(5), range(5)] = 1.0  # a diagonal line: one 8-connected region of 5 pixels
    anomalous, area = image_ops.defect_decision(tf.constant(maps), tf.constant(0.5), 5)
    assert area.numpy().tolist() == [int(maps[0].sum()), 5]
    anomalous, area = image_ops.defect_decision(tf.constant(maps), tf.constant(0.5), 6)
    assert anomalous.numpy().tolist() == [True, False]
