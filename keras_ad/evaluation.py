"""Evaluate and calibrate a trained run: metrics, reports and plots, all from `Scorer` outputs."""

from __future__ import annotations

import math

import numpy as np

from keras_ad import calibration, metrics, plots
from keras_ad.data import layouts, pipeline
from keras_ad.runs import REPORT, atomic_save, atomic_write, write_json
from keras_ad.scoring import Scorer

METRIC_KEYS = ("image_auroc", "pixel_auroc", "aupro", "f1_max")


def calibrate_run(run, cfg, scorer, min_area=None) -> dict:
    """docs/methods/cae.md#3e on the run's validation split (good images only); writes calibration.json and its plots."""
    if scorer.detector.clip_length:
        from keras_ad import video_evaluation

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


def fit_maps(maps, cfg, min_area, region) -> tuple[dict, np.ndarray]:
    """calibration.fit with the config's normalisation; (its result, the maps the threshold saw)."""
    try:
        return calibration.fit(maps, min_area, cfg.postprocess.normalize, region)
    except ValueError as e:
        from keras_ad.errors import UsageError

        raise UsageError(str(e)) from None


def finish_calibration(run, scorer, maps, result, what) -> dict:
    """Write calibration.json and its plots (docs/methods/cae.md#3f), give the scorer the result, say what it came from."""
    curves = calibration.finetune_curves(maps)
    t = result["pixel_threshold"]
    hists = {f"t = {f:g}·threshold": calibration.areas_at(maps, f * t) for f in (0.5, 0.75, 0.9, 1.0)}
    atomic_save(run.file("plots", "calibration.png"), lambda p: plots.finetune_plots(curves, hists, result, p))
    run.write_calibration(result)
    scorer.calibration = result
    normalized = ", maps normalised per pixel (leave-one-out)" if "map_mean" in result else ""
    print(f"calibrated on {what}: pixel threshold {t:.6g}, min area {result['min_area']} px{normalized}", flush=True)
    return result


def evaluate_run(run, cfg, scorer) -> dict:
    """Score the test split, compute the metrics overall and per defect type, write report.json/.md and plots."""
    if scorer.detector.clip_length:
        from keras_ad import video_evaluation

        return _write_report(run, video_evaluation.evaluate(run, cfg, scorer))
    files = layouts.discover(cfg.data, seed=cfg.train.seed)
    test = pipeline.load_test_set(files, cfg.data)
    out = scorer.score_preprocessed(test["images"])
    labels, scores, maps = test["labels"], out["score"], out["anomaly_map"]
    masks, has_mask = test["masks"], test["has_mask"]
    fpr_limit = cfg.evaluate.pro_fpr_limit
    defects = np.array(test["defects"])

    report = {"run": run.name, "detector": cfg.detector.name, "data_root": files.root,
              "caveats": list(scorer.detector.caveats), **metrics.summary(labels, scores, masks, maps, has_mask, fpr_limit), "per_defect": {}}
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
    return _write_report(run, report)


def _write_report(run, report) -> dict:
    write_json(run.file(REPORT), report)
    atomic_write(run.file("report.md"), markdown_report(report))
    print(summary_table(report), flush=True)
    return report


def _variant_summary(scorer, cfg, variant, test, fpr_limit) -> dict:
    """The metrics of another scoring graph of the same detector (AnoGAN's edge variant) on the same images."""
    other = Scorer(scorer.detector, cfg, scorer.run_calibration, variant=variant)
    out = other.score_preprocessed(test["images"])
    result = metrics.summary(test["labels"], out["score"], test["masks"], out["anomaly_map"], test["has_mask"], fpr_limit)
    if other.calibration:
        result["calibrated_decision"] = {**other.calibration, **metrics.decision_rates(test["labels"], out["is_anomalous"])}
    return result


def _plots(run, cfg, scorer, test, out, report):
    labels, defects = test["labels"], np.array(test["defects"])
    curves = {"all": (labels, out["score"])}
    for defect in report["per_defect"]:
        keep = (defects == defect) | (labels == 0)
        curves[defect] = (labels[keep], out["score"][keep])
    atomic_save(run.file("plots", "roc.png"), lambda p: plots.roc_curves(curves, p, "image ROC (AUROC)"))
    atomic_save(run.file("plots", "score_histogram.png"),
                lambda p: plots.score_histogram(out["score"], labels, p, report["f1_threshold"]))
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


def _fmt(value):
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def summary_table(report) -> str:
    lines = [f"{'':>12} " + " ".join(f"{k:>12}" for k in METRIC_KEYS)]
    lines.append(f"{'all':>12} " + " ".join(f"{_fmt(report[k]):>12}" for k in METRIC_KEYS))
    for defect, r in report["per_defect"].items():
        lines.append(f"{defect:>12} " + " ".join(f"{_fmt(r[k]):>12}" for k in METRIC_KEYS))
    for variant, r in report.get("variants", {}).items():
        lines.append(f"{variant + ' variant':>12} " + " ".join(f"{_fmt(r[k]):>12}" for k in METRIC_KEYS))
    decision = report.get("calibrated_decision")
    if decision:
        lines.append(f"calibrated decision (threshold {decision['pixel_threshold']:.6g}, min area "
                     f"{decision['min_area']}): TPR {_fmt(decision['tpr'])}  TNR {_fmt(decision['tnr'])}")
    if "frame_auroc_offline" in report:
        lines.append(f"frame AUROC: offline (per-video min-max) {_fmt(report['frame_auroc_offline'])}  "
                     f"online (normal PSNR range) {_fmt(report['frame_auroc_online'])}")
    lines += [f"caveat: {caveat}" for caveat in report.get("caveats", [])]
    return "\n".join(lines)


def markdown_report(report) -> str:
    out = [f"# Evaluation of run `{report['run']}` ({report['detector']})", "",
           f"Data: `{report['data_root']}`; {report['n_images']} test images, {report['n_defective']} defective.", "",
           *[f"> Caveat: {caveat}\n" for caveat in report.get("caveats", [])],
           "| subset | images | " + " | ".join(METRIC_KEYS) + " |",
           "|---|---|" + "---|" * len(METRIC_KEYS)]
    rows = [("all", report)] + list(report["per_defect"].items())
    for name, r in rows:
        out.append(f"| {name} | {r['n_images']} | " + " | ".join(_fmt(r[k]) for k in METRIC_KEYS) + " |")
    for variant, r in report.get("variants", {}).items():
        out.append(f"| {variant} variant (all) | {r['n_images']} | " + " | ".join(_fmt(r[k]) for k in METRIC_KEYS) + " |")
    decision = report.get("calibrated_decision")
    if decision:
        out += ["", f"Calibrated decision (pixel threshold {decision['pixel_threshold']:.6g}, minimum defect area "
                    f"{decision['min_area']} px, from {decision['n_validation_images']} good validation images): "
                    f"TPR {_fmt(decision['tpr'])}, TNR {_fmt(decision['tnr'])}."]
    if "frame_auroc_offline" in report:
        out += ["", f"Frame-level ROC AUC over all test videos (docs/methods/lntra.md#5e): offline, the paper's per-video min-max "
                    f"normalisation, {_fmt(report['frame_auroc_offline'])}; online, each frame against the PSNR "
                    f"range of normal clips, {_fmt(report['frame_auroc_online'])}. The table's image AUROC is the "
                    f"offline one; pixel metrics use the centre frames' error maps.",
                "", "Plots: `plots/scores_over_time.png`.", ""]
        return "\n".join(out)
    out += ["", "Plots: `plots/roc.png`, `plots/score_histogram.png`, `plots/overlays.png`, `plots/calibration.png`.", ""]
    return "\n".join(out)
