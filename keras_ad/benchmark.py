"""`keras-ad bench`: how fast each detector trains and scores here, and how far from the machine's limit.

For every detector, at its paper setting and at a small one (both shipped configs): training steps/s
and images/s (`train_on_batch` on random data of the config's shape), scoring images/s at batch 8 in
Keras and in each export format, the FLOPs of a training step and of scoring one image (TensorFlow's
profiler on the traced graphs), and the achieved FLOP/s as a share of this machine's dense float32
matmul FLOP/s, measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

# TensorFlow is imported inside the functions: the CLI checks its arguments against SETTINGS first.
import numpy as np

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs")
# detector -> {setting: (shipped config, overrides)}; PIAD's VGG19 is random here (same FLOPs, offline)
SETTINGS = {
    "cae": {"paper": ("mvtec_capsule.yaml", ()), "small": ("demo.yaml", ())},
    "anogan": {"paper": ("anogan_mvtec_capsule.yaml", ()), "small": ("anogan_demo.yaml", ())},
    "ganomaly2d": {"paper": ("ganomaly2d_mvtec_capsule.yaml", ()), "small": ("ganomaly2d_demo.yaml", ())},
    "piad": {"paper": ("piad_cifar10.yaml", ("detector.perceptual_weights=none",)),
             "small": ("piad_mnist.yaml", ("detector.perceptual_weights=none",))},
    "lntra": {"paper": ("ped2_lntra_baseline.yaml", ()), "small": ("video_demo.yaml", ())},
    "patchcore": {"paper": ("patchcore_mvtec_capsule.yaml", ()), "small": ("patchcore_demo.yaml", ())},
}
FORMATS = ("SavedModel", "TFLite fp32", "ONNX")
SCORE_BATCH = 8


def timed(fn, batch, repeats, min_seconds):
    """Median seconds per call over at least `repeats` calls and `min_seconds`, after two warm-up calls."""
    fn(batch)
    fn(batch)
    times, start = [], time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def publish(table: str, path: str) -> None:
    """A benchmark's markdown table written to `path` and printed; where it went said on stderr."""
    with open(path, "w") as f:
        f.write(table)
    print(table)
    print(f"written to {path}", file=sys.stderr)


def graph_flops(concrete) -> int:
    """Float operations of one call of a concrete function: the ops its outputs and side effects
    (variable updates) depend on, as TensorFlow's profiler counts them (gradient ops a tape builds but
    nothing uses are left out, as the runtime prunes them). Loop and branch bodies are not counted."""
    from tensorflow.python.framework import ops

    graph = concrete.graph
    pending = [t.op for t in graph.outputs] + list(graph.control_outputs)
    live = set()
    while pending:
        op = pending.pop()
        if op.name in live:
            continue
        live.add(op.name)
        pending.extend(t.op for t in op.inputs)
        pending.extend(op.control_inputs)
    total = 0
    for op in graph.get_operations():
        if op.name in live:
            try:
                total += ops.get_stats_for_node_def(graph, op.node_def, "flops").value or 0
            except ValueError:  # an unknown shape: the profiler skips it too
                pass
    return int(total)


def flops_per_image(scorer, image_shape) -> int:
    """FLOPs of the whole scoring graph (pre-processing to decision) on one uint8 input."""
    import tensorflow as tf

    from keras_ad.tracing import graph_function

    return graph_flops(graph_function(lambda x: scorer.graph(x)).get_concrete_function(
        tf.TensorSpec([1, *image_shape], tf.uint8)))


def matmul_flops_per_second(n=2048, min_seconds=2.0) -> float:
    """This machine's dense float32 matmul rate (all threads), the ceiling the detectors are held to."""
    import tensorflow as tf

    from keras_ad.tracing import graph_function

    a = tf.random.stateless_uniform((n, n), seed=(1, 2))
    b = tf.random.stateless_uniform((n, n), seed=(3, 4))
    matmul = graph_function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))  # arguments: captured ones get folded
    seconds = timed(lambda _: matmul(a, b).numpy(), None, 5, min_seconds)
    return 2.0 * n ** 3 / seconds


@dataclass
class Result:
    detector: str
    setting: str
    config: str
    input: str
    train_steps_per_s: float = 0.0
    train_images_per_s: float = 0.0
    train_flops_per_step: int = 0
    score_flops_per_image: int = 0
    score_images_per_s: dict = field(default_factory=dict)
    note: str = ""


def training_batch(model, cfg):
    """Random [0, 1] data of one training step: batch x batches_per_step images, or LNTRA's clip pairs."""
    d = cfg.data
    n = cfg.train.batch_size * model.batches_per_step
    rng = np.random.default_rng(0)
    if model.clip_length:  # [N, 2 (input, target), T, H, W]
        return rng.random((n, 2, model.clip_length, *d.image_shape), np.float32)
    return rng.random((n, *d.model_shape, d.channels), np.float32)


def build_setting(detector_name, setting):
    """(the setting's detector, untrained and seeded: speed does not depend on the weights, its config)."""
    import keras

    from keras_ad import config, detectors

    file, overrides = SETTINGS[detector_name][setting]
    cfg = config.load(os.path.join(CONFIGS, file), overrides)
    keras.utils.set_random_seed(0)
    return detectors.build(cfg), cfg


def compile_first_phase(model, cfg):
    """The detector ready for `train_on_batch`, with its first training phase's optimisers."""
    phase = model.training_phases(1, cfg.train.learning_rate, cfg.train.lr_decay)[0]
    model.enter_phase(0)
    model.compile_phase(phase.learning_rate, phase.lr_decay)


def train_steps_per_second(model, cfg, repeats, min_seconds):
    """Steps/s of the detector's own train_step (first phase's optimisers) under `train_on_batch`."""
    compile_first_phase(model, cfg)
    return 1.0 / timed(lambda x: model.train_on_batch(x), training_batch(model, cfg), repeats, min_seconds)


def measure_training(model, cfg, quick: bool):
    """(steps/s, FLOPs of one step) of the detector's own train_step under `train_on_batch`."""
    import tensorflow as tf

    from keras_ad.tracing import graph_function

    steps = train_steps_per_second(model, cfg, 1 if quick else 5, 1.0 if quick else 10.0)
    spec = tf.TensorSpec(training_batch(model, cfg).shape, tf.float32)
    return steps, graph_flops(graph_function(model.train_step).get_concrete_function(spec))


def score_inputs(scorer, cfg):
    """SCORE_BATCH random uint8 inputs at the model's size (clips for a video detector)."""
    d = cfg.data
    shape = (*d.image_shape, d.channels)
    if scorer.detector.clip_length:
        shape = (scorer.detector.clip_length, *shape)
    return np.random.default_rng(1).integers(0, 256, (SCORE_BATCH, *shape), dtype=np.uint8)


def exported_runtimes(scorer, folder, formats):
    """name -> callable(uint8 batch) for each export of the scorer, written to `folder`. Its metadata.json
    holds what the device scorer reads, not `keras-ad export`'s artefact records, so their check is off."""
    from keras_ad.export import onnx, savedmodel, tflite
    from keras_ad.export.device import DeviceScorer

    saved = os.path.join(folder, "saved_model")
    savedmodel.write(scorer, saved)
    metadata = os.path.join(folder, "metadata.json")
    with open(metadata, "w") as f:
        json.dump({"input": {"channels": scorer.channels, "clip_length": scorer.detector.clip_length},
                   "decision": {"pixel_threshold": scorer.threshold}}, f)
    out = {}
    if "SavedModel" in formats:
        out["SavedModel"] = savedmodel.ExportedScorer(saved)
    if "TFLite fp32" in formats:
        path = os.path.join(folder, "model.tflite")
        with open(path, "wb") as f:
            f.write(tflite.convert(saved, "none"))
        out["TFLite fp32"] = DeviceScorer(path, metadata, num_threads=os.cpu_count(), verify=False)
    if "ONNX" in formats:
        path = os.path.join(folder, "model.onnx")
        with open(path, "wb") as f:
            f.write(onnx.convert(scorer))
        out["ONNX"] = DeviceScorer(path, metadata, num_threads=os.cpu_count(), verify=False)
    return out


def measure(detector_name, setting, quick, formats, log) -> Result:
    """Build the setting's model (untrained: speed does not depend on the weights) and time it."""
    from keras_ad.scoring import Scorer

    model, cfg = build_setting(detector_name, setting)
    file = SETTINGS[detector_name][setting][0]
    d = cfg.data
    frames = f"{model.clip_length}x" if model.clip_length else ""
    height, width = d.image_shape
    result = Result(detector_name, setting, f"configs/{file}", f"{frames}{height}x{width}x{d.channels}")
    variant = model.device_variant  # AnoGAN: its edge variant, the scoring graph every format carries
    calibration = {"pixel_threshold": 0.5, "min_area": 1, "variants": {variant: {"pixel_threshold": 0.5}}}
    scorer = Scorer(model, cfg, calibration, variant=variant)
    if variant != "default":
        result.note = f"scoring: the {variant} variant"
    inputs = score_inputs(scorer, cfg)
    result.score_flops_per_image = flops_per_image(scorer, inputs.shape[1:])
    repeats, least = (2, 1.0) if quick else (10, 5.0)
    runtimes = {"Keras": lambda x: {k: v.numpy() for k, v in scorer(x).items()}}
    folder = tempfile.mkdtemp(prefix="keras_ad_bench-")
    try:
        log(f"{detector_name} / {setting} ({result.config}, {result.input}): exporting ({', '.join(formats)}) ...")
        runtimes.update(exported_runtimes(scorer, folder, formats))
        for name, fn in runtimes.items():
            result.score_images_per_s[name] = SCORE_BATCH / timed(fn, inputs, repeats, least)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    log(f"{detector_name} / {setting}: training ...")
    steps, result.train_flops_per_step = measure_training(model, cfg, quick)
    result.train_steps_per_s = steps
    result.train_images_per_s = steps * cfg.train.batch_size * model.batches_per_step
    return result


def markdown(results, matmul, seconds) -> str:
    """The table: one row per detector x setting."""
    import tensorflow as tf

    formats = ["Keras", *FORMATS]
    lines = [f"Measured on {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, TensorFlow "
             f"{tf.__version__}, in {seconds:.0f} s; dense float32 matmul (2048²): {matmul / 1e9:.1f} GFLOP/s. "
             f"Training: `train_on_batch` of one step (PIAD: n_dis + 1 batches) on random data; scoring: "
             f"batch {SCORE_BATCH} of uint8 inputs, pre-processing to decision. \"% peak\": achieved FLOP/s / "
             f"matmul FLOP/s.", "",
             "| detector | setting | input | train steps/s | train images/s | train GFLOP/step | train % peak | "
             "score MFLOP/image | " + " | ".join(f"{f} images/s" for f in formats) + " | score % peak | note |",
             "|---|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(formats) + "---:|---|"]
    for r in results:
        train_peak = 100 * r.train_flops_per_step * r.train_steps_per_s / matmul
        best = max(r.score_images_per_s.values()) if r.score_images_per_s else 0.0
        score_peak = 100 * r.score_flops_per_image * best / matmul
        speeds = " | ".join(f"{r.score_images_per_s[f]:.1f}" if f in r.score_images_per_s else "-" for f in formats)
        lines.append(f"| {r.detector} | {r.setting} (`{r.config}`) | {r.input} | {r.train_steps_per_s:.2f} | "
                     f"{r.train_images_per_s:.1f} | {r.train_flops_per_step / 1e9:.2f} | {train_peak:.1f} | "
                     f"{r.score_flops_per_image / 1e6:.1f} | {speeds} | {score_peak:.1f} | {r.note} |")
    return "\n".join(lines) + "\n"


def run(detectors=tuple(SETTINGS), settings=("paper", "small"), quick=False, formats=FORMATS, out=None, log=None):
    """Measure every detector x setting; returns (results, markdown), and writes the markdown to `out`."""
    import keras

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    started = time.perf_counter()
    matmul = matmul_flops_per_second()
    log(f"dense matmul: {matmul / 1e9:.1f} GFLOP/s")
    results = []
    for name in detectors:
        for setting in settings:
            results.append(measure(name, setting, quick, formats, log))
            keras.backend.clear_session()  # free the last model's graphs before the next
    table = markdown(results, matmul, time.perf_counter() - started)
    if out:
        from keras_ad.ownership import file_tag
        from keras_ad.runs import atomic_write

        atomic_write(out, f"{file_tag('bench')}\n{table}")
    return results, table
