"""PIAD's gradient-normalising weight policy (docs/methods/piad.md#1c): the reconstruction loss's weight per
network follows the ratio of the adversarial and reconstruction gradients' sizes."""

from __future__ import annotations

import keras
import tensorflow as tf


class GradientWeightPolicy(keras.layers.Layer):
    """w_M = median over kernels and over the smoothed history of std(∇L_adv) / std(∇L_rec), per network
    M in (encoder, generator), from unweighted gradients of kernels only (biases excluded, docs/methods/piad.md#1g-5
    and 6).

    `record(m, adv_stds, rec_stds)` appends one measurement and recomputes w_m: each history (the last
    `history` measurements per kernel) is smoothed with an EWMA (y0 = s0, y_t = (1 - α)·y_{t-1} + α·s_t),
    the ratios adv/rec of the smoothed values are pooled over kernels and time, and w_m is their median.
    PyTorch's std is unbiased and this one is not; both losses share a tensor's size, so ratios agree.
    """

    def __init__(self, kernel_counts: dict, history=200, alpha=0.05, initial=None, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.history_length, self.alpha = history, alpha
        self.weights_by_net, self.buffers, self.counts = {}, {}, {}
        for net, n in kernel_counts.items():
            start = keras.initializers.Constant((initial or {}).get(net, 1.0))
            self.weights_by_net[net] = self.add_weight(shape=(), initializer=start, trainable=False, name=f"w_{net}")
            for loss in ("adv", "rec"):
                self.buffers[f"{net}_{loss}"] = self.add_weight(shape=(history, n), initializer="zeros",
                                                                trainable=False,
                                                          name=f"{net}_{loss}_history")
            self.counts[net] = self.add_weight(shape=(), initializer="zeros", trainable=False, name=f"{net}_count")
        self.built = True

    def weight(self, net):
        return self.weights_by_net[net]

    def record(self, net, adv_stds, rec_stds):
        count = tf.minimum(self.counts[net] + 1.0, float(self.history_length))
        self.counts[net].assign(count)
        smoothed = {}
        for loss, stds in (("adv", adv_stds), ("rec", rec_stds)):
            buffer = self.buffers[f"{net}_{loss}"]
            buffer.assign(tf.concat([buffer[1:], tf.reshape(tf.cast(stds, buffer.dtype), [1, -1])], axis=0))
            smoothed[loss] = self._ewma(buffer, count)
        valid = tf.range(self.history_length, dtype=count.dtype) >= self.history_length - count
        ratios = tf.boolean_mask(smoothed["adv"] / smoothed["rec"], valid)
        self.weights_by_net[net].assign(median(tf.reshape(ratios, [-1])))
        return self.weights_by_net[net]

    def _ewma(self, buffer, count):
        valid = tf.range(self.history_length, dtype=count.dtype) >= self.history_length - count

        def step(carry, inputs):
            y, started = carry
            row, ok = inputs
            new = tf.where(started, (1.0 - self.alpha) * y + self.alpha * row, row)
            return tf.where(ok, new, y), tf.logical_or(started, ok)

        start = (tf.zeros_like(buffer[0]), tf.constant(False))
        smoothed, _ = tf.scan(step, (buffer, valid), initializer=start)
        return smoothed


def median(values):
    """numpy.median of a 1-D tensor (the mean of the two middle values for an even count)."""
    ordered = tf.sort(values)
    n = tf.shape(ordered)[0]
    return 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])


def kernel_gradient_stds(gradients, variables):
    """std of the entries of every kernel's gradient (conv/dense kernels; biases excluded, docs/methods/piad.md#1c)."""
    return tf.stack([tf.math.reduce_std(g) for g, v in zip(gradients, variables) if is_kernel(v)])


def is_kernel(variable):
    return variable.path.endswith("kernel")
