"""`keras-ad`: train, evaluate, calibrate, score, export, and write the demo data.

Exit codes: 0 success, 2 usage or input error (one line: what, where, how to fix), 1 unexpected error.
TensorFlow is imported only after the arguments and the config are validated.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import click

from keras_ad.errors import UsageError

OVERLAYS = "overlays"  # keras-ad score's folder of overlay images, inside --out

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def reports_usage_errors(command):
    """Turn a UsageError into `error: <message>` on stderr and exit code 2, without a traceback."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UsageError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; the last complete checkpoint is kept (resume with --resume)", err=True)
            sys.exit(130)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keras-ad")
def main():
    """Visual anomaly detection with Keras 3: train on good images, find defects, export the scorer."""


def _run_option(f):
    return click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
                        help="run folder written by `keras-ad train` (run.dir)")(f)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="YAML config (see configs/)")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="override a config value, e.g. --set train.epochs=5 (repeatable)")
@click.option("--overwrite", is_flag=True, help="replace an existing run folder")
@click.option("--resume", is_flag=True, help="continue the run from its last complete checkpoint")
@click.option("--no-evaluate", is_flag=True, help="skip calibration and evaluation after training")
@click.option("--workers", default=None, metavar="HOST:PORT,...",
              help="train on several machines: every worker's address, the same list on each; sets TF_CONFIG "
                   "and train.strategy=multiworker")
@click.option("--worker-index", type=click.IntRange(min=0), default=None,
              help="this machine's position in --workers; 0 is the chief, which writes run.dir and evaluates")
@reports_usage_errors
def train(config_path, overrides, overwrite, resume, no_evaluate, workers, worker_index):
    """Train a detector, then calibrate on validation images and evaluate on the test split."""
    from keras_ad import config as config_lib
    from keras_ad.runs import Run

    if overwrite and resume:
        raise UsageError("--overwrite and --resume exclude each other; choose one")
    if workers is not None or worker_index is not None:
        os.environ["TF_CONFIG"] = json.dumps(_cluster(workers, worker_index))
        overrides = (*overrides, "train.strategy=multiworker")
    cfg = config_lib.load(config_path, overrides)
    index = _worker_index()
    if index and cfg.train.strategy == "multiworker":  # not the chief: its own folder, no evaluation
        cfg = config_lib.load(config_path, (*overrides, f"run.dir={cfg.run_dir}.worker{index}"))
        no_evaluate = True
    if resume:
        cfg = _resume_in_place(config_path, overrides, cfg)
    run = Run.create(cfg, overwrite=overwrite, resume=resume)  # refusals come before TensorFlow loads

    from keras_ad import training

    training.train_run(cfg, run, resume=resume, evaluate=not no_evaluate)


def _cluster(workers, index):
    """TF_CONFIG of worker `index` of the comma-separated `workers`; worker 0 is the chief."""
    if workers is None or index is None:
        raise UsageError("--workers and --worker-index go together: give every worker's host:port and this "
                         "machine's index, e.g. --workers 10.0.0.1:12345,10.0.0.2:12345 --worker-index 0")
    addresses = [w.strip() for w in workers.split(",") if w.strip()]
    bad = [a for a in addresses if a.count(":") != 1 or not a.rsplit(":", 1)[1].isdigit()]
    if bad or not addresses:
        raise UsageError(f"--workers: {', '.join(bad) or repr(workers)} is not host:port; give e.g. "
                         f"10.0.0.1:12345,10.0.0.2:12345")
    if index >= len(addresses):
        raise UsageError(f"--worker-index {index}: --workers lists {len(addresses)} worker(s), so "
                         f"0..{len(addresses) - 1}")
    return {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}


def _worker_index() -> int:
    """This process's index in TF_CONFIG's cluster; 0 (the chief) without one."""
    return int(json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0))


def _resume_in_place(config_path, overrides, cfg):
    """`--config RUN/config.yaml --resume` resumes RUN where it is now, even when the run was moved or
    copied and its config still names the old run.dir (an explicit --set run.dir=... wins)."""
    from keras_ad import config as config_lib
    from keras_ad.runs import CONFIG, Run

    folder = os.path.dirname(os.path.abspath(config_path))
    if (os.path.basename(config_path) != CONFIG or not Run(folder).is_run
            or any(o.split("=", 1)[0].strip() == "run.dir" for o in overrides)
            or os.path.abspath(cfg.run_dir) == folder):
        return cfg
    return config_lib.load(config_path, (*overrides, f"run.dir={json.dumps(folder)}"))


@main.command()
@_run_option
@reports_usage_errors
def evaluate(run_dir):
    """Evaluate a trained run on its test split again (report.json, report.md, plots/)."""
    from keras_ad.runs import Run

    run = Run.open(run_dir)

    import keras_ad
    from keras_ad import evaluation

    scorer = keras_ad.load(run.path)
    evaluation.evaluate_run(run, scorer.cfg, scorer)
    click.echo(f"report: {run.file('report.md')}, {run.file('report.html')}")


@main.command()
@_run_option
@reports_usage_errors
def report(run_dir):
    """Rebuild the run's report.html from its files (metrics, plots, gallery); no TensorFlow needed."""
    from keras_ad import html_report
    from keras_ad.runs import Run

    run = Run.open(run_dir)
    if not os.path.isfile(run.file("report.json")):
        raise UsageError(f"{run.path}: not evaluated yet; run keras-ad evaluate --run {run_dir} first")
    click.echo(f"report: {html_report.write_run_report(run)}")


@main.command()
@_run_option
@click.option("--min-area", type=click.IntRange(min=1), default=None,
              help="minimum defect area in pixels at the model's size (default: calibrate.min_area)")
@reports_usage_errors
def calibrate(run_dir, min_area):
    """Choose the pixel threshold (and minimum defect area) from good validation images (docs/methods/cae.md#3e)."""
    from keras_ad.runs import Run

    run = Run.open(run_dir)

    import keras_ad
    from keras_ad import evaluation

    scorer = keras_ad.load(run.path)
    evaluation.calibrate_run(run, scorer.cfg, scorer, min_area)
    click.echo(f"plots: {run.file('plots', 'calibration.png')}")


@main.command()
@_run_option
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="folder for scores.csv and overlays (default: <run>/scores)")
@click.option("--overwrite", is_flag=True, help="replace the files of an existing --out folder")
@click.option("--no-overlays", is_flag=True, help="write only the CSV")
@click.option("--report", is_flag=True, help="also write report.html: the scored images as a gallery, sorted by score")
@click.option("--variant", default="default", show_default=True,
              help="scoring graph of the detector: anogan also has 'edge' (encoder, no search: what its "
                   "TFLite and ONNX exports run)")
@click.option("--labels", type=click.Path(dir_okay=False, exists=True), default=None,
              help="video detectors: per-frame 0/1 labels (.npy or .txt) of the one video given, shaded in the "
                   "plot (found by themselves for a testing/frames/<video> folder of the video layout)")
@reports_usage_errors
def score(run_dir, inputs, out_dir, overwrite, no_overlays, report, variant, labels):
    """Score image files or folders (recursively): scores.csv (path, score, is_anomalous, defect_area, status,
    overlay) and overlays/.
    A video detector's run scores frame folders or video files: one row per frame and a score-over-time plot."""
    from keras_ad import ownership
    from keras_ad.export import device
    from keras_ad.runs import Run

    run = Run.open(run_dir)
    missing = [p for p in inputs if not os.path.exists(p)]
    if missing:
        raise UsageError(f"{missing[0]}: no such file or folder")
    out_dir = os.path.abspath(out_dir or run.file("scores"))
    ownership.check_replaceable(out_dir, ownership.SCORES, overwrite, "--out", protected=(run.path, *inputs))

    if report and no_overlays:
        raise UsageError("--report shows the overlays: leave out --no-overlays")

    import numpy as np

    import keras_ad
    from keras_ad.data import pipeline
    from keras_ad.runs import atomic_write

    scorer = keras_ad.load(run.path, variant)
    if not scorer.calibration:
        raise UsageError(f"{run.path}: not calibrated; run keras-ad calibrate --run {run_dir}")
    if scorer.detector.clip_length and report:
        raise UsageError("--report: a video detector's scores are plotted over time (plots/); the gallery is "
                         "for images")
    if scorer.detector.clip_length:
        _score_videos(scorer, inputs, labels, out_dir)
        return
    if labels:
        raise UsageError(f"--labels: frame labels are for a video detector's runs; {run.path} scores images")
    try:
        paths = device.list_inputs(inputs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    failed = {}
    images, kept, _ = pipeline.load_images(paths, scorer.cfg.data, failed=failed)
    out = scorer.score_preprocessed(images)
    _start_scores_folder(out_dir)
    names = {}
    if not no_overlays and kept:  # the device scorer's --save-overlays draws the same files
        names = device.save_overlays(os.path.join(out_dir, OVERLAYS), kept, out["anomaly_map"], scorer.threshold,
                                     scorer.channels, scorer.cfg.data.center_crop)
    records = device.rows(paths, out, failed, names)
    atomic_write(os.path.join(out_dir, "scores.csv"), device.to_csv(records))
    if report:
        from keras_ad import html_report

        html_report.write_scores_report(out_dir, records, run.name, OVERLAYS)
    flagged = int(np.sum(out["is_anomalous"]))
    click.echo(f"scored {len(kept)} images, {flagged} anomalous -> {os.path.join(out_dir, 'scores.csv')}")
    if device.report_failures(records):
        sys.exit(1)


def _start_scores_folder(out_dir):
    """Empty a scores folder of an earlier `keras-ad score` (only its own files) and mark it as scores."""
    from keras_ad import ownership

    if os.path.isdir(out_dir):
        ownership.clear(out_dir, ownership.SCORES)
    ownership.mark(out_dir, ownership.SCORES)


def _score_videos(scorer, inputs, labels_path, out_dir):
    """Every frame folder or video file: scores.csv rows per scored frame, plots/<video>.png over time."""
    import numpy as np

    from keras_ad import plots, video_evaluation
    from keras_ad.runs import atomic_save, atomic_write

    if labels_path and len(inputs) != 1:
        raise UsageError("--labels: give exactly one video with it")
    lines = ["video,frame,psnr,score_offline,score_online,is_anomalous,defect_area"]
    _start_scores_folder(out_dir)
    for path in inputs:
        frames = video_evaluation.read_video_frames(path)
        labels = None if labels_path else video_evaluation.layout_labels(path)
        if labels_path:
            labels = np.load(labels_path) if labels_path.endswith(".npy") else np.loadtxt(labels_path)
            labels = labels.reshape(-1)
            if len(labels) != len(frames):
                raise UsageError(f"--labels: {len(labels)} labels for the {len(frames)} frames of {path}")
        r = video_evaluation.score_frames(scorer, frames, labels)
        name = os.path.basename(os.path.normpath(path))
        for i, frame in enumerate(r["frame"]):
            lines.append(f"{path},{frame},{r['psnr'][i]:.6g},{r['offline'][i]:.6g},{r['online'][i]:.6g},"
                         f"{int(r['is_anomalous'][i])},{int(r['defect_area'][i])}")
        trace = [(name, r["frame"], r["offline"], r["online"], r["labels"])]
        atomic_save(os.path.join(out_dir, f"{name}_scores_over_time.png"),
                    lambda p, t=trace: plots.scores_over_time(t, p, 1))
        click.echo(f"{path}: {len(r['frame'])} frames scored (clip centres), "
                   f"{int(np.sum(r['is_anomalous']))} anomalous")
    atomic_write(os.path.join(out_dir, "scores.csv"), "\n".join(lines) + "\n")
    click.echo(f"scores: {os.path.join(out_dir, 'scores.csv')}")


@main.command()
@_run_option
@click.option("--format", "formats", default="savedmodel,tflite,onnx", show_default=True,
              help="comma-separated: savedmodel, tflite, onnx")
@click.option("--quantize", default="none", show_default=True,
              help="TFLite variants, comma-separated: none (fp32), fp16, dynamic, int8 (int8 is calibrated on "
                   "good validation images; SSIM maps and post-processing stay float). ONNX stays fp32: "
                   "TensorRT quantises it on the device.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="export folder (default: exports/<run name>)")
@click.option("--overwrite", is_flag=True, help="replace an existing export folder")
@reports_usage_errors
def export(run_dir, formats, quantize, out_dir, overwrite):
    """Export the scoring graph, check every artefact against the Keras model, write metadata.json."""
    from keras_ad.export import FORMATS, QUANTIZE_MODES, ExportError, check_choices

    split = lambda text: tuple(v.strip() for v in text.split(",") if v.strip())  # noqa: E731
    formats = check_choices(split(formats), FORMATS, "--format")  # before TensorFlow loads
    quantize = check_choices(split(quantize), QUANTIZE_MODES, "--quantize")

    from keras_ad.export import bundle

    try:
        report = bundle.export_run(run_dir, formats, quantize, out_dir, overwrite)
    except ExportError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo(f"export: {report['folder']} (metadata.json, export_report.json)")
    if not report["passed"]:
        failed = [f"{name} ({', '.join(r['drifted'])})" for name, r in report["artefacts"].items() if not r["passed"]]
        click.echo(f"error: parity check failed for {'; '.join(failed)}; see export_report.json", err=True)
        sys.exit(1)


@main.command()
@click.option("--quick", is_flag=True, help="one timed step and a short timing per case (under 10 minutes here)")
@click.option("--detectors", default="cae,anogan,ganomaly2d,piad,lntra,patchcore", show_default=True,
              help="comma-separated detectors to measure")
@click.option("--settings", default="paper,small", show_default=True,
              help="comma-separated: paper (the paper's shipped config), small (the demo-sized one)")
@click.option("--out", default="bench.md", show_default=True, type=click.Path(dir_okay=False),
              help="markdown table to write")
@click.option("--overwrite", is_flag=True, help="replace an existing --out file")
@reports_usage_errors
def bench(quick, detectors, settings, out, overwrite):
    """Training and scoring speed of each detector (Keras and every export) against this machine's matmul limit."""
    from keras_ad import benchmark, ownership
    from keras_ad.export import check_choices

    split = lambda text: tuple(v.strip() for v in text.split(",") if v.strip())  # noqa: E731
    detectors = check_choices(split(detectors), tuple(benchmark.SETTINGS), "--detectors")
    settings = check_choices(split(settings), ("paper", "small"), "--settings")
    ownership.check_file_replaceable(out, "bench", overwrite, "--out")
    _, table = benchmark.run(detectors, settings, quick=quick, out=out)
    click.echo(table)
    click.echo(f"written to {out}")


@main.group()
def data():
    """Data set helpers."""


@data.command("synth")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="folder to write <category>/train, test, ground_truth into")
@click.option("--category", "categories", multiple=True, type=click.Choice(["object", "texture"]),
              help="which demo categories (default: all)")
@click.option("--kind", type=click.Choice(["images", "video"]), default="images", show_default=True,
              help="images: the MVTec-layout categories; video: the demo videos (LNTRA), into <out>/video")
@reports_usage_errors
def synth(out_dir, categories, kind):
    """Write the built-in synthetic demo data: MVTec-layout images, or videos with frame labels."""
    from keras_ad.data import synthetic, synthetic_video

    if kind == "video":
        if os.path.exists(os.path.join(out_dir, "video")):
            raise UsageError(f"{os.path.join(out_dir, 'video')}: exists; choose another --out or remove it")
        click.echo(f"wrote the demo videos to {synthetic_video.write(out_dir)}")
        return
    categories = categories or synthetic.CATEGORIES
    existing = [c for c in categories if os.path.exists(os.path.join(out_dir, c))]
    if existing:
        raise UsageError(f"{os.path.join(out_dir, existing[0])}: exists; choose another --out or remove it")
    synthetic.write(out_dir, categories)
    click.echo(f"wrote {', '.join(categories)} to {out_dir}")


if __name__ == "__main__":
    main()
