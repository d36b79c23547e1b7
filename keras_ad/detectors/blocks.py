"""Building blocks the GAN detectors share: batch norm as the sources configure it (trained with
TensorFlow's fused kernel), per-example losses.

Losses are per example ([N]) so that a `train_step` reduces them with `tf.nn.compute_average_loss` and
gets the same gradients on one device and under tf.distribute (docs/stack.md#3).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_ad.replicas import one_replica, replica_sum

# PyTorch's BatchNorm2d and TF1's contrib batch_norm(decay=0.9, epsilon=1e-5) (docs/stack.md#01-4); statistics
# synchronised across replicas, so that a step under tf.distribute normalises with the global batch
# like one device does.
BATCH_NORM = {"epsilon": 1e-5, "momentum": 0.9, "synchronized": True}
LEAKY_SLOPE = 0.2  # every GAN source here (docs/stack.md#01-5)


# Initialisers are made per layer, never shared: a Keras initializer made once at import takes its seed
# then (from Python's random state, whatever train.seed says) and gives every layer of one shape the same
# kernel (docs/stack.md#6-initializers).
def dcgan_init():
    """DCGAN's weights, N(0, 0.02)."""
    return keras.initializers.RandomNormal(0.0, 0.02)


def float32_output(x):
    """A sub-model's output in float32 under mixed precision (Keras' rule: losses, scores and maps are
    computed in float32); unchanged when the model computes in float32 already."""
    if keras.backend.standardize_dtype(x.dtype) == "float32":
        return x
    return keras.layers.Activation("linear", dtype="float32")(x)


def per_example(reduce, values):
    """`reduce` over every axis but the batch axis: [N, ...] -> [N]."""
    return reduce(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def bce_per_example(logits, target: float):
    """Binary cross-entropy of sigmoid(logits) against a constant target, averaged over all but the batch axis."""
    labels = tf.fill(tf.shape(logits), target)
    return per_example(tf.reduce_mean, tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


_DATA_FORMAT = {4: "NHWC", 5: "NDHWC"}  # FusedBatchNormV3's name for channels-last input of each rank


@keras.saving.register_keras_serializable(package="keras_ad")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' batch norm whose training-mode call is TensorFlow's fused kernel where that computes the same
    thing: one op forward and one backward instead of about a hundred, so a GAN's training step traces and
    starts in about half the time (docs/stack.md#5-fused-batch-norm). The kernel's centred variance is also
    closer to float64 than Keras' E[x²] - E[x]². Statistics synchronised across replicas take one all-reduce
    each way (`synchronized_batch_norm`) instead of Keras' three. The same variables and names as Keras' layer;
    inference, masks and renorm are Keras' own; `fused=False` (Keras 2's argument) keeps Keras' own everywhere."""

    def __init__(self, fused: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.fused = fused

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and self._fusable(inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)  # statistics in float32 under mixed precision, as Keras' layer
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        if self.synchronized and not one_replica():
            shift = tf.stop_gradient(tf.cast(self.moving_mean, tf.float32))
            y, mean, variance = synchronized_batch_norm(x, gamma, beta, self.epsilon, shift)
        else:
            no_statistics = tf.zeros([0])
            y, mean, variance = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=no_statistics, variance=no_statistics, epsilon=self.epsilon,
                data_format=_DATA_FORMAT[x.shape.rank], is_training=True)[:3]
            # the kernel reports the unbiased (n / (n - 1)) variance for the moving average; Keras averages the
            # biased one it normalises with
            count = tf.cast(tf.size(x, tf.int64) // channels, tf.float32)
            variance *= tf.where(count > 1, (count - 1) / tf.maximum(count, 1), 1.0)
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            moving.assign(moving * self.momentum + tf.cast(batch, moving.dtype) * (1 - self.momentum))
        return tf.cast(y, self.compute_dtype)

    def _fusable(self, inputs, mask):
        """Channels-last 4-D or 5-D input, and no mask or renorm."""
        rank = len(inputs.shape)
        return (self.fused and mask is None and not self.renorm and rank in (4, 5)
                and self.axis in (-1, rank - 1))

    def get_config(self):
        return {**super().get_config(), "fused": self.fused}


def synchronized_batch_norm(x, gamma, beta, epsilon, shift):
    """Batch norm of channels-last `x` with the statistics of the whole batch across the replicas in sync:
    (output, mean, biased variance), one all-reduce forward and one backward (Keras' path takes three each
    way and a hundred ops). The moments are sums of x - `shift` (the moving mean: close to the batch mean
    once trained, so E[d²] - E[d]² cancels little, and the same on every replica). Its gradient is batch
    norm's, with the sums over the whole batch (docs/stack.md#5-fused-batch-norm)."""
    axes = list(range(x.shape.rank - 1))
    channels = x.shape[-1]

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        centred = x - shift
        local = [tf.reduce_sum(centred, axes), tf.reduce_sum(tf.square(centred), axes),
                 tf.fill([1], tf.cast(tf.size(x) // channels, tf.float32))]
        total = replica_sum(tf.concat(local, 0))
        sums, squares, count = tf.split(total, [channels, channels, 1])
        offset = tf.math.divide_no_nan(sums, count)
        mean = shift + offset
        variance = tf.maximum(tf.math.divide_no_nan(squares, count) - tf.square(offset), 0.0)
        y = tf.raw_ops.FusedBatchNormV3(x=x, scale=gamma, offset=beta, mean=mean, variance=variance, epsilon=epsilon,
                                        data_format=_DATA_FORMAT[x.shape.rank], is_training=False)[0]

        def gradient(dy, *_):  # mean and variance only feed the moving averages
            inverse_std = tf.math.rsqrt(variance + epsilon)
            normalized = (x - mean) * inverse_std
            local_sums = [tf.reduce_sum(dy, axes), tf.reduce_sum(dy * normalized, axes)]
            d_beta, d_gamma = local_sums  # this replica's; the optimiser sums the replicas' variable gradients
            total_dy, total_dy_normalized = tf.split(replica_sum(tf.concat(local_sums, 0)), 2)
            d_x = gamma * inverse_std * (dy - tf.math.divide_no_nan(total_dy + normalized * total_dy_normalized,
                                                                      count))
            return d_x, d_gamma, d_beta

        return (y, mean, variance), gradient

    return normalize(x, gamma, beta)


class MaxLeakyReLU(keras.layers.Layer):
    """LeakyReLU as max(x, slope·x): the same values, but its gradient is a select, which TFLite and
    tf2onnx convert and grappler's remapper does not trip over (LeakyReluGrad, docs/stack.md#4d)."""

    def __init__(self, negative_slope: float = LEAKY_SLOPE, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = negative_slope

    def call(self, x):
        return keras.ops.maximum(x, self.negative_slope * x)

    def compute_output_shape(self, shape):
        return shape

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


class MinibatchStdDev(keras.layers.Layer):
    """Appends one constant channel: the mean over (h, w, c) of the per-position standard deviation
    across the batch, sqrt(mean_b (a - mean_b a)² + 1e-8) (PIAD's image critic, docs/methods/piad.md#1b).

    It uses the batch it is called on, in training and when the critic is evaluated for the gradient
    penalty (docs/methods/piad.md#1g-9); under tf.distribute that is the replica's part of the batch.
    """

    def call(self, x):
        wide = tf.cast(x, tf.float32)  # the 1e-8 vanishes in float16
        std = tf.sqrt(tf.reduce_mean(tf.square(wide - tf.reduce_mean(wide, axis=0, keepdims=True)), axis=0) + 1e-8)
        channel = tf.ones_like(x[..., :1]) * tf.cast(tf.reduce_mean(std), x.dtype)
        return tf.concat([x, channel], axis=-1)

    def compute_output_shape(self, shape):
        return (*shape[:-1], None if shape[-1] is None else shape[-1] + 1)


class NearestUpsample2x(keras.layers.Layer):
    """Nearest-neighbour x2 upsampling (PyTorch Upsample(scale_factor=2)): each axis doubled by a concat
    and a reshape with the static sizes. Keras' UpSampling2D goes through a dynamic tf.repeat that loses
    the channel size (TFLite then cannot lower the next convolution), and a 6-D broadcast fails in
    TFLite's int8 calibration (its slices take at most 5-D arrays)."""

    def call(self, x):
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        wide = tf.expand_dims(x, 3)
        x = tf.reshape(tf.concat([wide, wide], axis=3), [-1, h, 2 * w, c])
        tall = tf.expand_dims(x, 2)
        return tf.reshape(tf.concat([tall, tall], axis=2), [-1, 2 * h, 2 * w, c])

    def compute_output_shape(self, shape):
        return (shape[0], 2 * shape[1], 2 * shape[2], shape[3])
