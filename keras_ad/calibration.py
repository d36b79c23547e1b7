"""Threshold and minimum defect area from good validation images only (detectors.md §3.e, §3.f).

An image is defective iff the anomaly map, binarised at `pixel_threshold` (map > t), has an 8-connected
region of at least `min_area` pixels (the scoring graph applies it: `keras_ad.image_ops.defect_decision`).
Calibration picks the lowest t at which no validation image has such a region: the MVTec AD protocol,
on float maps instead of the repo's clipped uint8 residuals.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import label


def region_areas(binary_map) -> np.ndarray:
    """Areas of the 8-connected regions of one boolean map."""
    labelled = label(binary_map, connectivity=2)
    return np.bincount(labelled.ravel())[1:]


def largest_region(maps, threshold) -> int:
    return max((int(region_areas(m > threshold).max(initial=0)) for m in maps), default=0)


def calibrate(val_maps, min_area: int) -> dict:
    """Threshold t with every validation region (map > t) below min_area, as low as the maps allow.

    The largest region shrinks as t grows, so a binary search over the sorted distinct values finds it;
    at t = max(maps) nothing is left, so a threshold always exists (§3.i.9).
    """
    val_maps = np.asarray(val_maps, np.float32)
    if val_maps.size == 0:
        raise ValueError("no validation images to calibrate on; set data.val_fraction > 0")
    candidates = np.unique(val_maps)
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if largest_region(val_maps, candidates[mid]) < min_area:
            hi = mid
        else:
            lo = mid + 1
    # Halfway to the next map value: the same decisions on the validation maps, and no validation pixel
    # sits exactly on the threshold where a 1e-8 difference between runtimes would flip it.
    above = candidates[lo + 1] if lo + 1 < len(candidates) else candidates[lo] + max(abs(candidates[lo]), 1e-3) * 1e-3
    threshold = (float(candidates[lo]) + float(above)) / 2
    return {"pixel_threshold": threshold, "min_area": int(min_area), "n_validation_images": int(len(val_maps))}


def finetune_curves(val_maps, n_thresholds: int = 100) -> dict:
    """Number of regions and their mean/std area versus threshold (§3.f), to help choose min_area."""
    val_maps = np.asarray(val_maps)
    thresholds = np.linspace(float(val_maps.min()), float(val_maps.max()), n_thresholds, endpoint=False)
    count, mean, std = [], [], []
    for t in thresholds:
        areas = np.concatenate([region_areas(m > t) for m in val_maps])
        count.append(len(areas))
        mean.append(float(areas.mean()) if len(areas) else 0.0)
        std.append(float(areas.std()) if len(areas) else 0.0)
    return {"thresholds": thresholds, "n_regions": np.array(count), "mean_area": np.array(mean),
            "std_area": np.array(std)}


def areas_at(val_maps, threshold) -> np.ndarray:
    return np.concatenate([region_areas(m > threshold) for m in np.asarray(val_maps)])
