"""What calibration and evaluation write into a run, for image and video detectors alike: calibration.json
with its plots, report.json, report.md and the terminal table."""

from __future__ import annotations

import math

import numpy as np

from keras_ad import calibration, plots
from keras_ad.runs import REPORT, atomic_save, atomic_write, write_json

METRIC_KEYS = ("image_auroc", "pixel_auroc", "aupro", "f1_max")


def fit_maps(maps, cfg, min_area, region) -> tuple[dict, np.ndarray]:
    """calibration.fit with the config's normalisation; (its result, the maps the threshold saw)."""
    try:
        return calibration.fit(maps, min_area, cfg.postprocess.normalize, region)
    except ValueError as e:
        from keras_ad.errors import UsageError

        raise UsageError(str(e)) from None


def finish_calibration(run, scorer, maps, result, what) -> dict:
    """Write calibration.json and its plots (docs/methods/cae.md#3f), give the scorer the result, say what it came
    from."""
    curves = calibration.finetune_curves(maps)
    t = result["pixel_threshold"]
    hists = {f"t = {f:g}·threshold": calibration.areas_at(maps, f * t) for f in (0.5, 0.75, 0.9, 1.0)}
    atomic_save(run.file("plots", "calibration.png"), lambda p: plots.finetune_plots(curves, hists, result, p))
    run.write_calibration(result)
    scorer.calibration = result
    normalized = ", maps normalised per pixel (leave-one-out)" if "map_mean" in result else ""
    print(f"calibrated on {what}: pixel threshold {t:.6g}, min area {result['min_area']} px{normalized}", flush=True)
    return result


def write_report(run, report) -> dict:
    write_json(run.file(REPORT), report)
    atomic_write(run.file("report.md"), markdown_report(report))
    print(summary_table(report), flush=True)
    return report


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
        cells = " | ".join(_fmt(r[k]) for k in METRIC_KEYS)
        out.append(f"| {variant} variant (all) | {r['n_images']} | {cells} |")
    decision = report.get("calibrated_decision")
    if decision:
        out += ["", f"Calibrated decision (pixel threshold {decision['pixel_threshold']:.6g}, minimum defect area "
                    f"{decision['min_area']} px, from {decision['n_validation_images']} good validation images): "
                    f"TPR {_fmt(decision['tpr'])}, TNR {_fmt(decision['tnr'])}."]
    if "frame_auroc_offline" in report:
        out += ["", "Frame-level ROC AUC over all test videos (docs/methods/lntra.md#5e): offline, the paper's "
                    "per-video min-max "
                    f"normalisation, {_fmt(report['frame_auroc_offline'])}; online, each frame against the PSNR "
                    f"range of normal clips, {_fmt(report['frame_auroc_online'])}. The table's image AUROC is the "
                    f"offline one; pixel metrics use the centre frames' error maps.",
                "", "Plots: `plots/scores_over_time.png`.", ""]
        return "\n".join(out)
    out += ["", "Plots: `plots/roc.png`, `plots/score_histogram.png`, `plots/overlays.png`, "
                "`plots/calibration.png`.", ""]
    return "\n".join(out)
