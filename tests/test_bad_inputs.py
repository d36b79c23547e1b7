"""A grid of inputs, good and bad, through the Python scorer (a run) and the device scorer (its TFLite and
ONNX exports): every case gives the right scores or one clear ValueError line, and a valid call right after
still gives the scores it gave before (docs/robustness.md#inputs). The expected outcome of each case is
written out here, independently of `check_images`."""

import csv
import io
import itertools

import numpy as np
import pytest
from helpers import device_command

import keras_ad
from keras_ad.export.device import DeviceScorer

RNG = np.random.default_rng(7)
RANKS = (2, 3, 4, 5)
DTYPES = (np.uint8, np.uint16, np.float16, np.float32, np.float64, np.bool_)
CHANNELS = (1, 2, 3, 4, 5)
SIDE = 12


@pytest.fixture(scope="module")
def export(export_tiny):
    """The tiny CAE run's export folder (conftest.export_tiny): its fp32 TFLite and ONNX models."""
    return export_tiny("cae")[1]


@pytest.fixture(scope="module")
def scorers(trained_run, export):
    """{name: (scorer, channels it takes)}: the run's Python scorer, and its fp32 TFLite and ONNX exports
    behind the device scorer."""
    python = keras_ad.load(trained_run)
    channels = python.cfg.data.channels
    return {"python": (python, (1, 3)),
            "tflite": (DeviceScorer(str(export / "model_fp32.tflite")), (channels,)),
            "onnx": (DeviceScorer(str(export / "model.onnx")), (channels,))}


@pytest.fixture(scope="module")
def valid_scores(scorers):
    """{name: scores of _valid_batch} from each scorer before any odd input reached it."""
    return {name: _scores(scorer(_valid_batch(allowed))) for name, (scorer, allowed) in scorers.items()}


def _scores(out):
    return np.asarray(out["score"], np.float64)


def _encode(levels, dtype):
    """uint8 levels written in `dtype` the way a camera or a library would hold them."""
    if dtype == np.uint16:
        return levels.astype(np.uint16) * 257  # 16-bit: the same brightness
    if np.issubdtype(dtype, np.floating):
        return (levels / 255.0).astype(dtype)
    return levels.astype(dtype)


def _grid():
    for rank, dtype, channels in itertools.product(RANKS, DTYPES, CHANNELS):
        if rank == 2 and channels != 1:
            continue  # a rank-2 image has no channel axis
        shape = {2: (SIDE, SIDE), 3: (SIDE, SIDE, channels), 4: (2, SIDE, SIDE, channels),
                 5: (2, 2, SIDE, SIDE, channels)}[rank]
        yield pytest.param(rank, dtype, shape, id=f"rank{rank}-{np.dtype(dtype).name}-c{channels}")


@pytest.mark.parametrize("rank, dtype, shape", _grid())
def test_every_rank_dtype_and_channel_count_scores_right_or_is_one_line(scorers, valid_scores, rank, dtype, shape):
    levels = RNG.integers(0, 256, shape, dtype=np.uint8)
    images = _encode(levels, dtype)
    channels = 1 if rank == 2 else shape[-1]
    for name, (scorer, allowed) in scorers.items():
        accepted = dtype != np.bool_ and rank in (2, 3, 4) and channels in allowed
        if accepted:
            batch = levels.reshape((-1, *levels.shape[-3:])) if rank > 2 else levels[None, ..., None]
            expected = _scores(scorer(batch))
            got = _scores(scorer(images))
            tolerance = 2e-3 if dtype == np.float16 else 1e-4  # float16 holds a level to ~0.1 of 1/255
            np.testing.assert_allclose(got, expected, rtol=tolerance, atol=1e-6, err_msg=name)
        else:
            _assert_one_line_refusal(scorer, images, name)
        np.testing.assert_allclose(_scores(scorer(_valid_batch(allowed))), valid_scores[name], rtol=1e-6,
                                   err_msg=name)


@pytest.mark.parametrize("bad, words", [
    (np.full((1, SIDE, SIDE, 3), np.nan, np.float32), "NaN"),
    (np.full((1, SIDE, SIDE, 3), np.inf, np.float64), "infinite"),
    (np.zeros((0, SIDE, SIDE, 3), np.uint8), "nothing to score"),
    (np.full((1, SIDE, SIDE, 3), 2.0, np.float32), "expected [0, 1]"),
])
def test_non_finite_empty_and_out_of_range_images_are_one_line(scorers, valid_scores, bad, words):
    for name, (scorer, allowed) in scorers.items():
        message = _assert_one_line_refusal(scorer, bad, name)
        assert words in message, (name, message)
        np.testing.assert_allclose(_scores(scorer(_valid_batch(allowed))), valid_scores[name], rtol=1e-6,
                                   err_msg=name)


@pytest.mark.parametrize("side", [1, 4096])
def test_tiny_and_huge_images_score_like_the_same_flat_image_at_the_model_size(scorers, side):
    """A flat colour resized to the model's size stays that colour, whatever size it came at: a 1x1 and a
    4096x4096 image must score as a flat image at the model's own size."""
    colour = RNG.integers(0, 256, 3, dtype=np.uint8)
    model_side = scorers["python"][0].cfg.data.image_shape[0]
    for name, (scorer, _) in scorers.items():
        flat = np.broadcast_to(colour, (1, model_side, model_side, 3)).copy()
        odd = np.broadcast_to(colour, (1, side, side, 3)).copy()
        np.testing.assert_allclose(_scores(scorer(odd)), _scores(scorer(flat)), rtol=1e-4, atol=1e-6,
                                   err_msg=f"{name}, {side}x{side}")


def _valid_batch(allowed):
    return np.random.default_rng(0).integers(0, 256, (2, SIDE, SIDE, allowed[-1]), dtype=np.uint8)


def _assert_one_line_refusal(scorer, images, name) -> str:
    with pytest.raises(ValueError) as error:
        scorer(images)
    message = str(error.value)
    assert message and "\n" not in message, (name, message)
    return message


@pytest.mark.parametrize("model", ["model.onnx", "model_fp32.tflite"])
def test_device_scorer_names_a_model_file_its_runtime_cannot_load(export, tmp_path, model):
    import shutil

    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    (copy / model).write_bytes(b"this is not a model")
    proc = device_command(copy / "keras_ad_device.py", "--model", copy / model, "--check", "--no-verify")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {copy / model}: the runtime cannot load it ("), line


def test_device_scorer_refuses_a_threshold_that_is_not_finite(export, tiny_data):
    proc = device_command(export / "keras_ad_device.py", "--model", export / "model.onnx", "--threshold", "nan",
                          tiny_data / "test" / "good")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --threshold nan: expected a finite number"], proc.stderr


def test_device_scorer_names_a_truncated_jpeg_and_scores_the_rest(export, tiny_data, tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted((tiny_data / "test" / "good").iterdir())[:2]:
        Image.open(path).convert("RGB").save(folder / (path.stem + ".jpg"), quality=95)
    whole = (folder / sorted(p.name for p in folder.iterdir())[0]).read_bytes()
    (folder / "cut.jpg").write_bytes(whole[:len(whole) // 2])
    proc = device_command(export / "keras_ad_device.py", "--model", export / "model.onnx", folder,
                          "--format", "csv")
    assert proc.returncode == 1, proc.stderr
    assert f"error: {folder / 'cut.jpg'}: unreadable" in proc.stderr
    statuses = {row["path"]: row["status"] for row in csv.DictReader(io.StringIO(proc.stdout))}
    assert statuses.pop(str(folder / "cut.jpg")).startswith("unreadable") and set(statuses.values()) == {"ok"}
