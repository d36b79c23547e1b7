"""PIAD's reconstruction distances and the features they compare (docs/methods/piad.md#1c): the relative
perceptual L1 on standardised VGG19 relu4_2 features and its ablations."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's normalisation before VGG19 (docs/methods/piad.md#1c-1)
IMAGENET_STD = (0.229, 0.224, 0.225)


# name: (features compared, element-wise distance, relative to the input's features). The paper's loss
# and its three ablations (docs/methods/piad.md#1c, configs/ablation_cifar10_*.yaml of the source).
RECONSTRUCTION_LOSSES = {
    "relative_perceptual_l1": ("standardised relu4_2", "l1", True),
    "perceptual_l1": ("standardised relu4_2", "l1", False),
    "perceptual_l2": ("relu4_2", "l2", False),
    "pixel_l2": ("ImageNet-normalised image", "l2", False),
}


def reconstruction_map(real_features, fake_features, distance="l1", relative=True):
    """Per position: mean_c |φ(x) - φ(y)| (squared for l2) [N, h, w, 1], divided when relative by
    stopgrad(mean |φ(x)|), the *input's* features only, not differentiated (docs/methods/piad.md#1c-4,
    docs/methods/piad.md#1g-4). Its spatial mean is the per-sample loss."""
    difference = real_features - fake_features
    elementwise = tf.abs(difference) if distance == "l1" else tf.square(difference)
    per_position = tf.reduce_mean(elementwise, axis=-1, keepdims=True)
    if relative:
        per_position /= tf.stop_gradient(tf.reduce_mean(tf.abs(real_features), axis=[1, 2, 3], keepdims=True))
    return per_position


def relative_perceptual_l1(real_features, fake_features):
    """Per sample: mean |φ̂(x) - φ̂(y)| / stopgrad(mean |φ̂(x)|) (docs/methods/piad.md#1c-4). Features are standardised
    already."""
    return tf.reduce_mean(reconstruction_map(real_features, fake_features), axis=[1, 2, 3])


class PerceptualFeatures(keras.layers.Layer):
    """[-1, 1] images -> the features the reconstruction loss compares: to [0, 1], grey repeated to RGB
    (docs/methods/piad.md#1g-10), the weights' own input normalisation, then VGG19 relu4_2, standardised (φ - μ) / σ
    when statistics are given. Without a VGG (the pixel-L2 ablation) the normalised image itself."""

    def __init__(self, vgg, mean=None, std=None, input_mode="torchvision", **kwargs):
        super().__init__(dtype="float32", **kwargs)  # the loss's features in float32 under mixed precision
        self.vgg, self.input_mode = vgg, input_mode  # torchvision | caffe | unit (a network taking [0, 1])
        self.standardise = mean is not None
        if self.standardise:  # graph constants, not captures
            self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.built = True  # the VGG is built; nothing is created on the first call

    def call(self, x):
        x = x * 0.5 + 0.5
        if x.shape[-1] == 1:
            x = tf.repeat(x, 3, axis=-1)
        if self.input_mode == "caffe":  # Keras' VGG19: BGR, 0..255, ImageNet mean subtracted
            x = x[..., ::-1] * 255.0 - tf.constant([103.939, 116.779, 123.68])
        elif self.input_mode == "torchvision":  # RGB, ImageNet mean and std
            x = (x - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)
        if self.vgg is None:
            return x
        features = self.vgg(x, training=False)
        if self.standardise:
            features = (features - tf.constant(self.mean)) / tf.constant(self.std)
        return features
