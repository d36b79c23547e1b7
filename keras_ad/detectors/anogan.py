"""`anogan`: AnoGAN (Schlegl et al. 2017) with a batched test-time latent search, docs/methods/anogan.md.

A DCGAN learns normal images only. To score an image, gradient descent looks for the latent z whose
G(z) explains it best under L(z) = (1 - λ)·Σ|x - G(z)| + λ·Σ|f(x) - f(G(z))| (f: the discriminator's
last feature map, λ = 0.1, sums as in the paper and the seed code, docs/methods/anogan.md#2c); the final loss is
the image score and |x - G(z*)| (channel mean) the anomaly map (docs/methods/anogan.md#2e).

The search runs for a whole batch at once: one `tf.while_loop` of Adam steps on a [N, latent] tensor,
each image's loss summed on its own so every z sees only its image's gradient (docs/methods/anogan.md#2g-5). It is part
of the scoring graph and exports to SavedModel.

The edge variant (ours, after f-AnoGAN's izi_f encoder, Schlegl et al. 2019): after the GAN, an
encoder E is trained with G and D frozen to map x to z (loss mean (x - G(E(x)))² + κ·mean
(f(x) - f(G(E(x))))²); scoring with z = E(x) and no search is a plain forward graph that TFLite and
ONNX run. `search_init: encoder` starts the full search from E(x) instead of a random z.

Fixes of the seed code's defects (docs/methods/anogan.md#2g), each a deliberate difference:
- every image starts from the same seeded latents (z is not carried over from the previous image),
  so a score depends on the image only, not on its batch or its position in it;
- batch norm runs in inference mode (moving statistics) in G *and* in the discriminator features
  while scoring: the seed computed f on a batch of one in training mode, which normalised every
  feature map by its own statistics and overwrote D's moving averages;
- training images are shuffled (the seed walked them in glob order) and z_dim is its own setting.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from keras_ad.detectors.base import Detector, TrainingPhase, adam, descend, images_of
from keras_ad.detectors.blocks import (
    BATCH_NORM,
    BatchNormalization,
    MaxLeakyReLU,
    bce_per_example,
    dcgan_init,
    float32_output,
    per_example,
)

KERNEL = 5  # DCGAN-tensorflow's conv2d / deconv2d, stride 2, 'SAME' (docs/methods/anogan.md#2b)
def conv_init():
    """Conv kernels: truncated N(0, 0.02); deconv and dense: dcgan_init (a new one per layer, blocks.py)."""
    return keras.initializers.TruncatedNormal(0.0, 0.02)
ADAM_BETA_1 = 0.5  # DCGAN training and the latent search (docs/methods/anogan.md#2d)
TF1_ADAM_EPSILON = 1e-8  # tf.compat.v1.train.AdamOptimizer
DOWNSAMPLING = 16  # four stride-2 stages: the generator starts at size / 16


# ---------------------------------------------------------------- networks (docs/methods/anogan.md#2b)
def generator(shape, channels, filters, latent_dim, name="generator"):
    """dense -> (h/16 x w/16) x 8f, BN, ReLU; 3 x (deconv 5x5 s2, BN, ReLU) halving the width; deconv -> tanh."""
    rows, cols = shape[0] // DOWNSAMPLING, shape[1] // DOWNSAMPLING
    z = keras.Input((latent_dim,))
    x = layers.Dense(rows * cols * filters * 8, kernel_initializer=dcgan_init())(z)
    x = layers.ReLU()(BatchNormalization(**BATCH_NORM)(layers.Reshape((rows, cols, filters * 8))(x)))
    for width in (filters * 4, filters * 2, filters):
        x = layers.Conv2DTranspose(width, KERNEL, strides=2, padding="same", kernel_initializer=dcgan_init())(x)
        x = layers.ReLU()(BatchNormalization(**BATCH_NORM)(x))
    x = layers.Conv2DTranspose(channels, KERNEL, strides=2, padding="same", kernel_initializer=dcgan_init(),
                               activation="tanh")(x)
    return keras.Model(z, float32_output(x), name=name)


def conv_stack(shape, channels, filters, name):
    """conv 5x5 s2 -> f, LReLU; 3 x (conv 5x5 s2, BN, LReLU) doubling the width: [N, h/16, w/16, 8f]."""
    image = keras.Input((*shape, channels))
    x = MaxLeakyReLU()(layers.Conv2D(filters, KERNEL, strides=2, padding="same", kernel_initializer=conv_init())(image))
    for width in (filters * 2, filters * 4, filters * 8):
        x = layers.Conv2D(width, KERNEL, strides=2, padding="same", kernel_initializer=conv_init())(x)
        x = MaxLeakyReLU()(BatchNormalization(**BATCH_NORM)(x))
    return keras.Model(image, float32_output(x), name=name)


def discriminator(shape, channels, filters, name="discriminator"):
    """(logit model, feature model f): the conv stack, then flatten + dense -> 1 logit (docs/methods/anogan.md#2b)."""
    features = conv_stack(shape, channels, filters, f"{name}_features")
    logit = layers.Dense(1, kernel_initializer=dcgan_init())(layers.Flatten()(features.output))
    return keras.Model(features.input, float32_output(logit), name=name), features


def encoder(shape, channels, filters, latent_dim, name="encoder"):
    """The discriminator's conv stack, then dense -> latent with tanh (f-AnoGAN's izi encoder; ours)."""
    stack = conv_stack(shape, channels, filters, f"{name}_stack")
    z = layers.Dense(latent_dim, kernel_initializer=dcgan_init(), activation="tanh")(layers.Flatten()(stack.output))
    return keras.Model(stack.input, float32_output(z), name=name)


# ---------------------------------------------------------------- the latent search
def adam_descent(loss_fn, z0, steps: int, learning_rate: float, beta_1: float = ADAM_BETA_1,
                 beta_2: float = 0.999, epsilon: float = TF1_ADAM_EPSILON):
    """`steps` Adam updates of z on the scalar `loss_fn(z)`, as one tf.while_loop (TF1 Adam arithmetic).

    Adam is element-wise: when the loss is a sum of per-image losses, each row of z moves exactly as it
    would alone. The optimiser state starts at zero on every call (the seed kept it across images).
    """
    if steps == 0:
        return z0

    def step(t, z, m, v):
        with tf.GradientTape(watch_accessed_variables=False) as tape:  # z only: the networks stay frozen
            tape.watch(z)
            loss = loss_fn(z)
        gradient = tape.gradient(loss, z)
        t = t + 1
        m = beta_1 * m + (1.0 - beta_1) * gradient
        v = beta_2 * v + (1.0 - beta_2) * tf.square(gradient)
        t_float = tf.cast(t, z.dtype)
        rate = learning_rate * tf.sqrt(1.0 - beta_2 ** t_float) / (1.0 - beta_1 ** t_float)
        return t, z - rate * m / (tf.sqrt(v) + epsilon), m, v

    zeros = tf.zeros_like(z0)
    _, z, _, _ = tf.while_loop(lambda t, *_: t < steps, step, (tf.constant(0), z0, zeros, zeros))
    return z


def search_terms(x, x_features, generated, generated_features):
    """Per image: (Σ|x - G(z)| over pixels and channels, Σ|f(x) - f(G(z))| over the feature map),
    docs/methods/anogan.md#2c."""
    return (per_example(tf.reduce_sum, tf.abs(x - generated)),
            per_example(tf.reduce_sum, tf.abs(x_features - generated_features)))


# ---------------------------------------------------------------- the detector
class AnoGAN(Detector):
    """DCGAN + latent search; the encoder of the second training phase gives the edge variant."""

    variants = ("default", "edge")
    # built by install_optimizers from optimizer_variables(): G's is `optimizer` (compile's)
    d_optimizer = None  # the discriminator's Adam
    e_optimizer = None  # the izi_f encoder's Adam (second phase)
    device_variant = "edge"

    def __init__(self, generator_model, discriminator_model, features_model, encoder_model, latent_dim=100,
                 generator_updates=2, discrimination_weight=0.1, search_steps=500, search_lr=0.001,
                 search_restarts=1, search_init="random", search_seed=0, encoder_epochs=None,
                 encoder_feature_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.generator, self.discriminator = generator_model, discriminator_model
        self.features, self.encoder = features_model, encoder_model
        self.latent_dim, self.generator_updates = latent_dim, generator_updates
        self.discrimination_weight = discrimination_weight
        self.search_steps, self.search_lr, self.search_init = search_steps, search_lr, search_init
        self.encoder_epochs, self.encoder_feature_weight = encoder_epochs, encoder_feature_weight
        # U(-1, 1) as the seed draws z, but the same draws for every image (docs/methods/anogan.md#2g-1): order
        # independent.
        rng = np.random.default_rng(search_seed)
        self.initial_latents = rng.uniform(-1.0, 1.0, (search_restarts, latent_dim)).astype(np.float32)
        self.display_latents = rng.uniform(-1.0, 1.0, (64, latent_dim)).astype(np.float32)
        self.phase = "dcgan"
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("d_loss", "g_loss", "encoder_loss")}
        self.built = True  # functional parts are built; fit() must not call() a dummy batch (docs/stack.md#3)

    @property
    def generator_variables(self):
        return self.generator.trainable_variables

    # -- training: DCGAN (docs/methods/anogan.md#2c, docs/methods/anogan.md#2d), then the encoder
    def training_phases(self, epochs, learning_rate, lr_decay):
        encoder_epochs = self.encoder_epochs or epochs
        return [TrainingPhase(epochs, learning_rate, lr_decay, "dcgan", monitor=None),
                TrainingPhase(epochs + encoder_epochs, learning_rate, lr_decay, "encoder (G and D frozen)",
                              monitor="encoder_loss")]

    def enter_phase(self, index):
        self.phase = ("dcgan", "encoder")[index]

    def compile_phase(self, learning_rate, lr_decay):
        """Adam 2e-4, β1 0.5 (docs/methods/anogan.md#2d) for G, D and the encoder; all built now, whatever the phase."""
        self.install_optimizers(lambda name: adam(learning_rate, lr_decay, ADAM_BETA_1, TF1_ADAM_EPSILON))

    def optimizer_variables(self):
        return {"optimizer": self.generator_variables, "d_optimizer": self.discriminator.trainable_variables,
                "e_optimizer": self.encoder.trainable_variables}

    def sample_latents(self, x):
        """One z ~ U(-1, 1)^latent_dim per image of the training batch x (docs/methods/anogan.md#2c)."""
        return tf.random.uniform([tf.shape(x)[0], self.latent_dim], -1.0, 1.0)

    def train_step(self, data):
        x = images_of(data) * 2.0 - 1.0
        if self.phase == "encoder":
            self._encoder_step(x)
        else:
            self._dcgan_step(x)
        return self._results()

    def _dcgan_step(self, x):
        """One D update, then `generator_updates` G updates with the same z (docs/methods/anogan.md#2d: 2, to keep D
        from winning)."""
        z = self.sample_latents(x)
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            per_example_loss = self.discriminator_loss(x, fake, training=True)
            loss = tf.nn.compute_average_loss(per_example_loss)
        descend(self.d_optimizer, tape, loss, self.discriminator.trainable_variables)
        self.trackers["d_loss"].update_state(per_example_loss)
        for _ in range(self.generator_updates):
            with tf.GradientTape() as tape:
                per_example_loss = self.generator_loss(z, training=True)
                loss = tf.nn.compute_average_loss(per_example_loss)
            descend(self.optimizer, tape, loss, self.generator_variables)
        self.trackers["g_loss"].update_state(per_example_loss)

    def discriminator_loss(self, x, fake, training):
        """BCE(D(x), 1) + BCE(D(G(z)), 0) per example; real and fake pass D separately, as in the seed."""
        return (bce_per_example(self.discriminator(x, training=training), 1.0)
                + bce_per_example(self.discriminator(fake, training=training), 0.0))

    def generator_loss(self, z, training):
        """Non-saturating BCE(D(G(z)), 1) per example."""
        return bce_per_example(self.discriminator(self.generator(z, training=training), training=training), 1.0)

    def encoder_loss(self, x, training):
        """izi_f per example: mean (x - G(E(x)))² + κ·mean (f(x) - f(G(E(x))))², G and D in inference mode."""
        generated = self.generator(self.encoder(x, training=training), training=False)
        residual = per_example(tf.reduce_mean, tf.square(x - generated))
        features = per_example(tf.reduce_mean, tf.square(self.features(x, training=False)
                                                         - self.features(generated, training=False)))
        return residual + self.encoder_feature_weight * features

    def _encoder_step(self, x):
        with tf.GradientTape() as tape:
            per_example_loss = self.encoder_loss(x, training=True)
            loss = tf.nn.compute_average_loss(per_example_loss)
        descend(self.e_optimizer, tape, loss, self.encoder.trainable_variables)
        self.trackers["encoder_loss"].update_state(per_example_loss)

    def test_step(self, data):
        x = images_of(data) * 2.0 - 1.0
        if self.phase == "encoder":
            self.trackers["encoder_loss"].update_state(self.encoder_loss(x, training=False))
            return self.tracker_logs(["encoder_loss"])
        z = self.sample_latents(x)
        self.trackers["d_loss"].update_state(self.discriminator_loss(x, self.generator(z), training=False))
        self.trackers["g_loss"].update_state(self.generator_loss(z, training=False))
        return self.tracker_logs(["d_loss", "g_loss"])

    def _results(self):
        names = ("encoder_loss",) if self.phase == "encoder" else ("d_loss", "g_loss")
        return self.tracker_logs(names)

    # -- scoring (docs/methods/anogan.md#2e)
    def search(self, images, init: str = "random", steps: int | None = None):
        """Latent search for a batch of [0, 1] images -> (loss L(z*) [N], G(z*) in [-1, 1], z* [N, latent]).

        init "random": every image starts from each of the seeded restart latents and keeps the best;
        "encoder": from E(x), once. G and the features f run in inference mode throughout.
        """
        steps = self.search_steps if steps is None else steps
        x = images * 2.0 - 1.0
        n = tf.shape(x)[0]
        restarts = 1 if init == "encoder" else len(self.initial_latents)
        if init == "encoder":
            z0 = self.encoder(x, training=False)
        else:  # rows r*N + i: restart r of image i
            z0 = tf.repeat(tf.constant(self.initial_latents), n, axis=0)
            x = tf.tile(x, [restarts, 1, 1, 1])
        x_features = self.features(x, training=False)
        z = adam_descent(lambda z: tf.reduce_sum(self.search_loss(x, x_features, z)[0]), z0, steps,
                         self.search_lr)
        loss, generated = self.search_loss(x, x_features, z)
        if restarts > 1:
            best = tf.stack([tf.argmin(tf.reshape(loss, [restarts, n]), axis=0, output_type=tf.int32),
                             tf.range(n)], axis=1)
            def pick(t):
                return tf.gather_nd(tf.reshape(t, tf.concat([[restarts, n], tf.shape(t)[1:]], 0)), best)

            loss, generated, z = pick(loss), pick(generated), pick(z)
        return loss, generated, z

    def search_loss(self, x, x_features, z):
        """(L(z) per image [N], G(z)) for [-1, 1] images x and their features f(x), computed once per search."""
        generated = self.generator(z, training=False)
        residual, discrimination = search_terms(x, x_features, generated, self.features(generated, training=False))
        lam = self.discrimination_weight
        return (1.0 - lam) * residual + lam * discrimination, generated

    def scored_search(self, images, init: str = "random", steps: int | None = None):
        """(score L(z*) [N], map mean_c |x - G(z*)| [N, H, W] in [-1, 1] units, G(z*)) of one search."""
        loss, generated, _ = self.search(images, init, steps)
        return loss, tf.reduce_mean(tf.abs(images * 2.0 - 1.0 - generated), axis=-1), generated

    def score_and_map(self, images, variant="default"):
        """The default variant searches as configured; "edge" takes z = E(x) with no search, a forward
        graph that TFLite and ONNX run."""
        loss, residual_map, _ = self._variant_search(images, variant)
        return loss, residual_map

    def _variant_search(self, images, variant):
        if variant == "edge":
            return self.scored_search(images, init="encoder", steps=0)
        return self.scored_search(images, init=self.search_init)

    def anomaly_map(self, images):
        return self.score_and_map(images)[1]

    def sample_panels(self, images):
        """DCGAN samples G(z) from fixed latents; once the encoder trains, G(E(x)) and its map too.

        The full search would cost minutes per grid on a CPU, so grids show the edge variant; its
        G(E(x)) is not labelled "reconstruction", which evaluation overlays would pair with the
        search's map.
        """
        samples = self.generator(self.display_latents[:len(images)], training=False)
        panels = {"input": images, "samples G(z)": (samples + 1.0) / 2.0}
        if self.phase == "encoder":
            _, residual_map, generated = self._variant_search(tf.convert_to_tensor(images, tf.float32), "edge")
            panels.update({"G(E(x))": (generated + 1.0) / 2.0, "edge anomaly map": residual_map})
        return panels


def from_config(cfg):
    det, data = cfg.detector, cfg.data
    shape, channels, filters, latent = data.model_shape, data.channels, det.filters, det.latent_dim
    critic, features = discriminator(shape, channels, filters)
    return AnoGAN(generator(shape, channels, filters, latent), critic, features,
                  encoder(shape, channels, filters, latent), latent_dim=latent,
                  generator_updates=det.generator_updates, discrimination_weight=det.discrimination_weight,
                  search_steps=det.search_steps, search_lr=det.search_lr, search_restarts=det.search_restarts,
                  search_init=det.search_init, search_seed=det.search_seed,
                  encoder_epochs=None if det.encoder_epochs == "auto" else det.encoder_epochs,
                  encoder_feature_weight=det.encoder_feature_weight, name="anogan")
