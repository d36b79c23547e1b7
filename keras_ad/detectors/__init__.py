"""Detector registry: `build(cfg)` returns the configured detector, unbuilt weights initialised."""

from __future__ import annotations

import contextlib
import importlib

from keras_ad.specs import SPECS

# name -> "module:factory" (the factory takes the validated Config): from each detector's spec, where a
# new detector is declared (keras_ad/specs/).
REGISTRY = {name: spec.factory for name, spec in SPECS.items()}


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
