"""keras_ad: visual anomaly detection with Keras 3 / TensorFlow.

    import keras_ad
    scorer = keras_ad.load("runs/demo")
    out = scorer(images)          # uint8 or [0, 1] float, [N, H, W, C]
    out["score"], out["anomaly_map"], out["is_anomalous"]
"""

__version__ = "0.1.0"

__all__ = ["__version__", "build", "load"]


def build(cfg):
    """The detector of a validated `keras_ad.config.Config`, with fresh weights."""
    from keras_ad import detectors

    return detectors.build(cfg)


def load(run_dir):
    """A `Scorer` for a trained run folder: its detector, weights, pre/post-processing and calibration."""
    import os

    from keras_ad import detectors
    from keras_ad.errors import UsageError
    from keras_ad.runs import CALIBRATION, WEIGHTS, Run
    from keras_ad.scoring import Scorer

    run = Run.open(run_dir)
    cfg = run.config()
    if not os.path.isfile(run.file(WEIGHTS)):
        raise UsageError(f"{run.path}: no trained weights ({WEIGHTS}); finish training first "
                         f"(keras-ad train --config ... --resume)")
    detector = detectors.build(cfg)
    detector.load_weights(run.file(WEIGHTS))
    return Scorer(detector, cfg, calibration=run.read_json(CALIBRATION))
