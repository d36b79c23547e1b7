"""Threshold and minimum defect area from good validation images only (docs/methods/cae.md#3e, docs/methods/cae.md#3f).

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
    at t = max(maps) nothing is left, so a threshold always exists (docs/methods/cae.md#3i-9).
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


SPREAD_FLOOR = 0.1  # the per-pixel spread's floor, a share of its mean over the region (docs/protocol.md)


def map_statistics(val_maps, region=None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, denominator) [H, W] of good validation maps for `postprocess.normalize: per_pixel`: the
    denominator is the per-pixel standard deviation plus SPREAD_FLOOR of its mean over the region, so
    pixels that never vary (background, a masked-out area) do not divide by ~0."""
    maps = np.asarray(val_maps, np.float64)
    if len(maps) < 2:
        raise ValueError("postprocess.normalize: per_pixel needs at least 2 validation images for a spread; "
                         "raise data.val_fraction")
    mean, spread = maps.mean(0), maps.std(0)
    inside = spread[region > 0] if region is not None else spread
    floor = SPREAD_FLOOR * float(inside.mean()) + 1e-12
    return mean.astype(np.float32), (spread + floor).astype(np.float32)


def leave_one_out_normalized(val_maps, region=None) -> np.ndarray:
    """Each validation map normalised by the statistics of all the others: what a new good image's
    normalised map looks like, so the threshold chosen on them is not fitted to the statistics' own data."""
    maps = np.asarray(val_maps, np.float64)
    n = len(maps)
    _, denominator = map_statistics(maps, region)
    floor = (denominator - maps.std(0)).astype(np.float64)
    total, squares = maps.sum(0), np.square(maps).sum(0)
    out = np.empty(maps.shape, np.float32)
    for i, x in enumerate(maps):
        mean = (total - x) / (n - 1)
        spread = np.sqrt(np.maximum((squares - x * x) / (n - 1) - mean * mean, 0.0))
        out[i] = np.maximum((x - mean) / (spread + floor), 0.0)
    return out


def fit(val_maps, min_area: int, normalize: str = "none", region=None) -> tuple[dict, np.ndarray]:
    """(calibration, the maps its threshold was chosen on) from good validation maps as the detector and
    smoothing give them; `normalize: per_pixel` adds the map statistics ("map_mean", "map_denominator")
    and chooses the threshold on leave-one-out normalised maps."""
    if normalize != "per_pixel":
        return calibrate(val_maps, min_area), np.asarray(val_maps, np.float32)
    mean, denominator = map_statistics(val_maps, region)
    held_out = leave_one_out_normalized(val_maps, region)
    result = calibrate(held_out, min_area)
    result.update(map_mean=mean, map_denominator=denominator)
    return result, held_out


def finetune_curves(val_maps, n_thresholds: int = 100) -> dict:
    """Number of regions and their mean/std area versus threshold (docs/methods/cae.md#3f), to help choose min_area."""
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
