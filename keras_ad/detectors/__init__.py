"""Detector registry: `build(cfg)` returns the configured detector, unbuilt weights initialised."""

from __future__ import annotations

import importlib

# name -> "module:factory"; the factory takes the validated Config. Add a detector here.
REGISTRY = {
    "cae": "keras_ad.detectors.cae:from_config",
    "ganomaly2d": "keras_ad.detectors.ganomaly2d:from_config",
    "anogan": "keras_ad.detectors.anogan:from_config",
    "piad": "keras_ad.detectors.piad:from_config",
    "lntra": "keras_ad.detectors.lntra:from_config",
}


def build(cfg):
    module, factory = REGISTRY[cfg.detector.name].split(":")
    return getattr(importlib.import_module(module), factory)(cfg)
