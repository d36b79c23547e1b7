"""The one pre-processing, the one post-processing, and the `Scorer` that chains them around a detector.

Training data, evaluation, calibration, the `score` command and `keras_ad.load` all go through these
functions, so a number reported by `evaluate` is the number a user gets from `score`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_ad.losses.ssim import gaussian_blur

RESIZE_METHODS = {"bilinear": "bilinear", "area": "area", "nearest": "nearest"}


def preprocess(images, image_size: int, channels: int, resize: str = "bilinear"):
    """Raw images [N, H, W, 1|3] (uint8 0..255, or float already in [0, 1]) -> float32 [N, S, S, C] in [0, 1].

    Resizes (antialiased unless nearest, §3.i.6) only when the size differs, and converts grey <-> RGB
    (ITU-R 601 weights, as tf.image.rgb_to_grayscale).
    """
    images = tf.convert_to_tensor(images)
    x = tf.cast(images, tf.float32)
    if images.dtype == tf.uint8:
        x = x / 255.0
    if x.shape.rank == 3:
        x = x[..., None]
    if x.shape[-1] != channels:
        x = tf.image.rgb_to_grayscale(x) if channels == 1 else tf.image.grayscale_to_rgb(x)
    if (x.shape[1], x.shape[2]) != (image_size, image_size):
        method = RESIZE_METHODS[resize]
        x = tf.image.resize(x, (image_size, image_size), method=method, antialias=method != "nearest")
    return tf.clip_by_value(x, 0.0, 1.0)


def postprocess(maps, smoothing_sigma: float = 0.0, reduction: str = "max", topk_percent: float = 1.0):
    """Anomaly map [N, H, W] -> (image score [N], smoothed map [N, H, W])."""
    if smoothing_sigma > 0:
        maps = gaussian_blur(maps[..., None], smoothing_sigma)[..., 0]
    n_pixels = maps.shape[1] * maps.shape[2]
    flat = tf.reshape(maps, [-1, n_pixels])
    if reduction == "max":
        scores = tf.reduce_max(flat, axis=1)
    elif reduction == "topk_mean":
        k = max(1, int(round(n_pixels * topk_percent / 100.0)))
        scores = tf.reduce_mean(tf.math.top_k(flat, k=k).values, axis=1)
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    return scores, maps


class Scorer:
    """preprocess -> detector.anomaly_map -> postprocess, plus the calibrated decision rule.

    Call it on a batch of raw images (uint8 or [0, 1] float, any size) to get numpy arrays
    `score` [N], `anomaly_map` [N, S, S], and, once calibrated, `is_anomalous` [N] and `defect_area` [N].
    """

    def __init__(self, detector, cfg, calibration: dict | None = None, batch_size: int = 16):
        self.detector, self.cfg, self.calibration = detector, cfg, calibration
        self.batch_size = batch_size
        post = cfg.postprocess
        self._post = dict(smoothing_sigma=post.smoothing_sigma, reduction=post.reduction,
                          topk_percent=post.topk_percent)
        size, ch = cfg.data.image_size, cfg.data.channels
        self._score_fn = tf.function(
            self._score_preprocessed,
            input_signature=[tf.TensorSpec([None, size, size, ch], tf.float32)], reduce_retracing=True)

    def _score_preprocessed(self, x):
        scores, maps = postprocess(self.detector.anomaly_map(x), **self._post)
        return {"score": scores, "anomaly_map": maps}

    def preprocess(self, images):
        d = self.cfg.data
        return preprocess(images, d.image_size, d.channels, d.resize)

    def score_preprocessed(self, x) -> dict:
        """Score float32 images that went through `preprocess` already, in batches; numpy out."""
        x = np.asarray(x, np.float32)
        parts = [self._score_fn(tf.constant(x[i:i + self.batch_size])) for i in range(0, len(x), self.batch_size)]
        if not parts:
            size = self.cfg.data.image_size
            return {"score": np.zeros(0, np.float32), "anomaly_map": np.zeros((0, size, size), np.float32)}
        return {k: np.concatenate([p[k].numpy() for p in parts]) for k in ("score", "anomaly_map")}

    def decide(self, out: dict) -> dict:
        """Add `is_anomalous` and `defect_area` from the calibrated threshold and minimum area (§3.e)."""
        if self.calibration:
            from keras_ad.calibration import decide

            out["is_anomalous"], out["defect_area"] = decide(
                out["anomaly_map"], self.calibration["pixel_threshold"], self.calibration["min_area"])
        return out

    def __call__(self, images) -> dict:
        return self.decide(self.score_preprocessed(self.preprocess(images).numpy()))
