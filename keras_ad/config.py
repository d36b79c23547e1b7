"""YAML config -> validated, typed, read-only `Config`.

The YAML file is the one source of truth. Every key is declared below with its type, range and
the paper's default (with a link to the docs/methods/ page that explains it). Validation happens
once, here, and every error names the file and the dotted key path. This module does not import
TensorFlow, so a bad config is refused in a fraction of a second.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import yaml

from keras_ad.backbones import STAGE_STRIDES
from keras_ad.errors import ConfigError

AUTO = "auto"


@dataclass(frozen=True)
class Field:
    """One config key: its default, accepted type(s), allowed choices or numeric range."""

    default: Any
    kind: type | tuple = str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    allow: tuple = ()  # special literal values accepted besides `kind`, e.g. ("auto",)
    doc: str = ""
    items: Field | None = None  # a list value: the Field every item must pass
    length: int | None = None  # a list value: its required length

    def check(self, value, source, key):
        if value in self.allow:
            return value
        if isinstance(value, (list, tuple)) and self.items is not None and list in _kinds(self):
            if self.length is not None and len(value) != self.length:
                raise ConfigError(source, key, f"expected {self.length} items, got {list(value)!r}")
            return [self.items.check(item, source, f"{key}[{i}]") for i, item in enumerate(value)]
        kinds = _kinds(self)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kinds == (str,) and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # a class folder called 3 given as --set data.normal_class=3
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(source, key, f"expected {_kind_name(self)}, got {value!r}")
        if not isinstance(value, kinds):
            raise ConfigError(source, key, f"expected {_kind_name(self)}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(source, key, f"must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            raise ConfigError(source, key, f"must be in [{self.low}, {self.high}]; got {value!r}")
        return value


def _kinds(field) -> tuple:
    return field.kind if isinstance(field.kind, tuple) else (field.kind,)


def _kind_name(field):
    names = [k.__name__ for k in _kinds(field)] + [repr(a) for a in field.allow]
    if field.items is not None and field.length:
        names = [f"[{', '.join([field.items.kind.__name__] * field.length)}]" if n == "list" else n for n in names]
    return " or ".join(names)


OPTIONAL = (None,)


def _size(default, doc, low=32, high=4096, allow=()) -> Field:
    """A size in pixels: one int (square) or [height, width]."""
    return Field(default, (int, list), low=low, high=high, allow=allow, doc=doc,
                 items=Field(None, int, low=low, high=high), length=2)

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
                                                  "cifar-10-python.tar.gz, coil100:|celeba:|lsun:<folder> (docs/methods/piad.md#1a)"),
        "category": Field(None, allow=OPTIONAL, doc="MVTec category sub-folder (mvtec layout)"),
        "image_size": _size(256, "size every image is resized to: a side, or [height, width] for non-square "
                                 "images (each detector's multiples: docs/protocol.md#image-size); 256 in docs/methods/cae.md#3a"),
        "patch_size": _size(None, "texture patches: train on random patches of this size cut from the images at "
                                  "image_size and score by a sliding window whose maps are averaged in the scoring "
                                  "graph (MVTec AD: 128 of 512, docs/protocol.md#patches); null: whole images",
                            allow=OPTIONAL),
        "patch_stride": _size(AUTO, "sliding-window step when scoring patches; auto = a quarter of patch_size "
                                    "(MVTec AD: 30 on 128-pixel patches)", low=1, allow=(AUTO,)),
        "channels": Field(1, int, choices=(1, 3), doc="1 = grey, 3 = RGB"),
        "resize": Field("bilinear", choices=("bilinear", "area", "nearest"),
                        doc="antialiased bilinear by default (docs/methods/cae.md#3i-6); nearest = the repo's Keras default"),
        "val_fraction": Field(0.1, float, low=0.0, high=0.9, doc="held-out good images, docs/methods/cae.md#3a"),
        "test_fraction": Field(0.2, float, low=0.0, high=0.9,
                               doc="normal_abnormal / one_class: normal images held out for testing (GANomaly 20 %, docs/methods/ganomaly.md#41)"),
        "abnormal_class": Field(None, allow=OPTIONAL, doc="one_class: the class folder that is abnormal, docs/methods/ganomaly.md#41"),
        "normal_class": Field(None, allow=OPTIONAL, doc="one_class: the class folder that is normal, all others "
                                                          "abnormal (PIAD's protocol, docs/methods/piad.md#1a)"),
        "official_split": Field(False, bool, doc="one_class: train/test by the train_/test_ file-name prefixes "
                                                 "that data.source writes (MNIST, CIFAR-10, CelebA, LSUN, docs/methods/piad.md#1a)"),
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
                                 "(AnoGAN's --crop, 108 for CelebA, docs/methods/anogan.md#2a); part of the scoring graph"),
    },
    "detector": {
        "name": Field("cae", choices=("cae", "ganomaly2d", "anogan", "piad", "lntra", "patchcore"),
                      doc="the detector; its own keys follow"),
    },
    "train": {
        "epochs": Field(AUTO, int, low=1, high=100000, allow=(AUTO,),
                        doc="auto = floor(augmented_images / training images), docs/methods/cae.md#3d"),
        "augmented_images": Field(10000, int, low=1, doc="images seen per run for epochs: auto, docs/methods/cae.md#3d"),
        "iterations": Field(None, int, low=1, allow=OPTIONAL,
                            doc="optimiser steps in all, for papers that count them (PIAD docs/methods/piad.md#1d); sets the epochs"),
        "min_epoch_images": Field(0, int, low=0, doc="smaller training sets are repeated to this many images "
                                                     "per epoch (PIAD: 10000, docs/methods/piad.md#1a)"),
        "batch_size": Field(12, int, low=1, high=4096, doc="the repo README's example, docs/methods/cae.md#3d"),
        "learning_rate": Field(AUTO, float, low=0.0, high=1.0, allow=(AUTO,),
                               doc="Adam; auto = the detector's paper: cae 2e-4 (docs/methods/cae.md#3d), ganomaly2d 1e-4, "
                                   "its 1d variant 2e-4 (docs/methods/ganomaly.md), anogan 2e-4 (docs/methods/anogan.md#2d)"),
        "lr_decay": Field(AUTO, float, low=0.0, high=1.0, allow=(AUTO,),
                          doc="Keras-2 inverse-time decay per step; auto = cae 1e-5 (docs/methods/cae.md#3d), ganomaly2d and anogan 0"),
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
    },
    "postprocess": {
        "smoothing_sigma": Field(0.0, float, low=0.0, high=32.0, doc="Gaussian blur of the map, pixels"),
        "reduction": Field(AUTO, choices=(AUTO, "max", "topk_mean", "mean", "detector"),
                           doc="map -> image score; auto = cae max (docs/methods/cae.md#3g), ganomaly2d mean (docs/methods/ganomaly.md#42), anogan "
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
    },
}

DETECTOR_PARAMS: dict[str, dict[str, Field]] = {
    "cae": {
        "architecture": Field("mvtec", choices=("mvtec", "resnet"), doc="docs/methods/cae.md#3b"),
        "latent_dim": Field(100, int, low=1, high=4096, doc="MVTec paper, docs/methods/cae.md#3b"),
        "loss": Field("ssim", choices=("ssim", "mssim", "mse", "l2"), doc="docs/methods/cae.md#3c"),
        "residual": Field("ssim", choices=(AUTO, "ssim", "l2", "l1"),
                          doc="1-SSIM map or squared/absolute error; never clipped (docs/methods/cae.md#3i-1); auto = ssim for "
                              "grey images, l2 for colour (a colour shift keeps the structure SSIM compares; the "
                              "repo pairs SSIM with grey, docs/methods/cae.md#3c)"),
        "mssim_scales": Field(5, int, low=1, high=5, doc="tf.image.ssim_multiscale default, docs/methods/cae.md#3c"),
        "encoder_weights": Field("imagenet", doc="resnet only: imagenet | none | path to a .h5 file"),
    },
    "ganomaly2d": {
        "latent": Field("2d", choices=("2d", "1d"),
                        doc="2d = GANomaly2D (spatial latent, map), 1d = GANomaly (vector latent, image score), docs/methods/ganomaly.md"),
        "filters": Field(AUTO, int, low=4, high=256, allow=(AUTO,),
                         doc="first-layer width: auto = 64 (GANomaly2D --r 1; GANomaly ngf), docs/methods/ganomaly.md"),
        "latent_dim": Field(100, int, low=1, high=4096, doc="1d only: nz of GANomaly, docs/methods/ganomaly.md#41"),
        "w_adv": Field(AUTO, float, low=0.0, allow=(AUTO,), doc="auto = 1 (both variants), docs/methods/ganomaly.md"),
        "w_con": Field(AUTO, float, low=0.0, allow=(AUTO,), doc="auto = 10 (2d, summed L2) or 50 (1d, mean L1), docs/methods/ganomaly.md"),
        "w_enc": Field(AUTO, float, low=0.0, allow=(AUTO,), doc="auto = 10 (2d, summed L1) or 1 (1d, mean L2), docs/methods/ganomaly.md"),
    },
    "anogan": {
        "latent_dim": Field(100, int, low=1, high=4096, doc="z_dim of the seed (docs/methods/anogan.md#2b); the MVTec AD benchmark used 64"),
        "filters": Field(64, int, low=4, high=512, doc="gf_dim = df_dim (docs/methods/anogan.md#2b)"),
        "generator_updates": Field(2, int, low=1, high=10, doc="G updates per D update, same z (docs/methods/anogan.md#2d)"),
        "discrimination_weight": Field(0.1, float, low=0.0, high=1.0,
                                       doc="λ of L = (1-λ)·ΣL1 + λ·ΣL1(features) (docs/methods/anogan.md#2c)"),
        "search_steps": Field(AUTO, int, low=0, high=100000, allow=(AUTO,),
                              doc="Adam steps of the latent search; auto = Γ = 500 of the paper (docs/methods/anogan.md#2d; the "
                                  "MVTec AD benchmark used 300)"),
        "search_lr": Field(AUTO, float, low=0.0, high=10.0, allow=(AUTO,),
                           doc="latent-search Adam learning rate (β1 0.5); auto = 0.02, the MVTec AD "
                               "benchmark's (the seed code: 0.001 for 10000 steps, docs/methods/anogan.md#2d)"),
        "search_restarts": Field(1, int, low=1, high=64, doc="random starting points per image, best kept"),
        "search_init": Field("random", choices=("random", "encoder"),
                             doc="random = the paper's U(-1, 1) start; encoder = start from E(x) (ours)"),
        "search_seed": Field(0, int, low=0, doc="seed of the starting latents (the same for every image)"),
        "encoder_epochs": Field(AUTO, int, low=1, high=100000, allow=(AUTO,),
                                doc="epochs of the izi_f encoder after the GAN (edge variant, ours); "
                                    "auto = train.epochs"),
        "encoder_feature_weight": Field(1.0, float, low=0.0, doc="κ of izi_f (f-AnoGAN, Schlegl et al. 2019)"),
    },
}

DETECTOR_PARAMS["piad"] = {
    "latent_dim": Field(32, int, low=1, high=4096, doc="latent channels d; MNIST/COIL 32, CIFAR-10 256, CelebA 64, "
                                                      "LSUN 32 (docs/methods/piad.md#1b)"),
    "latent_res": Field(1, int, low=1, high=512, doc="latent grid r x r x d: 1, or 4 for LSUN (docs/methods/piad.md#1b)"),
    "generator_dims": Field([32, 32, 32, 32], list, doc="G widths, log2(2·size/4) entries (docs/methods/piad.md#1b table)"),
    "encoder_dims": Field([32, 32, 32, 32], list, doc="E widths (docs/methods/piad.md#1b table)"),
    "image_critic_dims": Field([32, 32, 32, 32], list, doc="D_x widths (docs/methods/piad.md#1b table)"),
    "latent_critic_dims": Field([128, 128], list, doc="D_z hidden widths (docs/methods/piad.md#1b table)"),
    "n_dis": Field(2, int, low=1, high=10, doc="critic steps per E/G step: 2, 3 for CelebA and LSUN (docs/methods/piad.md#1d)"),
    "critic_learning_rate": Field(5e-4, float, low=0.0, high=1.0, doc="Adam for D_x and D_z (docs/methods/piad.md#1d)"),
    "weight_decay": Field(1e-8, float, low=0.0, high=1.0, doc="coupled L2 of every Adam (docs/methods/piad.md#1d)"),
    "weight_policy": Field(True, bool, doc="gradient-normalising weights w_E, w_G (docs/methods/piad.md#1c); false: 1"),
    "weight_update_every": Field(100, int, low=1, doc="iterations between weight updates (docs/methods/piad.md#1c)"),
    "perceptual_weights": Field("torchvision", doc="VGG19 for the perceptual loss: torchvision (the paper's; "
                                "give its weights as a file), keras-imagenet, none (random, offline) or a "
                                "Keras VGG19 (no top) weight file (docs/methods/piad.md#1c, docs/methods/piad.md#1g-2)"),
    "perceptual_network": Field("vgg19", choices=("vgg19", "efficientnet_lite0"),
                                doc="the perceptual loss's network: vgg19 (the paper's; weights by perceptual_weights) "
                                    "or efficientnet_lite0 (ImageNet weights offline, stage3 features at stride 8; "
                                    "a departure, docs/methods/piad.md)"),
    "perceptual_stats": Field(None, allow=OPTIONAL, doc="relu4_2 mean/std JSON for weights other than torchvision's"),
    "reconstruction_loss": Field("relative_perceptual_l1", choices=("relative_perceptual_l1", "perceptual_l1",
                                                                   "perceptual_l2", "pixel_l2"),
                                 doc="E/G reconstruction loss and score: the paper's, or an ablation of docs/methods/piad.md#1c "
                                     "(pixel_l2 needs no VGG19)"),
    "reconstruction_weights": Field([1.0, 1.0], list, doc="w_E, w_G: fixed when weight_policy is false (the "
                                                          "manual ablation: 10, 100), else the policy's start (docs/methods/piad.md#1c)"),
}

DETECTOR_PARAMS["lntra"] = {
    "clip_length": Field(16, int, low=8, high=64, doc="frames per clip, a multiple of 8; the centre one is scored (docs/methods/lntra.md#5a)"),
    "clip_stride": Field(1, int, low=1, high=64, doc="training clips start every this many frames: 1, every "
                                                     "clip (docs/methods/lntra.md#5a); larger thins long videos"),
    "widths": Field([96, 128, 256, 256], list, doc="channels of the four 3D convolutions (docs/methods/lntra.md#5b)"),
    "skip_frame": Field(0.0, float, low=0.0, high=1.0, doc="probability of a skip-frame pseudo anomaly per clip; "
                                                           "the paper's skip model 0.2 (docs/methods/lntra.md#5c)"),
    "jumps": Field([2, 3, 4, 5], list, doc="frame steps a skip-frame clip draws from (docs/methods/lntra.md#5c)"),
    "patch": Field(0.0, float, low=0.0, high=1.0, doc="probability of a patch pseudo anomaly per clip; the "
                                                      "paper's patch model 0.2 (docs/methods/lntra.md#5c)"),
    "patch_kind": Field("smoothmix_s", choices=("smoothmix_s", "smoothmix_c", "cutmix", "mixup_patch"),
                        doc="patch mask: the paper's patch model SmoothMixS (docs/methods/lntra.md#5c)"),
    "max_size": Field(0.2, float, low=0.0, high=1.0, doc="largest patch side / frame side, α; the patch model 0.5 (docs/methods/lntra.md#5c)"),
    "max_move": Field(0, int, low=0, high=256, doc="patch motion per frame in pixels at 256x256, β; the patch model 10"),
    "intruders": Field("cifar100", doc="patch contents: cifar100 (keras.datasets), cifar-100-python.tar.gz, a "
                                       "folder of images, or digits (scikit-learn's, offline)"),
}

PATCHCORE_STAGES = tuple(STAGE_STRIDES["efficientnet_lite0"])
DETECTOR_PARAMS["patchcore"] = {
    "backbone": Field("efficientnet_lite0", choices=("efficientnet_lite0",),
                      doc="ImageNet network the patch features come from (docs/methods/patchcore.md#backbone)"),
    "stages": Field(["stage3", "stage4"], list, items=Field(None, choices=PATCHCORE_STAGES),
                    doc="the backbone stages whose features are concatenated: two mid-level ones, as the paper's "
                        "WideResNet-50 layer2 + layer3 (strides 8 and 16)"),
    "neighbourhood": Field(3, int, low=1, high=9, doc="p: each feature averaged over its p x p neighbours (paper 3)"),
    "coreset_ratio": Field(0.1, float, low=1e-4, high=1.0, doc="share of the training patch features kept "
                                                                "(paper: 0.1, and 0.01 with little loss)"),
    "memory_bank_size": Field(10000, int, low=1, high=1000000,
                              doc="rows of the memory bank: the coreset is capped at it (smaller = faster on a "
                                  "device), a smaller coreset repeats rows to fill it"),
    "projection_dim": Field(128, int, low=1, high=4096, doc="random projection of the features for the coreset "
                                                            "selection (the paper's 128); features with fewer "
                                                            "dimensions are used as they are"),
    "reweight_neighbours": Field(9, int, low=1, high=100, doc="b of the image score's re-weighting (eq. 7)"),
    "map_sigma": Field(4.0, float, low=0.0, high=32.0, doc="Gaussian smoothing of the up-sampled map (paper 4)"),
}

# What `auto` means per detector (and variant), from the papers; written into the run's config.
PAPER_DEFAULTS = {
    "cae": {"train.learning_rate": 2e-4, "train.lr_decay": 1e-5, "postprocess.reduction": "max"},
    "ganomaly2d": {"train.learning_rate": 1e-4, "train.lr_decay": 0.0, "postprocess.reduction": "mean",
                   "detector.filters": 64, "detector.w_adv": 1.0, "detector.w_con": 10.0, "detector.w_enc": 10.0},
    "anogan": {"train.learning_rate": 2e-4, "train.lr_decay": 0.0, "postprocess.reduction": "detector",
               "detector.search_steps": 500, "detector.search_lr": 0.02},
    "piad": {"train.learning_rate": 1e-4, "train.lr_decay": 0.0, "postprocess.reduction": "detector"},
    "lntra": {"train.learning_rate": 1e-4, "train.lr_decay": 0.0, "postprocess.reduction": "detector"},
    "patchcore": {"train.learning_rate": 0.0, "train.lr_decay": 0.0, "postprocess.reduction": "detector"},
    "ganomaly": {"train.learning_rate": 2e-4, "train.lr_decay": 0.0, "postprocess.reduction": "mean",
                 "detector.filters": 64, "detector.w_adv": 1.0, "detector.w_con": 50.0, "detector.w_enc": 1.0},
}


def _paper_defaults(values) -> dict:
    det = values["detector"]
    variant = "ganomaly" if det["name"] == "ganomaly2d" and det["latent"] == "1d" else det["name"]
    return PAPER_DEFAULTS[variant]


def _resolve_auto(values):
    """Replace `auto` by the detector's paper value (train.epochs stays auto: it needs the data)."""
    for dotted, value in _paper_defaults(values).items():
        section, key = dotted.split(".")
        if values[section][key] == AUTO:
            values[section][key] = value
    det = values["detector"]
    if det["name"] == "cae" and det["residual"] == AUTO:
        det["residual"] = "ssim" if values["data"]["channels"] == 1 else "l2"


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


def as_shape(size) -> tuple[int, int]:
    """(height, width) of a size given as one int or [height, width]."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


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


def load(path: str | os.PathLike, overrides=()) -> Config:
    """Read a YAML file, apply `key.path=value` overrides, validate, fill the paper's defaults."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(path, "(file)", "no such config file; pass --config with a YAML file (see configs/)")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        raise ConfigError(path, where, f"not valid YAML: {getattr(e, 'problem', e)}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(path, "(top level)", "expected a mapping of sections (run, data, detector, train, ...)")
    raw = apply_overrides(raw, overrides)
    return validate(raw, path)


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
            value = yaml.safe_load(text)
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
            raise ConfigError(source, section, f"unknown section; known: {', '.join(SCHEMA)}")
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


def _check_section(section, given, fields, source):
    for key in given:
        if key not in fields:
            raise ConfigError(source, f"{section}.{key}", f"unknown key; known: {', '.join(fields)}")
    return {key: field.check(given.get(key, field.default), source, f"{section}.{key}")
            for key, field in fields.items()}


def _check_piad_dims(det, shape, key, source):
    """Each width list needs log2(2·size / max(latent_res, 4)) entries (docs/methods/piad.md#1b); a square power-of-two size."""
    size = shape[0]
    if shape[0] != shape[1] or size & (size - 1):
        raise ConfigError(source, key, f"piad needs a square power of two (32, 64, ...); got {_shape_text(shape)}")
    r = det["latent_res"]
    if r != 1 and (r & (r - 1) or not 4 <= r <= size // 2):
        raise ConfigError(source, "detector.latent_res", f"needs 1 or a power of two from 4 to image_size / 2; got {r}")
    needed = (2 * size // max(r, 4)).bit_length() - 1
    for name in ("generator_dims", "encoder_dims", "image_critic_dims"):
        dims = det[name]
        if len(dims) != needed or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            raise ConfigError(source, f"detector.{name}", f"needs {needed} positive integers for {size}x{size} "
                                                          f"images (docs/methods/piad.md#1b); got {dims!r}")
    if not det["latent_critic_dims"] or not all(isinstance(d, int) and d > 0 for d in det["latent_critic_dims"]):
        raise ConfigError(source, "detector.latent_critic_dims", f"needs positive integers; got {det['latent_critic_dims']!r}")


def _shape_text(shape) -> str:
    return f"{shape[0]}x{shape[1]}" if shape[0] != shape[1] else str(shape[0])


def _is_power_of_two(n: int) -> bool:
    return n > 0 and not n & (n - 1)


def _check_model_shape(det, data, shape, key, source):
    """Each architecture's size rule for its input (the image, or the patch): docs/protocol.md#image-size."""
    height, width = shape
    name, text = det["name"], _shape_text(shape)
    if name == "ganomaly2d" and det["latent"] == "2d" and (height % 16 or width % 16):
        raise ConfigError(source, key, f"ganomaly2d downsamples 4 times: needs multiples of 16; got {text}")
    if name == "ganomaly2d" and det["latent"] == "1d" and (height != width or not _is_power_of_two(height)):
        raise ConfigError(source, key, f"the 1d (GANomaly, DCGAN) variant needs a square power of two; got {text}")
    if name == "anogan" and (height % 16 or width % 16):
        raise ConfigError(source, key, f"anogan's generator starts at image_size / 16 (docs/methods/anogan.md#2b): needs multiples of 16; "
                                       f"got {text}")
    if name == "piad":
        _check_piad_dims(det, shape, key, source)
    if name == "patchcore":
        if not det["stages"] or len(set(det["stages"])) != len(det["stages"]):
            raise ConfigError(source, "detector.stages", f"needs one or more distinct stages; got {det['stages']!r}")
        stride = max(STAGE_STRIDES[det["backbone"]][s] for s in det["stages"])
        if height % stride or width % stride:
            raise ConfigError(source, key, f"patchcore's deepest stage ({max(det['stages'])}) has stride {stride}: "
                                           f"needs multiples of {stride}; got {text}")
    if name == "cae":
        if det["architecture"] == "resnet":
            if shape != (299, 299) or data["channels"] != 3:
                raise ConfigError(source, key, "the resnet architecture needs image_size 299 and channels 3 (docs/methods/cae.md#3b)")
        elif not (_is_power_of_two(height) and _is_power_of_two(width)) or min(shape) < 32:
            raise ConfigError(source, key, f"the mvtec architecture needs powers of two >= 32 (32, 64, ... 512, "
                                           f"or [256, 128]); got {text}")
        if det["loss"] == "mssim":
            needed = 11 * 2 ** (det["mssim_scales"] - 1)
            if min(shape) < needed:
                raise ConfigError(source, "detector.mssim_scales",
                                  f"{det['mssim_scales']} scales need image_size >= {needed}; "
                                  f"lower detector.mssim_scales or use loss ssim")


def _check_patches(data, det, source):
    """Patches fit inside the image and the scoring window leaves no pixel out."""
    image, patch = as_shape(data["image_size"]), data["patch_size"]
    if patch is None:
        return
    patch = as_shape(patch)
    if det["name"] == "lntra":
        raise ConfigError(source, "data.patch_size", "lntra scores whole video frames; leave data.patch_size null")
    if patch[0] > image[0] or patch[1] > image[1]:
        raise ConfigError(source, "data.patch_size", f"{_shape_text(patch)} is larger than data.image_size "
                                                     f"{_shape_text(image)}; use a patch that fits the image")
    stride = data["patch_stride"]
    if stride != AUTO and (as_shape(stride)[0] > patch[0] or as_shape(stride)[1] > patch[1]):
        raise ConfigError(source, "data.patch_stride", f"{_shape_text(as_shape(stride))} is larger than the patch "
                                                       f"{_shape_text(patch)}: pixels between windows would never "
                                                       f"be scored; use at most the patch size")


def _check_consistency(values, source):
    data, det = values["data"], values["detector"]
    if data["root"] is None and data["source"] is None:
        raise ConfigError(source, "data.root", "is required: the data set folder (or synthetic:<category>; "
                                               "one_class: or data.source)")
    if data["source"] is not None and data["layout"] != "one_class":
        raise ConfigError(source, "data.source", f"is for the one_class layout; layout {data['layout']} reads data.root")
    if data["layout"] == "one_class" and bool(data["abnormal_class"]) == bool(data["normal_class"]):
        raise ConfigError(source, "data.abnormal_class", "the one_class layout needs exactly one of "
                                                         "data.abnormal_class (that class is the anomaly, GANomaly) "
                                                         "and data.normal_class (that class is normal, PIAD)")
    _check_patches(data, det, source)
    image = as_shape(data["image_size"])
    patched = data["patch_size"] is not None
    model = as_shape(data["patch_size"]) if patched else image
    _check_model_shape(det, data, model, "data.patch_size" if patched else "data.image_size", source)
    if (det["name"] == "lntra") != (data["layout"] == "video"):
        raise ConfigError(source, "data.layout", "lntra scores clips of videos and the video layout holds them: "
                                                 "use both or neither")
    if det["name"] == "lntra" and values["train"]["min_epoch_images"]:
        raise ConfigError(source, "train.min_epoch_images", "lntra trains on every clip once per epoch; leave it 0")
    if det["name"] == "lntra" and (det["clip_length"] % 8 or image[0] % 16 or image[1] % 16 or data["channels"] != 1):
        raise ConfigError(source, "detector.clip_length", "lntra needs clip_length a multiple of 8, "
                                                          "data.image_size multiples of 16 and data.channels 1 (docs/methods/lntra.md#5a)")
    if det["name"] == "patchcore" and values["train"]["precision"] != "float32":
        raise ConfigError(source, "train.precision", "patchcore trains no weights (one feature pass): leave float32")
    post = values["postprocess"]
    if post["reduction"] == "detector" and det["name"] not in ("anogan", "piad", "lntra", "patchcore"):
        raise ConfigError(source, "postprocess.reduction", f"'detector' is AnoGAN's, PIAD's, LNTRA's and "
                                                           f"PatchCore's own score; "
                                                           f"{det['name']} scores from its map: use max, topk_mean or mean")
    if 2 * post["border"] >= min(image):
        raise ConfigError(source, "postprocess.border", f"{post['border']} px on each side leaves nothing of a "
                                                        f"{_shape_text(image)} map; use less than {min(image) // 2}")
