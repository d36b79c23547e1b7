"""End to end through the CLI: train -> calibrate -> evaluate -> score, and every bad input."""

import csv
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from urllib.parse import unquote

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from helpers import TINY_MIN_AREA, tiny_config_dict, write_config
from PIL import Image

import keras_ad
from keras_ad.cli import main
from keras_ad.data import synthetic
from keras_ad.export import device

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_usage_error(result, *words):
    """Exit code 2, exactly one `error:` line naming what is wrong, no traceback."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in errors[0], errors[0]


def test_train_writes_a_complete_run(trained_run):
    for name in ("config.yaml", "model.weights.h5", "report.json", "report.md", "calibration.json",
                 "history.csv", "plots/roc.png", "plots/score_histogram.png", "plots/overlays.png",
                 "plots/calibration.png", "plots/pixel_curves.png", "samples/epoch-00002.png", "report.html",
                 "gallery/gallery.json"):
        assert (trained_run / name).is_file(), name
    events = list((trained_run / "logs").glob("events.out.tfevents.*"))
    summaries = {(v.tag, v.metadata.plugin_data.plugin_name) for path in events
                 for event in tf.compat.v1.train.summary_iterator(str(path)) for v in event.summary.value}
    # TensorBoard: the losses, the sample grid as an image, and the config on the HParams tab
    assert {("loss", "scalars"), ("val_loss", "scalars"), ("samples", "images")} <= summaries, summaries
    assert any(plugin == "hparams" for _, plugin in summaries), summaries
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == ["epoch-00001", "epoch-00002"]
    report = json.loads((trained_run / "report.json").read_text())
    assert report["n_images"] == 6 + 3 * len(synthetic.DEFECTS)
    assert sorted(report["per_defect"]) == sorted(synthetic.DEFECTS)
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1_max", "f1_threshold"):
        assert 0.0 <= report[key] <= 1.0 or key == "f1_threshold", key
    decision = report["calibrated_decision"]
    assert decision["tnr"] is not None and decision["min_area"] == TINY_MIN_AREA  # the config's calibrate.min_area


def test_evaluate_reproduces_the_report(run_copy):
    before = json.loads((run_copy / "report.json").read_text())
    (run_copy / "report.json").unlink()
    result = invoke("evaluate", "--run", run_copy)
    assert result.exit_code == 0, result.output
    after = json.loads((run_copy / "report.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1_max"):
        assert after[key] == pytest.approx(before[key], abs=1e-6)


class _Page(HTMLParser):
    """What a report page refers to and holds: src/href values, table rows' first cells, gallery items."""

    def __init__(self):
        super().__init__()
        self.links, self.first_cells, self.items, self._row = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "tr":
            self._row = []
        if tag == "div" and "item" in attrs.get("class", "").split():
            self.items.append(attrs["data-tags"].split())

    def handle_data(self, data):
        if self._row is not None and data.strip():
            self._row.append(data.strip())

    def handle_endtag(self, tag):
        if tag == "tr" and self._row:
            self.first_cells.append(self._row[0])
            self._row = None


def test_report_html_shows_the_metrics_per_defect_and_a_gallery_of_every_test_image_offline(run_copy):
    page = _Page()
    page.feed((run_copy / "report.html").read_text())
    report = json.loads((run_copy / "report.json").read_text())
    assert all(not link.startswith(("http:", "https:", "//")) for link in page.links), page.links
    assert all((run_copy / unquote(link)).is_file() for link in page.links), page.links  # every image is there
    assert {"all", *report["per_defect"]} <= set(page.first_cells)
    assert len(page.items) == report["n_images"]  # 21 test images, at most evaluate.gallery_images
    rows = json.loads((run_copy / "gallery" / "gallery.json").read_text())
    flagged = sum(r["flag"] == "false negative" for r in rows)
    assert sum("fn" in tags for tags in page.items) == flagged
    assert sum("kind-good" in tags for tags in page.items) == report["n_images"] - report["n_defective"]
    before = (run_copy / "report.html").read_text()
    (run_copy / "report.html").unlink()
    result = invoke("report", "--run", run_copy)  # rebuilt from the run's files
    assert result.exit_code == 0, result.output
    assert (run_copy / "report.html").read_text() == before


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(not CHROMIUM and os.environ.get("CI") != "true",
                    reason="Debian's chromium is not installed (.ci/run installs it; CI never skips this test)")
def test_report_html_renders_in_headless_chromium(trained_run, tmp_path):
    """The page as a browser draws it, with the network off: a screenshot that is not blank."""
    screenshot = tmp_path / "report.png"
    # the flags a closed machine needs: no background connections, a fresh profile, no sandbox as root
    proc = subprocess.run([CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
                           "--window-size=1280,1600", f"--screenshot={screenshot}",
                           (trained_run / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert screenshot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1280)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 200 and pixels.std() > 20, (colours, pixels.std())  # text, metric cards and plots drawn


def test_calibrate_with_min_area_lowers_the_threshold(run_copy):
    before = json.loads((run_copy / "calibration.json").read_text())
    result = invoke("calibrate", "--run", run_copy, "--min-area", 6)
    assert result.exit_code == 0, result.output
    after = json.loads((run_copy / "calibration.json").read_text())
    assert after["min_area"] == 6
    assert after["pixel_threshold"] <= before["pixel_threshold"]


def test_score_folder_matches_the_python_api(run_copy, tiny_data, tmp_path):
    folder = tiny_data / "test" / "hole"
    out = tmp_path / "scores"
    result = invoke("score", "--run", run_copy, folder, "--out", out)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert [os.path.basename(r["path"]) for r in rows] == sorted(os.listdir(folder))
    assert [r["overlay"] for r in rows] == sorted(os.listdir(folder))  # named after the source file
    assert all((out / "overlays" / r["overlay"]).is_file() for r in rows)

    scorer = keras_ad.load(run_copy)
    images = np.stack([np.asarray(Image.open(folder / name)) for name in sorted(os.listdir(folder))])
    api = {k: v.numpy() for k, v in scorer(images).items()}
    assert set(api) == {"score", "anomaly_map", "is_anomalous", "defect_area"}
    assert api["anomaly_map"].shape == (len(rows), 32, 32)
    np.testing.assert_allclose([float(r["score"]) for r in rows], api["score"], atol=1e-5)
    assert [int(r["is_anomalous"]) for r in rows] == api["is_anomalous"].astype(int).tolist()

    again = invoke("score", "--run", run_copy, folder, "--out", out)
    assert_usage_error(again, str(out), "--overwrite")


def test_existing_run_is_not_overwritten(trained_run, tmp_path):
    config_before = (trained_run / "config.yaml").read_bytes()
    weights_before = (trained_run / "model.weights.h5").stat().st_mtime_ns
    result = invoke("train", "--config", trained_run / "config.yaml")
    assert_usage_error(result, str(trained_run), "--overwrite")
    assert (trained_run / "config.yaml").read_bytes() == config_before
    assert (trained_run / "model.weights.h5").stat().st_mtime_ns == weights_before


@pytest.mark.parametrize("change, words", [
    ({"data": {"root": "/no/such/folder"}}, ["/no/such/folder", "data.root"]),
    ({"data": {"colour": 3}}, ["data.colour", "unknown key"]),
    ({"train": {"batch_size": 0}}, ["train.batch_size"]),
    ({"train": {"batch_size": 64}}, ["train.batch_size", "training images"]),
])
def test_bad_input_is_one_line_and_exit_2(tiny_data, tmp_path, change, words):
    cfg = tiny_config_dict(tiny_data, tmp_path / "run", **change)
    result = invoke("train", "--config", write_config(tmp_path / "c.yaml", cfg))
    assert_usage_error(result, *words)


def test_corrupt_training_image_is_named(tiny_data, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(tiny_data, root)
    (root / "train" / "good" / "007.png").write_bytes(b"\x89PNG truncated")
    cfg = tiny_config_dict(root, tmp_path / "run")
    result = invoke("train", "--config", write_config(tmp_path / "c.yaml", cfg))
    assert_usage_error(result, "007.png", "skip_unreadable")


def test_usage_errors_in_a_real_process_have_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "keras_ad.cli", "train", "--config", str(tmp_path / "none.yaml")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'none.yaml'}: (file): no such config file; "
                                                "pass --config with a YAML file (see configs/)"]
    proc = subprocess.run([sys.executable, "-m", "keras_ad.cli", "evaluate", "--run", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "not a keras_ad run folder" in proc.stderr


def _brick_folder_dataset(root):
    """A real texture (scikit-image's brick photo) in the folder layout: crops, some with painted defects."""
    from skimage import data

    brick = data.brick()  # 512x512 grey photograph
    rng = np.random.default_rng(0)

    def crop():
        y, x = rng.integers(0, 512 - 96, size=2)
        return brick[y:y + 96, x:x + 96].copy()
    for split, count in (("train/good", 24), ("test/good", 4), ("test/crack", 4)):
        folder = root / split
        folder.mkdir(parents=True)
        for i in range(count):
            image = crop()
            if "crack" in split:
                image[40:44, 10:80] = 0
            Image.fromarray(image).save(folder / f"{i:03d}.jpg")


@pytest.mark.slow
def test_demo_config_runs_on_a_real_folder_dataset(tmp_path):
    root = tmp_path / "brick"
    _brick_folder_dataset(root)
    result = invoke("train", "--config", os.path.join(REPO, "configs", "demo.yaml"),
                    "--set", f"data.root={root}", "--set", f"run.dir={tmp_path / 'run'}",
                    "--set", "train.epochs=1", "--set", "data.image_size=32", "--set", "train.batch_size=8")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["n_images"] == 8 and report["pixel_auroc"] is None  # no masks in this folder data set
    assert 0.0 <= report["image_auroc"] <= 1.0


def test_worker_flags_are_checked_before_anything_starts(tiny_config):
    for args, message in ((["--workers", "127.0.0.1:1,127.0.0.1:2"], "go together"),
                          (["--workers", "127.0.0.1,127.0.0.1:2", "--worker-index", "0"], "is not host:port"),
                          (["--workers", "127.0.0.1:1", "--worker-index", "1"], "0..0")):
        result = CliRunner().invoke(main, ["train", "--config", str(tiny_config), *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize("damage, words", [
    ("image", "hole/000.png: cannot read image"),
    ("mask", "000_mask.png: mask is 10x10 but its image is 128x128"),
])
def test_a_broken_test_split_fails_before_the_first_training_step(tiny_data, tmp_path, damage, words):
    """Test images and masks are read before training, not only when evaluation starts after it."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    if damage == "image":
        (root / "test" / "hole" / "000.png").write_bytes(b"truncated")
    else:
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "ground_truth" / "hole" / "000_mask.png")
    config = write_config(tmp_path / "c.yaml", tiny_config_dict(root, tmp_path / "run"))
    result = CliRunner().invoke(main, ["train", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert words in result.output and "fix the test split before training" in result.output
    assert "epoch 1/" not in result.output and not (tmp_path / "run" / "checkpoints").exists()


def test_score_descends_into_sub_folders_once_each_with_an_overlay_and_a_gallery(run_copy, tiny_data, tmp_path):
    """A test/ tree: every image once (a file also named directly is not scored twice), overlays at the
    source's size under overlays/<sub-folder>/<name>, the CSV's overlay column, and --report's gallery."""
    out = tmp_path / "scores"
    again = tiny_data / "test" / "hole" / "000.png"
    result = invoke("score", "--run", run_copy, tiny_data / "test", again, "--out", out, "--report")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "scores.csv")))
    expected = sorted(p.relative_to(tiny_data / "test").as_posix() for p in (tiny_data / "test").rglob("*.png"))
    assert sorted(r["overlay"] for r in rows) == expected and len(rows) == len(expected)
    for r in rows[:3]:
        overlay = Image.open(out / "overlays" / r["overlay"])
        source = Image.open(r["path"])
        assert overlay.size == (source.width + device.COLOR_BAR, source.height)
    page = (out / "report.html").read_text()
    assert page.count('class="item') == len(rows) and "http" not in page.replace("http-equiv", "")
    assert "false negatives" not in page  # unlabelled images: no mistakes to filter by
    assert invoke("score", "--run", run_copy, again, "--out", tmp_path / "x", "--report",
                  "--no-overlays").exit_code == 2
