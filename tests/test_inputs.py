"""What the Python scorer and the device scorer accept as images, and the one-line refusals of the rest
(docs/robustness.md#inputs). Untrained tiny models: the checks, not the scores, are under test."""

import numpy as np
import pytest
from helpers import tiny_config_dict

from keras_ad import config
from keras_ad.detectors import build
from keras_ad.export.device import check_images, to_uint8
from keras_ad.scoring import Scorer

RNG = np.random.default_rng(0)
BATCH = RNG.integers(0, 256, (2, 24, 20, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    cfg = config.validate(tiny_config_dict(folder, folder / "run"))
    return Scorer(build(cfg), cfg)


@pytest.mark.parametrize("images, dtype, expected", [
    (BATCH, np.uint8, BATCH),
    (BATCH[0], np.uint8, BATCH[:1]),  # one image is a batch of one
    (BATCH[0, ..., 0], np.uint8, BATCH[:1, ..., :1]),  # one grey image without a channel axis
    (BATCH / 255.0, np.float32, BATCH),  # float64 in [0, 1]
    (BATCH.astype(np.int64), np.uint8, BATCH),  # integers within 0..255
    (BATCH.tolist(), np.uint8, BATCH),  # a Python list
    (BATCH.astype(np.uint16) * 257, np.float32, BATCH),  # 16-bit: x / 65535
])
def test_accepted_images_are_converted_to_what_the_graph_takes(images, dtype, expected):
    x = check_images(images)
    assert x.dtype == dtype and x.shape == expected.shape
    np.testing.assert_array_equal(to_uint8(x), expected)


@pytest.mark.parametrize("images, words", [
    (BATCH.astype(np.float32), "float images span 0..255: expected [0, 1]"),
    (BATCH.astype(np.int32) - 10, "int32 images span -10..245"),
    (np.full((1, 8, 8, 3), np.nan, np.float32), "NaN"),
    (RNG.random((1, 8, 8, 5)), "5 channels"),
    (RNG.random((1, 8, 8, 4)), "images[..., :3]"),
    (np.zeros((0, 8, 8, 3), np.uint8), "nothing to score"),
    (np.zeros((2, 1, 8, 8, 3), np.uint8), "expected [N, H, W, C] images"),
    (np.zeros((1, 8, 8, 3), bool), "dtype bool"),
    (np.array(["a"]), "dtype <U1"),
])
def test_wrong_images_are_one_line_errors(images, words):
    with pytest.raises(ValueError) as error:
        check_images(images)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_clips_and_the_device_channel_count_are_checked():
    assert check_images(np.zeros((16, 8, 8, 1), np.uint8), clip_length=16).shape == (1, 16, 8, 8, 1)
    with pytest.raises(ValueError, match="clips of 8 frames: the model scores clips of 16"):
        check_images(np.zeros((1, 8, 8, 8, 1), np.uint8), clip_length=16)
    with pytest.raises(ValueError, match="the model takes 1"):
        check_images(BATCH, channels=1)  # an export's signature fixes the channels


def test_one_unbatched_image_is_a_batch_of_one_and_poisons_nothing(scorer):
    single = scorer(BATCH[0])
    assert single["score"].shape == (1,) and single["anomaly_map"].shape == (1, 32, 32)
    batch = scorer(BATCH)
    np.testing.assert_allclose(batch["score"][:1], single["score"], rtol=1e-5)
    grey = scorer(BATCH[..., :1])  # another channel count after the first trace still works
    assert grey["score"].shape == (2,)
    np.testing.assert_allclose(scorer(BATCH / 255.0)["score"], batch["score"], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="5 channels"):
        scorer(RNG.random((1, 8, 8, 5)))
    with pytest.raises(ValueError, match="NaN"):
        scorer(np.full((1, 8, 8, 3), np.nan))
    np.testing.assert_allclose(scorer(BATCH)["score"], batch["score"], rtol=1e-6)  # still the same graph
