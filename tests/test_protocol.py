"""Non-square images, texture patches, region of interest and map normalisation (docs/protocol.md)."""

import json

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from helpers import ROI_MASK_SHAPE, tiny_config_dict, write_config, write_roi_mask
from PIL import Image

import keras_ad
from keras_ad import calibration, config, patches, roi
from keras_ad.cli import main
from keras_ad.detectors import build
from keras_ad.errors import ConfigError, UsageError
from keras_ad.runs import Run
from keras_ad.scoring import Scorer, postprocess


def _cfg(data=None, detector=None, postprocess=None):
    return config.validate({"data": {"root": "/x", "channels": 1, **(data or {})},
                            "detector": {"name": "cae", **(detector or {})},
                            "postprocess": postprocess or {}})


# ---------------------------------------------------------------- config
def test_sizes_are_a_side_or_height_and_width():
    assert _cfg({"image_size": 64}).data.image_shape == (64, 64)
    cfg = _cfg({"image_size": [64, 128], "patch_size": [32, 64]})
    assert (cfg.data.image_shape, cfg.data.model_shape, cfg.data.patch_stride_shape) == ((64, 128), (32, 64), (8, 16))
    assert _cfg({"image_size": [64, 128]}).data.model_shape == (64, 128)


@pytest.mark.parametrize("data, detector, post, key, words", [
    ({"image_size": [64]}, {}, {}, "data.image_size", "expected 2 items"),
    ({"image_size": [64, "wide"]}, {}, {}, "data.image_size[1]", "expected int"),
    ({"image_size": [48, 64]}, {}, {}, "data.image_size", "powers of two"),
    ({"image_size": 64, "patch_size": 128}, {}, {}, "data.patch_size", "larger than data.image_size"),
    ({"image_size": 128, "patch_size": 32, "patch_stride": 64}, {}, {}, "data.patch_stride", "never be scored"),
    ({"image_size": 128, "patch_size": 48}, {}, {}, "data.patch_size", "powers of two"),
    ({"image_size": [64, 128]}, {"name": "piad", "perceptual_weights": "none"}, {}, "data.image_size", "square"),
    ({"image_size": [64, 40]}, {"name": "anogan"}, {}, "data.image_size", "multiples of 16"),
    ({"image_size": 64}, {}, {"border": 32}, "postprocess.border", "leaves nothing"),
])
def test_bad_sizes_are_one_line_naming_the_key(data, detector, post, key, words):
    with pytest.raises(ConfigError) as err:
        _cfg(data, detector, post)
    assert f": {key}: " in str(err.value) and words in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- patches
def test_windows_cover_every_pixel_and_end_at_the_edge():
    assert patches.window_starts(100, 32, 30) == [0, 30, 60, 68]
    count = patches.coverage((64, 100), (32, 32), (30, 30))
    assert count.min() >= 1 and count[0, 0] == 1 and count[31, 0] == 2 and count[31, 31] == 4  # 30, 31 overlap


def test_stitched_map_is_each_pixels_mean_over_its_windows():
    image_shape, patch, stride = (40, 56), (16, 24), (12, 16)
    places = patches.windows(image_shape, patch, stride)
    rng = np.random.default_rng(0)
    window_maps = rng.random((len(places) * 2, *patch)).astype(np.float32)  # 2 images, window-major
    expected = np.zeros((2, *image_shape))
    for index, (top, left) in enumerate(places):
        expected[:, top:top + patch[0], left:left + patch[1]] += window_maps[index * 2:(index + 1) * 2]
    expected /= patches.coverage(image_shape, patch, stride)
    stitched = patches.stitch(tf.constant(window_maps), image_shape, patch, stride)
    np.testing.assert_allclose(stitched, expected, atol=1e-6)
    images = rng.random((2, *image_shape, 3)).astype(np.float32)
    tiles = patches.tile(tf.constant(images), image_shape, patch, stride).numpy()
    top, left = places[-1]
    np.testing.assert_array_equal(tiles[-2:], images[:, top:top + patch[0], left:left + patch[1]])


def test_patch_as_large_as_the_image_is_the_single_pass():
    whole = _cfg({"image_size": [32, 64], "channels": 3})
    patched = _cfg({"image_size": [32, 64], "channels": 3, "patch_size": [32, 64]})
    detector = build(whole)
    images = np.random.default_rng(1).integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    single, stitched = Scorer(detector, whole)(images), Scorer(detector, patched)(images)
    np.testing.assert_allclose(stitched["anomaly_map"], single["anomaly_map"], atol=1e-7)
    np.testing.assert_allclose(stitched["score"], single["score"], atol=1e-7)


def test_patched_scorer_averages_the_detectors_window_maps():
    cfg = _cfg({"image_size": [32, 64], "channels": 3, "patch_size": 32, "patch_stride": 16},
               postprocess={"reduction": "max"})
    detector = build(cfg)
    x = np.random.default_rng(2).random((2, 32, 64, 3)).astype(np.float32)
    left, middle, right = (detector.anomaly_map(x[:, :, i:i + 32]).numpy() for i in (0, 16, 32))
    expected = np.concatenate([left[..., :16], (left[..., 16:] + middle[..., :16]) / 2,
                               (middle[..., 16:] + right[..., :16]) / 2, right[..., 16:]], axis=-1)
    out = Scorer(detector, cfg).score_preprocessed(x)
    np.testing.assert_allclose(out["anomaly_map"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["score"], expected.reshape(2, -1).max(1), rtol=1e-5)


# ---------------------------------------------------------------- region of interest
def test_region_from_a_mask_at_camera_resolution_and_a_border(tmp_path):
    post = _cfg(postprocess={"roi_mask": str(write_roi_mask(tmp_path / "roi.png")), "border": 2},
                data={"image_size": [32, 64]}).postprocess
    region = roi.region_of_interest(post, (32, 64))
    assert region.shape == (32, 64) and set(np.unique(region)) == {0.0, 1.0}
    assert region[:, :8].sum() == 0 and region[:2].sum() == 0 and region[:, -2:].sum() == 0
    assert region[2:-2, 8:-2].all()
    assert roi.region_of_interest(_cfg().postprocess, (32, 64)) is None  # nothing set: the whole map counts


@pytest.mark.parametrize("make, words", [
    (lambda p: write_roi_mask(p, (ROI_MASK_SHAPE[0], ROI_MASK_SHAPE[0])), "another shape"),
    (lambda p: Image.fromarray(np.zeros((32, 64), np.uint8)).save(p), "black everywhere"),
    (lambda p: p.write_text("not an image"), "cannot read"),
    (lambda p: None, "no such file"),
])
def test_a_bad_roi_mask_is_one_line(tmp_path, make, words):
    path = tmp_path / "roi.png"
    make(path)
    with pytest.raises(UsageError, match=words) as err:
        roi.region_of_interest(_cfg(postprocess={"roi_mask": str(path)}).postprocess, (32, 64))
    assert str(err.value).startswith("postprocess.roi_mask: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("reduction", ["max", "mean", "topk_mean"])
def test_pixels_outside_the_region_never_count(reduction):
    region = np.zeros((8, 8), np.float32)
    region[2:6, 2:6] = 1
    maps = np.zeros((1, 8, 8), np.float32)
    maps[0, 2:6, 2:6] = np.arange(16).reshape(4, 4) / 16
    noisy = maps.copy()
    noisy[0, 0, :] = 100.0  # outside the region
    clean, _ = postprocess(tf.constant(maps), reduction=reduction, topk_percent=25.0, region=region)
    score, out = postprocess(tf.constant(noisy), reduction=reduction, topk_percent=25.0, region=region)
    np.testing.assert_allclose(score, clean, rtol=1e-6)
    assert out.numpy()[0, 0].max() == 0.0
    inside = np.sort(maps[0, 2:6, 2:6].ravel())
    expected = {"max": inside[-1], "mean": inside.mean(), "topk_mean": inside[-4:].mean()}[reduction]
    np.testing.assert_allclose(score, [expected], rtol=1e-6)  # reduced over the region's 16 pixels


# ---------------------------------------------------------------- normalisation
def test_map_statistics_and_the_normalised_map():
    rng = np.random.default_rng(3)
    maps = rng.random((6, 4, 5)).astype(np.float32)
    mean, denominator = calibration.map_statistics(maps)
    floor = calibration.SPREAD_FLOOR * maps.std(0).mean()
    np.testing.assert_allclose(mean, maps.mean(0), rtol=1e-6)
    np.testing.assert_allclose(denominator, maps.std(0) + floor, rtol=1e-5)
    new = rng.random((2, 4, 5)).astype(np.float32)
    _, out = postprocess(tf.constant(new), reduction="max", normalization=(mean, denominator))
    np.testing.assert_allclose(out, np.maximum((new - mean) / denominator, 0), rtol=1e-5, atol=1e-6)


def test_leave_one_out_normalisation_uses_the_other_maps_only():
    maps = np.random.default_rng(4).random((5, 3, 3)).astype(np.float32)
    held_out = calibration.leave_one_out_normalized(maps)
    floor = calibration.SPREAD_FLOOR * maps.std(0).mean()
    for i in range(5):
        others = np.delete(maps, i, axis=0)
        expected = np.maximum((maps[i] - others.mean(0)) / (others.std(0) + floor), 0)
        np.testing.assert_allclose(held_out[i], expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 validation images"):
        calibration.fit(maps[:1], 1, "per_pixel")


def test_calibration_arrays_are_written_beside_the_json_and_read_back(tmp_path, tiny_data):
    cfg = config.load(write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_data, tmp_path / "run")))
    run = Run.create(cfg)
    mean = np.arange(6, dtype=np.float32).reshape(2, 3)
    run.write_calibration({"pixel_threshold": 0.5, "min_area": 1, "map_mean": mean, "map_denominator": mean + 1,
                           "variants": {"edge": {"pixel_threshold": 0.7, "map_mean": mean * 2}}})
    assert "map_mean" not in json.loads((tmp_path / "run" / "calibration.json").read_text())
    back = run.read_calibration()
    np.testing.assert_array_equal(back["map_mean"], mean)
    np.testing.assert_array_equal(back["variants"]["edge"]["map_mean"], mean * 2)
    assert back["variants"]["edge"]["pixel_threshold"] == 0.7 and "arrays" not in back


# ---------------------------------------------------------------- end to end
def test_protocol_run_trains_calibrates_and_scores_through_the_graph(train_tiny):
    """The tiny protocol run (helpers.TINY_PROTOCOLS): non-square, patches, ROI, border, normalisation."""
    run = train_tiny("cae_protocol")
    scorer = keras_ad.load(run)
    assert scorer.n_windows == 3 and scorer.normalization[0].shape == (32, 64)
    report = json.loads((run / "report.json").read_text())
    assert 0.0 <= report["image_auroc"] <= 1.0 and (run / "calibration.npz").is_file()
    images = np.random.default_rng(5).integers(0, 256, (2, 48, 96, 3), dtype=np.uint8)
    out = scorer(images)
    assert out["anomaly_map"].shape == (2, 32, 64)
    outside = np.ones((32, 64), bool)
    outside[1:-1, 8:-1] = False  # the mask's black left eighth and the 1-pixel border
    assert np.all(out["anomaly_map"].numpy()[:, outside] == 0.0)
    # the graph's map is the normalised, masked raw map of the uncalibrated scorer
    raw = Scorer(scorer.detector, scorer.cfg)(images)["anomaly_map"].numpy()
    mean, denominator = scorer.normalization
    expected = np.maximum((raw - mean) / denominator, 0) * scorer.region
    np.testing.assert_allclose(out["anomaly_map"], expected, rtol=1e-4, atol=1e-5)


def test_bad_protocol_values_exit_2_before_training(tiny_data, tmp_path):
    def train(**sections):
        config_path = write_config(tmp_path / "c.yaml", tiny_config_dict(tiny_data, tmp_path / "run", **sections))
        return CliRunner().invoke(main, ["train", "--config", str(config_path), "--overwrite"])

    result = train(data={"patch_size": 64})
    assert result.exit_code == 2 and "data.patch_size" in result.output and "larger" in result.output
    write_roi_mask(tmp_path / "square.png", (50, 50))
    result = train(postprocess={"roi_mask": str(tmp_path / "square.png")}, data={"image_size": [32, 64]})
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "another shape" in errors[0], result.output
    assert not (tmp_path / "run" / "checkpoints").exists() and "Traceback" not in result.output
