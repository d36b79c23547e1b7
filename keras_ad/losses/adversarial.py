"""WGAN-GP critic loss with PIAD's norm penalty (docs/methods/piad.md#1c)."""

from __future__ import annotations

import tensorflow as tf

GRADIENT_PENALTY = 10.0  # every PIAD config, docs/methods/piad.md#1c
NORM_PENALTY = 0.001


def wgan_gp_critic_loss(critic, real, fake, alpha):
    """Per-sample WGAN-GP critic loss with PIAD's norm penalty, whose batch mean is
    mean D(f) - mean D(r) + 0.001·(mean D(r)² + mean D(f)²) + 10·mean_b (‖∇D(x̂_b)‖₂ - 1)²,
    x̂ = α·r + (1 - α)·f with one α per sample; inputs are constants (detached)."""
    real, fake = tf.stop_gradient(real), tf.stop_gradient(fake)
    alpha = tf.reshape(alpha, [-1] + [1] * (real.shape.rank - 1))
    mixed = alpha * real + (1.0 - alpha) * fake
    with tf.GradientTape() as inner:
        inner.watch(mixed)
        mixed_out = critic(mixed, training=True)
    gradient = inner.gradient(mixed_out, mixed)
    norms = tf.sqrt(tf.reduce_sum(tf.square(tf.reshape(gradient, [tf.shape(gradient)[0], -1])), axis=1))
    d_real, d_fake = critic(real, training=True)[:, 0], critic(fake, training=True)[:, 0]
    return (d_fake - d_real + NORM_PENALTY * (tf.square(d_real) + tf.square(d_fake))
            + GRADIENT_PENALTY * tf.square(norms - 1.0))
