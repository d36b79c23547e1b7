"""Training a detector: strategy choice, data, optimiser phases, atomic checkpoints, logs, resume."""

from __future__ import annotations

import functools
import glob
import json
import os
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_ad import detectors, plots
from keras_ad.data import layouts, pipeline
from keras_ad.errors import UsageError, first_line
from keras_ad.runs import HISTORY, WEIGHTS, Run, atomic_save, atomic_write, load_weights, weights_damage


def select_strategy(name: str):
    """`auto` = MirroredStrategy when more than one GPU is visible, else the default strategy.
    `multiworker` reads the cluster from TF_CONFIG (`keras-ad train --workers`); one per process."""
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return _multiworker_strategy()
    return tf.distribute.get_strategy()


@functools.cache
def _multiworker_strategy():
    """The process's only MultiWorkerMirroredStrategy: collectives are configured once, at its creation."""
    return tf.distribute.MultiWorkerMirroredStrategy()


def _shard_by_data(dataset):
    """Each worker takes its part of every global batch (AutoShardPolicy.DATA): the only sharding that
    works for in-memory images and custom train steps across workers (docs/stack.md#3)."""
    if dataset is None:
        return None
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def resolve_epochs(train_cfg, n_train, step_images):
    """train.iterations rounded up to whole epochs of `step_images` per step; else train.epochs; else
    docs/methods/cae.md#3d's floor(augmented images / training images)."""
    if train_cfg.iterations:
        steps_per_epoch = max(n_train, train_cfg.min_epoch_images) // step_images
        return -(-train_cfg.iterations // steps_per_epoch)
    if train_cfg.epochs != "auto":
        return train_cfg.epochs
    return max(1, train_cfg.augmented_images // max(n_train, 1))


# ---------------------------------------------------------------- checkpoints
def latest_checkpoint(run: Run):
    """Newest complete checkpoint folder, or None. Checkpoints appear by atomic rename, but a disk can
    still damage one afterwards: a folder whose files do not all read back is reported and skipped."""
    for folder in sorted(glob.glob(os.path.join(run.checkpoints, "epoch-*")), reverse=True):
        problem = checkpoint_damage(folder)
        if problem is None:
            return folder
        print(f"{folder}: damaged checkpoint ({problem}); trying the one before", file=sys.stderr, flush=True)
    return None


def checkpoint_damage(folder) -> str | None:
    """What is wrong with a checkpoint folder's files (missing, truncated, unreadable), or None."""
    try:
        read_state(folder)
        with np.load(os.path.join(folder, "optimizer.npz")) as arrays:
            for key in arrays.files:
                arrays[key]
    except Exception as e:  # OSError, ValueError, zipfile.BadZipFile, JSONDecodeError, KeyError: all "damaged"
        return first_line(e)
    return weights_damage(os.path.join(folder, WEIGHTS))


def save_checkpoint(run: Run, model, epoch: int, phase: int, keep: int):
    final = os.path.join(run.checkpoints, f"epoch-{epoch:05d}")
    tmp = os.path.join(run.checkpoints, f".tmp-epoch-{epoch:05d}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    model.save_weights(os.path.join(tmp, WEIGHTS))
    np.savez(os.path.join(tmp, "optimizer.npz"), *[np.asarray(v) for v in _optimizer_variables(model)])
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump({"epoch": epoch, "phase": phase}, f)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(glob.glob(os.path.join(run.checkpoints, "epoch-*")))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def restore_checkpoint(folder, model, restore_optimizer: bool):
    load_weights(model, os.path.join(folder, WEIGHTS), "delete this checkpoint folder and --resume from the one before")
    if restore_optimizer:
        values = np.load(os.path.join(folder, "optimizer.npz"))
        for var, key in zip(_optimizer_variables(model), sorted(values.files, key=lambda k: int(k.split("_")[1]))):
            var.assign(values[key])
    return read_state(folder)


def _optimizer_variables(model):
    return [v for optimizer in model.training_optimizers() for v in optimizer.variables]


def read_state(folder) -> dict:
    """{"epoch": completed epochs, "phase": training phase index} of a checkpoint folder."""
    with open(os.path.join(folder, "state.json")) as f:
        return json.load(f)


# ---------------------------------------------------------------- callbacks
class RunLogger(keras.callbacks.Callback):
    """Each epoch: checkpoint (atomic), history row, TensorBoard scalars and sample grid, one progress line
    with ETA; on a terminal, one bar per epoch that the epoch's line then replaces (Keras' own bar is off)."""

    BAR = 24  # characters

    def __init__(self, run: Run, cfg, phase: int, total_epochs: int, samples, start_epoch: int, monitor=None):
        super().__init__()
        self.run, self.cfg, self.phase, self.total = run, cfg, phase, total_epochs
        self.samples = samples
        self.monitor, self._monitor_scorer = monitor, None  # labelled held-out images (data.monitor_fraction)
        self.t0, self.e0 = time.time(), start_epoch
        self.writer = tf.summary.create_file_writer(run.file("logs"))
        self.terminal = sys.stdout.isatty()
        self.epoch, self.epoch_t0 = start_epoch, time.time()
        if phase == 0:
            with self.writer.as_default():
                write_hparams(cfg)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.epoch_t0 = epoch, time.time()

    def on_train_batch_end(self, batch, logs=None):
        if not self.terminal:
            return
        steps = self.params.get("steps")
        done = batch + 1
        losses = "  ".join(f"{k} {_scalar(v):.5f}" for k, v in (logs or {}).items())
        if steps:
            filled = self.BAR * done // steps
            eta = (time.time() - self.epoch_t0) / done * (steps - done)
            bar = f"[{'=' * filled}{'.' * (self.BAR - filled)}] {done}/{steps}  {losses}  ETA {_hms(eta)}"
        else:
            bar = f"step {done}  {losses}"
        print(f"\r\x1b[Kepoch {self.epoch + 1}/{self.total} {bar}", end="", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        logs = logs if logs is not None else {}
        check_finite(done, logs)  # before the checkpoint: the last one on disk stays finite
        if self.monitor is not None:  # into the logs: TensorBoard, history.csv, the line and later callbacks
            logs["val_image_auroc"] = self.monitor_auroc()
        with self.writer.as_default(step=done):
            for key, value in logs.items():
                tf.summary.scalar(key, _scalar(value))
        if done % self.cfg.train.sample_every == 0 or done == self.total:
            panels = {k: np.asarray(v) for k, v in self.model.sample_panels(self.samples).items()}
            grid = atomic_save(self.run.file("samples", f"epoch-{done:05d}.png"),
                               lambda p: plots.image_grid(panels, p, title=f"epoch {done}"))
            with self.writer.as_default(step=done):
                tf.summary.image("samples", grid[None])
            if done == self.total:  # the trained model's panels, drawn here anyway
                warn_if_collapsed(panels)
        # the epoch's row and grid before its checkpoint: a kill in between repeats the epoch on --resume,
        # which first drops the rows after the checkpoint it resumes from (trim_history)
        _append_history(self.run.file(HISTORY), done, logs)
        save_checkpoint(self.run, self.model, done, self.phase, self.cfg.train.keep_checkpoints)
        elapsed = time.time() - self.t0
        eta = elapsed / max(done - self.e0, 1) * (self.total - done)
        metrics = "  ".join(f"{k} {_scalar(v):.5f}" for k, v in logs.items())
        line = f"epoch {done}/{self.total}  {metrics}  elapsed {_hms(elapsed)}  ETA {_hms(eta)}"
        print(f"\r\x1b[K{line}" if self.terminal else line, flush=True)

    def monitor_auroc(self) -> float:
        """Image AUROC of the held-out labelled images under the model as it is now (the device variant:
        AnoGAN's encoder, not its search), uncalibrated: scores need no threshold."""
        from keras_ad.metrics import image_auroc
        from keras_ad.scoring import Scorer

        if self._monitor_scorer is None:  # one traced graph for the whole phase; it reads the live weights
            self._monitor_scorer = Scorer(self.model, self.cfg, variant=self.model.device_variant)
        scores = self._monitor_scorer.score_preprocessed(self.monitor["images"])["score"]
        return image_auroc(self.monitor["labels"], scores)


def write_hparams(cfg) -> None:
    """The run's settings on TensorBoard's HParams tab: every config key as section.key, lists as text."""
    from tensorboard.plugins.hparams import api as hparams

    values = {}
    for section, fields in cfg.to_dict().items():
        if not isinstance(fields, dict):
            continue
        for key, value in fields.items():
            name = f"{section}.{key}"
            values[name] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    hparams.hparams(values)


def check_finite(epoch: int, logs: dict) -> None:
    """Stop a training whose losses turned NaN or infinite, with one line naming the epoch and the way on."""
    bad = {k: _scalar(v) for k, v in logs.items() if not np.isfinite(_scalar(v))}
    if bad:
        from keras_ad.errors import TrainingDiverged

        values = ", ".join(f"{k} {v}" for k, v in sorted(bad.items()))
        raise TrainingDiverged(f"epoch {epoch}: {values}: training diverged; the checkpoints of epochs before "
                               f"{epoch} are kept; lower train.learning_rate and train again (--overwrite), or "
                               f"--resume from the last finite checkpoint")


def trim_history(path, epoch: int):
    """Keep the header and the rows of epochs up to `epoch` (the checkpoint a resumed run starts from)."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    kept = lines[:1] + [row for row in lines[1:] if row.split(",")[0].isdigit() and int(row.split(",")[0]) <= epoch]
    if kept != lines:
        atomic_write(path, "\n".join(kept) + "\n")


COLLAPSE_SPREAD = 0.01  # a generated panel varies < 1 % as much as its inputs across images: collapsed


def collapsed_panels(panels: dict) -> dict[str, tuple[float, float]]:
    """{panel: (its spread, the inputs' spread)} for the generated panels (reconstructions, samples) that
    hardly change from one image to the next while the inputs do: a collapsed generator or decoder, whose
    anomaly map then follows the input rather than the defect. Spread: the mean over pixels of the std
    across images."""
    inputs = next((np.asarray(v) for k, v in panels.items() if k.startswith("input")), None)
    if inputs is None or len(inputs) < 2:
        return {}
    reference = float(np.asarray(inputs, np.float64).std(axis=0).mean())
    found = {}
    for name, value in panels.items():
        if name.startswith("input") or "map" in name:
            continue
        spread = float(np.asarray(value, np.float64).std(axis=0).mean())
        if spread < COLLAPSE_SPREAD * reference:
            found[name] = (spread, reference)
    return found


def warn_if_collapsed(panels: dict) -> None:
    """One warning line per collapsed panel of the trained model (collapsed_panels): it still scores."""
    for name, (spread, reference) in collapsed_panels(panels).items():
        print(f"warning: the trained model looks collapsed: its {name} is almost the same for every sample "
              f"image (spread {spread:.2g} against the inputs' {reference:.2g}), so its map follows the input, "
              f"not the defect; train longer, lower train.learning_rate or change train.seed", file=sys.stderr,
              flush=True)


def _append_history(path, epoch, logs):
    """One CSV row per epoch; a resumed run appends to the rows of the epochs it keeps."""
    keys = sorted(logs)
    new = not os.path.exists(path)
    with open(path, "a", encoding="utf-8") as f:
        if new:
            f.write(",".join(["epoch"] + keys) + "\n")
        f.write(",".join([str(epoch)] + [f"{_scalar(logs[k]):.6g}" for k in keys]) + "\n")


def _scalar(value) -> float:
    """A logged metric as a float (multi-worker steps log rank-1 values, one per worker)."""
    return float(np.mean(value))


def _hms(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ---------------------------------------------------------------- entry point
def train_run(cfg, run: Run, callbacks=(), resume=False, evaluate=True) -> Run:
    """Train into `run` (made by Run.create), then calibrate and evaluate unless `evaluate` is False: the
    one path of `keras-ad train` and `keras_ad.train`. Returns the run."""
    print(f"run folder: {run.path}", flush=True)
    detector = train(cfg, run, resume=resume, callbacks=callbacks)
    if evaluate:
        from keras_ad import evaluation
        from keras_ad.scoring import Scorer

        scorer = Scorer(detector, cfg)
        evaluation.calibrate_run(run, cfg, scorer)
        evaluation.evaluate_run(run, cfg, scorer)
        print(f"report: {run.file('report.html')}", flush=True)
    return run


def _early_stopping(cfg, phase) -> list:
    """train.early_stopping as a Keras callback for one phase (docs/training.md#early-stopping)."""
    if not cfg.train.early_stopping or phase.monitor is None:
        return []
    return [keras.callbacks.EarlyStopping(monitor=f"val_{phase.monitor}", patience=cfg.train.early_stopping,
                                          restore_best_weights=True, verbose=1)]


def train(cfg, run: Run, resume: bool = False, callbacks=()):
    """Train `cfg`'s detector into `run`, Keras `callbacks` passed on to every phase's fit(); returns the
    trained detector."""
    from keras_ad import roi

    roi.region_of_interest(cfg.postprocess, cfg.data.image_shape)  # a bad ROI mask fails now, not after training
    strategy = select_strategy(cfg.train.strategy)  # first: a multi-worker one must precede other TF work
    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        model = detectors.build(cfg, cfg.train.precision)
    step_images = cfg.train.batch_size * model.batches_per_step
    if model.clip_length:
        from keras_ad.data import video

        train_ds, n_train, samples, unit, n_val = video.training_data(cfg, model.clip_length, step_images)
        val_ds, monitor = None, None
    else:
        files = layouts.discover(cfg.data, seed=cfg.train.seed, need_test=layouts.has_test_split(cfg.data))
        pipeline.check_test_files(files, cfg.data)  # evaluation's files, read now rather than after training
        train_ds, n_train, samples, val_ds, n_val = pipeline.training_data(cfg, files, step_images)
        monitor = pipeline.load_test_set(files, cfg.data, "monitor") if files.monitor else None
        unit = "images"
    train_ds, val_ds = _shard_by_data(train_ds), _shard_by_data(val_ds)
    epochs = resolve_epochs(cfg.train, n_train, step_images)
    state = None
    checkpoint = latest_checkpoint(run) if resume else None
    start = 0
    if resume and not checkpoint:
        raise UsageError(f"{run.checkpoints}: no complete checkpoint to resume from; start the run again with "
                         f"--overwrite")
    if checkpoint:
        state = read_state(checkpoint)
        start = state["epoch"]
        trim_history(run.file(HISTORY), start)
        print(f"resuming from {checkpoint} (epoch {start})", flush=True)

    phases = model.training_phases(epochs, cfg.train.learning_rate, cfg.train.lr_decay)
    if cfg.train.early_stopping and val_ds is None and any(p.monitor for p in phases):
        raise UsageError(f"train.early_stopping: {cfg.detector.name} has no validation images to watch here; "
                         f"set data.val_fraction > 0 or train.early_stopping: 0")
    total_epochs = phases[-1].until_epoch  # a later phase may train past `epochs` (AnoGAN's encoder)
    repeated = f", repeated to {cfg.train.min_epoch_images} per epoch" if cfg.train.min_epoch_images > n_train else ""
    print(f"training {cfg.detector.name} on {n_train} {unit}{repeated} ({n_val} validation), "
          f"{total_epochs} epochs, batch {cfg.train.batch_size}, {replicas} replica(s), {cfg.train.precision}",
          flush=True)
    phase_start = 0
    for index, phase in enumerate(phases):
        if start >= phase.until_epoch:
            phase_start = phase.until_epoch
            continue
        model.enter_phase(index)
        with strategy.scope():
            model.compile_phase(phase.learning_rate, phase.lr_decay)
        model.jit_compile = cfg.train.jit_compile  # explicit: Keras would choose XLA on GPUs by itself
        if checkpoint:  # weights always; optimizer moments only inside the phase they belong to
            restore_checkpoint(checkpoint, model, restore_optimizer=state["phase"] == index)
            checkpoint = None
        if len(phases) > 1:
            print(f"phase {index + 1}/{len(phases)}: {phase.name}", flush=True)
        logger = RunLogger(run, cfg, index, total_epochs, samples, max(start, phase_start), monitor)
        model.fit(train_ds, validation_data=val_ds, initial_epoch=max(start, phase_start),
                  epochs=phase.until_epoch, shuffle=False,
                  callbacks=[*model.training_callbacks(), logger, *_early_stopping(cfg, phase), *callbacks],
                  verbose=0)  # RunLogger draws the progress
        phase_start = phase.until_epoch
    if checkpoint:  # training had already finished: take the last weights
        restore_checkpoint(checkpoint, model, restore_optimizer=False)
    atomic_save(run.file(WEIGHTS), model.save_weights)
    if cfg.train.precision != "float32":  # calibration, evaluation and exports use the float32 model
        model = detectors.build(cfg)
        load_weights(model, run.file(WEIGHTS), "train again")
    return model
