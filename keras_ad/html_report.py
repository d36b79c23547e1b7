"""report.html: one self-contained page per run, or per `keras-ad score --report` folder (docs/report.md).

Inline CSS and a few lines of inline script (the gallery's filters), images as files beside the page:
nothing is fetched from the network. Built from the files a run already holds (report.json,
calibration.json, config.yaml, plots/, samples/, gallery/), so `keras-ad report` rebuilds it without
TensorFlow.
"""

from __future__ import annotations

import glob
import html
import math
import os
from urllib.parse import quote

from keras_ad import gallery
from keras_ad.runs import CALIBRATION, CONFIG, REPORT, atomic_write

PAGE = "report.html"
METRICS = (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"), ("f1_max", "F1-max"))
# (file under the run, caption) in the order a reader wants them: the curves before the gallery, the
# training-time grids after it
CURVES = (
    ("plots/roc.png", "Image ROC, overall and per defect type (AUROC in the legend)."),
    ("plots/score_histogram.png", "Image scores of good and defective test images; the ticks along the bottom "
                                  "are the calibrated decision (red: anomalous)."),
    ("plots/pixel_curves.png", "Pixel ROC and the PRO curve up to the AUPRO limit."),
    ("plots/calibration.png", "Calibration on good validation images: regions and their areas against the "
                              "pixel threshold; the dashed lines are the calibrated threshold and minimum area."),
    ("plots/scores_over_time.png", "Frame scores over time per test video; labelled anomalous frames shaded."),
)
GRIDS = (("plots/overlays.png", "Image, reconstruction, anomaly map, ground truth and prediction for a few "
                                "test images, at the model's input size."),)
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;padding:16px 24px;
color:#1b1f24;background:#fff}h1{font-size:22px;margin:4px 0}h2{font-size:17px;margin:28px 0 8px;
border-bottom:1px solid #d0d7de;padding-bottom:4px}.sub{color:#57606a}.cards{display:flex;gap:12px;flex-wrap:wrap;
margin:14px 0}.card-metric{border:1px solid #d0d7de;border-radius:8px;padding:10px 16px;min-width:120px}
.card-metric b{display:block;font-size:24px}.caveat{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;
padding:6px 10px;margin:6px 0}table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:4px 10px;
text-align:right}th:first-child,td:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:8px 20px;align-items:flex-start}figure{margin:8px 0;max-width:100%}
figure img{max-width:100%;
border:1px solid #eee}figcaption{color:#57606a;font-size:13px}.filters button{margin:0 6px 6px 0;padding:4px 10px;
border:1px solid #d0d7de;border-radius:14px;background:#f6f8fa;cursor:pointer}.filters button.on{background:#0969da;
color:#fff}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:12px}
.item{border:1px solid #d0d7de;border-radius:6px;padding:6px;font-size:12px}.item img{width:100%;
image-rendering:pixelated}.item.flagged{border:2px solid #cf222e}.tag{display:inline-block;border-radius:8px;
padding:0 6px;margin-right:4px;background:#eaeef2}.tag.bad{background:#cf222e;color:#fff}.tag.anom{background:#fb8500;
color:#fff}pre{background:#f6f8fa;padding:10px;overflow:auto}
"""
SCRIPT = """
function pick(button){
  document.querySelectorAll('.filters button').forEach(b=>b.classList.toggle('on',b===button));
  const tag=button.dataset.tag;let shown=0;
  document.querySelectorAll('.item').forEach(i=>{const on=tag==='all'||i.dataset.tags.split(' ').includes(tag);
    i.style.display=on?'':'none';shown+=on;});
  document.getElementById('shown').textContent=shown;
}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _num(value, digits=4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else _e(value)


def _slug(text) -> str:
    return "".join(c if c.isalnum() else "-" for c in str(text).lower())


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + f"\n<script>{SCRIPT}</script></body></html>\n")


def _metric_cards(report: dict) -> str:
    cards = [f"<div class=\"card-metric\">{label}<b>{_num(report.get(key))}</b></div>"
             for key, label in METRICS if report.get(key) is not None]
    decision = report.get("calibrated_decision")
    if decision:
        cards.append(f"<div class=\"card-metric\">calibrated decision<b>TPR {_num(decision.get('tpr'), 2)} · "
                     f"TNR {_num(decision.get('tnr'), 2)}</b>threshold {decision['pixel_threshold']:.6g}, "
                     f"min area {decision['min_area']} px</div>")
    for key, label in (("frame_auroc_offline", "frame AUROC offline"), ("frame_auroc_online", "frame AUROC online")):
        if key in report:
            cards.append(f"<div class=\"card-metric\">{label}<b>{_num(report[key])}</b></div>")
    return f"<div class=\"cards\">{''.join(cards)}</div>"


def _metrics_table(report: dict) -> str:
    rows = [("all", report)] + list(report.get("per_defect", {}).items())
    rows += [(f"{name} variant", r) for name, r in report.get("variants", {}).items()]
    head = "".join(f"<th>{label}</th>" for _, label in METRICS)
    body = "".join(f"<tr><td>{_e(name)}</td>" + "".join(f"<td>{_num(r.get(k))}</td>" for k, _ in METRICS)
                   + f"<td>{_num(r.get('n_images'))}</td><td>{_num(r.get('n_defective'))}</td></tr>"
                   for name, r in rows)
    return (f"<table id=\"metrics\"><tr><th></th>{head}<th>images</th><th>defective</th></tr>{body}</table>")


def _figures(folder: str, figures) -> str:
    """The figures of `figures` ((file, caption)) that the folder holds, side by side where they fit."""
    out = [f"<figure><img src=\"{quote(name)}\" alt=\"{_e(name)}\"><figcaption>{_e(caption)}</figcaption></figure>"
           for name, caption in figures if os.path.isfile(os.path.join(folder, name))]
    return f"<div class=\"figs\">{''.join(out)}</div>"


def _last_samples(folder: str) -> tuple:
    samples = sorted(glob.glob(os.path.join(folder, "samples", "epoch-*.png")))
    return ((os.path.relpath(samples[-1], folder), "The last training epoch's samples."),) if samples else ()


FLAG_TAGS = {"false positive": "fp", "false negative": "fn"}


def _tags(row) -> list[str]:
    """The filter tags of one gallery card: its decision, its mistake if any, its kind if known."""
    tags = ["anomalous" if row.get("decision") else "passed"]
    tags += [FLAG_TAGS[row["flag"]]] if row.get("flag") else []
    return tags + ([f"kind-{_slug(row['kind'])}"] if row.get("kind") else [])


def _gallery(rows: list[dict], image_folder: str, note: str) -> list[str]:
    """Cards sorted by score, highest first, with filters by decision, mistakes and kind."""
    rows = sorted(rows, key=lambda r: -r["score"])
    tags = [_tags(r) for r in rows]
    kinds = sorted({r["kind"] for r in rows if r.get("kind")})
    mistakes = [("fp", "false positives"), ("fn", "false negatives")] if kinds else []  # labelled images only
    filters = [("all", "all"), ("anomalous", "decided anomalous"), *mistakes] + [(f"kind-{_slug(k)}", k)
                                                                               for k in kinds]
    counts = {tag: sum(tag in t for t in tags) for tag, _ in filters}
    counts["all"] = len(rows)
    buttons = "".join(f"<button data-tag=\"{tag}\" onclick=\"pick(this)\"{' class=on' if tag == 'all' else ''}>"
                      f"{_e(label)} ({counts[tag]})</button>" for tag, label in filters)
    items = []
    for r, card_tags in zip(rows, tags):
        badges = f"<span class=\"tag bad\">{_e(r['flag'])}</span>" if r.get("flag") else ""
        if r.get("decision") is not None:
            badges += (f"<span class=\"tag{' anom' if r['decision'] else ''}\">"
                       f"{'anomalous' if r['decision'] else 'good'}</span>")
        truth = f"truth: {_e(r['kind'])} · " if r.get("kind") else ""
        area = f" · area {r['area']} px" if r.get("area") is not None else ""
        items.append(f"<div class=\"item{' flagged' if r.get('flag') else ''}\" data-tags=\"{' '.join(card_tags)}\">"
                     f"<img loading=\"lazy\" src=\"{quote(image_folder + '/' + r['file'])}\" alt=\"{_e(r['file'])}\">"
                     f"<div>{badges}</div><div>{truth}score {r['score']:.5g}{area}</div>"
                     f"<div class=\"sub\" title=\"{_e(r['path'])}\">{_e(r['file'])}</div></div>")
    return [f"<h2 id=\"gallery\">Gallery</h2><p class=\"sub\">{_e(note)} Showing <span id=\"shown\">{len(rows)}"
            f"</span> of {len(rows)}, highest score first; each overlay is the anomaly map over the image (colour "
            f"bar: the calibrated threshold at its tick), predicted regions outlined in blue, ground truth in "
            f"green.</p>", f"<div class=\"filters\">{buttons}</div>", f"<div class=\"grid\">{''.join(items)}</div>"]


def write_run_report(run) -> str:
    """<run>/report.html from the run's files; returns its path."""
    report = run.read_json(REPORT) or {}
    calibration = run.read_json(CALIBRATION) or {}
    config = open(run.file(CONFIG)).read() if os.path.isfile(run.file(CONFIG)) else ""
    rows = gallery.read(run)
    n_images, n_defective = report.get("n_images"), report.get("n_defective")
    data = (f"{n_images} test images ({n_defective} defective, {n_images - n_defective} good)"
            if n_images is not None and n_defective is not None else "not evaluated yet")
    if report.get("n_monitor_images"):
        data += (f"; {report['n_monitor_images']} labelled images held out of the test split for the per-epoch "
                 f"val_image_auroc (data.monitor_fraction)")
    if calibration.get("n_validation_images"):
        data += f"; calibrated on {calibration['n_validation_images']} good validation images"
    body = [f"<h1>{_e(report.get('detector', 'keras_ad'))} · {_e(run.name)}</h1>",
            f"<div class=\"sub\">data: {_e(report.get('data_root', ''))} · {_e(data)}</div>",
            *(f"<div class=\"caveat\">{_e(c)}</div>" for c in report.get("caveats", [])),
            _metric_cards(report), "<h2>Metrics</h2>", _metrics_table(report) if report else "<p>none yet</p>",
            "<h2>Curves</h2>", _figures(run.path, CURVES)]
    if rows:
        limited = (f"The {len(rows)} test images shown are the worst of each kind (evaluate.gallery_images)."
                   if n_images and len(rows) < n_images else "Every test image.")
        body += _gallery(rows, gallery.FOLDER, limited)
    body += ["<h2>Training samples and overlay grid</h2>", _figures(run.path, GRIDS + _last_samples(run.path)),
             "<h2>Configuration</h2>", f"<details><summary>config.yaml</summary><pre>{_e(config)}</pre></details>"]
    path = run.file(PAGE)
    atomic_write(path, _page(f"keras_ad report: {run.name}", body))
    return path


def write_scores_report(out_dir: str, records: list[dict], run_name: str, overlay_folder: str) -> str:
    """report.html of a `keras-ad score` folder: the scored images as a gallery; returns its path."""
    rows = [{"file": r["overlay"], "path": r["path"], "kind": None, "score": r["score"],
             "decision": bool(r["is_anomalous"]), "area": r["defect_area"], "flag": None}
            for r in records if r["status"] == "ok" and r.get("overlay")]
    failed = [r for r in records if r["status"] != "ok"]
    body = [f"<h1>keras-ad score · {_e(run_name)}</h1>",
            f"<div class=\"sub\">{len(rows)} images scored, {sum(r['decision'] for r in rows)} anomalous"
            f"{f', {len(failed)} unreadable (scores.csv says why)' if failed else ''}</div>"]
    body += _gallery(rows, overlay_folder, "Scored with the run's calibrated decision.")
    path = os.path.join(out_dir, PAGE)
    atomic_write(path, _page(f"keras_ad scores: {run_name}", body))
    return path
