"""keras_ad: visual anomaly detection with Keras 3 / TensorFlow.

    import keras_ad
    scorer = keras_ad.load("runs/demo")
    out = scorer(images)          # uint8 or [0, 1] float, [N, H, W, C]; tensors out
    out["score"], out["anomaly_map"], out["is_anomalous"]

    run = keras_ad.train("configs/demo.yaml", callbacks=[...], overrides={"train.epochs": 5})
"""

__version__ = "0.1.0"

__all__ = ["__version__", "build", "load", "train"]


def build(cfg):
    """The detector of a validated `keras_ad.config.Config`, with fresh weights."""
    from keras_ad import detectors

    return detectors.build(cfg)


def train(config, callbacks=(), overrides=None, overwrite=False, resume=False, evaluate=True):
    """Train a detector as `keras-ad train` does and return its `keras_ad.runs.Run` (`.path`, `.name`).

    `config`: a YAML path, a dict of sections, or a `keras_ad.config.Config`; `overrides`: {"train.epochs": 5,
    ...} as `--set` would give them; `callbacks`: Keras callbacks added to every phase's `fit` (their logs hold
    the detector's losses and `val_` ones). Calibration and evaluation follow unless `evaluate` is False.
    """
    import json
    import os

    from keras_ad import config as config_lib
    from keras_ad.runs import Run

    settings = [f"{key}={json.dumps(value)}" for key, value in (overrides or {}).items()]
    if isinstance(config, (str, os.PathLike)):
        cfg = config_lib.load(config, settings)
    else:
        raw = config.to_dict() if isinstance(config, config_lib.Config) else config
        cfg = config_lib.validate(config_lib.apply_overrides(raw, settings))
    from keras_ad import training

    run = Run.create(cfg, overwrite=overwrite, resume=resume)
    return training.train_run(cfg, run, callbacks=callbacks, resume=resume, evaluate=evaluate)


def load(path, variant: str = "default"):
    """A scorer for a trained run folder, an export folder (exports/<run>) or an exported SavedModel.

    All three are called the same way: `scorer(images, threshold=None)` on uint8 or [0, 1] float
    [N, H, W, C] images returns tensors `score`, `anomaly_map`, `is_anomalous` and `defect_area`,
    eagerly, inside `tf.function` and inside `tf.data.Dataset.map`. For a run, `variant` picks
    another scoring graph of the detector (AnoGAN: "edge", what its TFLite and ONNX exports run).
    """
    import json
    import os

    from keras_ad.errors import UsageError

    if os.path.isfile(os.path.join(path, "saved_model.pb")) or os.path.isfile(os.path.join(path, "metadata.json")):
        from keras_ad.export.bundle import SAVEDMODEL_DIR
        from keras_ad.export.savedmodel import ExportedScorer

        folder = path if os.path.isfile(os.path.join(path, "saved_model.pb")) else os.path.join(path, SAVEDMODEL_DIR)
        if not os.path.isfile(os.path.join(folder, "saved_model.pb")):
            raise UsageError(f"{path}: export folder without a SavedModel; export with --format savedmodel")
        metadata_path = os.path.join(os.path.dirname(os.path.abspath(folder)), "metadata.json")
        metadata = json.load(open(metadata_path)) if os.path.isfile(metadata_path) else None
        return ExportedScorer(folder, metadata)

    from keras_ad import detectors
    from keras_ad.runs import CONFIG, WEIGHTS, Run, load_weights
    from keras_ad.scoring import Scorer

    run = Run.open(path)
    cfg = run.config()
    resume = f"keras-ad train --config {run.file(CONFIG)} --resume"
    if not os.path.isfile(run.file(WEIGHTS)):
        raise UsageError(f"{run.path}: no trained weights ({WEIGHTS}); finish training first ({resume})")
    detector = detectors.build(cfg)
    load_weights(detector, run.file(WEIGHTS), f"write it again from the last checkpoint: {resume}")
    return Scorer(detector, cfg, calibration=run.read_calibration(), variant=variant)
