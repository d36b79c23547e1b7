"""The run report's gallery: test images as overlays (docs/report.md#gallery) and the rows that describe them.

Each row: `file` (the overlay, under the gallery folder), `path` (the source image), `kind` (defect type,
"good", or None when unknown), `label`, `score`, `decision` (the calibrated decision, None before
calibration), `area` (defect pixels) and `flag` ("false positive" / "false negative" / None).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from keras_ad.export import device
from keras_ad.runs import atomic_write

FOLDER = "gallery"  # inside the run (ownership.RUN lists it)
ROWS = "gallery.json"


def pick(labels, scores, kinds, limit: int) -> list[int]:
    """Every test image when there are at most `limit`; else the worst of each kind, limit // kinds each:
    the highest-scored good images and the lowest-scored defective ones (the likely misses)."""
    if len(scores) <= limit:
        return list(range(len(scores)))
    kinds = np.asarray(kinds)
    per_kind = max(1, limit // len(set(kinds)))
    chosen = []
    for kind in sorted(set(kinds)):
        members = np.nonzero(kinds == kind)[0]
        order = np.argsort(scores[members])
        worst = order[::-1] if labels[members[0]] == 0 else order  # good: highest first; defective: lowest
        chosen += members[worst[:per_kind]].tolist()
    return sorted(chosen)


def flag(label, decision) -> str | None:
    if label is None or decision is None:
        return None
    if decision and not label:
        return "false positive"
    if label and not decision:
        return "false negative"
    return None


def write(run, test: dict, out: dict, threshold: float | None, center_crop, channels: int, limit: int) -> list[dict]:
    """Overlays of the picked test images under <run>/gallery and their rows in gallery.json; returns the rows.
    `threshold`: the calibrated pixel threshold (None: the maps' 99th percentile, for colour only)."""
    labels, scores = np.asarray(test["labels"]), np.asarray(out["score"])
    picked = pick(labels, scores, test["defects"], limit)
    colour_threshold = threshold if threshold is not None else float(np.percentile(out["anomaly_map"], 99)) or 1.0
    paths = [test["paths"][i] for i in picked]
    truths = [test["masks"][i] if labels[i] and test["has_mask"][i] else None for i in picked]
    folder = run.file(FOLDER)
    shutil.rmtree(folder, ignore_errors=True)  # an earlier evaluation's overlays
    names = device.save_overlays(folder, paths, out["anomaly_map"][picked], colour_threshold, channels, center_crop,
                                 truths, outline_predicted=threshold is not None)
    rows = []
    for i, path in zip(picked, paths):
        decision = bool(out["is_anomalous"][i]) if "is_anomalous" in out else None
        rows.append({"file": names[path], "path": path, "kind": test["defects"][i], "label": int(labels[i]),
                     "score": float(scores[i]), "decision": decision,
                     "area": int(out["defect_area"][i]) if "defect_area" in out else None,
                     "flag": flag(int(labels[i]), decision)})
    atomic_write(os.path.join(folder, ROWS), json.dumps(rows, indent=1))
    return rows


def read(run) -> list[dict]:
    return run.read_json(os.path.join(FOLDER, ROWS)) or []
