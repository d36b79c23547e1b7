"""`lntra`: Learning Not to Reconstruct Anomalies (Astrid et al., BMVC 2021), docs/methods/lntra.md.

A 3D-convolutional autoencoder on 16-frame grey clips learns to reconstruct normal motion; pseudo
anomalies (a pasted patch, or skipped frames; keras_ad.data.pseudo_anomalies) are trained towards the
*normal* clip, so it learns to repair anomalies rather than reproduce them. A clip scores its centre
frame: PSNR of the reconstruction (peak 1 on [-1, 1] data), min-max normalised per video offline
(the paper's protocol) or with statistics of normal clips online (ours, for cameras).

Inputs are clips [N, T, H, W, 1] in [0, 1]; the network works in [-1, 1] (docs/methods/lntra.md#5a).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from keras_ad.data.video import centre_index
from keras_ad.detectors.base import Detector, adam, descend, images_of
from keras_ad.detectors.blocks import BATCH_NORM, BatchNormalization, MaxLeakyReLU, float32_output, per_example

WIDTHS = (96, 128, 256, 256)  # docs/methods/lntra.md#5b
CLIP_LENGTH = 16  # docs/methods/lntra.md#5a
# PyTorch's default conv init (docs/methods/lntra.md#5b): kernels kaiming_uniform(a=√5), i.e. U(±1/sqrt(fan_in)), and
# biases U(±1/sqrt(fan_in)). Keras' fan_in of a Conv3DTranspose kernel (k, k, k, out, in) is 27·out, the same
# quirk as PyTorch's for its transposed weights (in, out, k, k, k).
def torch_kernel():
    """A new initializer per layer (keras_ad/detectors/blocks.py says why)."""
    return keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform")


def _torch_bias(fan_in):
    bound = 1.0 / np.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


# ---------------------------------------------------------------- network (docs/methods/lntra.md#5b)
def _encode(x, filters, strides):
    """PyTorch's conv3d(k 3, padding 1): explicit zero padding, then a 'valid' convolution, so a stride-2
    axis samples the same positions as the source (Keras' 'same' pads only at the end)."""
    x = layers.Conv3D(filters, 3, strides=strides, kernel_initializer=torch_kernel(),
                      bias_initializer=_torch_bias(27 * x.shape[-1]))(layers.ZeroPadding3D(1)(x))
    return MaxLeakyReLU()(BatchNormalization(**BATCH_NORM)(x))


def _decode(x, filters, strides, last=False):
    """PyTorch's conv_transpose3d(k 3, padding 1, output_padding 1 on stride-2 axes): the full transposed
    convolution cropped by one at the start of every axis, and at the end of stride-1 axes."""
    x = layers.Conv3DTranspose(filters, 3, strides=strides, padding="valid", kernel_initializer=torch_kernel(),
                               bias_initializer=_torch_bias(27 * filters))(x)
    x = layers.Cropping3D(tuple((1, 1) if s == 1 else (1, 0) for s in strides))(x)
    if last:
        return layers.Activation("tanh")(x)
    return MaxLeakyReLU()(BatchNormalization(**BATCH_NORM)(x))


def autoencoder(length, shape, widths=WIDTHS, name="autoencoder"):
    """[N, T, H, W, 1] in [-1, 1] -> the same shape: four encoding convolutions (strides (1,2,2), then 2),
    four transposed ones back, BN + LeakyReLU(0.2) after each but the last, tanh output (docs/methods/lntra.md#5b).
    Time halves 3 times and space 4 times: `length` a multiple of 8 and `shape` (H, W) of 16 (the config checks
    it)."""
    clip = keras.Input((length, *shape, 1))
    x = clip
    strides = [(1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)]
    for filters, stride in zip(widths, strides):
        x = _encode(x, filters, stride)
    for filters, stride in zip(list(reversed(widths[:-1])), reversed(strides[1:])):
        x = _decode(x, filters, stride)
    return keras.Model(clip, float32_output(_decode(x, 1, strides[0], last=True)), name=name)


# ---------------------------------------------------------------- scoring (docs/methods/lntra.md#5e)
def centre_frame_error(reconstruction, clip):
    """Squared error of the centre frame [N, H, W] on [-1, 1] data."""
    c = centre_index(clip.shape[1])
    return tf.square(reconstruction[:, c, ..., 0] - clip[:, c, ..., 0])


def psnr(squared_error):
    """10·log10(1 / MSE) per clip, peak 1 on [-1, 1] data (docs/methods/lntra.md#5e-2, docs/methods/lntra.md#5g-7)."""
    mse = tf.reduce_mean(squared_error, axis=[1, 2])
    return 10.0 * tf.math.log(1.0 / mse) / tf.math.log(10.0)


def per_video_minmax(psnrs):
    """The paper's offline anomaly score of one video's frames: 1 - (PSNR - min) / (max - min) over the
    whole video (transductive, docs/methods/lntra.md#5e-3); a constant video scores 0."""
    psnrs = np.asarray(psnrs, np.float64)
    span = psnrs.max() - psnrs.min()
    return 1.0 - (psnrs - psnrs.min()) / span if span > 0 else np.zeros_like(psnrs)


def online_normaliser(normal_psnrs):
    """(lowest, highest) PSNR of normal clips (the good training or validation videos): the causal
    alternative to per-video min-max, usable frame by frame on a camera (docs/methods/lntra.md#5g-6; ours)."""
    normal_psnrs = np.asarray(normal_psnrs, np.float64)
    return float(normal_psnrs.min()), float(normal_psnrs.max())


def online_score(psnrs, normaliser):
    """1 - (PSNR - lowest) / (highest - lowest) with the normal clips' range: 0..1 on normal frames,
    above 1 when a frame reconstructs worse than any normal one.

    Plain arithmetic on `psnrs`, so the same line runs on numpy arrays and inside the scoring graph
    (the `online_score` output every export carries)."""
    lowest, highest = (float(v) for v in normaliser)
    psnrs = psnrs if tf.is_tensor(psnrs) else np.asarray(psnrs, np.float64)
    return 1.0 - (psnrs - lowest) / max(highest - lowest, 1e-12)


def scored_frames(n_frames, length=CLIP_LENGTH):
    """Indices of the frames of a video that get a score: clip s scores frame s + length // 2, so the
    first 8 and the last 7 frames (of 16) have none and leave the AUC (docs/methods/lntra.md#5e-4)."""
    first = centre_index(length)
    return np.arange(first, n_frames - (length - 1 - first))


# ---------------------------------------------------------------- the detector
class LNTRA(Detector):
    """Trains on (input clip, target clip) pairs stacked in one tensor: the target is the normal clip also when the
    input is a pseudo anomaly (docs/methods/lntra.md#5c). Per clip, mean over (T, H, W) of the squared error; batch
    mean through compute_average_loss (the same gradient on one device and under tf.distribute)."""

    def __init__(self, network, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.clip_length = network.input_shape[1]
        self.trackers = {"loss": keras.metrics.Mean(name="loss")}
        self.built = True  # the network is built; nothing is created on the first call

    def compile_phase(self, learning_rate, lr_decay):
        """Adam, PyTorch's defaults (β 0.9, 0.999, ε 1e-8), lr 1e-4, no schedule (docs/methods/lntra.md#5d)."""
        self.install_optimizers(lambda name: adam(learning_rate, lr_decay, epsilon=1e-8))

    def call(self, clips, training=False):
        return self.network(clips * 2.0 - 1.0, training=training)

    def train_step(self, data):
        """`data`: [N, 2, T, H, W], each input clip stacked on its target (keras_ad.data.video.training_data)."""
        pairs = images_of(data)
        inputs, targets = pairs[:, 0], pairs[:, 1]
        inputs, targets = _with_channel(inputs) * 2.0 - 1.0, _with_channel(targets) * 2.0 - 1.0
        with tf.GradientTape() as tape:
            per_clip = per_example(tf.reduce_mean, tf.square(self.network(inputs, training=True) - targets))
            loss = tf.nn.compute_average_loss(per_clip)
        descend(self.optimizer, tape, loss, self.network.trainable_variables)
        self.trackers["loss"].update_state(per_clip)
        return self.tracker_logs()

    def score_and_map(self, clips, variant="default"):
        """(−PSNR of the centre frame [N] (larger = more anomalous), its squared error [N, H, W])."""
        clips = _with_channel(clips) * 2.0 - 1.0
        error = centre_frame_error(self.network(clips, training=False), clips)
        return -psnr(error), error

    def anomaly_map(self, clips):
        return self.score_and_map(clips)[1]

    def sample_panels(self, clips):
        clips = _with_channel(tf.convert_to_tensor(clips))
        reconstruction = self.network(clips * 2.0 - 1.0, training=False) * 0.5 + 0.5
        c = centre_index(self.clip_length)
        return {"input (centre frame)": clips[:, c], "reconstruction": reconstruction[:, c],
                "anomaly map": self.anomaly_map(clips)}


def _with_channel(clips):
    """[N, T, H, W] grey clips get their channel axis; [N, T, H, W, 1] pass."""
    return clips[..., None] if clips.shape.rank == 4 else clips


def from_config(cfg):
    det = cfg.detector
    return LNTRA(autoencoder(det.clip_length, cfg.data.image_shape, tuple(det.widths)), name="lntra")
