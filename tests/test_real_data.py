"""The real-data scripts: prepare_real's layouts and split rule, bench_real's sizes, baseline and table."""

import json
import os

import numpy as np
import pytest
from helpers import script_module as _script
from PIL import Image

from keras_ad import config
from keras_ad.data import layouts

prepare = _script("prepare_real")
bench = _script("bench_real")


def _png(path, value=128, size=(8, 8), mode="L"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full(size[::-1] + ((3,) if mode == "RGB" else ()), value, np.uint8)).save(path)


@pytest.fixture
def elpv_copy(tmp_path):
    """A miniature ELPV clone: src/elpv_dataset/data/{labels.csv, images/}."""
    data = tmp_path / "elpv" / "src" / "elpv_dataset" / "data"
    rows = [("mono", 0.0)] * 8 + [("mono", 1.0)] * 3 + [("mono", 2 / 3), ("mono", 1 / 3)] + \
           [("poly", 0.0)] * 4 + [("poly", 1.0)] * 2
    lines = []
    for i, (kind, prob) in enumerate(rows):
        _png(str(data / "images" / f"cell{i:04d}.png"), value=i)
        lines.append(f"images/cell{i:04d}.png  {prob}  {kind}")
    (data / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "elpv"


def _names(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_elpv_becomes_one_folder_set_per_module_type_with_a_seeded_split(elpv_copy, tmp_path):
    out = tmp_path / "real"
    assert prepare.main(["elpv", "--source", str(elpv_copy), "--out", str(out), "--seed", "0"]) == 0
    mono = out / "elpv_mono"
    assert len(_names(mono / "train" / "good")) == 6 and len(_names(mono / "test" / "good")) == 2
    assert len(_names(mono / "test" / "defective")) == 3 and len(_names(mono / "test" / "likely_defective")) == 1
    assert len(_names(out / "elpv_poly" / "train" / "good")) == 3 and not (mono / "ground_truth").exists()
    every_mono = set(_names(mono / "train" / "good")) | set(_names(mono / "test" / "good")) | set(
        _names(mono / "test" / "defective")) | set(_names(mono / "test" / "likely_defective"))
    assert "cell0012.png" not in every_mono and len(every_mono) == 12  # probability 1/3 is left out
    again = tmp_path / "again"
    prepare.main(["elpv", "--source", str(elpv_copy), "--out", str(again), "--seed", "0"])
    assert _names(again / "elpv_mono" / "test" / "good") == _names(mono / "test" / "good")  # the seed decides
    other = tmp_path / "other"
    prepare.main(["elpv", "--source", str(elpv_copy), "--out", str(other), "--seed", "3"])
    assert _names(other / "elpv_mono" / "test" / "good") != _names(mono / "test" / "good")
    assert prepare.main(["elpv", "--source", str(elpv_copy), "--out", str(out)]) == 2  # never replaces
    cfg = config.validate({"data": {"layout": "folder", "root": str(mono)}})
    files = layouts.discover(cfg.data)
    assert len(files.test) == 6 and sum(s.label for s in files.test) == 4


def test_mvtec_loco_masks_are_the_union_of_each_images_mask_files(tmp_path):
    source = tmp_path / "juice_bottle"
    for i in range(3):
        _png(str(source / "train" / "good" / f"{i:03d}.png"), size=(8, 16), mode="RGB")
    for i in range(2):
        _png(str(source / "validation" / "good" / f"{i:03d}.png"), size=(8, 16), mode="RGB")
        _png(str(source / "test" / "logical_anomalies" / f"{i:03d}.png"), size=(8, 16), mode="RGB")
    for k, rows in enumerate(((0, 4), (10, 14))):  # image 000: one mask file per region (the official layout)
        mask = np.zeros((16, 8), np.uint8)
        mask[rows[0]:rows[1]] = 255 - k  # LOCO encodes the defect type in the value: any non-zero counts
        os.makedirs(source / "ground_truth" / "logical_anomalies" / "000", exist_ok=True)
        Image.fromarray(mask).save(source / "ground_truth" / "logical_anomalies" / "000" / f"{k:03d}.png")
    Image.fromarray(np.eye(16, 8, dtype=np.uint8)).save(source / "ground_truth" / "logical_anomalies" / "001.png")
    out = tmp_path / "real"
    assert prepare.main(["mvtec_loco", "--source", str(source), "--out", str(out)]) == 0
    target = out / "juice_bottle"
    assert len(_names(target / "train" / "good")) == 3 and len(_names(target / "test" / "good")) == 2
    union = np.asarray(Image.open(target / "ground_truth" / "logical_anomalies" / "000_mask.png"))
    assert set(np.unique(union)) == {0, 255} and union[:4].all() and union[10:14].all() and not union[5:9].any()
    assert np.asarray(Image.open(target / "ground_truth" / "logical_anomalies" / "001_mask.png")).sum() == 8 * 255
    cfg = config.validate({"data": {"layout": "mvtec", "root": str(out), "category": "juice_bottle"}})
    assert len(layouts.discover(cfg.data).test) == 4
    assert bench.describe_set(str(out), "juice_bottle")["aspect"] == 2.0


def test_image_shapes_follow_the_sets_aspect_ratio_and_each_architecture():
    assert bench.fit_shape("cae", 128, 2.0) == [256, 128]
    assert bench.fit_shape("cae", 128, 1.0) == [128, 128]
    assert bench.fit_shape("ganomaly2d", 128, 0.75) == [128, 176]  # 170.7 -> the nearest multiple of 16
    assert bench.fit_shape("piad", 64, 2.0) == [64, 64]  # square only


def test_gaussian_baseline_finds_a_bright_square(tmp_path):
    root = tmp_path / "squares"
    rng = np.random.default_rng(0)
    for split, count in (("train/good", 20), ("test/good", 5), ("test/bright", 5)):
        for i in range(count):
            image = np.clip(100 + rng.normal(0, 5, (32, 32)), 0, 255).astype(np.uint8)
            if split == "test/bright":
                image[10:16, 10:16] = 250
            os.makedirs(root / split, exist_ok=True)
            Image.fromarray(image).save(root / split / f"{i:03d}.png")
    cfg = config.validate({"data": {"layout": "folder", "root": str(root), "image_size": 32, "channels": 1}})
    row = bench.gaussian_baseline(cfg, layouts.discover(cfg.data))
    assert row["image_auroc"] == 1.0 and row["image_size"] == [32, 32] and row["images_per_s"] > 0


def test_bench_real_trains_scores_and_writes_its_table(tiny_data, tmp_path, capsys):
    out = tmp_path / "bench.md"
    args = ["--data", str(tiny_data.parent), "--sets", tiny_data.name, "--detectors", "cae", "--short-side", "32",
            "--runs", str(tmp_path / "runs"), "--out", str(out), "--set", "train.epochs=1"]
    assert bench.main(args) == 0
    results = json.loads((tmp_path / "bench.md.json").read_text())[tiny_data.name]
    assert set(results) == {bench.BASELINE, "cae"}
    for row in results.values():
        assert 0.0 <= row["image_auroc"] <= 1.0 and 0.0 <= row["pixel_auroc"] <= 1.0 and row["images_per_s"] > 0
    assert results["cae"]["image_size"] == [32, 32]
    table = out.read_text()
    assert f"| {tiny_data.name} | cae | 32x32 |" in table and bench.BASELINE in table
    mtime = (tmp_path / "runs" / tiny_data.name / "cae" / "report.json").stat().st_mtime_ns
    assert bench.main(args) == 0  # a finished run is reused, not trained again
    assert (tmp_path / "runs" / tiny_data.name / "cae" / "report.json").stat().st_mtime_ns == mtime
    assert bench.main([*args[:4], "--detectors", "nope"]) == 2
