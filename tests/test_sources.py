"""data.source: labelled sets (arrays, COIL-100, CelebA, LSUN) written once as one_class folders
(docs/methods/piad.md#1a)."""

import os

import numpy as np
import pytest
from PIL import Image

from keras_ad import config
from keras_ad.data import layouts, sources
from keras_ad.errors import DataError


def _data_cfg(source, **data):
    return config.validate({"data": {"layout": "one_class", "source": str(source), **data}}).data


def _png(path, value=0, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_AD_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "sources"


def test_npz_source_keeps_the_official_split_and_is_written_once(tmp_path, cache):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 255, (8, 28, 28), dtype=np.uint8), y_train=np.arange(8) % 2,
             x_test=rng.integers(0, 255, (4, 28, 28), dtype=np.uint8), y_test=np.array([0, 1, 1, 1]))
    cfg = _data_cfg(tmp_path / "d.npz", normal_class="0", official_split=True, val_fraction=0.0)
    files = layouts.discover(cfg)
    assert [os.path.basename(p) for p in files.train] == [f"train_{i:05d}.png" for i in (0, 2, 4, 6)]
    assert [(os.path.basename(s.path), s.label) for s in files.test] == [
        ("test_00000.png", 0), ("test_00001.png", 1), ("test_00002.png", 1), ("test_00003.png", 1)]
    assert np.array_equal(np.asarray(Image.open(files.train[1])), np.load(tmp_path / "d.npz")["x_train"][2])
    folder = os.path.dirname(os.path.dirname(files.train[0]))
    stamp = os.path.getmtime(files.train[0])
    assert layouts.discover(cfg).train == files.train and os.path.getmtime(files.train[0]) == stamp  # cached
    assert os.listdir(cache) == [os.path.basename(folder)]  # no .partial left behind


def test_bad_sources_name_the_problem(tmp_path, cache):
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="no array y_train, x_test, y_test; a .npz source needs"):
        layouts.discover(_data_cfg(tmp_path / "bad.npz", normal_class="0"))
    with pytest.raises(DataError, match="no such file"):
        layouts.discover(_data_cfg(tmp_path / "absent.npz", normal_class="0"))
    with pytest.raises(DataError, match="unknown Keras data set"):
        layouts.discover(_data_cfg("keras:imagenet", normal_class="0"))
    with pytest.raises(config.ConfigError, match="data.source: is for the one_class layout"):
        config.validate({"data": {"layout": "mvtec", "source": "keras:mnist"}})
    assert not cache.exists() or not os.listdir(cache)  # nothing half-written is kept as a data set


def test_keras_dataset_offline_says_which_file_to_supply(cache, monkeypatch):
    import keras

    def offline():
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno 101] unreachable")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    with pytest.raises(DataError) as error:
        layouts.discover(_data_cfg("keras:fashion_mnist", normal_class="dress"))
    message = str(error.value)
    assert "cannot download (URL fetch failure" in message and "~/.keras/datasets/" in message and ".npz" in message
    assert "\n" not in message


def test_coil100_names_classes_by_object_with_100_as_0(tmp_path, cache):
    for obj in (1, 100):
        for angle in (0, 5, 10, 15, 20):
            _png(tmp_path / "coil-100" / f"obj{obj}__{angle}.png", obj)
    _png(tmp_path / "coil-100" / "readme.png")  # not an object view: ignored
    files = layouts.discover(_data_cfg(f"coil100:{tmp_path / 'coil-100'}", normal_class="0", test_fraction=0.2,
                                       val_fraction=0.0, equal_anomalies=True))
    assert len(files.train) == 4 and all("obj100__" in p for p in files.train)
    assert [(s.defect, "obj1__" in s.path) for s in files.test] == [("good", False), ("1", True)]


def test_celeba_attribute_protocol(tmp_path, cache):
    """Normal: none of the five attributes (train split trains, test split tests); an attribute's class:
    test images with it and none of the other four."""
    root = tmp_path / "celeba"
    header = list(sources.CELEBA_ATTRIBUTES) + ["Smiling"]
    rows = {  # name: (partition, attributes present)
        "a.jpg": (0, []), "b.jpg": (0, ["Smiling"]), "c.jpg": (0, ["Bald"]), "d.jpg": (1, []),
        "e.jpg": (2, []), "f.jpg": (2, ["Bald"]), "g.jpg": (2, ["Bald", "Bangs"]), "h.jpg": (2, ["Eyeglasses"])}
    for name in rows:
        _png(root / "img_align_celeba" / name)
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, (p, _) in rows.items()))
    lines = [str(len(rows)), " ".join(header)] + [
        f"{n} " + " ".join("1" if a in present else "-1" for a in header) for n, (_, present) in rows.items()]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    files = layouts.discover(_data_cfg(f"celeba:{root}", normal_class="normal", official_split=True, val_fraction=0.0))
    assert sorted(os.path.basename(p) for p in files.train) == ["train_a.jpg", "train_b.jpg"]
    assert sorted((s.defect, os.path.basename(s.path)) for s in files.test) == [
        ("Bald", "test_f.jpg"), ("Eyeglasses", "test_h.jpg"), ("good", "test_e.jpg")]
    assert np.asarray(Image.open(files.train[0])).shape == (8, 8)  # links read as the images


def test_lsun_validation_folders_test(tmp_path, cache):
    for folder, n in (("bedroom_train", 3), ("bedroom_val", 2), ("conference_room_val", 2)):
        for i in range(n):
            _png(tmp_path / "lsun" / folder / f"{i}.webp.png")
    files = layouts.discover(_data_cfg(f"lsun:{tmp_path / 'lsun'}", normal_class="normal", official_split=True,
                                       val_fraction=0.0))
    assert len(files.train) == 3 and [s.defect for s in files.test] == ["good"] * 2 + ["conference_room"] * 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="bedroom_train: missing"):
        layouts.discover(_data_cfg(f"lsun:{tmp_path / 'empty'}", normal_class="normal"))
