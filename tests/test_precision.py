"""train.precision: every detector's training step under mixed precision matches its float32 step, and
float16 steps are loss-scaled (scaled before differentiation, unscaled before the update)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import FEATURE_PASS_DETECTORS, TINY_DETECTORS, VIDEO_DETECTORS, check_mirrored_step, one_sgd_step

from keras_ad import config
from keras_ad.detectors import anogan, build, piad

# Per detector: (batch, SGD learning rate) of a step that moves the weights by ~1e-3 or more (GANomaly's
# losses are pixel sums with gradients ~1e4); the tiny PIAD's batch (n_dis 1) feeds a critic step and
# an E/G step.
STEP = {"cae": (8, 0.5), "ganomaly2d": (8, 1e-7), "ganomaly": (8, 1e-3), "anogan": (8, 1e-3),
        "piad": (24, 1e-4), "lntra": (4, 1e-2)}
# float16 keeps ~3 significant digits, bfloat16 ~2: the whole update's direction (cosine) and size
# (norm ratio) against float32's. Measured worst: float16 0.997 / 0.3 %, bfloat16 0.997 / 1.1 % (with
# SGD 1e-2 AnoGAN's G step, which follows its D step, reached only 0.964 in bfloat16, hence its 1e-3).
# At 2^-8 float16's small gradients underflow: PIAD's update measured 0.999 / 3.6 % there, hence 5 %.
# A missing unscale is off by the loss scale (256, 1/16 or 1/256 here), a missing scale by its inverse.
TOLERANCE = {"mixed_float16": (0.97, 0.05), "mixed_bfloat16": (0.93, 0.10)}
# float16 loss scales tried until every optimiser's step is finite (a LossScaleOptimizer starts at 2^15
# and halves at every overflow; test_an_overflowing_... covers that). GANomaly2D's discriminator
# gradients (pixel sums, ~1e4) overflow float16 at any scale above 1, so its tries start below 1. PIAD's
# E/G step skipped at both 2^8 and 2^-4 in two of three fresh-clone suites once, late in a worker (never
# alone; cause not found): 2^-8 is tried last.
LOSS_SCALES = (2.0 ** 8, 2.0 ** -4, 2.0 ** -8)  # never 1: a missing scale or unscale would not show
FIRST_LOSS_SCALE = {"ganomaly2d": 1}  # index into LOSS_SCALES where a detector's tries start


def _cfg(name):
    data = {"layout": "video", "channels": 1} if name in VIDEO_DETECTORS else {"channels": 3}
    return config.validate({"data": {"root": "/x", "image_size": 32, **data}, "detector": dict(TINY_DETECTORS[name])})


def _batch(name, n):
    rng = np.random.default_rng(0)
    if name in VIDEO_DETECTORS:  # (input, target) clip pairs
        return rng.random((n, 2, TINY_DETECTORS[name]["clip_length"], 32, 32)).astype(np.float32)
    return rng.random((n, 32, 32, 3)).astype(np.float32)


@pytest.fixture
def fixed_sampling(monkeypatch):
    """The GANs' random draws from stateless ops, so that both precisions see the same z and α."""
    def uniform(shape, low=0.0):
        return tf.random.stateless_uniform(shape, seed=[1, 2], minval=low, maxval=1.0)

    monkeypatch.setattr(anogan.AnoGAN, "sample_latents",
                        lambda self, x: uniform([tf.shape(x)[0], self.latent_dim], -1.0))
    monkeypatch.setattr(piad.PIAD, "sample_prior",
                        lambda self, n: tf.random.stateless_normal([n, *self.latent_shape], seed=[3, 4]))
    monkeypatch.setattr(piad.PIAD, "sample_alpha", lambda self, n: uniform([n]))


def _one_step(cfg, precision, initial, batch, learning_rate, loss_scale=None, eager=False):
    """(model, trainable weights after) one SGD step from `initial` in `precision` (helpers.one_sgd_step)."""
    model = one_sgd_step(tf.distribute.get_strategy(), cfg, initial, batch, learning_rate, precision, eager, loss_scale)
    return model, [v.numpy() for v in model.trainable_variables]


def _applied_steps(model):
    """Updates each optimiser applied (a LossScaleOptimizer's skipped steps do not count)."""
    return [int(getattr(o, "inner_optimizer", o).iterations) for o in model.training_optimizers()]


# float16 for every detector (loss scaling is per train step); bfloat16, which needs no scaling, for a
# 2D and a 3D convolutional one (the suite's time budget).
CASES = [(name, "mixed_float16") for name in TINY_DETECTORS if name not in FEATURE_PASS_DETECTORS] + \
    [("cae", "mixed_bfloat16"), ("lntra", "mixed_bfloat16")]


@pytest.mark.slow
@pytest.mark.parametrize("name, precision", CASES)
def test_mixed_precision_step_matches_float32(name, precision, fixed_sampling):
    cfg, (n, learning_rate) = _cfg(name), STEP[name]
    keras.utils.set_random_seed(0)
    reference_model = build(cfg)
    initial, before = reference_model.get_weights(), [v.numpy() for v in reference_model.trainable_variables]
    batch = _batch(name, n)
    reference_model, reference = _one_step(cfg, "float32", initial, batch, learning_rate, eager=True)
    for scale in LOSS_SCALES[FIRST_LOSS_SCALE.get(name, 0):] if precision == "mixed_float16" else (None,):
        model, mixed = _one_step(cfg, precision, initial, batch, learning_rate, scale)
        if _applied_steps(model) == _applied_steps(reference_model):
            break

    assert model.dtype_policy.name == precision
    assert all(isinstance(o, keras.optimizers.LossScaleOptimizer) == (precision == "mixed_float16")
               for o in model.training_optimizers())
    assert _applied_steps(model) == _applied_steps(reference_model)  # every step finite, none skipped
    expected = np.concatenate([(a - b).ravel() for a, b in zip(reference, before)])
    got = np.concatenate([(a - b).ravel() for a, b in zip(mixed, before)])
    assert np.isfinite(got).all()
    cosine = float(expected @ got / np.linalg.norm(expected) / np.linalg.norm(got))
    ratio = float(np.linalg.norm(got) / np.linalg.norm(expected))
    min_cosine, ratio_error = TOLERANCE[precision]
    assert cosine > min_cosine and abs(ratio - 1.0) < ratio_error, (cosine, ratio)


def test_an_overflowing_float16_step_is_skipped_and_the_scale_halved(fixed_sampling):
    """The scale reaches the float16 backward pass: at 2^40 it overflows (float16 ends at 65504), the
    step leaves the weights alone and the scale halves, as Keras' dynamic loss scaling does."""
    cfg, (n, learning_rate) = _cfg("cae"), STEP["cae"]
    initial = build(cfg).get_weights()
    model, _ = _one_step(cfg, "mixed_float16", initial, _batch("cae", n), learning_rate, loss_scale=2.0 ** 40)
    assert _applied_steps(model) == [0]
    assert float(model.optimizer.dynamic_scale) == 2.0 ** 39
    for after, before in zip(model.get_weights(), initial):  # the CAE has no batch norm statistics
        np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("name", ["cae", "ganomaly"])
def test_float16_step_under_mirrored_strategy_equals_one_device(name, two_replicas):
    """The LossScaleOptimizer's finite check and update under MirroredStrategy (keras#18666) give the
    one-device float16 step, also for a GAN whose step holds a cross-replica reduction. Halving the batch
    reorders float16 sums: single weights may differ by up to 10 % of the largest update (seen: 9 %), the
    weights by 1e-4 (seen: 1.1e-5) where float32 steps stay within 1e-5."""
    n, learning_rate = STEP[name]
    check_mirrored_step(two_replicas, _cfg(name), n, learning_rate, relative_floor=0.1, precision="mixed_float16",
                        weights_tolerance=1e-4)
