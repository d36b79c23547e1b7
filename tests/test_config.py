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
    # docs/methods/cae.md#3b, docs/methods/cae.md#3c
    assert cfg.detector.latent_dim == 100 and cfg.detector.loss == "ssim"
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


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "--set train.epoch=3: train.epoch: unknown key (did you mean epochs?); known: epochs"),
    ("trian.epochs=3", "--set trian.epochs=3: trian: unknown section (did you mean train?)"),
    ("train.epochs=-3", "--set train.epochs=-3: train.epochs: must be in"),
    ("train.learning_rate=.nan", "--set train.learning_rate=.nan: train.learning_rate: must be a finite number"),
])
def test_a_bad_override_blames_the_flag_and_suggests_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError) as error:
        config.load(_write(tmp_path, "data: {root: /x}\n"), [override])
    assert str(error.value).startswith(message)
    path = _write(tmp_path, "data: {root: /x}\ntrain: {epoch: 3}\n")
    with pytest.raises(ConfigError) as error:  # the same key in the file blames the file
        config.load(path)
    assert str(error.value).startswith(f"{path}: train.epoch: unknown key (did you mean epochs?)")


def test_resolved_config_round_trips(tmp_path):
    cfg = config.load(_write(tmp_path, "data: {root: /x}\n"), ["train.epochs=3"])
    again = config.load(_write(tmp_path, cfg.to_yaml()))
    assert again.to_dict() == cfg.to_dict()


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(_write(tmp_path, "data: [1, 2\n"))
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(tmp_path / "missing.yaml")


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    with pytest.raises(ConfigError) as error:
        config.load(_write(tmp_path, "train:\n  epochs: 3\n  batch_size: 4\n  epochs: 30\n"))
    assert str(error.value) == (f"{tmp_path / 'c.yaml'}: line 4: not valid YAML: 'epochs' is given twice "
                                f"(also on line 2); keep one")


def test_a_config_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("run:\n  dir: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text .*; save the config as UTF-8"):
        config.load(path)


@pytest.mark.parametrize("text, value", [("1e-4", 1e-4), ("2E-4", 2e-4), ("1.5e-3", 1.5e-3), ("1", 1.0)])
def test_exponent_floats_are_floats_in_files_and_flags(tmp_path, text, value):
    """PyYAML (YAML 1.1) reads 1e-4 as a string; a learning rate written so must still be a float."""
    from_file = config.load(_write(tmp_path, f"data: {{root: /x}}\ntrain: {{learning_rate: {text}}}\n"))
    from_flag = config.load(_write(tmp_path, "data: {root: /x}\n"), [f"train.learning_rate={text}"])
    assert from_file.train.learning_rate == from_flag.train.learning_rate == value


def test_readme_config_reference_is_the_generated_one():
    import os

    readme = open(os.path.join(os.path.dirname(__file__), os.pardir, "README.md"), encoding="utf-8").read()
    begin, end = readme.index(config.REFERENCE_BEGIN), readme.index(config.REFERENCE_END) + len(config.REFERENCE_END)
    assert readme[begin:end] == config.reference(), "regenerate it: python -m keras_ad.config --reference"


def _base(spec):
    """A valid config of `spec`'s tiny model, into which one bad value is put."""
    data = {"root": "/x", "image_size": 32, "layout": "video" if spec.video else "folder",
            "channels": 1 if spec.video else 3}
    return {"data": data, "detector": dict(next(iter(spec.tiny.values())))}


def _bad_values(field):
    """(what, value) pairs the field must refuse: a wrong type always, and what lies outside it."""
    yield "wrong type", {"not": "a value"}
    if field.choices:
        yield "not a choice", "no-such-choice"
    if field.low is not None:
        yield "below the range", field.low - (1 if isinstance(field.low, int) else abs(field.low) + 1.0)
    if field.high is not None:
        yield "above the range", field.high + 1
    if field.items is not None:
        yield "a wrong item", [{"not": "an item"}] * (field.length or 1)


def _every_field():
    from keras_ad.specs import SPECS

    for name, spec in SPECS.items():
        for key, field in spec.params.items():
            yield name, "detector", key, field
    for section, fields in config.SCHEMA.items():
        for key, field in fields.items():
            if key != "name":
                yield "cae", section, key, field


@pytest.mark.parametrize("detector, section, key, field", list(_every_field()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_field_refuses_a_wrong_type_and_an_out_of_range_value(detector, section, key, field, tmp_path):
    import yaml

    from keras_ad.specs import SPECS

    for what, value in _bad_values(field):
        raw = _base(SPECS[detector])
        raw.setdefault(section, {})[key] = value
        path = _write(tmp_path, yaml.safe_dump(raw))
        with pytest.raises(ConfigError) as err:
            config.load(path)
        message = str(err.value)
        assert message.startswith(f"{path}: {section}.{key}") and "\n" not in message, (what, message)


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
