"""Evaluate and calibrate a trained run: metrics, reports and plots, all from `Scorer` outputs."""

from __future__ import annotations

import numpy as np

from keras_ad import gallery, html_report, metrics, plots, reports, video_evaluation
from keras_ad.data import layouts, pipeline
from keras_ad.reports import finish_calibration, fit_maps
from keras_ad.runs import atomic_save
from keras_ad.scoring import Scorer


def calibrate_run(run, cfg, scorer, min_area=None) -> dict:
    """docs/methods/cae.md#3e on the run's validation split (good images only); writes calibration.json and its
    plots."""
    if scorer.detector.clip_length:
        return video_evaluation.calibrate(run, cfg, scorer, min_area)
    min_area = min_area or cfg.calibrate.min_area
    files = layouts.discover(cfg.data, seed=cfg.train.seed, need_test=False)
    val_images, _, _ = pipeline.load_images(files.val, cfg.data, "validation images")
    if not len(val_images):
        from keras_ad.errors import UsageError

        raise UsageError(f"{run.path}: no validation images to calibrate on; train with data.val_fraction > 0")
    result, maps = fit_variant(scorer, cfg, "default", val_images, min_area)
    other_variants = [v for v in scorer.detector.variants if v != "default"]
    if other_variants:  # each scoring graph gets its own threshold on the same good images
        result["variants"] = {}
        for variant in other_variants:
            own, _ = fit_variant(scorer, cfg, variant, val_images, min_area)
            result["variants"][variant] = {k: v for k, v in own.items() if k not in ("min_area", "n_validation_images")}
    return finish_calibration(run, scorer, maps, result, f"{len(val_images)} good validation images")


def fit_variant(scorer, cfg, variant, images, min_area) -> tuple[dict, np.ndarray]:
    """`fit_maps` on the maps of pre-processed good `images` under an uncalibrated scorer of `variant` (a
    calibrated one would already normalise them)."""
    raw = Scorer(scorer.detector, cfg, variant=variant)
    return fit_maps(raw.score_preprocessed(images)["anomaly_map"], cfg, min_area, raw.region)


def evaluate_run(run, cfg, scorer) -> dict:
    """Score the test split, compute the metrics overall and per defect type, write report.json/.md and plots."""
    if scorer.detector.clip_length:
        report = reports.write_report(run, video_evaluation.evaluate(run, cfg, scorer))
        html_report.write_run_report(run)
        return report
    files = layouts.discover(cfg.data, seed=cfg.train.seed)
    test = pipeline.load_test_set(files, cfg.data)
    out = scorer.score_preprocessed(test["images"])
    labels, scores, maps = test["labels"], out["score"], out["anomaly_map"]
    masks, has_mask = test["masks"], test["has_mask"]
    fpr_limit = cfg.evaluate.pro_fpr_limit
    defects = np.array(test["defects"])

    report = {"run": run.name, "detector": cfg.detector.name, "data_root": files.root,
              "n_monitor_images": len(files.monitor),
              "caveats": list(scorer.detector.caveats),
              **metrics.summary(labels, scores, masks, maps, has_mask, fpr_limit), "per_defect": {}}
    for defect in sorted(set(defects) - {layouts.GOOD}):
        keep = (defects == defect) | (labels == 0)
        report["per_defect"][defect] = metrics.summary(labels[keep], scores[keep], masks[keep], maps[keep],
                                                       has_mask[keep], fpr_limit)
    if scorer.calibration:
        report["calibrated_decision"] = {**scorer.calibration, **metrics.decision_rates(labels, out["is_anomalous"])}
    variants = [v for v in scorer.detector.variants if v != scorer.variant]
    if variants:
        report["variants"] = {v: _variant_summary(scorer, cfg, v, test, fpr_limit) for v in variants}
    _plots(run, cfg, scorer, test, out, report)
    gallery.write(run, test, out, scorer.threshold, cfg.data.center_crop, cfg.data.channels,
                  cfg.evaluate.gallery_images)
    report = reports.write_report(run, report)
    html_report.write_run_report(run)
    return report


def _variant_summary(scorer, cfg, variant, test, fpr_limit) -> dict:
    """The metrics of another scoring graph of the same detector (AnoGAN's edge variant) on the same images."""
    other = Scorer(scorer.detector, cfg, scorer.run_calibration, variant=variant)
    out = other.score_preprocessed(test["images"])
    result = metrics.summary(test["labels"], out["score"], test["masks"], out["anomaly_map"], test["has_mask"],
                             fpr_limit)
    if other.calibration:
        rates = metrics.decision_rates(test["labels"], out["is_anomalous"])
        result["calibrated_decision"] = {**other.calibration, **rates}
    return result


def _plots(run, cfg, scorer, test, out, report):
    labels, defects = test["labels"], np.array(test["defects"])
    curves = {"all": (labels, out["score"])}
    for defect in report["per_defect"]:
        keep = (defects == defect) | (labels == 0)
        curves[defect] = (labels[keep], out["score"][keep])
    atomic_save(run.file("plots", "roc.png"), lambda p: plots.roc_curves(curves, p, "image ROC (AUROC)"))
    decided = out.get("is_anomalous")
    atomic_save(run.file("plots", "score_histogram.png"),
                lambda p: plots.score_histogram(out["score"], labels, p, report["f1_threshold"], decided=decided))
    has_mask = test["has_mask"]
    if np.isfinite(report["pixel_auroc"]):
        atomic_save(run.file("plots", "pixel_curves.png"),
                    lambda p: plots.pixel_curves(test["masks"][has_mask], out["anomaly_map"][has_mask],
                                                 cfg.evaluate.pro_fpr_limit, p, report["pixel_auroc"], report["aupro"]))
    rows = _pick_overlay_rows(defects, cfg.evaluate.overlay_images)
    if not rows:
        return
    # a patch model reconstructs windows, not whole images: its rows show the stitched map only
    panels = {} if cfg.data.patch_size else scorer.detector.sample_panels(test["images"][rows])
    predicted = None
    if scorer.calibration:
        predicted = out["anomaly_map"][rows] > scorer.calibration["pixel_threshold"]
    items = []
    for k, i in enumerate(rows):
        item = {"image": test["images"][i], "anomaly map": out["anomaly_map"][i], "ground truth": test["masks"][i],
                "defect": defects[i], "score": float(out["score"][i])}
        if "reconstruction" in panels:
            item["reconstruction"] = np.asarray(panels["reconstruction"][k])
        if predicted is not None:
            item["predicted"] = predicted[k]
        items.append(item)
    vmax = float(np.percentile(out["anomaly_map"], 99.9)) or 1.0
    atomic_save(run.file("plots", "overlays.png"), lambda p: plots.overlay_grid(items, p, vmax))


def _pick_overlay_rows(defects, n):
    """Up to n test images, taken in turn from each defect type and good, in file order."""
    groups = [list(np.nonzero(defects == d)[0]) for d in sorted(set(defects))]
    rows = []
    while len(rows) < n and any(groups):
        for g in groups:
            if g and len(rows) < n:
                rows.append(int(g.pop(0)))
    return sorted(rows)


