"""`keras-ad export`: write, verify and describe every requested artefact of one run in one folder.

The folder is assembled in a temporary sibling and renamed into place at the end, so a failed
export leaves nothing behind. It carries keras_ad's export marker, and `overwrite` replaces only a
marked export: never a run (the exported one included) nor a folder of someone else's files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile

import numpy as np
import tensorflow as tf

import keras_ad
from keras_ad import calibration, ownership
from keras_ad.errors import UsageError
from keras_ad.export import FORMATS, QUANTIZE_MODES, check_choices, device, native_output_silenced, parity, savedmodel
from keras_ad.runs import REPORT, Run, write_json
from keras_ad.scoring import Scorer

SAVEDMODEL_DIR = "saved_model"
DEVICE_SCRIPT = "keras_ad_device.py"
DEVICE_REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "device_requirements.txt")
N_PARITY_IMAGES = 8
N_INT8_CALIBRATION_IMAGES = 100


def tflite_name(quantize: str) -> str:
    return f"model_{'fp32' if quantize == 'none' else quantize}.tflite"


def export_run(run_dir, formats=FORMATS, quantize=("none",), out_dir=None, overwrite=False) -> dict:
    """Export run `run_dir` to `out_dir` (default exports/<run name>); returns export_report.json's content."""
    formats = check_choices(formats, FORMATS, "--format")
    quantize = check_choices(quantize, QUANTIZE_MODES, "--quantize")
    run = Run.open(run_dir)
    out_dir = os.path.abspath(out_dir or os.path.join("exports", run.name))
    def check_out():  # only an export is replaced, never the run it exports
        ownership.check_replaceable(out_dir, ownership.EXPORT, overwrite, "--out", protected=(run.path,))

    check_out()
    scorer = keras_ad.load(run.path)
    if scorer.detector.clip_length and "int8" in quantize and "tflite" in formats:
        raise UsageError("--quantize int8: TFLite's CONV_3D and CONV_3D_TRANSPOSE kernels are float only "
                         "(LiteRT issue #2573), so a video model would stay float; use --quantize fp16 or none")
    if not scorer.calibration:
        raise UsageError(f"{run.path}: not calibrated; run keras-ad calibrate --run {run_dir} first "
                         f"(the export carries the threshold)")
    _log("loading validation and test images for the parity check ...")
    data = parity.load_parity_set(scorer.cfg)
    if not data.images:
        raise UsageError(f"{run.path}: no validation or test images found at "
                         f"{scorer.cfg.data.source or scorer.cfg.data.root}")

    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}-", dir=os.path.dirname(out_dir))
    os.chmod(work, 0o755)  # mkdtemp makes it private; the export is meant to be copied and shared
    ownership.mark(work, ownership.EXPORT)
    # Every exporter traces Scorer.graph afresh (one trace per signature by design); TensorFlow
    # would warn about "excessive retracing" for each.
    log_level = tf.get_logger().level
    tf.get_logger().setLevel(logging.ERROR)
    try:
        report = _build(scorer, run, data, formats, quantize, work)
        check_out()  # again: the export took minutes, and something else may stand there now
        _replace(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        tf.get_logger().setLevel(log_level)
    report["folder"] = out_dir
    return report


def _log(message):
    print(message, file=sys.stderr, flush=True)


def device_scorer(scorer):
    """The scorer of the variant TFLite and ONNX carry (AnoGAN: the encoder without the search)."""
    variant = scorer.detector.device_variant
    if variant == scorer.variant:
        return scorer
    other = Scorer(scorer.detector, scorer.cfg, scorer.run_calibration, variant=variant)
    if not other.calibration:
        raise UsageError(f"the calibration has no threshold for the {variant} variant that TFLite and ONNX carry; "
                         f"run keras-ad calibrate again")
    return other


def _build(scorer, run, data, formats, quantize, work) -> dict:
    saved_model = os.path.join(work, SAVEDMODEL_DIR)
    _log("writing SavedModel ...")
    endpoints = savedmodel.write(scorer, saved_model)
    on_device = device_scorer(scorer)
    device_saved_model = saved_model
    artefacts = {}  # file name -> {"format", "quantize", "variant"}
    if "savedmodel" in formats:
        artefacts[SAVEDMODEL_DIR] = {"format": "savedmodel", "quantize": "none", "variant": scorer.variant}
    if on_device is not scorer:  # TFLite converts from a SavedModel of the device variant; ONNX traces it
        endpoints = None
    if "tflite" in formats:
        from keras_ad.export import tflite

        if on_device is not scorer:
            device_saved_model = os.path.join(work, f".{on_device.variant}_saved_model")
            endpoints = savedmodel.write(on_device, device_saved_model)
        n_val = min(data.n_validation, N_INT8_CALIBRATION_IMAGES)
        good = [image[None] for image in data.images[:n_val]]
        for mode in quantize:
            _log(f"converting to TFLite ({mode}) ...")
            with native_output_silenced():
                model = tflite.convert(device_saved_model, mode, good, on_device.threshold)
            with open(os.path.join(work, tflite_name(mode)), "wb") as f:
                f.write(model)
            artefacts[tflite_name(mode)] = {"format": "tflite", "quantize": mode, "variant": on_device.variant}
    if "onnx" in formats:
        from keras_ad.export import onnx

        _log("converting to ONNX ...")
        with open(os.path.join(work, "model.onnx"), "wb") as f:
            f.write(onnx.convert(on_device, endpoints and endpoints["score_with_threshold"]))
        artefacts["model.onnx"] = {"format": "onnx", "quantize": "none", "variant": on_device.variant}

    metadata = _metadata(scorer, run, artefacts)
    for name, info in artefacts.items():
        if info["variant"] != scorer.variant:
            metadata["artefacts"][name]["pixel_threshold"] = on_device.threshold
    write_json(os.path.join(work, "metadata.json"), metadata)  # the device scorer reads it during the check

    _log(f"checking parity on {len(data.images)} images ...")
    scorers = {s.variant: s for s in (scorer, on_device)}
    references = {v: device.score_in_batches(lambda x, s=s: s(x), data.images) for v, s in scorers.items()}
    reference_summaries = {v: parity.summary(data, out) for v, out in references.items()}
    rows = {}
    for name, info in artefacts.items():
        path = os.path.join(work, name)
        with native_output_silenced():
            runner = (savedmodel.ExportedScorer(path) if info["format"] == "savedmodel"
                      else device.DeviceScorer(path, verify=False))  # digests are recorded after the check
            out = device.score_in_batches(runner, data.images)
        quantized = info["quantize"] != "none"
        # its maps moved: its own threshold, from the same good validation images (docs/methods/cae.md#3e)
        if quantized:
            threshold = calibration.calibrate(out["anomaly_map"][:data.n_validation],
                                              scorer.calibration["min_area"])["pixel_threshold"]
            metadata["artefacts"][name]["pixel_threshold"] = threshold
            out = device.score_in_batches(lambda x, r=runner, t=threshold: r(x, t), data.images)
        variant = info["variant"]
        rows[name] = {**info, **parity.compare(references[variant], reference_summaries[variant], out, data, quantized)}
        metadata["artefacts"][name]["tolerance"] = rows[name]["tolerance"]
    if device_saved_model != saved_model:
        shutil.rmtree(device_saved_model)
    if "savedmodel" not in formats:
        shutil.rmtree(saved_model)

    sample = data.images[data.test_slice] or data.images
    sample = [im for im in sample if im.shape == sample[0].shape][:N_PARITY_IMAGES]
    expected = {}
    for variant, variant_scorer in scorers.items():
        out = device.score_in_batches(lambda x, s=variant_scorer: s(x), sample)
        expected.update({device.parity_key(variant, k): out[k] for k in device.OUTPUTS})
    np.savez_compressed(os.path.join(work, device.PARITY_FILE), images=np.stack(sample), **expected)
    write_json(os.path.join(work, "metadata.json"), metadata)  # with the quantised models' own thresholds
    for name, info in artefacts.items():  # what the device's --check will compare its decisions with
        if info["format"] != "savedmodel":
            runner = device.DeviceScorer(os.path.join(work, name), verify=False)
            decided = device.score_in_batches(runner, sample)["is_anomalous"]
            metadata["artefacts"][name]["check_decision_agreement"] = float(
                np.mean(decided == expected[device.parity_key(info["variant"], "is_anomalous")]))
    for name in metadata["artefacts"]:
        metadata["artefacts"][name]["sha256"] = _digest(os.path.join(work, name))
    write_json(os.path.join(work, "metadata.json"), metadata)
    shutil.copyfile(device.__file__, os.path.join(work, DEVICE_SCRIPT))
    shutil.copyfile(DEVICE_REQUIREMENTS, os.path.join(work, "requirements.txt"))  # what the device installs

    reference_summary = reference_summaries[scorer.variant]
    report = {"run": run.name, "reference": {"runtime": "keras", **reference_summary},
              "references": {v: {"runtime": "keras", **r} for v, r in reference_summaries.items()},
              "n_images": len(data.images), "n_validation": data.n_validation,
              "tolerances": {"float_atol": parity.FLOAT_ATOL, "float_map_rtol": parity.MAP_RTOL,
                             "float_score_rtol": parity.SCORE_RTOL,
                             "quantized_auroc_drop": parity.AUROC_DROP_TOLERANCE},
              "artefacts": rows, "passed": all(r["passed"] for r in rows.values())}
    write_json(os.path.join(work, "export_report.json"), report)
    print(parity.table(rows, reference_summaries), flush=True)
    return report


def _metadata(scorer, run, artefacts) -> dict:
    cfg = scorer.cfg
    report = run.read_json(REPORT) or {}
    shape = savedmodel.input_shape(scorer)
    height, width = cfg.data.image_shape
    dims = "N, T, H, W, C" if scorer.detector.clip_length else "N, H, W, C"
    return {
        "keras_ad_version": keras_ad.__version__,
        "run": run.name,
        "detector": cfg.detector.name,
        "input": {"name": "images", "shape": shape, "dtype": "uint8",
                  "channels": cfg.data.channels, "channel_order": "RGB" if cfg.data.channels == 3 else "grey",
                  "layout": "NTHWC" if scorer.detector.clip_length else "NHWC", "value_range": [0, 255],
                  "clip_length": scorer.detector.clip_length, "center_crop": cfg.data.center_crop,
                  "preprocessing": f"x / 255, resized in the graph to {height}x{width} (height x width; "
                                   f"{cfg.data.resize}, antialiased as tf.image.resize)"},
        "image_size": cfg.data.image_size,
        "image_shape": [height, width],
        "scoring": _scoring_description(scorer),
        "outputs": {"score": "float32 [N] raw image score (larger = more anomalous)",
                    "anomaly_map": f"float32 [N, {height}, {width}]",
                    "is_anomalous": "bool [N]: a region of anomaly_map > threshold has at least min_area pixels",
                    "defect_area": "int32 [N]: pixels in such regions"},
        "signatures": _signatures(dims),
        "postprocess": cfg.to_dict()["postprocess"],
        "decision": {"pixel_threshold": scorer.threshold, "min_area": int(scorer.calibration["min_area"]),
                     **_video_decision(scorer)},
        "metrics": {k: report.get(k) for k in ("image_auroc", "pixel_auroc", "aupro", "f1_max")},
        "artefacts": {name: dict(info) for name, info in artefacts.items()},
    }


def _signatures(dims: str) -> dict:
    """Every SavedModel endpoint with its inputs, and which of them TFLite and ONNX carry."""
    out = {}
    for name, (dtype, with_threshold) in savedmodel.ENDPOINTS.items():
        inputs = {"images": f"{dtype.name} [{dims}]" + (" in [0, 1]" if dtype.is_floating else " 0..255")}
        if with_threshold:
            inputs["threshold"] = "float32 [1]"
        out[name] = {**inputs, "artefacts": "all" if name in savedmodel.DEVICE_SIGNATURES else "saved_model"}
    return out


def _scoring_description(scorer) -> dict:
    """What the graph does between the network and the decision, for a reader of metadata.json."""
    d, post = scorer.cfg.data, scorer.cfg.postprocess
    out = {"patches": None, "normalization": "per-pixel mean and spread of good validation maps"
           if scorer.normalization is not None else None,
           "region_of_interest": scorer.region is not None, "border": post.border}
    if d.patch_size:
        out["patches"] = {"patch": list(d.model_shape), "stride": list(d.patch_stride_shape),
                          "windows": scorer.n_windows, "stitching": "mean of the windows covering each pixel"}
    return out


def _video_decision(scorer) -> dict:
    """A video model's online score: score = -PSNR of the clip's centre frame (dB), online anomaly score
    = 1 - (PSNR - low) / (high - low) over the PSNR range of normal clips (README, LNTRA)."""
    if not scorer.detector.clip_length:
        return {}
    return {"online_psnr_range": scorer.online_psnr_range,
            "score": "-PSNR of the centre frame of each clip; frame index = clip start + clip_length // 2",
            "online_score": "float32 [N] output: 1 - (PSNR - low) / (high - low), 0..1 on normal frames"}


def _digest(path) -> str:
    """SHA-256 of a file; for a folder (SavedModel), of its files' relative paths and digests in order."""
    if os.path.isfile(path):
        return device.sha256(path)
    lines = []
    for folder, _, names in sorted(os.walk(path)):
        for name in sorted(names):
            full = os.path.join(folder, name)
            lines.append(f"{os.path.relpath(full, path)} {device.sha256(full)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _replace(work, out_dir):
    """Move the finished folder into place; an existing one is removed only after the move succeeded."""
    old = None
    if os.path.exists(out_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}-old-", dir=os.path.dirname(out_dir))
        os.replace(out_dir, os.path.join(old, "previous"))
    os.replace(work, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)
