"""`ganomaly2d`: GANomaly2D (spatial latent, anomaly map) and GANomaly (vector latent), docs/methods/ganomaly.md.

Both are encoder -> decoder -> encoder generators trained against a discriminator; the anomaly is the
distance between the latent of the image, z, and the latent of its reconstruction, ẑ.
- `latent: 2d` (GANomaly2D, `SunnerLi/GANomaly2D`): CycleGAN-style stems, 4 stride-2 stages, so z is
  a (S/16)x(S/16) map; PatchGAN discriminator with BCE; L_G = 1·BCE + 10·Σ(x̂-x)² + 10·Σ|ẑ-z| with sums
  over the batch (docs/methods/ganomaly.md#42, docs/methods/ganomaly.md#43-1); D step first, then the G step against
  the updated D.
- `latent: 1d` (GANomaly, `samet-akcay/ganomaly`): DCGAN encoder/decoder, 100-d z; feature matching on
  the discriminator's last features; L_G = 1·adv + 50·mean|x-x̂| + 1·mean(z-ẑ)²; G step first, then D
  (on the fake computed before the G step), D re-initialised when its loss falls below 1e-5
  (docs/methods/ganomaly.md#41).

Deviations from the code, each on purpose (docs/methods/ganomaly.md#43):
- the map is the raw channel mean of |z - ẑ|, not min-max normalised per batch: a thresholded map must
  mean the same in every batch (the repo's normalisation is a display mode only);
- BatchNorm runs in inference mode when scoring (GANomaly's test pass used batch statistics);
- no model selection on test data (GANomaly kept the epoch with the best test AUC): the last epoch is used;
- the discriminators output logits and the BCE is computed from logits (the same loss, numerically stable).
Images arrive in [0, 1] and are scaled to [-1, 1] inside (the repos' Normalize(0.5, 0.5)).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from keras_ad.detectors.base import Detector, adam, descend, images_of
from keras_ad.detectors.blocks import (
    BATCH_NORM,
    LEAKY_SLOPE,
    BatchNormalization,
    bce_per_example,
    dcgan_init,
    float32_output,
    per_example,
)
from keras_ad.replicas import replica_sum

PYTORCH_ADAM_EPSILON = 1e-8
D_REINIT_BELOW = 1e-5  # GANomaly re-initialises D when its loss falls below this, docs/methods/ganomaly.md#41
LATENT_STRIDE = 16  # GANomaly2D: four stride-2 stages, docs/methods/ganomaly.md#42


class ReflectionPadding2D(layers.Layer):
    """Reflect-pad height and width by `pad` (PyTorch ReflectionPad2d; Keras has no such layer,
    docs/methods/ganomaly.md#43-4)."""

    def __init__(self, pad: int, **kwargs):
        super().__init__(**kwargs)
        self.pad = pad

    def call(self, x):
        p = self.pad
        return keras.ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, shape):
        grow = lambda d: None if d is None else d + 2 * self.pad  # noqa: E731
        return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


def _conv(x, filters, kernel, stride, pad=0, bias=False, init=None):
    """PyTorch Conv2d(k, s, p): explicit zero padding + 'valid' (TF 'same' shifts the grid, docs/stack.md#01-2)."""
    if pad:
        x = layers.ZeroPadding2D(pad)(x)
    return layers.Conv2D(filters, kernel, strides=stride, padding="valid", use_bias=bias,
                         kernel_initializer=init or "glorot_uniform")(x)


def _bn(x, init=False):
    if init:  # GANomaly's weights_init: gamma ~ N(1, 0.02), beta = 0
        return BatchNormalization(gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02), **BATCH_NORM)(x)
    return BatchNormalization(**BATCH_NORM)(x)


# ---------------------------------------------------------------- GANomaly2D networks (docs/methods/ganomaly.md#42)
def cycle_encoder(height, width, channels, filters, name):
    """reflect-pad 3, conv 7x7, then 4 x (conv 3x3 s2 p1, BN, ReLU) doubling the width: z at stride 16."""
    image = keras.Input((height, width, channels))
    x = ReflectionPadding2D(3)(image)
    x = layers.ReLU()(_bn(_conv(x, filters, 7, 1)))
    for stage in range(1, 5):
        x = layers.ReLU()(_bn(_conv(x, filters * 2 ** stage, 3, 2, pad=1)))
    return keras.Model(image, float32_output(x), name=name)


def cycle_decoder(latent_shape, channels, filters, name="decoder"):
    """4 x (transposed conv 3x3 s2 p1 output_padding 1, BN, ReLU), reflect-pad 3, conv 7x7, tanh."""
    z = keras.Input(latent_shape)
    x = z
    for stage in range(3, -1, -1):
        # PyTorch's (k3, s2, p1, op1) keeps rows 1 .. 2H of the full (2H + 1)-row output (docs/stack.md#01-3).
        x = layers.Conv2DTranspose(filters * 2 ** stage, 3, strides=2, padding="valid", use_bias=False)(x)
        x = layers.ReLU()(_bn(layers.Cropping2D(((1, 0), (1, 0)))(x)))
    x = ReflectionPadding2D(3)(x)
    x = layers.Conv2D(channels, 7, padding="valid", use_bias=True, activation="tanh")(x)
    return keras.Model(z, float32_output(x), name=name)


def patch_discriminator(height, width, channels, filters, name="discriminator"):
    """70x70 PatchGAN with the repo's explicit padding: 240x320 -> 28x38 logits (docs/methods/ganomaly.md#42,
    docs/methods/ganomaly.md#43-3)."""
    image = keras.Input((height, width, channels))
    x = layers.LeakyReLU(LEAKY_SLOPE)(_conv(image, filters, 4, 2, pad=1, bias=True))
    for width_factor, stride in ((2, 2), (4, 2), (8, 1)):
        x = layers.LeakyReLU(LEAKY_SLOPE)(_bn(_conv(x, filters * width_factor, 4, stride, pad=1)))
    logits = _conv(x, 1, 4, 1, pad=1, bias=True)
    return keras.Model(image, float32_output(logits), name=name)


# ---------------------------------------------------------------- GANomaly networks (docs/methods/ganomaly.md#41)
def dcgan_encoder(size, channels, filters, out_dim, name):
    """conv 4x4 s2 p1 + LReLU, then (conv 4x4 s2 p1, BN, LReLU) down to 4x4, then conv 4x4 s1 p0 -> 1x1.

    Returns (model -> [N, 1, 1, out_dim], features model -> [N, 4, 4, F]); k4 s2 p1 equals Keras 'same'.
    """
    image = keras.Input((size, size, channels))
    x = layers.LeakyReLU(LEAKY_SLOPE)(_conv(image, filters, 4, 2, pad=1, init=dcgan_init()))
    side, width = size // 2, filters
    while side > 4:
        width *= 2
        x = layers.LeakyReLU(LEAKY_SLOPE)(_bn(_conv(x, width, 4, 2, pad=1, init=dcgan_init()), init=True))
        side //= 2
    features = x
    out = _conv(features, out_dim, 4, 1, init=dcgan_init())
    return (keras.Model(image, float32_output(out), name=name),
            keras.Model(image, float32_output(features), name=f"{name}_features"))


def dcgan_decoder(size, channels, filters, latent_dim, name="decoder"):
    """transposed conv 4x4 s1 p0 -> 4x4, then (4x4 s2 p1, BN, ReLU) up to size/2, then 4x4 s2 p1 + tanh."""
    width, side = filters // 2, 4
    while side != size:
        width, side = width * 2, side * 2
    z = keras.Input((1, 1, latent_dim))
    x = layers.Conv2DTranspose(width, 4, padding="valid", use_bias=False, kernel_initializer=dcgan_init())(z)
    x = layers.ReLU()(_bn(x, init=True))
    side = 4
    while side < size // 2:
        width //= 2
        x = layers.Conv2DTranspose(width, 4, strides=2, padding="same", use_bias=False,
                                   kernel_initializer=dcgan_init())(x)
        x = layers.ReLU()(_bn(x, init=True))
        side *= 2
    x = layers.Conv2DTranspose(channels, 4, strides=2, padding="same", use_bias=False, activation="tanh",
                               kernel_initializer=dcgan_init())(x)
    return keras.Model(z, float32_output(x), name=name)


# ---------------------------------------------------------------- losses (per example; reduced in train_step)
def generator_terms_2d(x, x_hat, z, z_hat, fake_logits):
    """GANomaly2D per example: (BCE(D(x̂), 1) mean over the patch map, Σ(x̂ - x)², Σ|ẑ - z|),
    docs/methods/ganomaly.md#42."""
    return (bce_per_example(fake_logits, 1.0), per_example(tf.reduce_sum, tf.square(x_hat - x)),
            per_example(tf.reduce_sum, tf.abs(z_hat - z)))


def generator_terms_1d(x, x_hat, z, z_hat, real_features, fake_features):
    """GANomaly per example: (mean (f(x) - f(x̂))², mean |x - x̂|, mean (z - ẑ)²), docs/methods/ganomaly.md#41."""
    return (per_example(tf.reduce_mean, tf.square(real_features - fake_features)),
            per_example(tf.reduce_mean, tf.abs(x - x_hat)), per_example(tf.reduce_mean, tf.square(z - z_hat)))


def discriminator_loss_per_example(real_logits, fake_logits, half: bool):
    """BCE(D(x), 1) + BCE(D(x̂), 0); GANomaly halves it, GANomaly2D does not (docs/methods/ganomaly.md#41,
    docs/methods/ganomaly.md#42)."""
    loss = bce_per_example(real_logits, 1.0) + bce_per_example(fake_logits, 0.0)
    return 0.5 * loss if half else loss


# ---------------------------------------------------------------- the detectors
class EncoderDecoderEncoder(Detector):
    """What GANomaly and GANomaly2D share: G_E -> G_D -> E and a discriminator D; the anomaly is the
    distance between the two codes (docs/methods/ganomaly.md). Each subclass's `train_step` is one paper."""

    ADAM_BETA_1 = 0.9
    validation_monitor = "con"  # the contextual (reconstruction) loss on good validation images
    d_optimizer = None  # D's Adam, built by install_optimizers (optimizer_variables' "d_optimizer")

    def __init__(self, encoder, decoder, encoder2, discriminator, w_adv=1.0, w_con=10.0, w_enc=10.0, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.decoder, self.encoder2, self.discriminator = encoder, decoder, encoder2, discriminator
        self.w_adv, self.w_con, self.w_enc = w_adv, w_con, w_enc
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("d_loss", "g_loss", "adv", "con", "enc")}
        self.built = True  # functional parts are built; fit() must not call() a dummy batch (docs/stack.md#3)

    @property
    def generator_variables(self):
        return (self.encoder.trainable_variables + self.decoder.trainable_variables
                + self.encoder2.trainable_variables)

    def call(self, images, training=False):
        """[0, 1] images -> (reconstruction in [-1, 1], z, ẑ)."""
        x = images * 2.0 - 1.0
        z = self.encoder(x, training=training)
        x_hat = self.decoder(z, training=training)
        return x_hat, z, self.encoder2(x_hat, training=training)

    def compile_phase(self, learning_rate, lr_decay):
        self.install_optimizers(lambda name: adam(learning_rate, lr_decay, self.ADAM_BETA_1, PYTORCH_ADAM_EPSILON))

    def optimizer_variables(self):
        return {"optimizer": self.generator_variables, "d_optimizer": self.discriminator.trainable_variables}

    def generator_terms(self, x, x_hat, z, z_hat, training):
        """Per-example (adversarial, contextual, encoder) terms of the paper's generator loss."""
        raise NotImplementedError

    def _d_step(self, x, x_hat, half):
        with tf.GradientTape() as tape:
            per_example = discriminator_loss_per_example(self.discriminator(x, training=True),
                                                         self.discriminator(x_hat, training=True), half)
            loss = tf.nn.compute_average_loss(per_example)
        descend(self.d_optimizer, tape, loss, self.discriminator.trainable_variables)
        self.trackers["d_loss"].update_state(per_example)
        return loss

    def _track_generator(self, adv, con, enc):
        for name, value in (("adv", adv), ("con", con), ("enc", enc)):
            self.trackers[name].update_state(value)
        self.trackers["g_loss"].update_state(self.w_adv * adv + self.w_con * con + self.w_enc * enc)

    def test_step(self, data):
        x_hat, z, z_hat = self.call(images_of(data), training=False)
        self._track_generator(*self.generator_terms(images_of(data) * 2.0 - 1.0, x_hat, z, z_hat, training=False))
        return self.tracker_logs(["g_loss", "adv", "con", "enc"])

    def sample_panels(self, images):
        x_hat, _, _ = self.call(images, training=False)
        return {"input": images, "reconstruction": (x_hat + 1.0) / 2.0, "anomaly map": self.anomaly_map(images)}


class GANomaly2D(EncoderDecoderEncoder):
    """GANomaly2D (docs/methods/ganomaly.md#42): a spatial code, a PatchGAN with BCE, summed L2 and L1 terms;
    per iteration the D step, then the G step against the updated D."""

    def generator_terms(self, x, x_hat, z, z_hat, training):
        return generator_terms_2d(x, x_hat, z, z_hat, self.discriminator(x_hat, training=training))

    def train_step(self, data):
        x = images_of(data) * 2.0 - 1.0
        with tf.GradientTape() as tape:
            z = self.encoder(x, training=True)
            x_hat = self.decoder(z, training=True)
            z_hat = self.encoder2(x_hat, training=True)
            with tape.stop_recording():  # D first, on the fake of this forward pass (docs/methods/ganomaly.md#42)
                self._d_step(x, tf.stop_gradient(x_hat), half=False)
            adv, con, enc = self.generator_terms(x, x_hat, z, z_hat, training=True)
            loss = self.generator_loss(adv, con, enc)
        descend(self.optimizer, tape, loss, self.generator_variables)
        self._track_generator(adv, con, enc)
        return self.tracker_logs()

    def generator_loss(self, adv, con, enc):
        """BCE averaged, the two distances summed over the batch (docs/methods/ganomaly.md#43-1); reduced so
        that gradients are the same on one device and under tf.distribute."""
        return (self.w_adv * tf.nn.compute_average_loss(adv) + self.w_con * tf.reduce_sum(con)
                + self.w_enc * tf.reduce_sum(enc))

    def anomaly_map(self, images):
        """The channel mean of |z - ẑ| blown up to the image (nearest, 16x16 blocks, docs/methods/ganomaly.md#42),
        without the repo's batch normalisation."""
        _, z, z_hat = self.call(images, training=False)
        height, width = images.shape[1], images.shape[2]
        distance = tf.reduce_mean(tf.abs(z - z_hat), axis=-1)  # N, h, w
        h, w = distance.shape[1], distance.shape[2]
        blocks = tf.broadcast_to(distance[:, :, None, :, None],
                                 [tf.shape(distance)[0], h, height // h, w, width // w])
        return tf.reshape(blocks, [-1, height, width])


class GANomaly(EncoderDecoderEncoder):
    """GANomaly (docs/methods/ganomaly.md#41): a vector code, feature matching on D, mean L1 and L2 terms; per
    batch the G step, then the D step on the fake from before it, D re-initialised when its loss vanishes."""

    ADAM_BETA_1 = 0.5

    def __init__(self, *networks, discriminator_features=None, **kwargs):
        super().__init__(*networks, **kwargs)
        self.discriminator_features = discriminator_features

    def generator_terms(self, x, x_hat, z, z_hat, training):
        return generator_terms_1d(x, x_hat, z, z_hat, self.discriminator_features(x, training=training),
                                  self.discriminator_features(x_hat, training=training))

    def train_step(self, data):
        x = images_of(data) * 2.0 - 1.0
        with tf.GradientTape() as tape:
            z = self.encoder(x, training=True)
            x_hat = self.decoder(z, training=True)
            z_hat = self.encoder2(x_hat, training=True)
            adv, con, enc = self.generator_terms(x, x_hat, z, z_hat, training=True)
            loss = self.generator_loss(adv, con, enc)
        descend(self.optimizer, tape, loss, self.generator_variables)
        self._track_generator(adv, con, enc)
        d_loss = self._d_step(x, tf.stop_gradient(x_hat), half=True)  # the fake from before the G step
        total = replica_sum(d_loss)
        tf.cond(total < D_REINIT_BELOW, self._reinitialize_discriminator, lambda: tf.constant(False))
        return self.tracker_logs()

    def generator_loss(self, adv, con, enc):
        """The weighted per-example sum, averaged over the batch (means inside, docs/methods/ganomaly.md#41)."""
        return tf.nn.compute_average_loss(self.w_adv * adv + self.w_con * con + self.w_enc * enc)

    def _reinitialize_discriminator(self):
        """GANomaly's `netd.apply(weights_init)`: fresh N(0, 0.02) kernels, BN gamma N(1, 0.02), beta 0."""
        for layer in self.discriminator.layers:
            if isinstance(layer, layers.Conv2D):
                layer.kernel.assign(dcgan_init()(layer.kernel.shape))
            elif isinstance(layer, BatchNormalization):
                layer.gamma.assign(keras.initializers.RandomNormal(1.0, 0.02)(layer.gamma.shape))
                layer.beta.assign(tf.zeros_like(layer.beta))
        return tf.constant(True)

    def anomaly_map(self, images):
        """GANomaly's score mean (z - ẑ)² (docs/methods/ganomaly.md#41) everywhere: it has no localisation."""
        _, z, z_hat = self.call(images, training=False)
        score = tf.reduce_mean(tf.square(z - z_hat), axis=[1, 2, 3])
        return tf.broadcast_to(score[:, None, None], [tf.shape(score)[0], images.shape[1], images.shape[2]])


def from_config(cfg):
    det, data = cfg.detector, cfg.data
    (height, width), channels, filters = data.model_shape, data.channels, det.filters
    size = height  # the 1d (DCGAN) variant is square (config check)
    weights = {"w_adv": det.w_adv, "w_con": det.w_con, "w_enc": det.w_enc}
    if det.latent == "1d":
        encoder, _ = dcgan_encoder(size, channels, filters, det.latent_dim, "encoder")
        encoder2, _ = dcgan_encoder(size, channels, filters, det.latent_dim, "encoder2")
        discriminator, features = dcgan_encoder(size, channels, filters, 1, "discriminator")
        decoder = dcgan_decoder(size, channels, filters, det.latent_dim)
        return GANomaly(encoder, decoder, encoder2, discriminator, discriminator_features=features, **weights,
                        name="ganomaly2d")
    encoder = cycle_encoder(height, width, channels, filters, "encoder")
    encoder2 = cycle_encoder(height, width, channels, filters, "encoder2")
    decoder = cycle_decoder(encoder.output_shape[1:], channels, filters)
    return GANomaly2D(encoder, decoder, encoder2, patch_discriminator(height, width, channels, filters), **weights,
                      name="ganomaly2d")
