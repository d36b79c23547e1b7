"""AnoGAN: the paper's shapes and loss by hand, the batched latent search, batch norm while scoring,
tf.distribute, and the edge variant."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import check_mirrored_step, train_on_digits

import keras_ad
from keras_ad import config
from keras_ad.detectors import anogan as a
from keras_ad.detectors import build


def _cfg(size=32, channels=3, filters=8, **detector):
    return config.validate({"data": {"root": "/x", "image_size": size, "channels": channels},
                            "detector": {"name": "anogan", "filters": filters, **detector}})


def test_paper_shapes_at_64x64():
    """docs/methods/anogan.md#2b: G starts at 4x4x512 and ends at 64x64xc; f(x) is D's 4x4x512 map; one logit."""
    g = a.generator((64, 64), 3, 64, 100)
    assert g.layers[2].output.shape == (None, 4, 4, 512)
    assert g.output_shape == (None, 64, 64, 3)
    d, f = a.discriminator((64, 64), 3, 64)
    assert f.output_shape == (None, 4, 4, 512) and d.output_shape == (None, 1)
    assert a.encoder((64, 64), 3, 64, 100).output_shape == (None, 100)
    batch_norms = [layer for layer in g.layers + d.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(batch_norms) == 4 + 3  # none after D's first conv
    assert all(bn.epsilon == 1e-5 and bn.momentum == 0.9 for bn in batch_norms)  # docs/stack.md#01-4


def test_paper_defaults_and_config_checks():
    cfg = _cfg()
    det = cfg.detector
    assert (det.latent_dim, det.discrimination_weight, det.generator_updates) == (100, 0.1, 2)
    assert (det.search_steps, det.search_lr, det.search_init) == (500, 0.02, "random")
    assert (cfg.train.learning_rate, cfg.train.lr_decay, cfg.postprocess.reduction) == (2e-4, 0.0, "detector")
    with pytest.raises(config.ConfigError, match="multiples of 16"):
        _cfg(size=40)
    with pytest.raises(config.ConfigError, match="own score"):
        config.validate({"data": {"root": "/x"}, "postprocess": {"reduction": "detector"}})


@pytest.mark.slow
def test_score_is_the_weighted_sum_of_the_two_l1_sums():
    """docs/methods/anogan.md#2c: L = 0.9·Σ|x - G(z)| + 0.1·Σ|f(x) - f(G(z))|, sums per image (not means,
    docs/methods/anogan.md#2g-4)."""
    model = build(_cfg(search_steps=5))  # the paper's 500 search steps took 20 s for the shapes checked below
    images = tf.random.stateless_uniform((2, 32, 32, 3), seed=(3, 4))
    loss, generated, z = model.search(images, steps=0)
    np.testing.assert_allclose(z, np.repeat(model.initial_latents, 2, axis=0))
    x = images.numpy() * 2 - 1
    g = model.generator(z, training=False).numpy()
    f_x, f_g = model.features(x, training=False).numpy(), model.features(g, training=False).numpy()
    expected = 0.9 * np.abs(x - g).sum(axis=(1, 2, 3)) + 0.1 * np.abs(f_x - f_g).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    score, residual_map = model.score_and_map(images)
    assert residual_map.shape == (2, 32, 32) and score.shape == (2,)


def test_adam_descent_is_tf1_adam():
    """The in-graph Adam equals Adam written out in numpy (bias-corrected step size, ε outside the sqrt)."""
    target = np.array([[0.3, -0.7], [2.0, 1.0]], np.float32)
    z0 = np.zeros_like(target)
    loss = lambda z: tf.reduce_sum(tf.square(z - target) * [[1.0, 3.0]])  # noqa: E731
    z = tf.function(lambda z0: a.adam_descent(loss, z0, 7, 0.05))(tf.constant(z0)).numpy()
    zn, m, v = z0.astype(np.float64), 0.0, 0.0
    for t in range(1, 8):
        grad = 2 * (zn - target) * [[1.0, 3.0]]
        m, v = 0.5 * m + 0.5 * grad, 0.999 * v + 0.001 * grad ** 2
        zn = zn - 0.05 * np.sqrt(1 - 0.999 ** t) / (1 - 0.5 ** t) * m / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(z, zn, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def trained(train_tiny):
    """The tiny AnoGAN run of the export suite (2 DCGAN + 2 encoder epochs) and its test images."""
    run = train_tiny("anogan")
    scorer = keras_ad.load(run)
    images = np.random.default_rng(5).random((6, 32, 32, 3)).astype(np.float32)
    return scorer.detector, images


def test_search_lowers_the_loss_monotonically_on_average(trained):
    """On images the trained generator can make, G(z_true), the search closes in on them."""
    detector, _ = trained
    z_true = np.random.default_rng(7).uniform(-1, 1, (6, detector.latent_dim)).astype(np.float32)
    images = (detector.generator(z_true, training=False).numpy() + 1) / 2
    search = tf.function(lambda x, steps: detector.search(x, steps=steps)[0], reduce_retracing=True)
    means = [float(np.mean(search(images, steps))) for steps in (0, 10, 20, 40, 80)]
    assert all(later < earlier for earlier, later in zip(means, means[1:])), means
    assert means[-1] < 0.25 * means[0], means


def test_scores_do_not_depend_on_order_or_batch(trained):
    """Same starting latents for every image, per-image sums, inference-mode BN: a permuted batch gives
    permuted scores, and an image scored alone gets the score it gets in the batch (docs/methods/anogan.md#2g-1,
    docs/methods/anogan.md#2g-5)."""
    detector, images = trained
    score = tf.function(lambda x: detector.score_and_map(x)[0])
    together = score(images).numpy()
    order = np.array([3, 0, 5, 1, 4, 2])
    np.testing.assert_allclose(score(images[order]).numpy(), together[order], rtol=1e-5)
    np.testing.assert_allclose(score(images[2:3]).numpy(), together[2:3], rtol=1e-5)


def test_scoring_runs_batch_norm_in_inference_mode(trained):
    """Moving statistics untouched by the search, and batch statistics unused: a batch of one copy of an
    image and a batch of its copies score the same (training-mode BN would normalise them away)."""
    detector, images = trained
    bns = [layer for model in (detector.generator, detector.features, detector.encoder)
           for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = [bn.moving_mean.numpy().copy() for bn in bns]
    search = tf.function(lambda x: detector.search(x, steps=5)[0])
    one = search(images[:1]).numpy()
    copies = search(np.repeat(images[:1], 4, axis=0)).numpy()
    np.testing.assert_allclose(copies, np.repeat(one, 4), rtol=1e-5)
    for bn, mean in zip(bns, before):
        np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)


def test_restarts_keep_the_best_start(trained):
    detector, images = trained
    many = build(_cfg(latent_dim=16, search_restarts=3, search_steps=5))
    many.set_weights(detector.get_weights())
    one = build(_cfg(latent_dim=16, search_restarts=1, search_steps=5))
    one.set_weights(detector.get_weights())
    np.testing.assert_array_equal(many.initial_latents[:1], one.initial_latents)  # restart 0 = the single start
    best = tf.function(lambda x: many.search(x)[0])(images).numpy()
    first = tf.function(lambda x: one.search(x)[0])(images).numpy()
    assert np.all(best <= first + 1e-3)


def test_edge_variant_is_the_encoder_without_search(trained):
    detector, images = trained
    score, residual_map = detector.score_and_map(tf.constant(images), "edge")
    expected, generated, _ = detector.search(tf.constant(images), init="encoder", steps=0)
    np.testing.assert_allclose(score, expected, rtol=1e-6)
    np.testing.assert_allclose(residual_map, np.abs(images * 2 - 1 - generated.numpy()).mean(-1), atol=1e-6)


def test_encoder_phase_trains_only_the_encoder():
    model = build(_cfg())
    model.enter_phase(1)
    model.compile_phase(1e-3, 0.0)
    frozen = [v.numpy().copy() for v in model.generator.weights + model.discriminator.weights]
    encoder = [v.numpy().copy() for v in model.encoder.trainable_variables]
    model.train_step(tf.random.stateless_uniform((4, 32, 32, 3), seed=(1, 1)))
    for v, before in zip(model.generator.weights + model.discriminator.weights, frozen):
        np.testing.assert_array_equal(v.numpy(), before)  # BN moving statistics included
    assert any(not np.array_equal(v.numpy(), b) for v, b in zip(model.encoder.trainable_variables, encoder))


def _pixel_latents(self, x):
    """A z per image computed from its pixels: the same z for an image on any replica."""
    return tf.tanh(3.0 * tf.reshape(x, [tf.shape(x)[0], -1])[:, :self.latent_dim])


def test_mirrored_step_equals_one_device_step(two_replicas, monkeypatch):
    """One D and two G updates on two replicas equal those on one device (synchronised BN, averaged BCE).

    The biases of convolutions that feed batch norm have a zero gradient in exact arithmetic (BN
    removes the mean), so their ~1e-7 updates are float noise: 0.1 % of the largest update of all
    weights is the floor.
    """
    monkeypatch.setattr(a.AnoGAN, "sample_latents", _pixel_latents)
    check_mirrored_step(two_replicas, _cfg(filters=4, latent_dim=16), 8, 1e-2, relative_floor=1e-3)



def test_calibration_and_report_cover_the_edge_variant(train_tiny, trained_run, tmp_path):
    import json

    from click.testing import CliRunner

    from keras_ad.cli import main

    run = train_tiny("anogan")
    calibration = json.loads((run / "calibration.json").read_text())
    report = json.loads((run / "report.json").read_text())
    assert calibration["variants"]["edge"]["pixel_threshold"] != calibration["pixel_threshold"]
    assert 0.0 <= report["variants"]["edge"]["image_auroc"] <= 1.0
    assert report["variants"]["edge"]["calibrated_decision"]["pixel_threshold"] == \
        calibration["variants"]["edge"]["pixel_threshold"]
    image = str(next((run / "samples").glob("*.png")))  # any image file will do
    cases = ((run, "nope", "anogan offers default, edge"), (trained_run, "edge", "cae offers default"))
    for folder, variant, words in cases:
        result = CliRunner().invoke(main, ["score", "--run", str(folder), image, "--variant", variant,
                                           "--out", str(tmp_path / variant)])
        assert result.exit_code == 2 and words in result.output, result.output
        assert result.output.count("\n") == 1  # one line, no traceback


@pytest.mark.slow
def test_anogan_trains_on_grey_digits_leaving_one_class_out(tmp_path):
    """Grey images end to end (the seed's MNIST setting, docs/methods/anogan.md#2a) on scikit-learn's 8x8 digits."""
    report, digits = train_on_digits(tmp_path, {"name": "anogan", "filters": 8, "latent_dim": 16, "search_steps": 5},
                                     labels=(0, 1), abnormal_class="1")
    assert report["n_defective"] == int((digits.target == 1).sum())
    assert set(report["variants"]) == {"edge"}
    assert (tmp_path / "run" / "samples" / "epoch-00002.png").is_file()  # the encoder phase's grid
