"""YAML config -> validated, typed, read-only `Config`.

The YAML file is the one source of truth. Every key is declared below with its type, range and
the paper's default (with a link to the docs/methods/ page that explains it). Validation happens
once, here, and every error names the file and the dotted key path. This module does not import
TensorFlow, so a bad config is refused in a fraction of a second.
"""

from __future__ import annotations

import copy
import difflib
import os
import re

import yaml

from keras_ad.errors import ConfigError
from keras_ad.fields import AUTO, OPTIONAL, Field, as_shape, shape_text, size_field
from keras_ad.specs import SPECS

# The common sections. Detector parameters live in DETECTOR_PARAMS, chosen by `detector.name`.
SCHEMA: dict[str, dict[str, Field]] = {
    "run": {
        "dir": Field("runs/default", doc="run folder: config, checkpoints, logs, reports"),
    },
    "data": {
        "layout": Field("mvtec", choices=("mvtec", "folder", "normal_abnormal", "one_class", "video"),
                        doc="folder layout, see README 'Data layouts'"),
        "root": Field(None, allow=OPTIONAL, doc="data set folder, or synthetic:<category> for the built-in demo"),
        "source": Field(None, allow=OPTIONAL, doc="one_class: a labelled set written once as class folders, in "
                                                  "place of data.root: keras:mnist|fashion_mnist|cifar10, a .npz, "
                                                  "cifar-10-python.tar.gz, coil100:|celeba:|lsun:<folder> "
                                                  "(docs/methods/piad.md#1a)"),
        "category": Field(None, allow=OPTIONAL, doc="MVTec category sub-folder (mvtec layout)"),
        "image_size": size_field(256, "size every image is resized to: a side, or [height, width] for non-square "
                                 "images (each detector's multiples: docs/protocol.md#image-size); 256 in "
                                 "docs/methods/cae.md#3a"),
        "patch_size": size_field(None, "texture patches: train on random patches of this size cut from the images at "
                                  "image_size and score by a sliding window whose maps are averaged in the scoring "
                                  "graph (MVTec AD: 128 of 512, docs/protocol.md#patches); null: whole images",
                            allow=OPTIONAL),
        "patch_stride": size_field(AUTO, "sliding-window step when scoring patches; auto = a quarter of patch_size "
                                    "(MVTec AD: 30 on 128-pixel patches)", low=1, allow=(AUTO,)),
        "channels": Field(1, int, choices=(1, 3), doc="1 = grey, 3 = RGB"),
        "resize": Field("bilinear", choices=("bilinear", "area", "nearest"),
                        doc="antialiased bilinear by default (docs/methods/cae.md#3i-6); nearest = the repo's Keras "
                            "default"),
        "val_fraction": Field(0.1, float, low=0.0, high=0.9, doc="held-out good images, docs/methods/cae.md#3a"),
        "monitor_fraction": Field(0.0, float, low=0.0, high=0.5,
                                  doc="labelled images held out of the test split, a seeded share of each kind, "
                                      "whose image AUROC is logged each epoch (val_image_auroc; never used to "
                                      "choose anything); 0 = none (docs/training.md#what-a-run-logs)"),
        "test_fraction": Field(0.2, float, low=0.0, high=0.9,
                               doc="normal_abnormal / one_class: normal images held out for testing (GANomaly 20 %, "
                                   "docs/methods/ganomaly.md#41)"),
        "abnormal_class": Field(None, allow=OPTIONAL, doc="one_class: the class folder that is abnormal, "
                                                          "docs/methods/ganomaly.md#41"),
        "normal_class": Field(None, allow=OPTIONAL, doc="one_class: the class folder that is normal, all others "
                                                          "abnormal (PIAD's protocol, docs/methods/piad.md#1a)"),
        "official_split": Field(False, bool, doc="one_class: train/test by the train_/test_ file-name prefixes "
                                                 "that data.source writes (MNIST, CIFAR-10, CelebA, LSUN, "
                                                 "docs/methods/piad.md#1a)"),
        "equal_anomalies": Field(False, bool, doc="one_class: as many (seeded) test anomalies as test normals "
                                                  "(Fashion-MNIST, COIL-100, docs/methods/piad.md#1a)"),
        "skip_unreadable": Field(False, bool, doc="skip corrupt images with a warning instead of failing"),
        "cache_mb": Field(4096, int, low=0, doc="training/validation images are decoded once and kept in memory "
                                                 "when they fit in this many MiB (float32 at image_size), else "
                                                 "they stream from disk every epoch; 0: always stream"),
        "pattern": Field("*", doc="file-name pattern every image folder is filtered with, e.g. '*.jpg' "
                                  "(AnoGAN's --input_fname_pattern, docs/methods/anogan.md#2a)"),
        "center_crop": Field(None, int, low=1, allow=OPTIONAL,
                             doc="crop the central NxN pixels of every image before resizing "
                                 "(AnoGAN's --crop, 108 for CelebA, docs/methods/anogan.md#2a); part of the scoring "
                                 "graph"),
    },
    "detector": {
        "name": Field("cae", choices=tuple(SPECS),
                      doc="the detector; its own keys follow"),
    },
    "train": {
        "epochs": Field(AUTO, int, low=1, high=100000, allow=(AUTO,),
                        doc="auto = floor(augmented_images / training images), docs/methods/cae.md#3d"),
        "augmented_images": Field(10000, int, low=1,
                                  doc="images seen per run for epochs: auto, docs/methods/cae.md#3d"),
        "iterations": Field(None, int, low=1, allow=OPTIONAL,
                            doc="optimiser steps in all, for papers that count them (PIAD docs/methods/piad.md#1d); "
                                "sets the epochs"),
        "min_epoch_images": Field(0, int, low=0, doc="smaller training sets are repeated to this many images "
                                                     "per epoch (PIAD: 10000, docs/methods/piad.md#1a)"),
        "batch_size": Field(12, int, low=1, high=4096, doc="the repo README's example, docs/methods/cae.md#3d"),
        "learning_rate": Field(AUTO, float, low=0.0, high=1.0, allow=(AUTO,),
                               doc="Adam; auto = the detector's paper: cae 2e-4 (docs/methods/cae.md#3d), ganomaly2d "
                                   "1e-4, "
                                   "its 1d variant 2e-4 (docs/methods/ganomaly.md), anogan 2e-4 "
                                   "(docs/methods/anogan.md#2d)"),
        "lr_decay": Field(AUTO, float, low=0.0, high=1.0, allow=(AUTO,),
                          doc="Keras-2 inverse-time decay per step; auto = cae 1e-5 (docs/methods/cae.md#3d), "
                              "ganomaly2d and anogan 0"),
        "seed": Field(0, int, low=0, doc="seeds weights, validation split, shuffling, augmentation"),
        "jit_compile": Field(False, bool, doc="XLA-compile the training step; off by default: on this CPU XLA ran "
                                              "1.2x faster to 1.7x slower (docs/stack.md#5), and the GAN steps are "
                                              "untested under XLA on GPUs"),
        "deterministic": Field(False, bool, doc="TensorFlow op determinism (slower on GPUs): a seeded tiny PIAD "
                                                "run repeats bit for bit; the demo still drifts ~1e-4 (README)"),
        "precision": Field("float32", choices=("float32", "mixed_float16", "mixed_bfloat16"),
                           doc="Keras mixed precision for training (float16 with dynamic loss scaling in every "
                               "optimiser step); float32 by default (the papers'); float16 is for GPUs (6x slower "
                               "here), bfloat16 trained 1.15-1.6x faster on this AVX-512 CPU (README). Scoring, "
                               "calibration and exports always run the float32 model"),
        "strategy": Field(AUTO, choices=(AUTO, "default", "mirrored", "multiworker"),
                          doc="auto = mirrored when more than one GPU is visible"),
        "augment": Field(True, bool, doc="rotation, shift, brightness of docs/methods/cae.md#3a"),
        "rotation_deg": Field(10.0, float, low=0.0, high=180.0, doc="docs/methods/cae.md#3a"),
        "shift": Field(0.05, float, low=0.0, high=0.5, doc="fraction of width/height, docs/methods/cae.md#3a"),
        "brightness": Field(0.05, float, low=0.0, high=0.5, doc="factor U(1-b, 1+b), docs/methods/cae.md#3a"),
        "sample_every": Field(5, int, low=1, doc="epochs between image grids"),
        "keep_checkpoints": Field(2, int, low=1, doc="complete checkpoints kept in checkpoints/"),
        "early_stopping": Field(0, int, low=0,
                                doc="stop a phase after this many epochs without a lower validation loss on the good "
                                    "validation images and keep its best epoch's weights; 0 = off, the papers' last "
                                    "epoch (docs/training.md#early-stopping)"),
    },
    "postprocess": {
        "smoothing_sigma": Field(0.0, float, low=0.0, high=32.0, doc="Gaussian blur of the map, pixels"),
        "reduction": Field(AUTO, choices=(AUTO, "max", "topk_mean", "mean", "detector"),
                           doc="map -> image score; auto = cae max (docs/methods/cae.md#3g), ganomaly2d mean "
                               "(docs/methods/ganomaly.md#42), anogan "
                               "detector (its own score: the search loss, docs/methods/anogan.md#2e)"),
        "topk_percent": Field(1.0, float, low=0.01, high=100.0, doc="for topk_mean"),
        "normalize": Field("none", choices=("none", "per_pixel"),
                           doc="per_pixel: the map becomes max(0, (map - mean) / spread) with the per-pixel mean and "
                               "spread of the good validation maps, set at calibration and carried in the scoring "
                               "graph (docs/protocol.md#normalisation)"),
        "border": Field(0, int, low=0, high=1024, doc="pixels along each edge of the map (at data.image_size) that "
                                                      "never count: convolutions' zero padding makes edges noisy"),
        "roi_mask": Field(None, allow=OPTIONAL, doc="region of interest: an image file, white where defects count; "
                                                    "data.image_size or the same aspect ratio; pixels outside never "
                                                    "count (docs/protocol.md#region-of-interest)"),
    },
    "calibrate": {
        "min_area": Field(1, int, low=1, doc="A_min of docs/methods/cae.md#3e, pixels at data.image_size"),
    },
    "evaluate": {
        "pro_fpr_limit": Field(0.3, float, low=0.01, high=1.0, doc="AUPRO integration limit (MVTec AD)"),
        "overlay_images": Field(12, int, low=0, high=200, doc="rows in the overlay grid"),
        "gallery_images": Field(200, int, low=0, high=100000,
                                doc="report.html's gallery: every test image up to this many, else the worst "
                                    "of each kind (docs/report.md#gallery)"),
    },
}

DETECTOR_PARAMS: dict[str, dict[str, Field]] = {name: spec.params for name, spec in SPECS.items()}


def _resolve_auto(values):
    """Replace `auto` by the detector's paper value (train.epochs stays auto: it needs the data)."""
    for dotted, value in SPECS[values["detector"]["name"]].defaults(values).items():
        section, key = dotted.split(".")
        if values[section][key] == AUTO:
            values[section][key] = value


class Section:
    """Read-only attribute view of one config section."""

    def __init__(self, values: dict):
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("config sections are read-only; change the YAML or pass --set")


class DataSection(Section):
    """The data section, with the sizes it implies as (height, width) pairs."""

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) every image is resized to."""
        return as_shape(self._values["image_size"])

    @property
    def model_shape(self) -> tuple[int, int]:
        """(height, width) of the detector's input: the patch size when texture patches are on."""
        patch = self._values["patch_size"]
        return as_shape(patch) if patch is not None else self.image_shape

    @property
    def patch_stride_shape(self) -> tuple[int, int]:
        """(row step, column step) of the scoring window; `auto` = a quarter of the patch (MVTec AD)."""
        stride = self._values["patch_stride"]
        if stride == AUTO:
            return tuple(max(1, side // 4) for side in self.model_shape)
        return as_shape(stride)


class Config:
    """The validated configuration of one run. `cfg.data.image_size`, `cfg.detector.loss`, ..."""

    def __init__(self, values: dict, source: str = "<config>"):
        self._values = values
        self.source = source
        for name, section in values.items():
            setattr(self, name, DataSection(section) if name == "data" else Section(section))

    def to_dict(self):
        return copy.deepcopy(self._values)

    def to_yaml(self):
        return yaml.safe_dump(self._values, sort_keys=False)

    @property
    def run_dir(self):
        return self._values["run"]["dir"]


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter where a silent reading would mislead: a key given twice in one
    mapping is an error (PyYAML keeps the last), and `1e6` or `5E-4` is a float (YAML 1.2), not a string."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (also on line {seen[key] + 1}); keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")  # 1e6, 2.5E-4 (YAML 1.1 wants a dot)
_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


def parse_yaml(text: str):
    """YAML text -> Python values, with the config's rules (see _ConfigLoader)."""
    return yaml.load(text, Loader=_ConfigLoader)


def load(path: str | os.PathLike, overrides=()) -> Config:
    """Read a YAML file, apply `key.path=value` overrides, validate, fill the paper's defaults."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(path, "(file)", "no such config file; pass --config with a YAML file (see configs/)")
    try:
        with open(path, encoding="utf-8") as f:
            raw = parse_yaml(f.read())
    except UnicodeDecodeError as e:
        raise ConfigError(path, "(file)", f"not UTF-8 text (byte {e.start}); save the config as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        raise ConfigError(path, where, f"not valid YAML: {getattr(e, 'problem', e)}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(path, "(top level)", "expected a mapping of sections (run, data, detector, train, ...)")
    raw = apply_overrides(raw, overrides)
    try:
        return validate(raw, path)
    except ConfigError as e:  # a key, section or value that came from --set: blame the flag, not the file
        for item in overrides:
            key = item.split("=", 1)[0].strip()
            if e.key in (key, key.split(".")[0] if e.problem.startswith("unknown section") else key):
                raise ConfigError(f"--set {item}", e.key, e.problem) from None
        raise


def apply_overrides(raw: dict, overrides) -> dict:
    """Apply `--set section.key=value` strings; the value is parsed as YAML (3 -> int, true -> bool)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError("--set", item, "expected key.path=value, e.g. --set train.epochs=5")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError("--set", key, "expected section.key, e.g. data.root")
        try:
            value = parse_yaml(text)
        except yaml.YAMLError:
            value = text
        section = raw.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise ConfigError("--set", parts[0], "is not a section")
        section[parts[1]] = value
    return raw


def validate(raw: dict, source: str = "<config>") -> Config:
    """Check every key against SCHEMA and DETECTOR_PARAMS; return a Config with defaults filled in."""
    for section in raw:
        if section not in SCHEMA:
            raise ConfigError(source, section, f"unknown section{_did_you_mean(section, SCHEMA)}; "
                                               f"known: {', '.join(SCHEMA)}")
    values = {}
    for section, fields in SCHEMA.items():
        given = raw.get(section) or {}
        if not isinstance(given, dict):
            raise ConfigError(source, section, "expected a mapping of keys")
        if section == "detector":
            name = fields["name"].check(given.get("name", fields["name"].default), source, "detector.name")
            fields = {**fields, **DETECTOR_PARAMS[name]}
        values[section] = _check_section(section, given, fields, source)
    _resolve_auto(values)
    _check_consistency(values, source)
    return Config(values, source)


def _did_you_mean(name, known) -> str:
    """' (did you mean epochs?)' for the closest known name, or ''."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _check_section(section, given, fields, source):
    for key in given:
        if key not in fields:
            raise ConfigError(source, f"{section}.{key}", f"unknown key{_did_you_mean(key, fields)}; "
                                                          f"known: {', '.join(fields)}")
    return {key: field.check(given.get(key, field.default), source, f"{section}.{key}")
            for key, field in fields.items()}


def _check_patches(data, source):
    """Patches fit inside the image and the scoring window leaves no pixel out."""
    image, patch = as_shape(data["image_size"]), data["patch_size"]
    if patch is None:
        return
    patch = as_shape(patch)
    if patch[0] > image[0] or patch[1] > image[1]:
        raise ConfigError(source, "data.patch_size", f"{shape_text(patch)} is larger than data.image_size "
                                                     f"{shape_text(image)}; use a patch that fits the image")
    stride = data["patch_stride"]
    if stride != AUTO and (as_shape(stride)[0] > patch[0] or as_shape(stride)[1] > patch[1]):
        raise ConfigError(source, "data.patch_stride", f"{shape_text(as_shape(stride))} is larger than the patch "
                                                       f"{shape_text(patch)}: pixels between windows would never "
                                                       f"be scored; use at most the patch size")


def _check_consistency(values, source):
    """The rules that join keys: the data set's, the detector's own (its spec), the post-processing's."""
    data, det = values["data"], values["detector"]
    spec = SPECS[det["name"]]
    if data["root"] is None and data["source"] is None:
        raise ConfigError(source, "data.root", "is required: the data set folder (or synthetic:<category>; "
                                               "one_class: or data.source)")
    if data["source"] is not None and data["layout"] != "one_class":
        raise ConfigError(source, "data.source",
                          f"is for the one_class layout; layout {data['layout']} reads data.root")
    if data["layout"] == "one_class" and bool(data["abnormal_class"]) == bool(data["normal_class"]):
        raise ConfigError(source, "data.abnormal_class", "the one_class layout needs exactly one of "
                                                         "data.abnormal_class (that class is the anomaly, GANomaly) "
                                                         "and data.normal_class (that class is normal, PIAD)")
    if spec.video != (data["layout"] == "video"):
        video = [name for name, s in SPECS.items() if s.video]
        problem = (f"{det['name']} scores clips of videos: set data.layout: video" if spec.video else
                   f"the video layout holds clips of videos, which {', '.join(video)} scores: choose another layout")
        raise ConfigError(source, "data.layout", problem)
    if data["monitor_fraction"] and data["layout"] == "video":
        raise ConfigError(source, "data.monitor_fraction", "is for image layouts; the video layout's test videos "
                                                          "are scored per frame at evaluation")
    _check_patches(data, source)
    image = as_shape(data["image_size"])
    patched = data["patch_size"] is not None
    spec.check(values, as_shape(data["patch_size"]) if patched else image,
               "data.patch_size" if patched else "data.image_size", source)
    post = values["postprocess"]
    if post["reduction"] == "detector" and not spec.own_score:
        own = ", ".join(name for name, s in SPECS.items() if s.own_score)
        raise ConfigError(source, "postprocess.reduction", f"'detector' is a detector's own score, which {own} "
                                                           f"define; {det['name']} scores from its map: use max, "
                                                           f"topk_mean or mean")
    if 2 * post["border"] >= min(image):
        raise ConfigError(source, "postprocess.border", f"{post['border']} px on each side leaves nothing of a "
                                                        f"{shape_text(image)} map; use less than {min(image) // 2}")


# ---------------------------------------------------------------- the README's config reference
REFERENCE_BEGIN = "<!-- config reference: generated by `python -m keras_ad.config --reference`; do not edit -->"
REFERENCE_END = "<!-- end of config reference -->"


def _accepted(field: Field) -> str:
    """What a key accepts, in words: its choices, or its type and range (list items included)."""
    if field.choices:
        text = " \\| ".join(map(str, field.choices))
    else:
        kinds = field.kind if isinstance(field.kind, tuple) else (field.kind,)
        text = " or ".join("list" if k is list else k.__name__ for k in kinds)
        if field.low is not None or field.high is not None:
            text += f" [{'' if field.low is None else field.low}, {'' if field.high is None else field.high}]"
    if field.items is not None:
        items = _accepted(field.items)
        text += f" of {field.length} × {items}" if field.length else f" of {items}"
    extra = [repr(a) if a is not None else "null" for a in field.allow if a != AUTO]
    extra += ["auto"] if AUTO in field.allow else []
    return " or ".join([*extra, text]) if extra else text


def _default(field: Field) -> str:
    return "(none)" if field.default is None else f"`{field.default}`"


def reference() -> str:
    """The markdown table of every config key: the common sections, then each detector's own."""
    lines = [REFERENCE_BEGIN, "", "| key | default | accepted | meaning |", "|---|---|---|---|"]
    for section, fields in SCHEMA.items():
        lines += [f"| `{section}.{key}` | {_default(f)} | {_accepted(f)} | {f.doc} |" for key, f in fields.items()]
        if section == "detector":
            for name, spec in SPECS.items():
                lines += [f"| `detector.{key}` ({name}) | {_default(f)} | {_accepted(f)} | {f.doc} |"
                          for key, f in spec.params.items()]
    return "\n".join(lines + ["", REFERENCE_END])


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--reference"]:
        print("usage: python -m keras_ad.config --reference   (prints the README's config reference)", file=sys.stderr)
        sys.exit(2)
    print(reference())
