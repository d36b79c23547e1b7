"""GANomaly2D / GANomaly: the paper's shapes, loss terms by hand, batch independence, tf.distribute."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import check_mirrored_step, train_on_digits

from keras_ad import config
from keras_ad.detectors import build
from keras_ad.detectors import ganomaly2d as g


def _cfg(latent, size=32, channels=3, filters=8, **detector):
    return config.validate({"data": {"root": "/x", "image_size": size, "channels": channels},
                            "detector": {"name": "ganomaly2d", "latent": latent, "filters": filters, **detector}})


def test_paper_shapes_at_240x320():
    """docs/methods/ganomaly.md#42 at --r 2: z is 15x20x512, the PatchGAN (k4 s1 p1 twice) gives 28x38, x̂ is
    240x320x3."""
    encoder = g.cycle_encoder(240, 320, 3, 32, "encoder")
    assert encoder.output_shape == (None, 15, 20, 512)
    assert g.patch_discriminator(240, 320, 3, 32).output_shape == (None, 28, 38, 1)
    assert g.cycle_decoder((15, 20, 512), 3, 32).output_shape == (None, 240, 320, 3)


def test_dcgan_shapes_of_ganomaly():
    encoder, features = g.dcgan_encoder(32, 3, 64, 100, "encoder")
    assert encoder.output_shape == (None, 1, 1, 100)
    assert features.output_shape == (None, 4, 4, 256)  # the feature-matching layer, docs/methods/ganomaly.md#41
    assert g.dcgan_decoder(32, 3, 64, 100).output_shape == (None, 32, 32, 3)


def test_paper_defaults_per_variant():
    two, one = _cfg("2d"), _cfg("1d")
    assert (two.detector.w_adv, two.detector.w_con, two.detector.w_enc) == (1.0, 10.0, 10.0)
    assert (one.detector.w_adv, one.detector.w_con, one.detector.w_enc) == (1.0, 50.0, 1.0)
    assert (two.train.learning_rate, one.train.learning_rate, two.train.lr_decay) == (1e-4, 2e-4, 0.0)
    assert two.postprocess.reduction == "mean"
    with pytest.raises(config.ConfigError, match="multiples of 16"):
        config.validate({"data": {"root": "/x", "image_size": 40}, "detector": {"name": "ganomaly2d"}})


def _bce(p, target):
    return -(target * np.log(p) + (1 - target) * np.log(1 - p))


def test_loss_terms_match_hand_computations():
    generator = np.random.default_rng(0)

    class rng:  # float32 draws, as the model computes
        uniform = staticmethod(lambda *a: generator.uniform(*a).astype(np.float32))
        normal = staticmethod(lambda size: generator.normal(size=size).astype(np.float32))

    x, x_hat = rng.uniform(-1, 1, (2, 4, 4, 3)), rng.uniform(-1, 1, (2, 4, 4, 3))
    z, z_hat = rng.normal(size=(2, 2, 2, 5)), rng.normal(size=(2, 2, 2, 5))
    logits = rng.normal(size=(2, 3, 3, 1))
    adv, con, enc = (t.numpy() for t in g.generator_terms_2d(*map(tf.constant, (x, x_hat, z, z_hat, logits))))
    p = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(adv, _bce(p, 1).reshape(2, -1).mean(1), rtol=1e-5)
    # sums, docs/methods/ganomaly.md#42
    np.testing.assert_allclose(con, ((x_hat - x) ** 2).reshape(2, -1).sum(1), rtol=1e-5)
    np.testing.assert_allclose(enc, np.abs(z_hat - z).reshape(2, -1).sum(1), rtol=1e-5)

    f_real, f_fake = rng.normal(size=(2, 4, 4, 6)), rng.normal(size=(2, 4, 4, 6))
    adv, con, enc = (t.numpy() for t in g.generator_terms_1d(*map(tf.constant, (x, x_hat, z, z_hat, f_real, f_fake))))
    np.testing.assert_allclose(adv, ((f_real - f_fake) ** 2).reshape(2, -1).mean(1), rtol=1e-5)
    # means, docs/methods/ganomaly.md#41
    np.testing.assert_allclose(con, np.abs(x - x_hat).reshape(2, -1).mean(1), rtol=1e-5)
    np.testing.assert_allclose(enc, ((z - z_hat) ** 2).reshape(2, -1).mean(1), rtol=1e-5)

    real, fake = rng.normal(size=(2, 3, 3, 1)), rng.normal(size=(2, 3, 3, 1))
    expected = (_bce(1 / (1 + np.exp(-real)), 1).reshape(2, -1).mean(1)
                + _bce(1 / (1 + np.exp(-fake)), 0).reshape(2, -1).mean(1))
    np.testing.assert_allclose(g.discriminator_loss_per_example(real, fake, half=False), expected, rtol=1e-5)
    np.testing.assert_allclose(g.discriminator_loss_per_example(real, fake, half=True), expected / 2, rtol=1e-5)


def test_generator_loss_sums_for_2d_and_averages_for_1d():
    model = build(_cfg("2d"))
    adv, con, enc = tf.constant([0.5, 0.7]), tf.constant([100.0, 300.0]), tf.constant([10.0, 30.0])
    assert float(model.generator_loss(adv, con, enc)) == pytest.approx(0.6 + 10 * 400 + 10 * 40)
    model = build(_cfg("1d"))
    assert float(model.generator_loss(adv, con, enc)) == pytest.approx(np.mean([0.5 + 5000 + 10, 0.7 + 15000 + 30]))


@pytest.mark.parametrize("latent", ["2d", "1d"])
def test_map_of_an_image_does_not_depend_on_the_batch(latent):
    model = build(_cfg(latent))
    images = tf.random.stateless_uniform((4, 32, 32, 3), seed=(1, 2))
    alone = model.anomaly_map(images[:1]).numpy()
    together = model.anomaly_map(images).numpy()
    np.testing.assert_allclose(together[0], alone[0], atol=1e-6)
    assert together.shape == (4, 32, 32)
    if latent == "2d":  # 32 / 16 = 2x2 latent cells, each a 16x16 block of the map
        assert np.all(together[0, :16, :16] == together[0, 0, 0])
        assert together[0, 0, 0] != together[0, 0, 16]


@pytest.mark.parametrize("latent", ["2d", "1d"])
def test_mirrored_step_equals_one_device_step(latent, two_replicas):
    """Same update on two replicas as on one device (synchronised batch norm, sums vs averages right).

    ReLU outputs with many exact zeros make the 2d gradients kinky: 1e-7 of float noise decides which
    units stay at zero, i.e. the sign of the L1 latent gradient (measured: 3 % off on 64 of 18k weights
    with it, 1.6 % on 10 without it). So the 2d latent term is left out here (its batch sum is checked
    by hand in the loss tests), single weights are compared to 5 % of the largest update, and the size
    of the whole update to 1 %: a loss reduced with the wrong scale is off by 100 %.
    """
    # GANomaly's losses are sums over pixels (gradients ~1e4): lr 1e-7 makes a step of ~1e-3, Adam's size
    check_mirrored_step(two_replicas, _cfg(latent, filters=4, **({"w_enc": 0.0} if latent == "2d" else {})), 8, 1e-7)


@pytest.mark.slow
def test_ganomaly_trains_on_a_one_class_folder_of_sklearn_digits(tmp_path):
    """GANomaly's leave-one-class-out protocol end to end, on the 8x8 digits scikit-learn ships."""
    report, digits = train_on_digits(tmp_path, {"name": "ganomaly2d", "latent": "1d", "filters": 8}, abnormal_class="1")
    assert list(report["per_defect"]) == ["1"]
    assert report["n_defective"] == int((digits.target == 1).sum())
    assert 0.0 <= report["image_auroc"] <= 1.0
