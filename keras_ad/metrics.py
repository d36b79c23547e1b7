"""Anomaly-detection metrics on scored data: image AUROC, pixel AUROC, AUPRO, F1-max.

Defective = positive class (docs/stack.md#01-9). ROC and PR curves come from scikit-learn, connected
regions from scikit-image; AUPRO follows the MVTec AD definition (mean per-region overlap against
the false-positive rate of normal pixels, integrated up to an FPR limit and divided by it).
"""

from __future__ import annotations

import numpy as np
from skimage.measure import label
from sklearn.metrics import precision_recall_curve, roc_auc_score


def _both_classes(y):
    y = np.asarray(y)
    return y.size > 0 and y.min() != y.max()


def image_auroc(labels, scores):
    """ROC AUC of image scores; NaN when only one class is present."""
    return float(roc_auc_score(labels, scores)) if _both_classes(labels) else float("nan")


def pixel_auroc(masks, maps):
    """ROC AUC over every pixel of every image; NaN without both normal and defective pixels."""
    masks = np.asarray(masks, bool).ravel()
    return float(roc_auc_score(masks, np.asarray(maps).ravel())) if _both_classes(masks) else float("nan")


def f1_max(labels, scores):
    """Best F1 over all image-score thresholds, and that threshold (score >= threshold = defective)."""
    if not _both_classes(labels):
        return float("nan"), float("nan")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return float(f1[best]), float(thresholds[best])


def pro_curve(masks, maps, max_thresholds=5000):
    """(FPR, PRO) points, FPR ascending, for thresholds t on `map >= t`.

    FPR = fraction of normal pixels at or above t; PRO = mean over ground-truth regions (8-connected
    components of each mask) of the fraction of the region at or above t.
    """
    masks = np.asarray(masks, bool)
    maps = np.asarray(maps, np.float64)
    regions = []
    for mask, amap in zip(masks, maps):
        labelled = label(mask, connectivity=2)
        regions += [np.sort(amap[labelled == k]) for k in range(1, labelled.max() + 1)]
    normal = np.sort(maps[~masks])
    if not regions or normal.size == 0:
        return None
    thresholds = np.unique(maps)[::-1]
    if thresholds.size > max_thresholds:
        thresholds = np.quantile(maps, np.linspace(1.0, 0.0, max_thresholds))
    fpr = (normal.size - np.searchsorted(normal, thresholds, "left")) / normal.size
    pro = np.mean([(r.size - np.searchsorted(r, thresholds, "left")) / r.size for r in regions], axis=0)
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], pro])


def aupro(masks, maps, fpr_limit=0.3):
    """Area under the PRO curve up to `fpr_limit`, divided by `fpr_limit` (1.0 = perfect)."""
    curve = pro_curve(masks, maps)
    if curve is None:
        return float("nan")
    fpr, pro = curve
    inside = fpr <= fpr_limit
    x, y = fpr[inside], pro[inside]
    if not inside.all():  # close the curve exactly at the limit by linear interpolation
        k = int(np.argmax(~inside))
        x0, x1, y0, y1 = fpr[k - 1], fpr[k], pro[k - 1], pro[k]
        y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0) if x1 > x0 else y1
        x, y = np.append(x, fpr_limit), np.append(y, y_limit)
    return float(np.trapezoid(y, x) / fpr_limit)


def summary(labels, scores, masks=None, maps=None, has_mask=None, fpr_limit=0.3):
    """image_auroc, pixel_auroc, aupro, f1_max and its threshold for one set of scored images."""
    labels = np.asarray(labels)
    f1, threshold = f1_max(labels, scores)
    out = {"image_auroc": image_auroc(labels, scores), "f1_max": f1, "f1_threshold": threshold,
           "pixel_auroc": float("nan"), "aupro": float("nan"), "n_images": int(labels.size),
           "n_defective": int(labels.sum())}
    if masks is not None:
        keep = np.ones(len(labels), bool) if has_mask is None else np.asarray(has_mask, bool)
        if keep.any():
            out["pixel_auroc"] = pixel_auroc(masks[keep], maps[keep])
            out["aupro"] = aupro(masks[keep], maps[keep], fpr_limit)
    return out


def decision_rates(labels, predicted):
    """TPR = TP / P and TNR = TN / N of an image-level decision (docs/methods/cae.md#3g)."""
    labels, predicted = np.asarray(labels, bool), np.asarray(predicted, bool)
    tpr = float((predicted & labels).sum() / labels.sum()) if labels.any() else float("nan")
    tnr = float((~predicted & ~labels).sum() / (~labels).sum()) if (~labels).any() else float("nan")
    return {"tpr": tpr, "tnr": tnr, "balanced_accuracy": (tpr + tnr) / 2}
