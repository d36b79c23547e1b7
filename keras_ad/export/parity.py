"""Parity of exported artefacts with the Keras scorer, on the run's own validation and test images.

Each artefact runs in its own runtime (TensorFlow for SavedModel, LiteRT for .tflite, ONNX Runtime
for .onnx, through the same `DeviceScorer` a device uses) on the raw uint8 files, and is compared
with the Keras scorer on the same arrays.

Tolerances: float artefacts must match within FLOAT_ATOL + SCORE_RTOL * |score| (`score`: AnoGAN's
score is a float32 sum over ~10^4 pixels and features, ~10^3 in size, whose last bits depend on each
runtime's summation order) and FLOAT_ATOL + MAP_RTOL * |map| (`anomaly_map`: an SSIM map turns 1e-6
differences of the reconstruction in flat windows into ~1e-4, measured on a grey 256x256 SSIM run); quantised ones must
keep the image and pixel AUROC within AUROC_DROP_TOLERANCE of the Keras model's (their differences are reported, not
bounded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_ad import metrics
from keras_ad.data import layouts, pipeline
from keras_ad.data.images import read_image, read_many
from keras_ad.export.device import within_tolerance
from keras_ad.specs import SPECS

FLOAT_ATOL = 1e-4
MAP_RTOL = 1e-3
SCORE_RTOL = 1e-5
AUROC_DROP_TOLERANCE = 0.01


@dataclass
class ParitySet:
    """Raw uint8 images (any sizes) with test labels and masks at the model's size."""

    images: list  # uint8 [H, W, C] arrays, validation first, then test
    n_validation: int
    labels: np.ndarray  # test labels
    masks: np.ndarray  # test masks [N, h, w]
    has_mask: np.ndarray

    @property
    def test_slice(self):
        return slice(self.n_validation, len(self.images))


def load_parity_set(cfg, max_validation: int = 1000) -> ParitySet:
    if SPECS[cfg.detector.name].video:
        return _video_parity_set(cfg)
    files = layouts.discover(cfg.data, seed=cfg.train.seed)
    read = lambda p: read_image(p, cfg.data.channels)  # noqa: E731
    val, _ = read_many(files.val[:max_validation], read, cfg.data.skip_unreadable)
    test, kept = read_many([s.path for s in files.test], read, cfg.data.skip_unreadable)
    samples = [files.test[i] for i in kept]
    masks = pipeline.load_masks(samples, [t.shape[:2] for t in test], cfg.data.image_shape, cfg.data.center_crop)
    return ParitySet(val + test, len(val), np.array([s.label for s in samples], np.int32), masks,
                     np.array([s.label == 0 or s.mask_path is not None for s in samples]))


def _video_parity_set(cfg, max_validation: int = 64, max_test: int = 256) -> ParitySet:
    """Raw uint8 clips [T, H, W, 1]: normal ones of the calibration videos, then test clips spread over the
    test videos, labelled and masked by their centre frame."""
    from keras_ad.data import video

    length = cfg.detector.clip_length
    train, val, test = video.discover(layouts.resolve_root(cfg.data), cfg.data.val_fraction, cfg.train.seed)

    def spread(videos, limit):
        """(video, start) pairs, every video's clips thinned evenly to about `limit` in all."""
        starts = [(v, s) for v in videos for s in range(len(v.frames) - length + 1)]
        return [starts[i] for i in np.unique(np.linspace(0, len(starts) - 1, min(limit, len(starts))).astype(int))]

    def raw_clip(v, start):
        return np.stack([read_image(p, 1) for p in v.frames[start:start + length]])

    normal = spread(val or train, max_validation)
    tests = spread(test, max_test)
    centre = video.centre_index(length)
    masks_by_video = {v.name: video.load_masks(v, cfg.data.image_shape) for v in test}
    masks = np.stack([masks_by_video[v.name][s + centre] if masks_by_video[v.name] is not None
                      else np.zeros(cfg.data.image_shape, bool) for v, s in tests])
    return ParitySet([raw_clip(v, s) for v, s in normal + tests], len(normal),
                     np.array([v.labels[s + centre] for v, s in tests], np.int32), masks,
                     np.array([masks_by_video[v.name] is not None for v, _ in tests]))


AUROCS = ("image_auroc", "pixel_auroc")


def summary(data: ParitySet, out: dict) -> dict:
    """Image and pixel AUROC and the calibrated decision's TPR/TNR on the test images."""
    test, keep = data.test_slice, data.has_mask
    return {"image_auroc": metrics.image_auroc(data.labels, out["score"][test]),
            "pixel_auroc": metrics.pixel_auroc(data.masks[keep], out["anomaly_map"][test][keep]),
            "decision_rates": metrics.decision_rates(data.labels, out["is_anomalous"][test])}


def compare(reference: dict, reference_summary: dict, out: dict, data: ParitySet, quantized: bool) -> dict:
    """One artefact's row of export_report.json; `passed` and, if not, which outputs drifted."""
    float_tolerance = {"atol": FLOAT_ATOL, "map_rtol": MAP_RTOL, "score_rtol": SCORE_RTOL}
    checks = {name: within_tolerance(name, out[name], reference[name], float_tolerance)
              for name in ("score", "anomaly_map")}
    row = {"max_abs_diff": {name: diff for name, (_, diff) in checks.items()},
           "decision_agreement": float(np.mean(out["is_anomalous"] == reference["is_anomalous"])),
           **summary(data, out)}
    drops = {k: reference_summary[k] - row[k] for k in AUROCS}
    row["auroc_drop"] = drops
    if quantized:
        drifted = [k for k, d in drops.items() if d > AUROC_DROP_TOLERANCE]
        # a device reproduces the host runtime when it is this close to Keras
        row["tolerance"] = {"auroc_drop": AUROC_DROP_TOLERANCE,
                            "atol": 2.0 * max(row["max_abs_diff"].values()) + FLOAT_ATOL}
    else:
        drifted = [name for name, (ok, _) in checks.items() if not ok]
        row["tolerance"] = float_tolerance
    row["passed"], row["drifted"] = not drifted, drifted
    return row


def _rates(row) -> str:
    rates = row.get("decision_rates")
    return f"{rates['tpr']:.2f}/{rates['tnr']:.2f}" if rates else ""


def table(rows: dict, reference_summaries: dict) -> str:
    """The report as a fixed-width table for the terminal; one Keras reference row per scoring variant."""
    lines = [f"{'artefact':28s} {'max|Δscore|':>12s} {'max|Δmap|':>12s} {'image AUROC':>12s} "
             f"{'pixel AUROC':>12s} {'TPR/TNR':>11s} {'same call':>9s}  result"]
    for variant, summary in reference_summaries.items():
        label = "keras (reference)" if len(reference_summaries) == 1 else f"keras, {variant} (reference)"
        lines.append(f"{label:28s} {'':>12s} {'':>12s} {summary['image_auroc']:12.4f} "
                     f"{summary['pixel_auroc']:12.4f} {_rates(summary):>11s}")
    for name, r in rows.items():
        result = "ok" if r["passed"] else f"FAILED: {', '.join(r['drifted'])} drifted"
        lines.append(f"{name:28s} {r['max_abs_diff']['score']:12.3g} {r['max_abs_diff']['anomaly_map']:12.3g} "
                     f"{r['image_auroc']:12.4f} {r['pixel_auroc']:12.4f} {_rates(r):>11s} "
                     f"{r['decision_agreement']:9.1%}  {result}")
    return "\n".join(lines)
