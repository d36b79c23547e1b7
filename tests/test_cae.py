"""The `cae` detector: architecture shapes (docs/methods/cae.md#3b), residual maps (docs/methods/cae.md#3i-1), ImageNet
weights offline."""

import keras
import numpy as np
import pytest

from keras_ad import config
from keras_ad.detectors import build, cae
from keras_ad.errors import UsageError
from keras_ad.losses.reconstruction import residual_map


@pytest.mark.parametrize("shape, down_convs", [((32, 32), 2), ((64, 64), 3), ((128, 128), 4), ((256, 256), 5),
                                               ((128, 64), 3), ((32, 128), 2)])
def test_mvtec_autoencoder_shapes(shape, down_convs):
    """docs/methods/cae.md#3b's table for squares; a non-square input halves to 8 on its short side and keeps one
    latent code."""
    encoder, decoder = cae.mvtec_autoencoder(shape, 1, latent_dim=100)
    assert encoder.output.shape[1:] == (1, 1, 100)
    assert decoder.output.shape[1:] == (*shape, 1)
    strided = [layer for layer in encoder.layers if getattr(layer, "strides", (1, 1)) == (2, 2)]
    assert len(strided) == down_convs
    if shape == (256, 256):  # the repo's table: 10 encoder convs and 10 decoder transposed convs
        assert sum(isinstance(layer, keras.layers.Conv2D) for layer in encoder.layers) == 10
        assert sum(isinstance(layer, keras.layers.Conv2DTranspose) for layer in decoder.layers) == 10


def test_residual_maps_see_brighter_and_darker_defects():
    x = np.full((1, 16, 16, 1), 0.5, np.float32)
    brighter, darker = x.copy(), x.copy()
    brighter[0, 4:8, 4:8] = 0.9
    darker[0, 4:8, 4:8] = 0.1
    for kind in ("ssim", "l2", "l1"):
        # input brighter than the reconstruction, and reconstruction brighter than the input
        for image, recon in ((brighter, x), (x, brighter), (darker, x)):
            amap = residual_map(image, recon, kind).numpy()[0]
            assert amap[5:7, 5:7].mean() > 10 * max(amap[12:, 12:].mean(), 1e-6), kind


def test_detector_map_shape_and_training_step():
    cfg = config.validate({"data": {"root": "/x", "image_size": 32, "channels": 1}})
    model = build(cfg)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).random((4, 32, 32, 1)).astype(np.float32)
    assert model.anomaly_map(x).shape == (4, 32, 32)
    first = model.train_on_batch(x, return_dict=True)["loss"]
    for _ in range(5):
        last = model.train_on_batch(x, return_dict=True)["loss"]
    assert last < first


def test_imagenet_weights_offline_says_how_to_supply_them(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -2] Name or service "
                        "not known")
    monkeypatch.setattr(keras.applications, "InceptionResNetV2", offline)
    with pytest.raises(UsageError) as err:
        cae.resnet_autoencoder("imagenet")
    message = str(err.value)
    assert "detector.encoder_weights" in message and "inception_resnet_v2_weights" in message
    with pytest.raises(UsageError, match="no such file"):
        cae.resnet_autoencoder("/nowhere/weights.h5")


def test_resnet_variant_builds_and_outputs_unit_range():
    encoder, decoder = cae.resnet_autoencoder("none")
    x = np.random.default_rng(0).random((1, 299, 299, 3)).astype(np.float32)
    y = decoder(encoder(x)).numpy()
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    # the encoder sees [-1, 1] (inception preprocessing) while the model's input and output are [0, 1]
    assert encoder.get_layer("to_minus1_1")(np.array([0.0, 1.0])).numpy().tolist() == [-1.0, 1.0]
    model = cae.CAE(encoder, decoder, architecture="resnet")
    phases = model.training_phases(10, 2e-4, 1e-5)
    assert [(p.until_epoch, p.learning_rate) for p in phases] == [(6, 2e-4), (10, 1e-5)]  # docs/methods/cae.md#3d
    model.enter_phase(0)
    assert not encoder.get_layer("inception_resnet_v2").trainable


@pytest.mark.parametrize("size", [1, 3])
def test_wide_stride_transposed_conv_equals_keras_conv2d_transpose(size):
    x = np.random.default_rng(0).normal(size=(2, size, size, 5)).astype("float32")
    reference = keras.layers.Conv2DTranspose(4, 3, strides=8, padding="valid")
    wide = cae.WideStrideConvTranspose(4, 3, strides=8, padding="valid")
    reference(x), wide(x)
    wide.set_weights([np.random.default_rng(1).normal(size=w.shape) for w in reference.get_weights()])
    reference.set_weights(wide.get_weights())
    assert wide(x).shape == (2, 8 * size, 8 * size, 4)
    np.testing.assert_allclose(wide(x), reference(x), atol=1e-5)
