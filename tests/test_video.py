"""The video layout (docs/methods/lntra.md#5a): frame folders, the label formats of Ped2/Avenue (MNAD), ShanghaiTech
and ours; the synthetic demo videos; a tiny LNTRA run through the CLI with its frame-level report."""

import json

import numpy as np
import pytest
from PIL import Image

from keras_ad.data import synthetic_video, video
from keras_ad.errors import DataError


def _frames(folder, n, value=0):
    folder.mkdir(parents=True)
    for t in range(n):
        Image.fromarray(np.full((8, 8), value + t, np.uint8)).save(folder / f"{t + 1:03d}.jpg")


def _layout(root, test_lengths=(5, 4)):
    for name, n in (("01", 6), ("02", 7), ("03", 5)):
        _frames(root / "training" / "frames" / name, n)
    for i, n in enumerate(test_lengths):
        _frames(root / "testing" / "frames" / f"{i + 1:02d}", n)


def test_mnad_concatenated_labels_split_by_video_in_sorted_order(tmp_path):
    _layout(tmp_path)
    np.save(tmp_path / "frame_labels_ped2.npy", np.array([[0, 0, 1, 1, 0, 1, 1, 0, 0]]))
    train, val, test = video.discover(tmp_path, val_fraction=0.3, seed=0)
    assert len(train) == 2 and len(val) == 1 and {v.name for v in train + val} == {"01", "02", "03"}
    assert [v.labels.tolist() for v in test] == [[0, 0, 1, 1, 0], [1, 1, 0, 0]]
    assert [len(v.frames) for v in test] == [5, 4] and test[0].masks is None


def test_per_video_label_files_and_their_errors(tmp_path):
    _layout(tmp_path)
    (tmp_path / "testing" / "labels").mkdir()
    np.save(tmp_path / "testing" / "labels" / "01.npy", np.array([0, 1, 1, 0, 0]))
    (tmp_path / "testing" / "test_frame_mask").mkdir()
    np.save(tmp_path / "testing" / "test_frame_mask" / "02.npy", np.array([0, 0, 1, 1]))  # ShanghaiTech
    _, _, test = video.discover(tmp_path)
    assert [v.labels.tolist() for v in test] == [[0, 1, 1, 0, 0], [0, 0, 1, 1]]
    np.savetxt(tmp_path / "testing" / "labels" / "02.txt", np.array([0, 0, 0]))
    (tmp_path / "testing" / "test_frame_mask" / "02.npy").unlink()
    with pytest.raises(DataError, match="video 02 has 4 frames but 3 labels"):
        video.discover(tmp_path)
    (tmp_path / "testing" / "labels" / "02.txt").unlink()
    with pytest.raises(DataError, match="no frame labels for video 02"):
        video.discover(tmp_path)
    with pytest.raises(DataError, match="training/frames"):
        video.discover(tmp_path / "absent")


def test_clips_are_consecutive_frames():
    frames = np.arange(10)[:, None]
    clips = video.clips(frames, 4)
    assert clips.shape == (7, 4, 1) and clips[2, :, 0].tolist() == [2, 3, 4, 5]


def test_synthetic_videos_are_deterministic_and_labelled(tmp_path):
    root = synthetic_video.write(str(tmp_path / "a"), n_train=2, n_test=3, n_frames=30)
    again = synthetic_video.write(str(tmp_path / "b"), n_train=2, n_test=3, n_frames=30)
    _, _, test = video.discover(root)
    for v in test:
        assert 0 < v.labels.sum() < len(v.labels)
        masks = video.load_masks(v, (64, 64))
        assert (masks.reshape(len(v.labels), -1).any(1) == v.labels.astype(bool)).all()  # masked iff labelled
    first, second = (open(f"{r}/testing/frames/02/0010.png", "rb").read() for r in (root, again))
    assert first == second


@pytest.mark.slow
def test_tiny_lntra_run_reports_frame_level_auroc(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from helpers import write_config

    from keras_ad.cli import main

    monkeypatch.setenv("KERAS_AD_HOME", str(tmp_path / "home"))
    cfg = {"run": {"dir": str(tmp_path / "run")},
           "data": {"layout": "video", "root": "synthetic:video", "image_size": 32, "channels": 1, "val_fraction": 0.2},
           "detector": {"name": "lntra", "clip_length": 8, "widths": [4, 4, 8, 8], "skip_frame": 0.3, "patch": 0.3,
                        "intruders": "digits", "max_size": 0.5},
           "train": {"epochs": 1, "batch_size": 4}}
    result = CliRunner().invoke(main, ["train", "--config", str(write_config(tmp_path / "c.yaml", cfg))])
    assert result.exit_code == 0, result.output
    assert "training lntra on 265 clips of 5 videos (1 validation)" in result.output  # 5 x (60 - 8 + 1)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["n_images"] == 6 * (60 - 7)  # each test video: every frame but the first 4 and last 3
    assert 0.0 <= report["frame_auroc_offline"] <= 1.0 and 0.0 <= report["frame_auroc_online"] <= 1.0
    assert report["frame_auroc_offline"] == report["image_auroc"] and report["pixel_auroc"] == report["pixel_auroc"]
    calibration = json.loads((tmp_path / "run" / "calibration.json").read_text())
    low, high = calibration["online_psnr_range"]
    assert low < high and calibration["calibration_videos"] == "validation"
    assert (tmp_path / "run" / "plots" / "scores_over_time.png").stat().st_size > 0
    assert "plots/scores_over_time.png" in (tmp_path / "run" / "report.html").read_text()  # on the run's page
    cfg["train"]["early_stopping"] = 2  # no validation loss to watch on the video pipeline: one line, no epoch
    config = write_config(tmp_path / "stop.yaml", {**cfg, "run": {"dir": str(tmp_path / "stop")}})
    stop = CliRunner().invoke(main, ["train", "--config", str(config)])
    assert stop.exit_code == 2 and "train.early_stopping: lntra has no validation images" in stop.output, stop.output
    assert "epoch 1/" not in stop.output


def test_data_synth_writes_the_demo_videos_once(tmp_path):
    from click.testing import CliRunner

    from keras_ad.cli import main

    result = CliRunner().invoke(main, ["data", "synth", "--kind", "video", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    _, _, test = video.discover(tmp_path / "video")
    assert len(test) == 6 and all(len(v.frames) == 60 for v in test)
    again = CliRunner().invoke(main, ["data", "synth", "--kind", "video", "--out", str(tmp_path)])
    assert again.exit_code == 2 and "exists" in again.output


def test_score_a_frame_folder_writes_rows_per_centre_frame(tmp_path, monkeypatch, train_tiny, tiny_video):
    import csv

    from click.testing import CliRunner

    from keras_ad.cli import main

    run = train_tiny("lntra")
    folder = f"{tiny_video}/testing/frames/01"
    labels = f"{tiny_video}/testing/labels/01.npy"
    args = ["score", "--run", str(run), folder, "--labels", labels, "--out", str(tmp_path / "s")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "s" / "scores.csv")))
    assert [int(r["frame"]) for r in rows] == list(range(4, 24 - 3))  # clip 8: centres 4 .. n - 4
    offline = np.array([float(r["score_offline"]) for r in rows])
    assert offline.min() == 0.0 and offline.max() == 1.0  # per-video min-max
    psnr = np.array([float(r["psnr"]) for r in rows])
    assert np.argmax(offline) == np.argmin(psnr)
    assert (tmp_path / "s" / "01_scores_over_time.png").stat().st_size > 0
    from keras_ad import video_evaluation

    assert video_evaluation.layout_labels(folder).tolist() == np.load(labels).tolist()  # found without --labels
    assert video_evaluation.layout_labels(str(tmp_path)) is None
    np.save(tmp_path / "short.npy", np.zeros(5))
    bad = CliRunner().invoke(main, ["score", "--run", str(run), folder, "--labels", str(tmp_path / "short.npy"),
                                    "--out", str(tmp_path / "t")])
    assert bad.exit_code == 2 and "5 labels for the 24 frames" in bad.output
    text = tmp_path / "clip.txt"
    text.write_text("x")
    bad = CliRunner().invoke(main, ["score", "--run", str(run), str(text), "--out", str(tmp_path / "u")])
    assert bad.exit_code == 2 and "not a frame folder or a video file" in bad.output


def test_video_files_without_opencv_say_how_to_proceed(tmp_path, monkeypatch):
    import sys

    from keras_ad import video_evaluation

    (tmp_path / "clip.mp4").write_bytes(b"\0")
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    with pytest.raises(DataError, match="needs OpenCV .*extract its frames into a folder"):
        video_evaluation.read_video_frames(str(tmp_path / "clip.mp4"))
