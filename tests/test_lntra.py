"""LNTRA (docs/methods/lntra.md): pseudo anomalies against docs/methods/lntra.md#5c, PSNR and per-video normalisation
by hand, clip indexing (docs/methods/lntra.md#5e), the autoencoder's shapes and one MirroredStrategy step equal to
one single-device step."""

import numpy as np
import pytest
import tensorflow as tf

from keras_ad.data import pseudo_anomalies as pa
from keras_ad.detectors import lntra


def test_cutmix_and_mixup_boxes_clip_the_start_then_add_the_size():
    mask = pa.cutmix_mask(20, 20, cy=1, cx=18, hb=6, wb=6)
    # x1 = max(0, 18 - 3) = 15, x2 = min(20, 15 + 6) = 20; y1 = max(0, 1 - 3) = 0, y2 = 0 + 6
    expected = np.zeros((20, 20), np.float32)
    expected[0:6, 15:20] = 1.0
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(pa.mixup_patch_mask(20, 20, 1, 18, 6, 6), 0.5 * expected)


def test_smoothmix_square_has_linear_ramps_of_a_tenth_of_the_half_size():
    mask = pa.smoothmix_s_mask(100, 100, cy=50, cx=50, hb=40, wb=40)
    # box [30, 70) on both axes, ramps 0.1 * 20 = 2 pixels: 0.5 one pixel out, 0 two pixels out
    assert mask[50, 30] == 1.0 and mask[50, 69] == 1.0
    assert mask[50, 29] == pytest.approx(0.5) and mask[50, 70] == pytest.approx(0.5)
    assert mask[50, 28] == 0.0 and mask[50, 71] == 0.0
    assert mask[29, 29] == pytest.approx(0.25)  # the product of the two trapezoids
    assert mask.min() == 0.0 and mask.max() == 1.0


def test_smoothmix_circle_is_an_unnormalised_gaussian_built_y_then_x():
    mask = pa.smoothmix_c_mask(30, 50, cy=10, cx=40, hb=3, wb=6)
    assert mask.shape == (30, 50) and mask[10, 40] == pytest.approx(1.0)
    assert mask[10, 46] == pytest.approx(np.exp(-0.5), rel=1e-6)  # one σ_x = w_b to the right
    assert mask[13, 40] == pytest.approx(np.exp(-0.5), rel=1e-6)  # one σ_y = h_b down
    assert mask[13, 46] == pytest.approx(np.exp(-1.0), rel=1e-6)


def test_patch_sizes_motion_and_value_range():
    rng = np.random.default_rng(0)
    sizes = np.array([pa.patch_size(rng, 256, 256, 0.5) for _ in range(500)])
    assert sizes.min() == 10 and sizes.max() < 128  # max(10, floor(U(0, 0.5) * 256))
    still = pa.patch_masks(rng, "cutmix", 16, 64, 64, max_size=0.5, max_move=0)
    assert still.shape == (16, 64, 64) and all(np.array_equal(still[0], frame) for frame in still)
    moving = pa.patch_masks(np.random.default_rng(1), "cutmix", 16, 256, 256, max_size=0.3, max_move=10)
    starts = [(np.argmax(m.any(1)), np.argmax(m.any(0))) for m in moving]
    steps = np.abs(np.diff(np.array(starts, float), axis=0))
    assert steps.max() <= 10 and steps.max() > 0  # a random walk of at most β pixels per frame (before clipping)
    clip = np.random.default_rng(2).uniform(-1, 1, (16, 64, 64)).astype(np.float32)
    intruder = pa.stretch(np.random.default_rng(3).integers(0, 256, (32, 32), dtype=np.uint8), 64, 64)
    for kind in pa.PATCH_KINDS:
        masks = pa.patch_masks(np.random.default_rng(4), kind, 16, 64, 64, 0.5, 10)
        assert masks.min() >= 0.0 and masks.max() <= 1.0
        out = pa.paste(clip, intruder, masks)
        assert out.shape == clip.shape and out.min() >= -1.0 and out.max() <= 1.0
        np.testing.assert_allclose(out[masks == 0], clip[masks == 0])
        np.testing.assert_allclose(out[masks == 1], np.broadcast_to(intruder, clip.shape)[masks == 1])


def test_intruder_is_stretched_over_the_frame_not_miniaturised():
    image = np.array([[0, 255], [255, 0]], np.uint8)
    frame = pa.stretch(image, 5, 9)
    assert frame.shape == (5, 9) and frame[0, 0] == -1.0 and frame[0, -1] == 1.0 and frame[-1, 0] == 1.0
    assert frame[2, 4] == pytest.approx(0.0)  # align_corners: the middle is the mean of the corners
    assert frame.min() >= -1.0 and frame.max() <= 1.0


def test_skip_frame_clip_and_its_consecutive_target():
    video = np.arange(40, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    rng = np.random.default_rng(0)
    skipped, target = pa.skip_frame_clip(rng, video, start=2, length=4, jumps=[3])
    np.testing.assert_array_equal(skipped[:, 0, 0], [2, 5, 8, 11])
    np.testing.assert_array_equal(target[:, 0, 0], [2, 3, 4, 5])
    short = video[:10]
    for _ in range(20):
        skipped, target = pa.skip_frame_clip(rng, short, start=5, length=4, jumps=[3])
        start = int(target[0, 0, 0])
        assert skipped[:, 0, 0].max() <= 9 and len(target) == 4
        np.testing.assert_array_equal(skipped[:, 0, 0], np.minimum(start + 3 * np.arange(4), 9))


def test_one_kind_per_clip_with_the_configured_probabilities():
    rng = np.random.default_rng(0)
    kinds = [pa.choose_kind(rng, {"skip_frame": 0.2, "cutmix": 0.3}) for _ in range(20000)]
    assert set(kinds) == {"skip_frame", "cutmix", None}
    assert kinds.count("skip_frame") / 20000 == pytest.approx(0.2, abs=0.01)
    assert kinds.count("cutmix") / 20000 == pytest.approx(0.3, abs=0.01)


def test_clip_sampler_targets_are_always_normal_clips():
    rng = np.random.default_rng(0)
    videos = [rng.uniform(-1, 1, (n, 8, 8)).astype(np.float32) for n in (20, 25)]
    intruders = [rng.integers(0, 256, (32, 32), dtype=np.uint8)]
    sampler = pa.ClipSampler(videos, 4, {"skip_frame": 0.3, "smoothmix_s": 0.3}, jumps=[2, 3], intruders=intruders,
                             max_size=0.5, seed=1)
    pairs = list(sampler.epoch())
    assert len(pairs) == len(sampler) == 17 + 22
    normal = {v[s:s + 4].tobytes() for v in videos for s in range(len(v) - 3)}
    assert all(target.tobytes() in normal for _, target in pairs)
    changed = sum(not np.array_equal(x, y) for x, y in pairs)
    assert 0.4 * len(pairs) < changed < 0.8 * len(pairs)  # about 60 % became pseudo anomalies
    plain = pa.ClipSampler(videos, 4, {}, seed=1)
    assert all(np.array_equal(x, y) for x, y in plain.epoch())
    assert len(pa.ClipSampler(videos, 4, {}, stride=5)) == 4 + 5  # starts 0, 5, 10, 15 and 0, ..., 20
    as_bytes = [np.round((v + 1.0) * 127.5).astype(np.uint8) for v in videos]  # training keeps frames as uint8
    x, y = next(pa.ClipSampler(as_bytes, 4, {}, seed=1).epoch())
    assert x.dtype == y.dtype == np.float32 and 0.0 <= y.min() and y.max() <= 1.0
    assert any(np.array_equal(y, b[s:s + 4] / np.float32(255.0)) for b in as_bytes for s in range(len(b) - 3))
    with pytest.raises(ValueError, match="intruder"):
        pa.ClipSampler(videos, 4, {"cutmix": 0.1})


def test_psnr_and_per_video_normalisation_by_hand():
    error = np.full((2, 4, 4), 0.01, np.float32)
    error[1] = 0.1
    np.testing.assert_allclose(lntra.psnr(tf.constant(error)).numpy(), [20.0, 10.0], rtol=1e-6)  # peak 1
    np.testing.assert_allclose(lntra.per_video_minmax([30.0, 20.0, 25.0]), [0.0, 1.0, 0.5])
    assert lntra.per_video_minmax([7.0, 7.0]).tolist() == [0.0, 0.0]
    normaliser = lntra.online_normaliser([28.0, 32.0, 30.0])
    np.testing.assert_allclose(lntra.online_score([32.0, 28.0, 24.0], normaliser), [0.0, 1.0, 2.0])


def test_clips_score_their_centre_frame_and_the_edges_leave_the_auc():
    frames = lntra.scored_frames(30, length=16)
    assert frames[0] == 8 and frames[-1] == 30 - 8 and len(frames) == 30 - 15  # first 8, last 7 dropped
    clip = np.zeros((1, 16, 4, 4, 1), np.float32)
    reconstruction = clip.copy()
    reconstruction[0, 8] = 0.5  # only the centre frame (index 8) counts
    reconstruction[0, 0] = reconstruction[0, 15] = 1.0
    error = lntra.centre_frame_error(tf.constant(reconstruction), tf.constant(clip)).numpy()
    np.testing.assert_allclose(error, np.full((1, 4, 4), 0.25))


def test_autoencoder_shapes_of_section_5b():
    net = lntra.autoencoder(16, (256, 256), widths=(4, 4, 8, 8))
    convs = [layer for layer in net.layers if "conv3d" in layer.name and "transpose" not in layer.name]
    shapes = [layer.output.shape[1:] for layer in convs]
    assert shapes == [(16, 128, 128, 4), (8, 64, 64, 4), (4, 32, 32, 8), (2, 16, 16, 8)]
    assert net.output_shape == (None, 16, 256, 256, 1) and net.layers[-1].activation.__name__ == "tanh"
    assert lntra.autoencoder(8, (32, 48), widths=(4, 4, 8, 8)).output_shape == (None, 8, 32, 48, 1)  # non-square


def test_strided_layers_sample_the_positions_of_pytorchs_padding_1():
    """conv3d(k 3, s 2, p 1): output j sees inputs 2j-1..2j+1, so an impulse at 2 misses output 0 (Keras'
    'same' would see 0..2); conv_transpose3d(p 1, output_padding 1): an impulse at 0 reaches outputs 0
    and 1 only (Keras' 'same' reaches 0..2)."""
    import keras

    impulse = np.zeros((1, 4, 8, 8, 1), np.float32)
    impulse[0, 2, 2, 2] = 1.0
    inputs = keras.Input((4, 8, 8, 1))
    conv = keras.layers.Conv3D(1, 3, strides=2, kernel_initializer="ones", use_bias=False)
    down = keras.Model(inputs, conv(keras.layers.ZeroPadding3D(1)(inputs)))
    out = down(impulse).numpy()[0, ..., 0]
    assert out[0].sum() == 0 and out[:, 0].sum() == 0 and out[1, 1, 1] == 1.0
    small = keras.Input((2, 2, 2, 1))
    layer = keras.layers.Conv3DTranspose(1, 3, strides=2, padding="valid", kernel_initializer="ones", use_bias=False)
    crop = keras.layers.Cropping3D(((1, 0), (1, 0), (1, 0)))
    up = keras.Model(small, crop(layer(small)))
    spike = np.zeros((1, 2, 2, 2, 1), np.float32)
    spike[0, 0, 0, 0] = 1.0
    out = up(spike).numpy()[0, ..., 0]
    assert out.shape == (4, 4, 4) and out[:2, :2, :2].min() == 1.0 and out[2:].sum() == 0.0


def test_mirrored_step_equals_one_device_step(two_replicas):
    import keras
    from helpers import assert_same_update

    def one_step(strategy, initial, inputs, targets):
        with strategy.scope():
            model = lntra.LNTRA(lntra.autoencoder(8, (16, 16), widths=(4, 4, 8, 8)))
            model.set_weights(initial)
            model.install_optimizers(lambda name: keras.optimizers.SGD(0.1))
        data = tf.data.Dataset.from_tensor_slices(np.stack([inputs, targets], 1)).batch(len(inputs))
        model.fit(data, epochs=1, shuffle=False, verbose=0)
        return model.get_weights()

    keras.utils.set_random_seed(0)
    initial = lntra.LNTRA(lntra.autoencoder(8, (16, 16), widths=(4, 4, 8, 8))).get_weights()
    rng = np.random.default_rng(0)
    inputs = rng.random((8, 8, 16, 16)).astype(np.float32)
    targets = np.clip(inputs + rng.normal(0, 0.1, inputs.shape), 0, 1).astype(np.float32)
    single = one_step(tf.distribute.get_strategy(), initial, inputs, targets)
    assert_same_update(initial, single, one_step(two_replicas, initial, inputs, targets))


def test_initialisation_is_pytorchs_default():
    """Kernels and biases U(±1/sqrt(fan_in)) with PyTorch's fan_in: 27·in for conv3d, 27·out for its transpose."""
    net = lntra.autoencoder(16, (64, 64), widths=(8, 8, 16, 16))
    conv = next(layer for layer in net.layers if layer.name.startswith("conv3d") and "transpose" not in layer.name)
    last = [layer for layer in net.layers if "transpose" in layer.name][-1]  # 8 -> 1 channel
    for layer, fan_in in ((conv, 27 * 1), (last, 27 * 1)):
        kernel, bias = (w.numpy() for w in layer.weights)
        bound = 1.0 / np.sqrt(fan_in)
        assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.8 * bound
        assert np.abs(bias).max() <= bound
    second = [layer for layer in net.layers if layer.name.startswith("conv3d") and "transpose" not in layer.name][1]
    assert np.abs(second.weights[0].numpy()).max() <= 1.0 / np.sqrt(27 * 8)
