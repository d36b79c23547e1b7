"""Data layouts, decoding errors, validation split, pre-processing and augmentation."""

import hashlib
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from keras_ad import config
from keras_ad.data import layouts, pipeline, synthetic
from keras_ad.errors import DataError
from keras_ad.scoring import preprocess


def _cfg(root, **data):
    return config.validate({"data": {"root": str(root), "layout": "folder", "image_size": 32, "channels": 3, **data}})


def _copy(tiny_data, tmp_path):
    dest = tmp_path / "ds"
    shutil.copytree(tiny_data, dest)
    return dest


def test_mvtec_layout_finds_splits_and_masks(tiny_data):
    cfg = _cfg(tiny_data.parent, layout="mvtec", category="object")
    files = layouts.discover(cfg.data, seed=0)
    assert len(files.train) + len(files.val) == 40 and len(files.val) == 4
    assert {s.defect for s in files.test if s.label} == set(synthetic.DEFECTS)
    defective = [s for s in files.test if s.label]
    assert defective and all(s.mask_path and os.path.isfile(s.mask_path) for s in defective)


def test_validation_split_is_seeded(tiny_data):
    cfg = _cfg(tiny_data)
    a = layouts.discover(cfg.data, seed=1).val
    assert a == layouts.discover(cfg.data, seed=1).val
    assert a != layouts.discover(cfg.data, seed=2).val


def test_missing_root_and_empty_train(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        layouts.discover(_cfg(tmp_path / "nope").data)
    (tmp_path / "ds" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train/good: no images"):
        layouts.discover(_cfg(tmp_path / "ds").data)


def test_corrupt_image_is_named_or_skipped_on_request(tiny_data, tmp_path, capsys):
    root = _copy(tiny_data, tmp_path)
    bad = root / "train" / "good" / "000.png"
    bad.write_bytes(b"not a png")
    files = layouts.discover(_cfg(root).data)
    paths = files.train + files.val
    with pytest.raises(DataError, match="000.png: cannot read image"):
        pipeline.load_images(paths, _cfg(root).data)
    capsys.readouterr()
    images, kept, _ = pipeline.load_images(paths, _cfg(root, skip_unreadable=True).data)
    assert len(images) == len(paths) - 1 and str(bad) not in kept
    [line] = [x for x in capsys.readouterr().err.splitlines() if "000.png" in x]  # one line, no UserWarning
    assert line.startswith(f"warning: skipped {bad}: cannot read image (") and line.endswith("(data.skip_unreadable)")


def test_mask_size_mismatch_and_missing_mask(tiny_data, tmp_path):
    root = _copy(tiny_data, tmp_path)
    mask = root / "ground_truth" / "hole" / "000_mask.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
    files = layouts.discover(_cfg(root).data)
    with pytest.raises(DataError, match="000_mask.png: mask is 10x10 but its image is 128x128"):
        pipeline.load_test_set(files, _cfg(root).data)
    mask.unlink()
    mvtec = _cfg(root, layout="mvtec")
    with pytest.raises(DataError, match="missing ground-truth mask"):
        layouts.discover(mvtec.data)
    # the folder layout accepts a defect image without a mask and leaves it out of pixel metrics
    test = pipeline.load_test_set(layouts.discover(_cfg(root).data), _cfg(root).data)
    assert (~test["has_mask"]).sum() == 1


def test_an_empty_mask_is_a_warning_and_the_image_stays_defective(tiny_data, tmp_path, capsys):
    """Real sets have defect images with an empty mask: evaluation goes on, naming the file."""
    from keras_ad import metrics

    root = _copy(tiny_data, tmp_path)
    mask = root / "ground_truth" / "hole" / "000_mask.png"
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(mask)
    test = pipeline.load_test_set(layouts.discover(_cfg(root).data), _cfg(root).data)
    warning = capsys.readouterr().err
    assert "1 defective test image(s) with an empty mask" in warning and "000_mask.png" in warning
    index = [i for i, p in enumerate(test["paths"]) if p.endswith(os.path.join("hole", "000.png"))]
    assert len(index) == 1 and test["labels"][index[0]] == 1 and not test["masks"][index[0]].any()
    maps = np.random.default_rng(0).random(test["masks"].shape)
    assert 0.0 <= metrics.aupro(test["masks"], maps) <= 1.0  # the other regions still make the curve


def test_high_depth_images_are_scaled_by_their_type_and_0_1_masks_are_read(tmp_path):
    """16-bit and float files scale by the type's range, not by each image's maximum (a 16-bit 300 once
    decoded to 1 beside a 200 that stayed 200); a mask of 0/1 values is a mask."""
    from keras_ad.data.images import read_image, read_mask

    sixteen = np.array([[0, 200, 300, 65535]], np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "a.png")
    assert read_image(str(tmp_path / "a.png"), 1)[..., 0].tolist() == [[0, 1, 1, 255]]
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(tmp_path / "f.tif")
    assert read_image(str(tmp_path / "f.tif"), 1)[..., 0].tolist() == [[0, 128, 255]]
    Image.fromarray(np.array([[0, 1], [0, 0]], np.uint8)).save(tmp_path / "m.png")
    assert read_mask(str(tmp_path / "m.png"), (2, 2)).tolist() == [[False, True], [False, False]]


def test_synthetic_data_is_deterministic(tmp_path):
    def digest(folder):
        h = hashlib.sha256()
        for dirpath, _, names in sorted(os.walk(folder)):
            for name in sorted(names):
                h.update(name.encode() + open(os.path.join(dirpath, name), "rb").read())
        return h.hexdigest()
    synthetic.write(str(tmp_path / "a"), ["texture"], n_train=3, n_test_good=1, n_per_defect=1)
    synthetic.write(str(tmp_path / "b"), ["texture"], n_train=3, n_test_good=1, n_per_defect=1)
    assert digest(tmp_path / "a" / "texture") == digest(tmp_path / "b" / "texture")
    masks = list((tmp_path / "a" / "texture" / "ground_truth").rglob("*_mask.png"))
    assert len(masks) == len(synthetic.DEFECTS) and all(np.asarray(Image.open(m)).any() for m in masks)


def test_preprocess_resizes_converts_and_scales():
    rgb = np.zeros((2, 50, 70, 3), np.uint8)
    rgb[..., 0] = 255
    grey = preprocess(rgb, 32, 1).numpy()
    assert grey.shape == (2, 32, 32, 1) and grey.dtype == np.float32
    np.testing.assert_allclose(grey, 0.2989, atol=1e-3)  # ITU-R 601 red weight
    floats = preprocess(np.full((1, 32, 32, 1), 0.5, np.float32), 32, 3).numpy()
    assert floats.shape == (1, 32, 32, 3) and np.allclose(floats, 0.5)


def test_file_pattern_filters_every_folder(tiny_data, tmp_path):
    """data.pattern is AnoGAN's --input_fname_pattern: only matching files train, validate and test."""
    root = _copy(tiny_data, tmp_path)
    for folder in (root / "train" / "good", root / "test" / "good", root / "test" / "stain"):
        first = sorted(folder.glob("*.png"))[0]
        Image.open(first).convert("RGB").save(first.with_suffix(".jpg"))
    everything = layouts.discover(_cfg(root).data)
    jpgs = layouts.discover(_cfg(root, pattern="*.jpg").data)
    assert len(jpgs.train) + len(jpgs.val) == 1 and [s.defect for s in jpgs.test] == ["good", "stain"]
    assert len(everything.train) + len(everything.val) == 41
    with pytest.raises(DataError, match=r"matching '\*.bmp'.*data.pattern"):
        layouts.discover(_cfg(root, pattern="*.bmp").data)


def test_center_crop_takes_the_middle_before_resizing():
    """data.center_crop is AnoGAN's --crop (docs/methods/anogan.md#2a): the central window, then the resize, in the
    graph."""
    image = np.zeros((1, 60, 80, 3), np.uint8)
    image[:, 10:50, 20:60] = 255  # a 40x40 white centre
    cropped = preprocess(image, 32, 3, center_crop=40).numpy()
    assert cropped.shape == (1, 32, 32, 3) and cropped.min() > 0.9999
    assert preprocess(image, 32, 3).numpy().min() < 1e-6
    import tensorflow as tf

    dynamic = tf.function(lambda x: preprocess(x, 32, 3, center_crop=40),
                          input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    np.testing.assert_allclose(dynamic(image).numpy(), cropped, atol=1e-6)  # unknown sizes: the same window
    np.testing.assert_allclose(preprocess(image[:, :30, :30], 32, 3, center_crop=40).numpy(),
                               preprocess(image[:, :30, :30], 32, 3).numpy())  # smaller than the crop: whole


def test_augmentation_keeps_shape_range_and_is_seeded(tiny_data):
    cfg = _cfg(tiny_data)
    images, _, _ = pipeline.load_images(layouts.discover(cfg.data).train[:8], cfg.data)
    batch_a = next(iter(pipeline.training_dataset(images, cfg.train, batch_size=8))).numpy()
    batch_b = next(iter(pipeline.training_dataset(images, cfg.train, batch_size=8))).numpy()
    assert batch_a.shape == (8, 32, 32, 3) and batch_a.min() >= 0 and batch_a.max() <= 1
    np.testing.assert_array_equal(batch_a, batch_b)
    plain = next(iter(pipeline.training_dataset(images, cfg.train, batch_size=8, shuffle=False,
                                                augment_images=False))).numpy()
    np.testing.assert_array_equal(plain, images)
    assert not np.allclose(np.sort(batch_a.ravel()), np.sort(plain.ravel()))


def test_too_few_images_for_a_batch(tiny_data):
    cfg = _cfg(tiny_data)
    with pytest.raises(DataError, match="train.batch_size"):
        pipeline.training_dataset(np.zeros((3, 32, 32, 3), np.float32), cfg.train, batch_size=8)


def _write_pngs(folder, n, value):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8), value + i, np.uint8)).save(folder / f"{i:03d}.png")


def test_normal_abnormal_layout_holds_out_normal_frames_for_testing(tmp_path):
    _write_pngs(tmp_path / "scene" / "normal", 50, 0)
    _write_pngs(tmp_path / "scene" / "abnormal", 7, 100)
    cfg = _cfg(tmp_path / "scene", layout="normal_abnormal", test_fraction=0.2, val_fraction=0.1)
    files = layouts.discover(cfg.data, seed=0)
    test_normal = [s.path for s in files.test if not s.label]
    assert len(test_normal) == 10 and sum(s.label for s in files.test) == 7
    assert len(files.val) == 4 and len(files.train) == 36
    assert not set(test_normal) & set(files.train + files.val)  # the three splits are disjoint
    assert {s.defect for s in files.test if s.label} == {"abnormal"}
    assert layouts.discover(cfg.data, seed=0).test == files.test  # seeded


def test_one_class_layout_leaves_one_class_out(tmp_path):
    for digit in range(3):
        _write_pngs(tmp_path / "digits" / str(digit), 10, 10 * digit)
    cfg = _cfg(tmp_path / "digits", layout="one_class", abnormal_class="1", test_fraction=0.2)
    files = layouts.discover(cfg.data, seed=0)
    train_classes = {os.path.basename(os.path.dirname(p)) for p in files.train + files.val}
    assert train_classes == {"0", "2"}
    assert sum(s.label for s in files.test) == 10 and {s.defect for s in files.test if s.label} == {"1"}
    assert len([s for s in files.test if not s.label]) == 4
    with pytest.raises(DataError, match="no class folder '7'"):
        layouts.discover(_cfg(tmp_path / "digits", layout="one_class", abnormal_class="7").data)
    with pytest.raises(config.ConfigError, match="data.abnormal_class"):
        _cfg(tmp_path / "digits", layout="one_class")


def _class_folders(root, counts, prefix=lambda i: ""):
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), i, np.uint8)).save(root / name / f"{prefix(i)}{i:03d}.png")


def test_one_normal_class_protocols_of_piad(tmp_path):
    """docs/methods/piad.md#1a: one class normal, the others anomalies; the official split by file-name prefix, or a
    seeded 80/20 per class with as many anomalies as test normals."""
    official = tmp_path / "official"
    _class_folders(official, {"0": 10, "1": 10, "2": 10}, prefix=lambda i: "train_" if i < 6 else "test_")
    files = layouts.discover(_cfg(official, layout="one_class", normal_class="0", official_split=True,
                                  val_fraction=0.0).data)
    assert sorted(os.path.basename(p) for p in files.train) == [f"train_{i:03d}.png" for i in range(6)]
    assert [s.defect for s in files.test] == ["good"] * 4 + ["1"] * 4 + ["2"] * 4
    assert all(os.path.basename(s.path).startswith("test_") for s in files.test)

    pooled = tmp_path / "pooled"
    _class_folders(pooled, {"a": 20, "b": 20, "c": 20})
    cfg = _cfg(pooled, layout="one_class", normal_class="b", equal_anomalies=True, val_fraction=0.0)
    files = layouts.discover(cfg.data, seed=3)
    labels = [s.label for s in files.test]
    assert len(files.train) == 16 and labels.count(0) == 4 and labels.count(1) == 4  # 80/20, equal count
    assert files.test == layouts.discover(cfg.data, seed=3).test  # seeded
    with pytest.raises(config.ConfigError, match="exactly one of"):
        _cfg(pooled, layout="one_class", normal_class="b", abnormal_class="a")


def test_small_sets_repeat_to_min_epoch_images_each_pass_shuffled(tiny_data):
    """PIAD's docs/methods/piad.md#1a: a set shorter than 10 000 is virtually repeated; every pass holds every image
    once."""
    cfg = config.validate({"data": {"root": str(tiny_data)}, "train": {"min_epoch_images": 50, "augment": False}})
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    seen = np.concatenate([b.numpy().ravel() for b in pipeline.training_dataset(images, cfg.train, batch_size=5)])
    assert len(seen) == 50
    assert all(sorted(seen[i:i + 10]) == list(range(10)) for i in range(0, 50, 10))
    assert any(list(seen[i:i + 10]) != list(seen[:10]) for i in range(10, 50, 10))  # reshuffled per pass


def test_iterations_set_the_epochs():
    from keras_ad.training import resolve_epochs

    cfg = config.validate({"data": {"root": "/x"}, "train": {"iterations": 1000, "min_epoch_images": 10000}})
    assert resolve_epochs(cfg.train, 600, step_images=96) == 10  # 104 steps of 3 x 32 per repeated epoch
    cfg = config.validate({"data": {"root": "/x"}, "train": {"epochs": 7}})
    assert resolve_epochs(cfg.train, 600, step_images=96) == 7


def test_streamed_images_equal_the_cached_ones_and_skip_corrupt_files(tiny_data, tmp_path):
    """Over data.cache_mb the images stream from disk: decoded in tf.data, they equal load_images' own."""
    root = _copy(tiny_data, tmp_path)
    cfg = _cfg(root)
    paths = layouts.discover(cfg.data).train[:8]
    cached, _, _ = pipeline.load_images(paths, cfg.data)
    streamed = pipeline.training_dataset(np.array(paths), cfg.train, batch_size=4, shuffle=False,
                                         augment_images=False, decode=pipeline.file_decoder(cfg.data))
    np.testing.assert_allclose(np.concatenate([b.numpy() for b in streamed]), cached, atol=1e-6)
    (root / "train" / "good" / "000.png").write_bytes(b"not a png")
    paths = [str(root / "train" / "good" / "000.png")] + paths[1:]
    skipping = pipeline.training_dataset(np.array(paths), cfg.train, batch_size=1, shuffle=False, augment_images=False,
                                         decode=pipeline.file_decoder(cfg.data), skip_errors=True)
    assert sum(1 for _ in skipping) == len(paths) - 1


def test_training_data_streams_only_over_the_cache_budget(tiny_data, capsys):
    cached = _cfg(tiny_data)
    files = layouts.discover(cached.data)
    assert pipeline.fits_cache(len(files.train) + len(files.val), cached.data)
    streamed = _cfg(tiny_data, cache_mb=0)
    train_ds, n_train, samples, val_ds, n_val = pipeline.training_data(streamed, files, 8)
    assert "streaming" in capsys.readouterr().err
    batch = next(iter(train_ds)).numpy()
    assert batch.shape == (8, 32, 32, 3) and 0 <= batch.min() and batch.max() <= 1
    assert n_train == len(files.train) and samples.shape[1:] == (32, 32, 3) and n_val == len(files.val)
    assert sum(len(b) for b in val_ds) == n_val
