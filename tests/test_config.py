"""Config validation: every bad value is refused with the file and the key path."""

import pytest

from keras_ad import config
from keras_ad.errors import ConfigError


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_papers(tmp_path):
    cfg = config.load(_write(tmp_path, "data: {root: /x}\n"))
    assert cfg.detector.latent_dim == 100 and cfg.detector.loss == "ssim"  # docs/methods/cae.md#3b, docs/methods/cae.md#3c
    assert cfg.train.learning_rate == 2e-4 and cfg.train.lr_decay == 1e-5  # docs/methods/cae.md#3d
    assert cfg.data.val_fraction == 0.1 and cfg.data.image_size == 256  # docs/methods/cae.md#3a
    assert cfg.train.rotation_deg == 10 and cfg.train.shift == 0.05  # docs/methods/cae.md#3a


@pytest.mark.parametrize("text, key, words", [
    ("data: {root: /x, colour: 3}\n", "data.colour", "unknown key"),
    ("data: {root: /x}\ntrian: {}\n", "trian", "unknown section"),
    ("data: {root: /x, image_size: big}\n", "data.image_size", "expected int"),
    ("data: {root: /x, image_size: 48}\n", "data.image_size", "powers of two"),
    ("data: {root: /x, val_fraction: 1.5}\n", "data.val_fraction", "must be in"),
    ("data: {root: /x}\ntrain: {strategy: tpu}\n", "train.strategy", "must be one of"),
    ("data: {root: /x}\ntrain: {augment: 3}\n", "train.augment", "expected bool"),
    ("data: {image_size: 64}\n", "data.root", "required"),
    ("data: {root: /x, image_size: 64}\ndetector: {loss: mssim}\n", "detector.mssim_scales", "image_size >= 176"),
    ("data: {root: /x, image_size: 256}\ndetector: {architecture: resnet}\n", "data.image_size", "299"),
])
def test_bad_values_name_file_and_key(tmp_path, text, key, words):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert message.startswith(str(path)) and f": {key}: " in message and words in message
    assert "\n" not in message


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    path = _write(tmp_path, "data: {root: /x}\n")
    cfg = config.load(path, ["train.epochs=7", "data.channels=3", "train.augment=false", "data.normal_class=3"])
    assert (cfg.train.epochs, cfg.data.channels, cfg.train.augment) == (7, 3, False)
    assert cfg.data.normal_class == "3"  # a class folder name, though YAML reads a number
    with pytest.raises(ConfigError, match="train.epochs"):
        config.load(path, ["train.epochs=0"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        config.load(path, ["train.epochs"])


def test_resolved_config_round_trips(tmp_path):
    cfg = config.load(_write(tmp_path, "data: {root: /x}\n"), ["train.epochs=3"])
    again = config.load(_write(tmp_path, cfg.to_yaml()))
    assert again.to_dict() == cfg.to_dict()


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(_write(tmp_path, "data: [1, 2\n"))
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(tmp_path / "missing.yaml")


def test_readme_documents_every_config_key():
    import os

    readme = open(os.path.join(os.path.dirname(__file__), os.pardir, "README.md"), encoding="utf-8").read()
    keys = [f"{s}.{k}" for s, fields in config.SCHEMA.items() for k in fields]
    keys += [f"detector.{k}" for params in config.DETECTOR_PARAMS.values() for k in params]
    missing = [k for k in keys if f"`{k}`" not in readme]
    assert not missing, f"README's config reference lacks {missing}"


def test_every_shipped_config_validates():
    import glob
    import os

    paths = sorted(glob.glob(os.path.join(os.path.dirname(__file__), os.pardir, "configs", "*.yaml")))
    assert len(paths) >= 17
    for path in paths:
        cfg = config.load(path)
        assert "auto" not in (cfg.train.learning_rate, cfg.train.lr_decay, cfg.postprocess.reduction), path


def test_cae_residual_auto_is_ssim_for_grey_and_l2_for_colour():
    for channels, residual in ((1, "ssim"), (3, "l2")):
        cfg = config.validate({"data": {"root": "/x", "channels": channels}, "detector": {"residual": "auto"}})
        assert cfg.detector.residual == residual
