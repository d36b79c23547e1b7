"""Detector registry: `build(cfg)` returns the configured detector, unbuilt weights initialised."""

from __future__ import annotations

import contextlib
import importlib

# name -> "module:factory"; the factory takes the validated Config. Add a detector here.
REGISTRY = {
    "cae": "keras_ad.detectors.cae:from_config",
    "ganomaly2d": "keras_ad.detectors.ganomaly2d:from_config",
    "anogan": "keras_ad.detectors.anogan:from_config",
    "piad": "keras_ad.detectors.piad:from_config",
    "lntra": "keras_ad.detectors.lntra:from_config",
    "patchcore": "keras_ad.detectors.patchcore:from_config",
}


def build(cfg, precision: str = "float32"):
    """The detector of `cfg`, its layers computing in `precision` (a Keras dtype policy: float32 for
    scoring and export, whatever the global policy; mixed_float16 / mixed_bfloat16 for training)."""
    module, factory = REGISTRY[cfg.detector.name].split(":")
    with dtype_policy(precision):
        return getattr(importlib.import_module(module), factory)(cfg)


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras' global dtype policy `name` inside the block (layers take it when they are created)."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
