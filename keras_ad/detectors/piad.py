"""`piad`: Perceptual Image Anomaly Detection (Tuluptceva et al. 2019), docs/methods/piad.md.

An encoder E maps images to a N(0, I) latent and a generator G maps latents back; each mapping is
learned adversarially with a WGAN-GP critic (D_x on images, D_z on latents), and E and G are tied by
the relative-perceptual-L1 reconstruction loss on VGG19 relu4_2 features, weighted per network by the
gradient-normalising weight policy. Score: relative-perceptual-L1(x, G(E(x))) (docs/methods/piad.md#1e); the map (ours)
is its per-position part, upsampled from the relu4_2 grid. The paper's ablations (perceptual L1/L2,
pixel L2, fixed weights) are `reconstruction_loss` / `reconstruction_weights` settings.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers

from keras_ad.backbones import efficientnet_lite, vgg19
from keras_ad.detectors.base import Detector, images_of, loss_scale, scaled_gradients
from keras_ad.detectors.blocks import LEAKY_SLOPE, MaxLeakyReLU, MinibatchStdDev, NearestUpsample2x, float32_output
from keras_ad.losses.adversarial import wgan_gp_critic_loss
from keras_ad.losses.perceptual import RECONSTRUCTION_LOSSES, PerceptualFeatures, reconstruction_map
from keras_ad.losses.weight_policy import GradientWeightPolicy, is_kernel, kernel_gradient_stds
from keras_ad.optimizers import FusedAdam
from keras_ad.replicas import replica_sum

LEAKY_GAIN = math.sqrt(2.0 / (1.0 + LEAKY_SLOPE ** 2))  # PyTorch calculate_gain('leaky_relu', 0.2)


def conv_init():
    """Every conv kernel of G, E and D_x: He-normal, fan_out, LeakyReLU gain (docs/methods/piad.md#1b); a new
    initializer per layer (keras_ad/detectors/blocks.py says why)."""
    return keras.initializers.VarianceScaling(LEAKY_GAIN ** 2, mode="fan_out", distribution="untruncated_normal")


# ---------------------------------------------------------------- layers (docs/methods/piad.md#1b)
def conv(x, filters, kernel, padding="same"):
    """Conv with a bias, He-normal fan_out kernel, PyTorch's default bias U(±1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(kernel * kernel * x.shape[-1])
    return layers.Conv2D(filters, kernel, padding=padding, kernel_initializer=conv_init(),
                         bias_initializer=keras.initializers.RandomUniform(-bound, bound))(x)


def _skip(x, filters):
    return x if x.shape[-1] == filters else conv(x, filters, 1)


def up_block(x, filters):
    """Pre-activation residual: LReLU, nearest x2, conv, LReLU, conv; skip: x2 (and 1x1 conv)."""
    main = NearestUpsample2x()(MaxLeakyReLU()(x))
    main = conv(MaxLeakyReLU()(conv(main, filters, 3)), filters, 3)
    return layers.Add()([main, _skip(NearestUpsample2x()(x), filters)])


def down_block(x, filters):
    """Pre-activation residual: LReLU, conv, LReLU, conv, avg-pool 2; skip: avg-pool 2 (and 1x1 conv)."""
    main = conv(MaxLeakyReLU()(conv(MaxLeakyReLU()(x), filters, 3)), filters, 3)
    return layers.Add()([layers.AveragePooling2D(2)(main), _skip(layers.AveragePooling2D(2)(x), filters)])


def preact_res(x, filters):
    main = conv(MaxLeakyReLU()(conv(MaxLeakyReLU()(x), filters, 3)), filters, 3)
    return layers.Add()([main, _skip(x, filters)])


def res(x, filters):
    """Not pre-activated: conv, LReLU, conv; skip identity or 1x1 conv (spatial latents only,
    docs/methods/piad.md#1b)."""
    main = conv(MaxLeakyReLU()(conv(x, filters, 3)), filters, 3)
    return layers.Add()([main, _skip(x, filters)])


# ---------------------------------------------------------------- networks (docs/methods/piad.md#1b)
def generator(size, channels, dims, latent_dim, latent_res=1, name="generator"):
    """z [r, r, d] -> a 4x4 start (r = 1: zero-pad 3 + conv 4x4, a dense; r > 1: Res at r x r) -> UpBlocks
    -> PreActRes -> LReLU, 1x1 conv. Linear output: no tanh (docs/methods/piad.md#1g-1)."""
    z = keras.Input((latent_res, latent_res, latent_dim))
    if latent_res == 1:
        x = conv(layers.ZeroPadding2D(3)(z), dims[0], 4, padding="valid")
    else:
        x = res(z, dims[0])
    for width in dims[1:]:
        x = up_block(x, width)
    x = preact_res(x, dims[-1])
    return keras.Model(z, float32_output(conv(MaxLeakyReLU()(x), channels, 1)), name=name)


def _encoder_trunk(size, channels, dims):
    dims = [dims[0]] + list(dims)  # the list is prefixed with its first element (docs/methods/piad.md#1b)
    image = keras.Input((size, size, channels))
    x = conv(image, dims[0], 3)
    for width in dims[1:-1]:
        x = down_block(x, width)
    return image, x, dims[-1]


def encoder(size, channels, dims, latent_dim, latent_res=1, name="encoder"):
    """conv 3x3 -> DownBlocks to max(r, 4) -> (r = 1: LReLU, conv 4x4 valid, LReLU; r > 1: PreActRes,
    LReLU) -> 1x1 conv to z [r, r, d]."""
    image, x, width = _encoder_trunk(size, channels, dims)
    if latent_res == 1:
        x = MaxLeakyReLU()(conv(MaxLeakyReLU()(x), width, 4, padding="valid"))
    else:
        x = MaxLeakyReLU()(preact_res(x, width))
    return keras.Model(image, float32_output(conv(x, latent_dim, 1)), name=name)


def image_critic(size, channels, dims, name="image_critic"):
    """The encoder template with one output and a MinibatchStdDev channel before the 4x4 conv."""
    image, x, width = _encoder_trunk(size, channels, dims)
    x = MaxLeakyReLU()(conv(MaxLeakyReLU()(MinibatchStdDev()(x)), width, 4, padding="valid"))
    return keras.Model(image, float32_output(layers.Flatten()(conv(x, 1, 1))), name=name)


def latent_critic(latent_dim, dims, latent_res=1, name="latent_critic"):
    """Flattened z -> dense, LReLU, ... -> 1; Glorot-uniform kernels scaled by each layer's gain
    (docs/methods/piad.md#1b)."""
    z = keras.Input((latent_res, latent_res, latent_dim))
    x = layers.Flatten()(z)
    for width in dims:
        init = keras.initializers.VarianceScaling(LEAKY_GAIN ** 2, mode="fan_avg", distribution="uniform")
        x = MaxLeakyReLU()(layers.Dense(width, kernel_initializer=init, bias_initializer=_torch_bias(x))(x))
    out = layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(), bias_initializer=_torch_bias(x))(x)
    return keras.Model(z, float32_output(out), name=name)


def _torch_bias(x):
    bound = 1.0 / math.sqrt(x.shape[-1])
    return keras.initializers.RandomUniform(-bound, bound)


# ---------------------------------------------------------------- the detector
class PIAD(Detector):
    """E, G, D_x, D_z and the frozen perceptual features; one train_step = n_dis critic steps and one
    E/G step, each on its own slice of the batch (fresh x and z per step, docs/methods/piad.md#1d,
    docs/methods/piad.md#1g-8)."""

    validation_monitor = "reconstruction"  # the reconstruction term on good validation images
    # built by install_optimizers from optimizer_variables(): E and G share `optimizer` (compile's)
    x_optimizer = None  # the image critic's Adam
    z_optimizer = None  # the latent critic's Adam

    def __init__(self, encoder_model, generator_model, image_critic_model, latent_critic_model, features,
                 n_dis=2, critic_learning_rate=5e-4, weight_decay=1e-8, weight_policy=True,
                 weight_update_every=100, reconstruction_loss="relative_perceptual_l1",
                 reconstruction_weights=(1.0, 1.0), **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.generator = encoder_model, generator_model
        self.image_critic, self.latent_critic = image_critic_model, latent_critic_model
        self.features = features
        _, self.distance, self.relative = RECONSTRUCTION_LOSSES[reconstruction_loss]
        self.n_dis, self.critic_learning_rate, self.weight_decay = n_dis, critic_learning_rate, weight_decay
        self.use_weight_policy, self.weight_update_every = weight_policy, weight_update_every
        self.latent_shape = tuple(encoder_model.output_shape[1:])
        self.policy = GradientWeightPolicy({"encoder": _kernel_count(encoder_model),
                                            "generator": _kernel_count(generator_model)},
                                           initial=dict(zip(("encoder", "generator"), reconstruction_weights)))
        self.iteration = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int64",
                                         name="iteration")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in
                         ("image_critic_loss", "latent_critic_loss", "reconstruction", "adv_g", "adv_e",
                          "w_encoder", "w_generator")}
        self.built = True

    @property
    def batches_per_step(self):
        """Each train_step consumes n_dis + 1 batches: one per critic step, one for E and G."""
        return self.n_dis + 1

    @property
    def generator_variables(self):
        return self.encoder.trainable_variables + self.generator.trainable_variables

    def compile_phase(self, learning_rate, lr_decay):
        """Adam β (0.5, 0.99) for E∪G (lr 1e-4) and for each critic (lr 5e-4), docs/methods/piad.md#1d."""
        self.install_optimizers(lambda name: FusedAdam(
            learning_rate if name == "optimizer" else self.critic_learning_rate, beta_1=0.5, beta_2=0.99, epsilon=1e-8))

    def optimizer_variables(self):
        return {"optimizer": self.generator_variables, "x_optimizer": self.image_critic.trainable_variables,
                "z_optimizer": self.latent_critic.trainable_variables}

    def sample_prior(self, n):
        """z_real ~ N(0, I) of the latent's shape (docs/methods/piad.md#1c)."""
        return tf.random.normal([n, *self.latent_shape])

    def sample_alpha(self, n):
        """One interpolation weight α ~ U(0, 1) per sample for the gradient penalty (docs/methods/piad.md#1c,
        docs/methods/piad.md#1g-7)."""
        return tf.random.uniform([n])

    def _with_decay(self, gradients, variables, optimizer):
        """PyTorch's coupled weight decay: wd·θ added to the gradient before Adam (docs/stack.md#01-6), times the
        optimiser's loss scale when the gradients carry one."""
        scale = loss_scale(optimizer)
        decay = self.weight_decay if scale is None else self.weight_decay * scale
        return [g + decay * v for g, v in zip(gradients, variables)]

    def train_step(self, data):
        # Interleaved, not consecutive, slices: under tf.distribute each replica's k-th slice is then
        # part of the one-device k-th slice, so every step sees the same images on any replica count.
        x = images_of(data) * 2.0 - 1.0
        batches = [x[k::self.batches_per_step] for k in range(self.batches_per_step)]
        for x in batches[:-1]:
            self._critic_step(x)
        self._encoder_generator_step(batches[-1])
        return self.tracker_logs()

    def _critic_step(self, x):
        n = tf.shape(x)[0]
        z_real = self.sample_prior(n)
        x_fake, z_fake = self.generator(z_real, training=True), self.encoder(x, training=True)
        for critic, optimizer, real, fake, name in (
                (self.image_critic, self.x_optimizer, x, x_fake, "image_critic_loss"),
                (self.latent_critic, self.z_optimizer, z_real, z_fake, "latent_critic_loss")):
            with tf.GradientTape() as tape:
                per_sample = wgan_gp_critic_loss(critic, real, fake, self.sample_alpha(n))
                loss = tf.nn.compute_average_loss(per_sample)
            variables = critic.trainable_variables
            gradients = scaled_gradients(tape, loss, variables, optimizer)
            optimizer.apply_gradients(zip(self._with_decay(gradients, variables, optimizer), variables))
            self.trackers[name].update_state(per_sample)

    def _encoder_generator_step(self, x):
        with tf.GradientTape(persistent=True) as tape:
            z = self.encoder(x, training=True)
            generated = self.generator(self.sample_prior(tf.shape(x)[0]), training=True)
            per_sample = {
                "rec": self.reconstruction_loss(x, self.generator(z, training=True)),
                "adv_g": -self.image_critic(generated, training=True)[:, 0],
                "adv_e": -self.latent_critic(z, training=True)[:, 0]}
            losses = {k: tf.nn.compute_average_loss(v) for k, v in per_sample.items()}
        enc, gen = self.encoder.trainable_variables, self.generator.trainable_variables
        # one backward pass through the VGG for E and G; all four share the optimiser's loss scale, which
        # the weight policy's ratios do not see
        rec = scaled_gradients(tape, losses["rec"], enc + gen, self.optimizer)
        grads = {"rec_e": rec[:len(enc)], "rec_g": rec[len(enc):],
                 "adv_e": scaled_gradients(tape, losses["adv_e"], enc, self.optimizer),
                 "adv_g": scaled_gradients(tape, losses["adv_g"], gen, self.optimizer)}
        del tape
        self.iteration.assign_add(1)
        if self.use_weight_policy:
            # the global (all-replica) unweighted gradients; reduced on every step because a collective
            # inside tf.cond is not supported under tf.distribute
            total = replica_sum(grads)
            due = tf.logical_and(self.iteration % self.weight_update_every == 0, _all_finite(total.values()))
            tf.cond(due, lambda: self._update_weights(total), lambda: tf.constant(True))
        w_e, w_g = self.policy.weight("encoder"), self.policy.weight("generator")
        gradients = ([w_e * r + a for r, a in zip(grads["rec_e"], grads["adv_e"])]
                     + [w_g * r + a for r, a in zip(grads["rec_g"], grads["adv_g"])])
        variables = enc + gen
        self.optimizer.apply_gradients(zip(self._with_decay(gradients, variables, self.optimizer), variables))
        for name, value in (("reconstruction", per_sample["rec"]), ("adv_g", per_sample["adv_g"]),
                            ("adv_e", per_sample["adv_e"]), ("w_encoder", w_e), ("w_generator", w_g)):
            self.trackers[name].update_state(value)

    def _update_weights(self, total):
        """Record the kernel-gradient stds of the unweighted gradients and recompute w_E, w_G
        (docs/methods/piad.md#1c)."""
        for net, variables in (("encoder", self.encoder.trainable_variables),
                               ("generator", self.generator.trainable_variables)):
            suffix = "e" if net == "encoder" else "g"
            self.policy.record(net, kernel_gradient_stds(total[f"adv_{suffix}"], variables),
                               kernel_gradient_stds(total[f"rec_{suffix}"], variables))
        return tf.constant(True)

    def test_step(self, data):
        """Validation: the mean score, rel-perc-L1(x, G(E(x))) of good images."""
        score, _ = self.score_and_map(images_of(data))
        self.trackers["reconstruction"].update_state(score)
        return self.tracker_logs(["reconstruction"])

    def reconstruction_loss(self, x, reconstruction):
        """Per sample L_rec(x, x̂): relative-perceptual-L1 by default (docs/methods/piad.md#1c), or an ablation's
        loss."""
        return tf.reduce_mean(self._reconstruction_map(x, reconstruction), axis=[1, 2, 3])

    def _reconstruction_map(self, x, reconstruction):
        return reconstruction_map(self.features(x), self.features(reconstruction), self.distance, self.relative)

    # -- scoring (docs/methods/piad.md#1e)
    def score_and_map(self, images, variant="default"):
        """Score L_rec(x, G(E(x))); map (ours): its per-position part on the relu4_2 grid (the pixel grid
        for pixel_l2), bilinearly upsampled, whose spatial mean is the score."""
        x = images * 2.0 - 1.0
        per_position = self._reconstruction_map(x, self.generator(self.encoder(x, training=False), training=False))
        size = images.shape[1]
        if per_position.shape[1] != size:
            per_position = tf.image.resize(per_position, [size, size], "bilinear")
        return tf.reduce_mean(per_position, axis=[1, 2, 3]), per_position[..., 0]

    def anomaly_map(self, images):
        return self.score_and_map(images)[1]

    def sample_panels(self, images):
        reconstruction = self.generator(self.encoder(images * 2.0 - 1.0, training=False), training=False)
        return {"input": images, "reconstruction": tf.clip_by_value(reconstruction * 0.5 + 0.5, 0.0, 1.0),
                "anomaly map": self.anomaly_map(images)}


def _all_finite(gradient_lists):
    """No inf or NaN in any gradient: a loss-scaled float16 step that overflowed (the optimiser skips it)
    must not enter the weight policy's history."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for grads in gradient_lists for g in grads])


def _kernel_count(model):
    return sum(1 for v in model.trainable_variables if is_kernel(v))


def from_config(cfg):
    det, data = cfg.detector, cfg.data
    size, channels = data.model_shape[0], data.channels  # square (config check)
    compared = RECONSTRUCTION_LOSSES[det.reconstruction_loss][0]
    weights = det.reconstruction_weights  # two numbers >= 0 (its spec's field)
    standardised = compared.startswith("standardised")
    if compared == "ImageNet-normalised image":
        features = PerceptualFeatures(None)
    elif det.perceptual_network == "efficientnet_lite0":
        network = efficientnet_lite.stage_model(EFFICIENTNET_STAGE, (size, size))
        stats = vgg19.read_statistics(det.perceptual_stats) if standardised and det.perceptual_stats else ()
        features = PerceptualFeatures(network, *stats, input_mode="unit")
    else:
        vgg = vgg19.relu4_2(size, det.perceptual_weights)
        mean, std = vgg19.feature_statistics(det.perceptual_weights, det.perceptual_stats)
        features = PerceptualFeatures(vgg, *((mean, std) if standardised else ()),
                                      input_mode="caffe" if det.perceptual_weights == "keras-imagenet"
                                      else "torchvision")
    r = det.latent_res
    model = PIAD(encoder(size, channels, det.encoder_dims, det.latent_dim, r),
                generator(size, channels, det.generator_dims, det.latent_dim, r),
                image_critic(size, channels, det.image_critic_dims),
                latent_critic(det.latent_dim, det.latent_critic_dims, r),
                features, n_dis=det.n_dis, critic_learning_rate=det.critic_learning_rate,
                weight_decay=det.weight_decay, weight_policy=det.weight_policy,
                weight_update_every=det.weight_update_every, reconstruction_loss=det.reconstruction_loss,
                reconstruction_weights=[float(w) for w in weights], name="piad")
    if det.reconstruction_loss != "relative_perceptual_l1":
        model.caveats = (f"reconstruction_loss: {det.reconstruction_loss}: an ablation of the paper "
                         "(docs/methods/piad.md#1c), on the "
                         f"{compared}",)
    if features.vgg is not None and det.perceptual_network == "efficientnet_lite0":
        model.caveats += (f"perceptual_network: efficientnet_lite0: the perceptual loss compares ImageNet "
                          f"EfficientNet-Lite0 {EFFICIENTNET_STAGE} features (stride 8, as relu4_2), not the paper's "
                          f"VGG19{'' if features.standardise else ', unstandardised'}",)
    elif features.vgg is not None and det.perceptual_weights in vgg19.WEIGHT_CAVEATS:
        model.caveats += (vgg19.WEIGHT_CAVEATS[det.perceptual_weights],)
    return model


EFFICIENTNET_STAGE = "stage3"  # stride 8 like VGG19's relu4_2, 40 channels
