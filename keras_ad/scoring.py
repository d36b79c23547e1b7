"""The one pre-processing, the one post-processing, and the `Scorer` that chains them around a detector.

Training data, evaluation, calibration, the `score` command, `keras_ad.load` and every export format
go through `Scorer.graph` = `score_inputs(preprocess(images))`, so a number reported by `evaluate` is
the number a device computes. Evaluation and calibration pre-process each image once (on load) and
call `score_inputs`, the same graph without pre-processing it again.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_ad import image_ops, patches
from keras_ad.export.device import check_images
from keras_ad.fields import as_shape
from keras_ad.losses.ssim import gaussian_blur
from keras_ad.tracing import graph_function


def preprocess(images, image_size, channels: int, resize: str = "bilinear", center_crop: int | None = None):
    """Raw images [N, H, W, 1|3] (uint8 0..255, or float already in [0, 1]) -> float32 [N, h, w, C] in [0, 1],
    (h, w) = `image_size` (a side, or (height, width)).

    Optionally crops the central `center_crop` pixels first (AnoGAN's --crop, docs/methods/anogan.md#2a), then
    resizes as tf.image.resize(antialias=True) does (nearest: no antialiasing, docs/methods/cae.md#3i-6), but with
    MatMuls that every runtime has, and converts grey <-> RGB (ITU-R 601 weights, as tf.image.rgb_to_grayscale).
    """
    images = tf.convert_to_tensor(images)
    x = tf.cast(images, tf.float32)
    if images.dtype == tf.uint8:
        x = x / 255.0
    if x.shape.rank == 3:
        x = x[..., None]
    if x.shape[-1] != channels:
        x = tf.image.rgb_to_grayscale(x) if channels == 1 else tf.image.grayscale_to_rgb(x)
    if center_crop:
        x = crop_center(x, center_crop)
    shape = as_shape(image_size)
    if (x.shape[1], x.shape[2]) != shape:  # unknown (None) sizes are resized too
        x = image_ops.resize(x, shape, resize)
    return tf.clip_by_value(x, 0.0, 1.0)


def crop_center(x, size: int):
    """The central size x size pixels of [N, H, W, C] (all of a side shorter than `size`)."""
    def window(axis):
        side = x.shape[axis] if x.shape[axis] is not None else tf.shape(x)[axis]
        length = tf.minimum(side, size) if isinstance(side, tf.Tensor) else min(side, size)
        start = (side - length) // 2
        return start, start + length

    (top, bottom), (left, right) = window(1), window(2)
    return x[:, top:bottom, left:right, :]


DETECTOR_SCORE = "detector"  # postprocess.reduction: the detector's own image score, not one from the map
NORMALIZATION_KEYS = ("map_mean", "map_denominator")  # the per-pixel statistics calibration adds


def postprocess(maps, smoothing_sigma: float = 0.0, reduction: str = "max", topk_percent: float = 1.0,
                region=None, normalization=None):
    """Anomaly map [N, H, W] -> (image score [N], map [N, H, W]); the score is None for
    `reduction: detector` (the detector gives its own).

    In order: Gaussian smoothing; with `normalization` (mean, denominator [H, W] of good validation maps)
    the map becomes max(0, (map - mean) / denominator); with `region` (0/1 [H, W]) pixels outside become
    0; then the image score reduces the pixels of the region (docs/protocol.md).
    """
    if smoothing_sigma > 0:
        maps = gaussian_blur(maps[..., None], smoothing_sigma)[..., 0]
    if normalization is not None:
        mean, denominator = normalization
        maps = tf.nn.relu((maps - tf.constant(mean, tf.float32)) * tf.constant(1.0 / denominator, tf.float32))
    n_pixels = maps.shape[1] * maps.shape[2]
    if region is not None:
        maps = maps * tf.constant(region, tf.float32)
        n_pixels = int(region.sum())
    if reduction == DETECTOR_SCORE:
        return None, maps
    flat = tf.reshape(maps, [-1, maps.shape[1] * maps.shape[2]])
    if reduction == "max":
        scores = tf.reduce_max(flat, axis=1)
    elif reduction == "mean":
        scores = tf.reduce_sum(flat, axis=1) / float(n_pixels)
    elif reduction == "topk_mean":
        k = max(1, int(round(n_pixels * topk_percent / 100.0)))
        scores = tf.reduce_mean(tf.math.top_k(flat, k=k).values, axis=1)
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    return scores, maps


def variant_calibration(calibration: dict | None, variant: str) -> dict | None:
    """calibration.json as seen by one scoring variant: its own pixel threshold (and map statistics), the
    shared min area; None when that variant was never calibrated."""
    if not calibration or variant == "default":
        return calibration
    own = calibration.get("variants", {}).get(variant)
    return {**calibration, **own} if own else None


class Scorer:
    """preprocess -> detector.anomaly_map -> postprocess -> calibrated decision, as one traceable graph.

    `scorer(images)` takes raw images (uint8, or float in [0, 1]; [N, H, W, C] of any size; a video
    detector's clips [N, T, H, W, C] and scores their centre frames) and returns
    tensors `score` [N], `anomaly_map` [N, h, w] ((h, w) = data.image_size) and, once calibrated,
    `is_anomalous` [N] and `defect_area` [N] (a video detector also `online_score` [N]). It works
    eagerly, inside `tf.function` and inside
    `tf.data.Dataset.map`. `threshold` (a pixel threshold on the map) overrides the calibrated one.
    `variant` picks one of the detector's scoring graphs (`Detector.variants`); each has its own
    threshold in the calibration. With texture patches (data.patch_size) the detector scores a sliding
    window and the graph stitches the window maps (keras_ad.patches).
    """

    def __init__(self, detector, cfg, calibration: dict | None = None, batch_size: int = 16,
                 variant: str = "default"):
        from keras_ad import roi

        if variant not in detector.variants:
            from keras_ad.errors import UsageError

            raise UsageError(f"--variant {variant}: {cfg.detector.name} offers {', '.join(detector.variants)}")
        self.detector, self.cfg, self.variant = detector, cfg, variant
        self.region = roi.region_of_interest(cfg.postprocess, cfg.data.image_shape)
        self.n_windows = len(patches.windows(*self.window_layout)) if cfg.data.patch_size else 1
        self.batch_size = max(1, batch_size // self.n_windows)
        self.calibration = calibration

    @property
    def calibration(self) -> dict | None:
        """The calibration of this scorer's variant (calibration.json keeps the others under "variants")."""
        return self._calibration

    @calibration.setter
    def calibration(self, value):
        """Threshold, min_area and map statistics are constants of the traced graph: a new calibration
        means a new trace."""
        self.run_calibration = value  # calibration.json as written, every variant's threshold
        self._calibration = variant_calibration(value, self.variant)
        self._graph_fns = {}  # (input dtype, channels) -> traced graph
        self._inputs_fn = graph_function(self.score_inputs, reduce_retracing=True)

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.cfg.data.image_shape

    @property
    def channels(self) -> int:
        return self.cfg.data.channels

    @property
    def clip_length(self) -> int | None:
        """Frames per clip of a video detector, else None (as an exported scorer's)."""
        return self.detector.clip_length

    @property
    def threshold(self) -> float | None:
        return None if not self.calibration else float(self.calibration["pixel_threshold"])

    @property
    def normalization(self):
        """(mean, denominator) [H, W] of the good validation maps, once calibrated with
        postprocess.normalize: per_pixel; else None."""
        if not self.calibration or "map_mean" not in self.calibration:
            return None
        return tuple(np.asarray(self.calibration[k], np.float32) for k in NORMALIZATION_KEYS)

    @property
    def online_psnr_range(self):
        """(lowest, highest) PSNR of normal clips once a video detector is calibrated, else None: the graph
        then also outputs `online_score` [N] (docs/methods/lntra.md#5g-6)."""
        if not self.detector.clip_length or not self.calibration:
            return None
        return self.calibration.get("online_psnr_range")

    @property
    def window_layout(self):
        """(image shape, patch shape, stride) of the scoring window (texture patches)."""
        d = self.cfg.data
        return d.image_shape, d.model_shape, d.patch_stride_shape

    def preprocess(self, images):
        d = self.cfg.data
        length = self.detector.clip_length
        if not length:
            return preprocess(images, d.image_shape, d.channels, d.resize, d.center_crop)
        # clips [N, T, H, W(, C)]: every frame as an image, then back to [N, T, h, w, C]
        images = tf.convert_to_tensor(images)
        frames = tf.reshape(images, tf.concat([[-1], tf.shape(images)[2:]], 0))
        frames.set_shape([None, *images.shape[2:]])
        x = preprocess(frames, d.image_shape, d.channels, d.resize, d.center_crop)
        return tf.reshape(x, [-1, length, *d.image_shape, d.channels])

    def raw_score_and_map(self, x):
        """(the detector's own score or None, its map [N, h, w]) of pre-processed images; with texture
        patches, every window scored and the window maps averaged into one map."""
        if not self.cfg.data.patch_size:
            return self.detector.score_and_map(x, self.variant)
        layout = self.window_layout
        own, maps = self.detector.score_and_map(patches.tile(x, *layout), self.variant)
        own = None if own is None else patches.reduce_windows(own, self.n_windows)
        return own, patches.stitch(maps, *layout)

    def score_inputs(self, x, threshold=None) -> dict:
        """The scoring graph after pre-processing: float32 [N, h, w, C] in [0, 1] (clips [N, T, h, w, C])."""
        post = self.cfg.postprocess
        own_scores, maps = self.raw_score_and_map(x)
        scores, maps = postprocess(maps, post.smoothing_sigma, post.reduction, post.topk_percent, self.region,
                                   self.normalization)
        if scores is None:
            scores = own_scores
        out = {"score": scores, "anomaly_map": maps}
        if self.online_psnr_range is not None:
            from keras_ad.detectors.lntra import online_score

            out["online_score"] = online_score(-scores, self.online_psnr_range)
        if threshold is None and self.calibration:
            threshold = tf.constant(self.threshold, tf.float32)
        if threshold is not None:
            min_area = int(self.calibration["min_area"]) if self.calibration else 1
            out["is_anomalous"], out["defect_area"] = image_ops.defect_decision(maps, threshold, min_area)
        return out

    def graph(self, images, threshold=None) -> dict:
        """The scoring graph itself, raw images in (traced by `tf.function` and by every exporter)."""
        return self.score_inputs(self.preprocess(images), threshold)

    def __call__(self, images, threshold=None) -> dict:
        """Eager calls check their input first (one image is a batch of one; a wrong dtype, shape or value
        range is one ValueError, docs/robustness.md#inputs); symbolic tensors (tf.function, tf.data) go
        straight into the graph. One trace per input dtype and channel count, so that no call's input can
        generalise the trace another's needs."""
        if tf.executing_eagerly():
            images = check_images(images, self.detector.clip_length)
        images = tf.convert_to_tensor(images)
        if images.dtype != tf.uint8:
            images = tf.cast(images, tf.float32)
        if threshold is not None:
            threshold = tf.convert_to_tensor(threshold, tf.float32)
        key = (images.dtype, images.shape[-1])
        if key not in self._graph_fns:
            self._graph_fns[key] = graph_function(self.graph, reduce_retracing=True)
            _trace_for_any_batch(self._graph_fns[key], images, None if threshold is None else
                                 tf.TensorSpec(threshold.shape, tf.float32))
        return self._graph_fns[key](images, threshold)

    def score_preprocessed(self, x) -> dict:
        """Score float32 images that went through `preprocess` already, in batches, without pre-processing
        them again; numpy out."""
        x = np.asarray(x, np.float32)
        if len(x) and not self._inputs_fn.experimental_get_tracing_count():
            _trace_for_any_batch(self._inputs_fn, x)
        parts = [self._inputs_fn(tf.constant(x[i:i + self.batch_size])) for i in range(0, len(x), self.batch_size)]
        if not parts:
            empty = {"score": np.zeros(0, np.float32), "anomaly_map": np.zeros((0, *self.image_shape), np.float32)}
            if self.calibration:
                empty.update(is_anomalous=np.zeros(0, bool), defect_area=np.zeros(0, np.int32))
            return empty
        return {k: np.concatenate([p[k].numpy() for p in parts]) for k in parts[0]}


def _trace_for_any_batch(fn, images, *rest):
    """Trace the `tf.function` `fn` first for `images`' shape with any batch size: later batches of that shape,
    a last, smaller one included, reuse the trace instead of tracing the graph again."""
    fn.get_concrete_function(tf.TensorSpec([None, *images.shape[1:]], images.dtype), *rest)
