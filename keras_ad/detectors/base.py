"""The contract every detector fulfils, so training, scoring and export never look inside one."""

from __future__ import annotations

from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class TrainingPhase:
    """A span of epochs trained with one optimiser setting (e.g. frozen encoder, then fine-tuning)."""

    until_epoch: int
    learning_rate: float
    lr_decay: float
    name: str = "train"


def images_of(data):
    """The image batch of what `fit`/`train_on_batch` pass to a step: a tensor, or (x, y, sample_weight)."""
    return data[0] if isinstance(data, (tuple, list)) else data


class Detector(keras.Model):
    """A keras.Model with its own `train_step`/`test_step` and a traceable `anomaly_map`.

    Inputs are pre-processed images: float32 [N, H, W, C] in [0, 1] (see `keras_ad.scoring.preprocess`).
    """

    def anomaly_map(self, images):
        """Per-pixel anomaly map [N, H, W], larger = more anomalous. Pure tensor ops, no Python loops."""
        raise NotImplementedError

    def sample_panels(self, images) -> dict:
        """Named [N, H, W, C] (or [N, H, W]) arrays to show in training image grids."""
        return {"input": images, "anomaly map": self.anomaly_map(images)}

    def training_phases(self, epochs: int, learning_rate: float, lr_decay: float) -> list[TrainingPhase]:
        """The optimiser schedule over `epochs`; one phase unless the paper trains in stages."""
        return [TrainingPhase(epochs, learning_rate, lr_decay)]

    def enter_phase(self, index: int):
        """Called before phase `index` is compiled (freeze or unfreeze layers here)."""
