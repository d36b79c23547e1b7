"""`cae`: the convolutional autoencoder with SSIM loss of Bergmann et al. (MVTec AD), docs/methods/cae.md.

Two architectures (docs/methods/cae.md#3b):
- `mvtec`: the Bergmann CAE, 4x4/3x3 convs with LeakyReLU(0.2), a 100-d 1x1 latent code (ReLU) and a
  sigmoid output. Defined for 256x256 in the repo; every stride-2 conv beyond 64x64 adds one level, so the
  128x128 variant is the paper's (rows 2-10) and 32/64/512 follow the same rule.
- `resnet`: an Inception-ResNet-v2 encoder (ImageNet weights) with a residual transposed-conv decoder.
  The repo feeds [-1, 1] into the encoder but compares a sigmoid [0, 1] output with that input, so it
  can never reconstruct negative values (docs/methods/cae.md#3i-2). Here the model takes [0, 1] images like every other
  detector, rescales to [-1, 1] inside, in front of the encoder only, and the loss compares the [0, 1]
  input with the [0, 1] output.
"""

from __future__ import annotations

import math
import os

import keras
import tensorflow as tf
from keras import layers

from keras_ad.detectors.base import Detector, TrainingPhase, descend, images_of
from keras_ad.detectors.blocks import BatchNormalization, float32_output
from keras_ad.errors import UsageError
from keras_ad.losses.reconstruction import get as get_loss
from keras_ad.losses.reconstruction import residual_map

LEAKY_SLOPE = 0.2  # every conv of the repo's mvtec model, docs/methods/cae.md#3b


class WideStrideConvTranspose(layers.Conv2DTranspose):
    """A 'valid' transposed conv whose stride exceeds its kernel (the 1x1 -> 8x8 step of docs/methods/cae.md#3b).

    Computes exactly what Conv2DTranspose computes, as the transposed conv of natural size
    (h - 1) * stride + kernel followed by zero padding up to h * stride and the bias: tf2onnx turns
    the one-op form into an ONNX ConvTranspose with negative pads (rejected by onnxruntime), and
    int8 TFLite quantises a reshaped kernel as an activation (27 % error measured).
    """

    def call(self, inputs):
        (stride_h, stride_w), (kernel_h, kernel_w) = self.strides, self.kernel_size
        height, width = inputs.shape[1], inputs.shape[2]
        natural = [tf.shape(inputs)[0], (height - 1) * stride_h + kernel_h, (width - 1) * stride_w + kernel_w,
                   self.filters]
        outputs = tf.nn.conv2d_transpose(inputs, self.kernel, natural, self.strides, padding="VALID")
        outputs = tf.pad(outputs, [[0, 0], [0, max(stride_h - kernel_h, 0)], [0, max(stride_w - kernel_w, 0)], [0, 0]])
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs


# (filters, kernel, stride) of encoder rows 3-9 of docs/methods/cae.md#3b (the 64x64 -> 8x8 part) ...
_ENCODER_CORE = [(32, 4, 2), (32, 3, 1), (64, 4, 2), (64, 3, 1), (128, 4, 2), (64, 3, 1), (32, 3, 1)]
# ... and decoder rows 2-7 (8x8 -> 32x32 after the first 1x1 -> 8x8 transposed conv).
_DECODER_CORE = [(64, 3, 1), (128, 4, 1), (64, 3, 2), (64, 4, 1), (32, 3, 2), (32, 4, 1)]
IMAGENET_WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/inception_resnet_v2/"
                        "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5")


def _leaky_conv(x, filters, kernel, stride, transpose=False):
    conv = layers.Conv2DTranspose if transpose else layers.Conv2D
    x = conv(filters, kernel, strides=stride, padding="same")(x)
    return layers.LeakyReLU(negative_slope=LEAKY_SLOPE)(x)


def mvtec_autoencoder(shape, channels: int, latent_dim: int = 100):
    """Encoder and decoder of docs/methods/cae.md#3b for `shape` (height, width), powers of two >= 32.

    The stride-2 convs take the shorter side down to 8; a non-square input ends at an 8 x 8k grid, which
    the latent conv (kernel = that grid, valid) still maps to one code of `latent_dim`, and the first
    transposed conv (stride = that grid) maps back.
    """
    height, width = shape
    levels = int(math.log2(min(shape) // 8))  # stride-2 convs from the shorter side down to 8
    extra = max(levels - 3, 0)
    encoder_rows = [(32, 4, 2)] * extra + (_ENCODER_CORE if levels >= 3 else _ENCODER_CORE[1:])
    decoder_rows = _DECODER_CORE if levels >= 3 else _DECODER_CORE[:4]
    decoder_rows = decoder_rows + [(32, 4, 2)] * extra
    grid = (height >> levels, width >> levels)  # 8 x 8 for a square input

    image = keras.Input((height, width, channels), name="image")
    x = image
    for row in encoder_rows:
        x = _leaky_conv(x, *row)
    code = layers.Conv2D(latent_dim, grid, padding="valid", activation="relu", name="latent")(x)
    encoder = keras.Model(image, float32_output(code), name="encoder")

    latent = keras.Input((1, 1, latent_dim), name="code")
    y = WideStrideConvTranspose(32, 3, strides=grid, padding="valid")(latent)  # 1x1 -> the grid
    y = layers.LeakyReLU(negative_slope=LEAKY_SLOPE)(y)
    for row in decoder_rows:
        y = _leaky_conv(y, *row, transpose=True)
    out = layers.Conv2DTranspose(channels, 4, strides=2, padding="same", activation="sigmoid",
                                 name="reconstruction")(y)
    return encoder, keras.Model(latent, float32_output(out), name="decoder")


def _residual_up_stage(x, filters, kernel, padding):
    """T1 (transposed conv, stride 2) then BN-ReLU-convT3x3-BN-ReLU, added to T1's raw output
    (docs/methods/cae.md#3b)."""
    t1 = layers.Conv2DTranspose(filters, kernel, strides=2, padding=padding)(x)
    y = layers.ReLU()(BatchNormalization()(t1))
    y = layers.Conv2DTranspose(filters, 3, strides=1, padding="same")(y)
    y = layers.ReLU()(BatchNormalization()(y))
    return layers.Add()([t1, y])


def resnet_autoencoder(encoder_weights: str = "imagenet"):
    """Inception-ResNet-v2 encoder (299x299x3 -> 8x8x1536 -> 8x8x512) and the residual decoder of
    docs/methods/cae.md#3b."""
    image = keras.Input((299, 299, 3), name="image")
    scaled = layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(image)  # = inception preprocess_input
    base = _inception_resnet_v2(encoder_weights)
    x = base(scaled)
    x = layers.Conv2D(512, 1)(x)
    code = layers.Conv2D(512, 1, name="latent")(x)
    encoder = keras.Model(image, float32_output(code), name="encoder")

    latent = keras.Input((8, 8, 512), name="code")
    y = latent
    for filters, kernel, padding in ((512, 4, "valid"), (256, 3, "valid"), (128, 4, "same"), (64, 3, "valid")):
        y = _residual_up_stage(y, filters, kernel, padding)
    out = layers.Conv2DTranspose(3, 3, strides=2, padding="valid", activation="sigmoid",
                                 name="reconstruction")(y)  # 149 -> 299
    return encoder, keras.Model(latent, float32_output(out), name="decoder")


def _inception_resnet_v2(weights: str):
    if weights not in ("imagenet", "none") and not os.path.isfile(os.path.expanduser(weights)):
        raise UsageError(f"detector.encoder_weights: {weights}: no such file; give imagenet, none or the "
                         f"path of an InceptionResNetV2 no-top .h5 weights file")
    source = None if weights == "none" else ("imagenet" if weights == "imagenet" else os.path.expanduser(weights))
    try:
        return keras.applications.InceptionResNetV2(include_top=False, weights=source, input_shape=(299, 299, 3))
    except Exception as e:  # keras raises a bare Exception on a failed download
        if weights != "imagenet":
            raise UsageError(f"detector.encoder_weights: {weights}: cannot load ({e})") from None
        raise UsageError(
            "detector.encoder_weights: cannot download the ImageNet weights of InceptionResNetV2 "
            f"({str(e).splitlines()[0][:120]}); on a machine with internet download {IMAGENET_WEIGHTS_URL} "
            "and set detector.encoder_weights to its path (or copy it into ~/.keras/models/)") from None


class CAE(Detector):
    """Autoencoder trained to reconstruct good images; the anomaly map is the residual (docs/methods/cae.md#3c,
    docs/methods/cae.md#3i-1).

    Args:
        encoder, decoder: functional models, image -> code -> image in [0, 1].
        loss: "ssim" | "mssim" | "mse" | "l2" (docs/methods/cae.md#3c).
        residual: "ssim" (1 - SSIM map, 11x11, sigma 1.5), "l2" (squared error) or "l1".
        mssim_scales: scales of the MS-SSIM loss.
        architecture: "mvtec" or "resnet" (decides the training phases of docs/methods/cae.md#3d).
    """

    def __init__(self, encoder, decoder, loss="ssim", residual="ssim", mssim_scales=5,
                 architecture="mvtec", **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.decoder = encoder, decoder
        self.loss_name, self.residual, self.architecture = loss, residual, architecture
        self.loss_fn = get_loss(loss, mssim_scales)
        self.trackers = {"loss": keras.metrics.Mean(name="loss")}

    def call(self, images, training=False):
        return self.decoder(self.encoder(images, training=training), training=training)

    def train_step(self, data):
        images = images_of(data)
        with tf.GradientTape() as tape:
            per_image = self.loss_fn(images, self(images, training=True))
            loss = tf.nn.compute_average_loss(per_image)  # correct under tf.distribute (docs/stack.md#3)
        descend(self.optimizer, tape, loss, self.trainable_variables)
        self.trackers["loss"].update_state(per_image)
        return self.tracker_logs()

    def test_step(self, data):
        images = images_of(data)
        self.trackers["loss"].update_state(self.loss_fn(images, self(images, training=False)))
        return self.tracker_logs()

    def anomaly_map(self, images):
        return residual_map(images, self(images, training=False), self.residual)

    def sample_panels(self, images):
        reconstruction_ = self(images, training=False)
        return {"input": images, "reconstruction": reconstruction_,
                "anomaly map": residual_map(images, reconstruction_, self.residual)}

    def training_phases(self, epochs, learning_rate, lr_decay):
        if self.architecture != "resnet":
            return [TrainingPhase(epochs, learning_rate, lr_decay)]
        # docs/methods/cae.md#3d: encoder frozen for ceil(0.6 * epochs), then everything at Adam 1e-5, decay 1e-6.
        frozen = min(epochs, math.ceil(0.6 * epochs))
        phases = [TrainingPhase(frozen, learning_rate, lr_decay, "frozen encoder")]  # both watch val_loss
        if frozen < epochs:
            phases.append(TrainingPhase(epochs, 1e-5, 1e-6, "fine-tune"))
        return phases

    def enter_phase(self, index):
        if self.architecture == "resnet":
            self.encoder.get_layer("inception_resnet_v2").trainable = index > 0


def from_config(cfg):
    det, data = cfg.detector, cfg.data
    if det.architecture == "resnet":
        encoder, decoder = resnet_autoencoder(det.encoder_weights)
    else:
        encoder, decoder = mvtec_autoencoder(data.model_shape, data.channels, det.latent_dim)
    model = CAE(encoder, decoder, loss=det.loss, residual=det.residual, mssim_scales=det.mssim_scales,
                architecture=det.architecture, name="cae")
    model(keras.ops.zeros((1, *data.model_shape, data.channels)))  # build
    return model
