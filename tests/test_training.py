"""Distributed training equivalence and resume after a kill."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from helpers import (
    FEATURE_PASS_DETECTORS,
    TINY_DETECTORS,
    VIDEO_DETECTORS,
    one_sgd_step,
    tiny_config_dict,
    write_config,
)

import keras_ad
from keras_ad import config
from keras_ad.cli import main
from keras_ad.detectors import build
from keras_ad.errors import UsageError


def test_mirrored_step_updates_weights_like_one_device(two_replicas):
    cfg = config.validate({"data": {"root": "/x", "image_size": 32, "channels": 1}})
    keras.utils.set_random_seed(0)
    initial = build(cfg).get_weights()
    images = np.random.default_rng(0).random((8, 32, 32, 1)).astype(np.float32)
    single = one_sgd_step(tf.distribute.get_strategy(), cfg, initial, images, 0.5).get_weights()
    assert two_replicas.num_replicas_in_sync == 2
    mirrored = one_sgd_step(two_replicas, cfg, initial, images, 0.5).get_weights()
    moved = max(float(np.abs(a - b).max()) for a, b in zip(single, initial))
    assert moved > 1e-4  # the step really changed the weights
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_resume_after_kill(tiny_data, tmp_path):
    cfg_dict = tiny_config_dict(tiny_data, tmp_path / "run", train={"epochs": 40, "sample_every": 100})
    config_path = write_config(tmp_path / "c.yaml", cfg_dict)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "keras_ad.cli", "train", "--config", str(config_path),
                             "--no-evaluate"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = tmp_path / "run" / "checkpoints" / "epoch-00002" / "state.json"
    deadline = time.time() + 240
    while not second.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert second.exists(), "training did not reach its second checkpoint"
    assert not (tmp_path / "run" / "model.weights.h5").exists()  # it was killed before the end
    killed_at = max(int(p.name.split("-")[1]) for p in (tmp_path / "run" / "checkpoints").glob("epoch-*")
                    if (p / "state.json").exists())

    result = CliRunner().invoke(main, ["train", "--config", str(config_path), "--resume",
                                       "--set", "train.epochs=" + str(killed_at + 2), "--no-evaluate"])
    assert result.exit_code == 0, result.output
    assert f"(epoch {killed_at})" in result.output
    assert f"epoch {killed_at + 1}/{killed_at + 2}" in result.output and "epoch 1/" not in result.output
    assert (tmp_path / "run" / "model.weights.h5").exists()
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert history[-1].startswith(f"{killed_at + 2},")


def test_resume_refuses_a_changed_config(tiny_data, tmp_path, trained_run):
    """From the CLI and from keras_ad.train alike, before the run's config.yaml is touched."""
    saved = (trained_run / "config.yaml").read_text()
    cfg = config.load(os.path.join(trained_run, "config.yaml")).to_dict()
    changed = {**cfg, "data": {**cfg["data"], "image_size": 64}}
    path = write_config(tmp_path / "c.yaml", changed)
    result = CliRunner().invoke(main, ["train", "--config", str(path), "--resume"])
    assert result.exit_code == 2 and "data.image_size" in result.output
    with pytest.raises(UsageError, match="data.image_size"):
        keras_ad.train(changed, resume=True)
    assert (trained_run / "config.yaml").read_text() == saved


@pytest.mark.slow
def test_a_seeded_deterministic_run_repeats_to_1e6(tmp_path):
    """train.seed + train.deterministic: two runs in two processes (run side by side) give the same
    weights and the same metrics to 1e-6. PIAD draws z and α every step, so randomness is exercised."""
    from helpers import digits_config

    detector = {"name": "piad", "reconstruction_loss": "pixel_l2", "n_dis": 1, "latent_dim": 8,
                "generator_dims": [8] * 4, "encoder_dims": [8] * 4, "image_critic_dims": [8] * 4,
                "latent_critic_dims": [16, 16]}
    path = digits_config(tmp_path, detector, labels=(0, 1), normal_class="0",
                         train={"batch_size": 8, "seed": 3, "deterministic": True})
    runs = [tmp_path / f"run{k}" for k in (1, 2)]
    procs = [subprocess.Popen([sys.executable, "-m", "keras_ad.cli", "train", "--config", str(path),
                               "--set", f"run.dir={run}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for run in runs]
    for proc in procs:
        output = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, output
    reports = [json.loads((run / "report.json").read_text()) for run in runs]
    for key in ("image_auroc", "f1_max"):
        assert abs(reports[0][key] - reports[1][key]) <= 1e-6, key
    thresholds = [json.loads((run / "calibration.json").read_text()) for run in runs]
    assert thresholds[0]["pixel_threshold"] == pytest.approx(thresholds[1]["pixel_threshold"], rel=1e-6)
    import h5py

    def arrays(run):
        found = []
        with h5py.File(run / "model.weights.h5") as f:
            f.visititems(lambda name, item: found.append(item[()]) if isinstance(item, h5py.Dataset) else None)
        return found
    first, second = arrays(runs[0]), arrays(runs[1])
    assert len(first) > 10 and all(np.array_equal(a, b) for a, b in zip(first, second))


@pytest.mark.slow
def test_jit_compiled_training_matches_the_plain_step(tiny_data, tmp_path):
    """train.jit_compile: the step runs under XLA and updates the weights as the plain one does."""
    from keras_ad.runs import Run
    from keras_ad.training import train

    weights = {}
    for jit in (False, True):
        cfg = config.validate(tiny_config_dict(tiny_data, tmp_path / f"run{jit}", train={
            "epochs": 1, "augment": False, "jit_compile": jit, "min_epoch_images": 16}))
        model = train(cfg, Run.create(cfg))
        assert model.jit_compile is jit
        weights[jit] = model.get_weights()
    # Adam moves every weight by ~lr (2e-4) a step, so a broken step would be off by ~1e-4 nearly
    # everywhere; XLA's float order may flip a few near-zero gradients, hence a share, not every weight.
    plain, xla = (np.concatenate([w.ravel() for w in weights[k]]) for k in (False, True))
    assert np.mean(np.abs(xla - plain) > 1e-5) < 0.01


@pytest.mark.slow
def test_mixed_precision_run_trains_then_scores_in_float32(tiny_data, tmp_path):
    """train.precision: mixed_float16 trains through the CLI (loss-scaled, finite losses), and calibration,
    evaluation and a later load use the float32 model built from the saved weights."""
    import keras_ad

    cfg = tiny_config_dict(tiny_data, tmp_path / "run", train={"epochs": 2, "precision": "mixed_float16"})
    result = CliRunner().invoke(main, ["train", "--config", str(write_config(tmp_path / "c.yaml", cfg))])
    assert result.exit_code == 0, result.output
    assert "mixed_float16" in result.output
    losses = [float(row.split(",")[1]) for row in (tmp_path / "run" / "history.csv").read_text().splitlines()[1:]]
    assert len(losses) == 2 and all(np.isfinite(losses))
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert 0.0 <= report["image_auroc"] <= 1.0
    detector = keras_ad.load(str(tmp_path / "run")).detector
    assert detector.dtype_policy.name == "float32" and keras.mixed_precision.global_policy().name == "float32"


def test_a_non_finite_loss_stops_training_before_its_checkpoint():
    """A NaN or infinite loss is one line naming the epoch, raised before that epoch's checkpoint is
    written (a NaN learning rate once trained NaN weights and saved pixel_threshold: null)."""
    from keras_ad.errors import TrainingDiverged
    from keras_ad.training import RunLogger, check_finite

    check_finite(3, {"loss": 0.5, "val_loss": np.float32(0.4)})
    logger = RunLogger.__new__(RunLogger)  # nothing of the run is touched before the check
    with pytest.raises(TrainingDiverged) as error:
        logger.on_epoch_end(2, {"loss": float("nan"), "val_loss": 0.3, "d_loss": float("inf")})
    message = str(error.value)
    assert message.startswith("epoch 3: d_loss inf, loss nan: training diverged") and "\n" not in message


def _resume(run, *extra):
    return CliRunner().invoke(main, ["train", "--config", str(run / "config.yaml"), "--resume", "--no-evaluate",
                                     *extra])


def test_resume_skips_a_damaged_checkpoint_cleans_up_and_keeps_one_history_row_per_epoch(run_copy):
    """A copied run resumes where it is; the newest checkpoint, damaged after it was written, is reported
    and the one before is used; a killed write's .tmp-* files go; the history row of the epoch that ran
    after the kept checkpoint (written before its own checkpoint) is dropped and written once again."""
    checkpoints = run_copy / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-00001", "epoch-00002"]
    (checkpoints / "epoch-00002" / "model.weights.h5").write_bytes(b"truncated")
    (run_copy / ".tmp-99-model.weights.h5").write_bytes(b"half")
    (checkpoints / ".tmp-epoch-00003").mkdir()
    (run_copy / "samples" / ".tmp-99-epoch-00003.png").write_bytes(b"half a grid")  # found by kill_resume.py
    result = _resume(run_copy, "--set", "train.epochs=3")
    assert result.exit_code == 0, result.output
    assert f"{checkpoints / 'epoch-00002'}: damaged checkpoint (" in result.output
    assert f"resuming from {checkpoints / 'epoch-00001'} (epoch 1)" in result.output
    assert not list(run_copy.glob(".tmp-*")) and not list(run_copy.glob("*/.tmp-*"))
    epochs = [row.split(",")[0] for row in (run_copy / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]
    assert scores_finitely(run_copy)  # the final weights were written by this run, in this folder


def test_resume_without_a_checkpoint_is_one_line(run_copy):
    import shutil

    shutil.rmtree(run_copy / "checkpoints")
    result = _resume(run_copy)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (f"error: {run_copy / 'checkpoints'}: no complete checkpoint "
                                                       f"to resume from; start the run again with --overwrite")


def test_damaged_final_weights_are_one_line_and_resume_writes_them_again(run_copy, tiny_data, tmp_path):
    (run_copy / "model.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # a truncated HDF5 file
    for command in (["evaluate", "--run", run_copy], ["score", "--run", run_copy, tiny_data / "test" / "good",
                                                     "--out", tmp_path / "scores"],
                    ["export", "--run", run_copy, "--format", "onnx", "--out", tmp_path / "export"]):
        result = CliRunner().invoke(main, [str(c) for c in command])
        assert result.exit_code == 2, (command[0], result.output)
        last = result.output.strip().splitlines()[-1]
        assert last.startswith(f"error: {run_copy / 'model.weights.h5'}: unreadable weights (") and \
            last.endswith(f"keras-ad train --config {run_copy / 'config.yaml'} --resume"), last
    assert not (tmp_path / "export").exists()
    result = _resume(run_copy)
    assert result.exit_code == 0, result.output
    assert scores_finitely(run_copy)


def scores_finitely(run):
    """True when keras_ad.load(run) loads the run's weights and scores an image to a finite value."""
    import keras_ad

    scores = keras_ad.load(run)(np.zeros((1, 32, 32, 3), np.uint8))["score"].numpy()
    return bool(np.isfinite(scores).all())


def test_collapsed_generators_are_found_from_their_panels():
    from keras_ad.training import collapsed_panels

    inputs = np.random.default_rng(0).random((4, 8, 8, 3))
    panels = {"input": inputs, "reconstruction": inputs * 0.9, "anomaly map": np.zeros((4, 8, 8))}
    assert collapsed_panels(panels) == {}
    constant = {**panels, "reconstruction": np.broadcast_to(inputs[:1] * 0.5, inputs.shape)}
    assert list(collapsed_panels(constant)) == ["reconstruction"]
    assert collapsed_panels({"input": inputs[:1], "reconstruction": inputs[:1]}) == {}  # one image: no spread


class _EpochRecorder(keras.callbacks.Callback):
    """Remembers each epoch's index and logs, as a notebook user's callback would."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((epoch, dict(logs or {})))


@pytest.mark.slow
def test_python_train_passes_callbacks_to_fit_and_early_stopping_stops_on_a_plateau(tiny_data, tmp_path, capsys,
                                                                                   monkeypatch):
    """keras_ad.train(config dict, callbacks, overrides) returns the run; a callback sees every epoch with the
    validation loss; on a terminal each epoch is one bar that its summary line replaces, without Keras' own
    bar and epoch counter. At learning rate 0 the validation loss is flat: train.early_stopping 1 stops
    after the second epoch of six, with one history row per epoch trained."""
    recorder = _EpochRecorder()
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    run = keras_ad.train(tiny_config_dict(tiny_data, tmp_path / "run"), callbacks=[recorder],
                         overrides={"train.epochs": 3}, evaluate=False)
    out = capsys.readouterr().out
    assert [epoch for epoch, _ in recorder.epochs] == [0, 1, 2]
    assert all("val_loss" in logs and "loss" in logs for _, logs in recorder.epochs)
    assert os.path.isfile(run.file("model.weights.h5")) and not os.path.exists(run.file("report.json"))
    assert "\r\x1b[Kepoch 1/3 [" in out and "] 4/4  loss " in out  # 36 training images / batch 8
    for epoch in (1, 2, 3):  # each bar ends in its epoch's line, on its own line
        assert f"\r\x1b[Kepoch {epoch}/3  loss " in out and "ETA" in out
    assert "Epoch 1/3" not in out and "\u2501" not in out  # no Keras progress bar

    # with a third of each kind of test image held out and labelled: their image AUROC each epoch
    plateau = _EpochRecorder()
    flat = keras_ad.train(tiny_config_dict(tiny_data, tmp_path / "flat"), callbacks=[plateau],
                          overrides={"train.epochs": 6, "train.learning_rate": 0.0, "train.early_stopping": 1,
                                     "data.monitor_fraction": 0.34})
    assert [epoch for epoch, _ in plateau.epochs] == [0, 1]
    history = list(csv.DictReader(open(flat.file("history.csv"))))
    assert len(history) == 2 and all(0.0 <= float(row["val_image_auroc"]) <= 1.0 for row in history)
    assert all(0.0 <= logs["val_image_auroc"] <= 1.0 for _, logs in plateau.epochs)
    report = json.loads(open(flat.file("report.json")).read())  # evaluated by default, as keras-ad train
    assert report["n_monitor_images"] == 2 + 5 and report["n_images"] == 6 + 5 * 3 - 7  # 2 of 6 good, 1 of 3


@pytest.mark.parametrize("name", [n for n in TINY_DETECTORS if n not in FEATURE_PASS_DETECTORS])
def test_train_seed_alone_sets_the_initial_weights_and_no_two_layers_share_them(name):
    """The same seed builds the same weights, another seed others, and no two kernels of one shape are
    equal (a Keras initializer shared between layers gave them all one kernel, seeded at import time)."""
    video = {"layout": "video", "channels": 1} if name in VIDEO_DETECTORS else {"channels": 3}
    cfg = config.validate({"data": {"root": "/x", "image_size": 32, **video}, "detector": dict(TINY_DETECTORS[name])})

    def weights(seed):
        keras.utils.set_random_seed(seed)
        return build(cfg).get_weights()

    first, again, other = weights(0), weights(0), weights(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other) if a.size > 1)
    kernels = [w for w in first if w.ndim >= 4]
    assert not [(i, j) for i in range(len(kernels)) for j in range(i)
                if kernels[i].shape == kernels[j].shape and np.array_equal(kernels[i], kernels[j])]
