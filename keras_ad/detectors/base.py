"""The contract every detector fulfils, so training, scoring and export never look inside one."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

from keras_ad.optimizers import FusedAdam


@dataclass(frozen=True)
class TrainingPhase:
    """A span of epochs trained with one optimiser setting (e.g. frozen encoder, then fine-tuning)."""

    until_epoch: int
    learning_rate: float
    lr_decay: float
    name: str = "train"
    #: the validation log whose plateau train.early_stopping watches ("loss" -> val_loss); None: the
    #: phase always runs to its last epoch (a GAN's adversarial losses do not settle)
    monitor: str | None = "loss"


def adam(learning_rate, lr_decay, beta_1=0.9, epsilon=1e-7):
    """Adam with Keras-2 `decay` as inverse-time decay per step (docs/stack.md#01-6, docs/methods/cae.md#3d).

    Ports of PyTorch code pass epsilon=1e-8 (PyTorch's default).
    """
    schedule = keras.optimizers.schedules.InverseTimeDecay(learning_rate, decay_steps=1, decay_rate=lr_decay)
    return FusedAdam(schedule, beta_1=beta_1, epsilon=epsilon)


def loss_scale(optimizer):
    """The factor a loss is multiplied by before differentiation: under mixed_float16 the
    LossScaleOptimizer's dynamic scale (its apply_gradients divides by it again and skips steps with
    non-finite gradients); None, no scaling, otherwise."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.scale_loss(tf.constant(1.0))
    return None


def scaled_gradients(tape, loss, variables, optimizer):
    """d loss / d variables times `optimizer`'s loss scale: float16 gradients of small losses would
    flush to zero without it."""
    return tape.gradient(loss, variables, output_gradients=loss_scale(optimizer))


def descend(optimizer, tape, loss, variables):
    """One optimiser step on the scalar `loss` recorded by `tape` (loss-scaled under mixed_float16)."""
    optimizer.apply_gradients(zip(scaled_gradients(tape, loss, variables, optimizer), variables))


def images_of(data):
    """The image batch of what `fit`/`train_on_batch` pass to a step: a tensor, or (x, y, sample_weight)."""
    return data[0] if isinstance(data, (tuple, list)) else data


class Detector(keras.Model):
    """A keras.Model with its own `train_step`/`test_step` and a traceable `anomaly_map`.

    Inputs are pre-processed images: float32 [N, H, W, C] in [0, 1] (see `keras_ad.scoring.preprocess`).
    """

    caveats: tuple = ()  # how this model departs from its paper, printed in every evaluation report

    @property
    def metrics(self):
        """A custom train_step's loss trackers (`self.trackers`, reset by fit every epoch), else Keras'."""
        trackers = getattr(self, "trackers", None)
        return list(trackers.values()) if trackers else super().metrics

    def tracker_logs(self, names=None) -> dict:
        """What a train/test step returns: the results of `self.trackers` (those of `names`), rank 1 under
        MultiWorkerMirroredStrategy, whose Keras reduction fails on scalars (tensorflow#72388, docs/stack.md#3)."""
        names = names or list(self.trackers)
        rank_one = isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy)
        return {n: tf.reshape(self.trackers[n].result(), [1]) if rank_one else self.trackers[n].result()
                for n in names}

    #: Batches of train.batch_size images one train_step consumes (PIAD: n_dis critic steps + one E/G
    #: step, each on fresh images).
    batches_per_step = 1

    #: The scoring graphs this detector offers. "default" is the method itself; a detector whose
    #: method cannot run on TFLite/ONNX (AnoGAN's gradient search) adds a device-friendly "edge" one.
    variants = ("default",)

    #: The variant that TFLite and ONNX exports carry.
    device_variant = "default"

    #: Frames per input clip for a video detector (inputs [N, T, H, W, C]); None: inputs are images.
    clip_length = None

    #: The validation log (test_step's) that train.early_stopping watches: the reconstruction term.
    validation_monitor = "loss"

    def anomaly_map(self, images):
        """Per-pixel anomaly map [N, H, W], larger = more anomalous. Pure tensor ops, no Python loops."""
        raise NotImplementedError

    def score_and_map(self, images, variant: str = "default"):
        """(image score [N] or None, anomaly map [N, H, W]) of one scoring variant.

        None: the image score is reduced from the map (`postprocess.reduction`); a detector whose paper
        defines its own score (AnoGAN's search loss) returns it for `postprocess.reduction: detector`.
        """
        return None, self.anomaly_map(images)

    def sample_panels(self, images) -> dict:
        """Named [N, H, W, C] (or [N, H, W]) arrays to show in training image grids."""
        return {"input": images, "anomaly map": self.anomaly_map(images)}

    def training_phases(self, epochs: int, learning_rate: float, lr_decay: float) -> list[TrainingPhase]:
        """The optimiser schedule over `epochs`; one phase unless the paper trains in stages."""
        return [TrainingPhase(epochs, learning_rate, lr_decay, monitor=self.validation_monitor)]

    def enter_phase(self, index: int):
        """Called before phase `index` is compiled (freeze or unfreeze layers here)."""

    def compile_phase(self, learning_rate: float, lr_decay: float):
        """Compile for one training phase and build every optimiser."""
        self.install_optimizers(lambda name: adam(learning_rate, lr_decay))

    def optimizer_variables(self) -> dict:
        """Optimiser attribute -> the variables it trains; "optimizer" (the one `compile` holds) first.
        A GAN adds its critics' optimisers ("d_optimizer", ...), each declared as a class attribute."""
        return {"optimizer": self.trainable_variables}

    def install_optimizers(self, make):
        """One optimiser `make(name)` per entry of `optimizer_variables`, built at once on its variables
        (inside the strategy's scope: an optimiser built lazily in a replica context fails, docs/stack.md#3);
        wrapped in a LossScaleOptimizer when the detector computes in float16."""
        for name, variables in self.optimizer_variables().items():
            optimizer = make(name)
            if self.dtype_policy.name == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            if name == "optimizer":
                self.compile(optimizer=optimizer)
            else:
                setattr(self, name, optimizer)
            optimizer.build(variables)

    def training_callbacks(self) -> list:
        """Keras callbacks the detector's own training needs, run before the run's checkpointing ones
        (PatchCore sets its memory bank at the end of its feature pass)."""
        return []

    def training_optimizers(self) -> list:
        """Every optimiser whose state a checkpoint must keep, in a fixed order."""
        return [getattr(self, name) for name in self.optimizer_variables()]
