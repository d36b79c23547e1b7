"""The scripts: the MVTec AD downloader (local archive; offline says how to supply the file) and the export
benchmark."""

import os
import subprocess
import sys
import tarfile

import pytest
from helpers import script_module as _script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO, "scripts")
SCRIPT = os.path.join(SCRIPTS, "download_mvtec.py")


def test_unpacks_a_local_archive(tiny_data, tmp_path):
    archive = tmp_path / "mvtec_anomaly_detection.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(tiny_data, arcname="capsule")
    out = tmp_path / "mvtec"
    proc = subprocess.run([sys.executable, SCRIPT, "--out", str(out), "--archive", str(archive)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "1 categories" in proc.stdout and "mvtec_capsule.yaml" in proc.stdout
    assert (out / "capsule" / "ground_truth" / "hole").is_dir()


@pytest.mark.parametrize("has_data_filter", [True, False])
def test_unpack_refuses_a_member_outside_the_folder(tmp_path, monkeypatch, has_data_filter):
    """With tarfile's "data" filter (Python 3.11.4+) and without it (3.11.0-3.11.3, our fallback): a member
    that climbs out of --out is refused and nothing lands outside."""
    if not has_data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    (tmp_path / "evil.txt").write_text("x")
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "evil.txt", arcname="../escaped.txt")
    out = tmp_path / "deep" / "mvtec"
    with pytest.raises(tarfile.TarError):
        _script("download_mvtec").unpack(str(archive), str(out))
    assert not (tmp_path / "deep" / "escaped.txt").exists()


def test_offline_download_says_where_to_get_the_data(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path / "m"), "--url", "http://127.0.0.1:9/x.tar.xz"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "--archive" in error[0] and "mvtec.com" in error[0]
    assert not (tmp_path / "m").exists()


def test_bench_export_times_every_runtime(export_tiny, tmp_path, capsys):
    run, export, _ = export_tiny("cae")  # with every TFLite mode
    bench = _script("bench_export")
    out = tmp_path / "bench.md"
    assert bench.main(["--run", str(run), "--export", str(export), "--out", str(out), "--repeats", "2",
                       "--min-seconds", "0"]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "runtime" not in line]
    names = [row.split("|")[1].strip() for row in rows]
    assert names == ["Keras eager", "tf.function", "SavedModel", "TFLite fp32", "TFLite fp16", "TFLite dynamic",
                     "TFLite int8", "ONNX Runtime"]
    assert rows[0].split("|")[3].strip() == "1.0"  # the eager row is the reference of the ratios
    assert all(float(row.split("|")[2]) > 0 for row in rows)


@pytest.mark.slow
def test_fused_ops_benchmark_compares_keras_and_keras_ad_steps(tmp_path):
    out = tmp_path / "fused.md"
    assert _script("bench_fused_ops").main(["--detectors", "cae", "--repeats", "1", "--min-seconds", "0",
                                            "--out", str(out)]) == 0
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| cae ")]
    assert len(rows) == 1
    keras_ops, fused_ops, *timings = (float(cell) for cell in rows[0][1:])
    assert fused_ops < keras_ops / 2  # the fused Adam and batch norm, not Keras' own, in the second form
    assert all(t > 0 for t in timings)


def test_mnist_and_cifar10_archives_become_one_class_folders(tmp_path):
    import io
    import pickle

    import numpy as np

    script = _script("export_keras_dataset")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 255, (6, 28, 28), dtype=np.uint8),
             y_train=np.array([0, 1, 1, 2, 3, 3]), x_test=rng.integers(0, 255, (2, 28, 28), dtype=np.uint8),
             y_test=np.array([1, 9]))
    assert script.main(["--dataset", "mnist", "--file", str(tmp_path / "mnist.npz"), "--out", str(tmp_path / "m")]) == 0
    assert sorted(os.listdir(tmp_path / "m" / "1")) == ["test_00000.png", "train_00001.png", "train_00002.png"]
    assert sorted(os.listdir(tmp_path / "m")) == ["0", "1", "2", "3", "9"]

    with tarfile.open(tmp_path / "cifar.tar.gz", "w:gz") as archive:
        for name, labels in (("data_batch_1", [2, 0]), ("test_batch", [9])):
            data = pickle.dumps({b"data": rng.integers(0, 255, (len(labels), 3072), dtype=np.uint8), b"labels": labels})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    args = ["--dataset", "cifar10", "--file", str(tmp_path / "cifar.tar.gz"), "--out", str(tmp_path / "c")]
    assert script.main(args) == 0
    assert os.listdir(tmp_path / "c" / "bird") == ["train_00000.png"]
    assert os.listdir(tmp_path / "c" / "truck") == ["test_00000.png"]


def test_dataset_script_offline_says_how_to_supply_the_file(tmp_path, capsys):
    script = _script("export_keras_dataset")
    code = script.main(["--dataset", "mnist", "--out", str(tmp_path / "m"), "--url", "http://127.0.0.1:9/keras_ad_absent.npz"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "cannot download http://127.0.0.1:9/keras_ad_absent.npz" in err[0] and "--file" in err[0]
    assert not (tmp_path / "m").exists()


def test_aarch64_check_compares_scores_and_decisions_by_file():
    check = _script("check_aarch64")
    host = "path,score,is_anomalous,defect_area\n/h/a.png,0.5,1,3\n/h/b.png,0.25,0,0\n"
    same = "path,score,is_anomalous,defect_area\n/work/a.png,0.50004,1,3\n/work/b.png,0.25,0,0\n"
    result = check.compare_scores(host, same, atol=1e-4)
    assert result["passed"] and result["decisions_changed"] == [] and abs(result["max_score_diff"] - 4e-5) < 1e-9
    drifted = "path,score,is_anomalous,defect_area\n/work/a.png,0.6,1,3\n/work/b.png,0.25,1,2\n"
    result = check.compare_scores(host, drifted, atol=1e-4)
    assert not result["passed"] and result["decisions_changed"] == ["b.png"]
    other = "path,score,is_anomalous,defect_area\n/work/c.png,0.5,1,3\n/work/b.png,0.25,0,0\n"
    with pytest.raises(ValueError, match="other files"):
        check.compare_scores(host, other, atol=1e-4)


def test_torchvision_vgg19_weights_convert_to_keras_layout(tmp_path):
    """A torchvision-layout state dict ([out, in, kh, kw] kernels) loads into PIAD's VGG19 so that the
    first convolution computes what PyTorch's padded cross-correlation computes."""
    import numpy as np

    from keras_ad.backbones import vgg19

    convert = _script("convert_torchvision_vgg19")
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
    rng = np.random.default_rng(0)
    state = {}
    for k, index in enumerate(convert.TORCH_CONV_INDICES):
        state[f"features.{index}.weight"] = rng.normal(0, 0.05, (widths[k + 1], widths[k], 3, 3)).astype(np.float32)
        state[f"features.{index}.bias"] = rng.normal(0, 0.05, widths[k + 1]).astype(np.float32)
    np.savez(tmp_path / "vgg.npz", **state)
    out = str(tmp_path / "vgg.weights.h5")
    assert convert.main(["--state-dict", str(tmp_path / "vgg.npz"), "--out", out]) == 0
    assert convert.main(["--state-dict", str(tmp_path / "vgg.npz"), "--out", out]) == 2  # no silent overwrite

    import keras

    vgg = vgg19.relu4_2(32, out)
    first = keras.Model(vgg.input, vgg.get_layer("block1_conv1").output)
    x = rng.random((1, 32, 32, 3)).astype(np.float32)
    w, b = state["features.0.weight"], state["features.0.bias"]
    padded = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
    expected = np.zeros((32, 32, 64), np.float32)
    for dy in range(3):
        for dx in range(3):
            expected += padded[dy:dy + 32, dx:dx + 32] @ w[:, :, dy, dx].T
    np.testing.assert_allclose(first(x).numpy()[0], np.maximum(expected + b, 0), atol=1e-4)


@pytest.mark.slow
def test_digits_benchmark_writes_its_table(tmp_path, capsys):
    bench = _script("bench_digits")
    assert bench.main(["--detectors", "cae,svm", "--out", str(tmp_path)]) == 2
    assert bench.main(["--detectors", "cae", "--classes", "3", "--epochs", "1", "--out", str(tmp_path)]) == 0
    import json

    result = json.loads((tmp_path / "digits.json").read_text())["results"]["cae"]
    assert 0.0 <= result["per_class"]["3"]["image_auroc"] <= 1.0 and result["total_seconds"] > 0
    assert "| cae |" in (tmp_path / "digits.md").read_text()


@pytest.mark.slow
def test_run_all_tables_runs_and_resumes(tmp_path, monkeypatch, capsys):
    """Two tiny runs of configs/piad_mnist.yaml with a .npz source (scikit-learn's digits as MNIST's arrays):
    the official split holds, the small set repeats to train.min_epoch_images, the report says the VGG
    features are random; mean ± std per class; a second call trains nothing, and a run whose report is
    gone is resumed from its checkpoint, not retrained."""
    import json

    import numpy as np
    from sklearn.datasets import load_digits

    monkeypatch.setenv("KERAS_AD_HOME", str(tmp_path / "home"))
    digits = load_digits()
    images = (digits.images * 16).clip(0, 255).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x_train=images[::3], y_train=digits.target[::3], x_test=images[1::24],
             y_test=digits.target[1::24])
    tiny = ["data.source=" + str(tmp_path / "d.npz"), "detector.perceptual_weights=none", "detector.latent_dim=8",
            "detector.latent_critic_dims=[16,16]", "detector.n_dis=1", "train.iterations=3",
            "train.min_epoch_images=64", "train.batch_size=16"]
    tiny += [f"detector.{k}_dims=[8,8,8,8]" for k in ("generator", "encoder", "image_critic")]
    run_all = _script("run_all")
    args = ["--datasets", "mnist", "--classes", "3", "--runs", "2", "--out", str(tmp_path / "all")]
    args += [a for s in tiny for a in ("--set", s)]
    assert run_all.main(args) == 0
    # 61 images of digit 3 train (3 of them validate) and repeat to 64 per epoch: 2 steps of 16 x 2 (n_dis 1);
    # 3 iterations -> 2 epochs
    assert "on 58 images, repeated to 64 per epoch (3 validation), 2 epochs" in capsys.readouterr().out
    report = json.loads((tmp_path / "all" / "mnist" / "3" / "run0" / "report.json").read_text())
    test_labels = digits.target[1::24]
    assert report["n_images"] == len(test_labels) and report["n_defective"] == int((test_labels != 3).sum())
    assert "random VGG19 features" in report["caveats"][0]
    results = json.loads((tmp_path / "all" / "results.json").read_text())
    aurocs = [results["runs"]["mnist"]["3"][k]["image_auroc"] for k in ("0", "1")]
    row = results["table"]["mnist"]["3"]
    assert row["runs"] == 2 and row["mean"] == np.mean(aurocs) and row["std"] == np.std(aurocs)
    assert f"| 3 | {np.mean(aurocs):.4f} ± {np.std(aurocs):.4f} | 2 |" in (tmp_path / "all" / "results.md").read_text()

    run1 = tmp_path / "all" / "mnist" / "3" / "run1"
    weights = (run1 / "model.weights.h5").stat().st_mtime
    (run1 / "report.json").unlink()
    capsys.readouterr()
    assert run_all.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("training piad") == 1 and out.count("resuming from") == 1  # run0 skipped, run1 resumed
    assert json.loads((tmp_path / "all" / "results.json").read_text())["runs"] == results["runs"]
    assert (run1 / "model.weights.h5").stat().st_mtime >= weights
    assert run_all.main(["--datasets", "imagenet"]) == 2


def test_run_all_celeba_row_per_attribute():
    run_all = _script("run_all")
    reports = [{"per_defect": {"Bald": {"image_auroc": a}, "Bangs": {"image_auroc": b}}}
               for a, b in ((0.8, 0.6), (0.6, 0.7))]
    runs = {str(k): run_all.aurocs("celeba", r) for k, r in enumerate(reports)}
    table = run_all.summarise({"celeba": {"normal": runs}})
    assert table["celeba"]["Bald"]["mean"] == 0.7 and abs(table["celeba"]["Bangs"]["std"] - 0.05) < 1e-12
    assert abs(table["celeba"]["mean"]["mean"] - 0.675) < 1e-12


def test_perceptual_stats_standardise_the_features_they_were_computed_on(tmp_path, capsys):
    """Statistics written by the script, read back by PIAD, standardise the relu4_2 features of the same
    images to mean 0 and std 1 per channel (a seeded random VGG19 here: no download)."""
    import keras
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from keras_ad.backbones import vgg19
    from keras_ad.losses.perceptual import PerceptualFeatures
    from keras_ad.scoring import preprocess

    script = _script("perceptual_stats")
    rng = np.random.default_rng(0)
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    images = [rng.integers(0, 255, (40 + i, 36, 3), dtype=np.uint8) for i in range(6)]
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / "imgs" / "sub" / f"{i}.png")
    out = tmp_path / "stats.json"
    args = ["--weights", "none", "--images", str(tmp_path / "imgs"), "--out", str(out), "--size", "32"]
    keras.utils.set_random_seed(0)
    assert script.main(args) == 0
    mean, std = vgg19.feature_statistics("keras-imagenet", str(out))

    keras.utils.set_random_seed(0)  # the same random VGG19 again
    features = PerceptualFeatures(vgg19.relu4_2(32, "none"), mean, np.maximum(std, 1e-12))
    batch = tf.concat([preprocess(image[None], 32, 3) for image in images], 0) * 2.0 - 1.0
    standardised = features(batch).numpy().reshape(-1, 512)
    alive = std > 1e-3  # channels the ReLU never opens on these images stay 0
    assert alive.sum() > 100
    np.testing.assert_allclose(standardised[:, alive].mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(standardised[:, alive].std(0), 1.0, atol=1e-3)
    assert script.main(args) == 2 and "exists" in capsys.readouterr().err  # never overwrites


@pytest.mark.slow
def test_video_benchmark_writes_its_table(tmp_path, monkeypatch):
    import json

    bench = _script("bench_video")
    monkeypatch.setenv("KERAS_AD_HOME", str(tmp_path / "home"))
    assert bench.main(["--variants", "baseline,svm", "--out", str(tmp_path)]) == 2
    monkeypatch.setitem(bench.VARIANTS, "baseline", bench.VARIANTS["baseline"] + ["detector.widths=[4,4,8,8]",
                                                                                   "detector.clip_length=8"])
    assert bench.main(["--variants", "baseline", "--seeds", "0", "--epochs", "1", "--out", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "video.json").read_text())["results"]["baseline"][0]
    assert 0.0 <= row["frame_auroc_offline"] <= 1.0 and row["seconds"] > 0
    assert "| baseline |" in (tmp_path / "video.md").read_text()


@pytest.mark.slow
def test_precision_benchmark_prints_speedups_over_float32(capsys):
    bench = _script("bench_precision")
    bench.main(["--detectors", "cae", "--seconds", "0", "--set", "data.image_size=32", "--set", "train.batch_size=4"])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| cae"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    float32, float16, bfloat16 = (float(c) for c in cells[1:4])
    assert min(float32, float16, bfloat16) > 0
    for cell, ratio in ((cells[4], float16 / float32), (cells[5], bfloat16 / float32)):  # of unrounded speeds
        assert cell.endswith("x") and float(cell[:-1]) == pytest.approx(ratio, rel=0.05, abs=0.01)


@pytest.mark.slow
def test_anogan_benchmark_times_the_search_forms_against_the_matmul_rate(tmp_path, capsys):
    """--config: an untrained build of a shipped config, timed three ways. One step's FLOPs are G and f
    forward plus their backward to z, twice the forward: the frozen networks' weight gradients are not
    part of the search (they would make it three times)."""
    import json

    import tensorflow as tf

    from keras_ad import benchmark, config, detectors

    demo = os.path.join(REPO, "configs", "anogan_demo.yaml")
    tiny = ["data.image_size=32", "detector.filters=4", "detector.latent_dim=8"]
    out = tmp_path / "speed.json"
    args = ["--config", demo, *(a for s in tiny for a in ("--set", s)), "--images", "4", "--batch", "2",
            "--steps", "3", "--seed-form-images", "1", "--out", str(out)]
    assert _script("bench_anogan").main(args) == 0
    result = json.loads(out.read_text())
    seconds = result["seconds_per_image"]
    assert min(seconds.values()) > 0 and not result["trained"] and result["variants"] == {}
    assert result["speedup_vs_per_image"] == pytest.approx(seconds["per_image"] / seconds["batched"])
    detector = detectors.build(config.load(demo, tiny))
    forward = benchmark.graph_flops(tf.function(lambda z: detector.features(detector.generator(z)))
                                    .get_concrete_function(tf.TensorSpec([1, 8])))
    assert 1.9 < result["flops_per_image"] / 3 / forward < 2.2
    per_image_rate = result["flops_per_image"] / seconds["per_image"]
    assert result["batching_ceiling"] == pytest.approx(result["matmul_flops_per_second"] / per_image_rate)
    assert f"more than {result['batching_ceiling']:.1f}x" in capsys.readouterr().out


def test_anogan_benchmark_scores_a_trained_runs_variants(train_tiny, trained_run, tmp_path):
    import json

    bench = _script("bench_anogan")
    out = tmp_path / "anogan.json"
    assert bench.main(["--run", str(train_tiny("anogan")), "--images", "2", "--batch", "2", "--steps", "2",
                       "--seed-form-images", "1", "--refine-steps", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["trained"] and len(result["variants"]) == 3 and result["test_images"] > 0
    assert all(0.0 <= row["image_auroc"] <= 1.0 for row in result["variants"].values())
    assert bench.main(["--run", str(trained_run), "--out", str(tmp_path / "cae.json")]) == 2  # not an anogan run
    assert not (tmp_path / "cae.json").exists()
    with pytest.raises(SystemExit):
        bench.main(["--run", str(trained_run), "--set", "detector.filters=4"])


@pytest.mark.slow
def test_kill_resume_trials_kill_at_random_moments_and_find_nothing_corrupt(tmp_path, capsys):
    """One trial of scripts/kill_resume.py (the README reports 20): the killed run resumes or restarts to a
    run whose checkpoints, weights and history all read back; a damaged run would be reported. --span 4 s
    (an uninterrupted run trains 3.4 s after its "training ..." line here) saves the run that measures it."""
    trials = _script("kill_resume")
    args = ["--trials", "1", "--epochs", "3", "--seed", "1", "--span", "4", "--work", str(tmp_path)]
    assert trials.main(args) == 0
    out = capsys.readouterr().out
    assert "trial 1/1: killed" in out, out  # the kill landed (seed 1: 0.5 s in)
    assert out.count(": ok\n") == 1 and "1 of 1 trials complete with no corrupt checkpoint" in out
    run = tmp_path / "trial00"
    (run / "history.csv").write_text((run / "history.csv").read_text() + "3,0.1,0.1\n")  # an epoch twice
    assert trials.problems(str(run), 3) == ["history.csv epochs ['1', '2', '3', '3']"]


def test_suite_time_estimate_splits_each_test_into_compute_and_the_rest(tmp_path, capsys):
    """A test that takes 10 s here and 17.5 s with oneDNN capped (slowdown 4) spent 2.5 s computing: on a CPU
    2x slower at the rest and 5x at compute it takes 2 x 7.5 + 5 x 2.5 = 27.5 s; a test that is no slower
    capped is all rest; one only in one log is left out; two workers share the sum. The session took 10 s, 3 beyond
    the tests' 14 / 2, all rest: 36 / 2 + 2 x 3 = 24 s for the suite."""
    report = "============ slowest durations ============\n{}\n=== 2 passed in {}s ===\n"
    (tmp_path / "default.log").write_text(report.format(
        "10.00s call     tests/test_a.py::test_compute\n4.00s setup    tests/test_b.py::test_rest\n"
        "1.00s call     tests/test_c.py::test_only_here", "10.00"))
    (tmp_path / "sse41.log").write_text(report.format(
        "17.50s call     tests/test_a.py::test_compute\n3.90s setup    tests/test_b.py::test_rest", "12.00"))
    estimate = _script("estimate_suite_time")
    rows = estimate.estimate(estimate.read_durations(tmp_path / "default.log"),
                             estimate.read_durations(tmp_path / "sse41.log"), 4.0, 5.0, 2.0)
    assert rows == {("call", "tests/test_a.py::test_compute"): (10.0, 2.5, 27.5),
                    ("setup", "tests/test_b.py::test_rest"): (4.0, 0.0, 8.0)}
    assert estimate.main([str(tmp_path / "default.log"), str(tmp_path / "sse41.log"), "--isa-slowdown", "4",
                          "--compute-ratio", "5", "--other-ratio", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 s of session overhead" in out
    assert "estimated on the slower CPU: 36 s of test time, 0.3 min over 2 workers; the suite 0.4 min" in out
    assert estimate.session_seconds(tmp_path / "default.log") == 10.0
    assert out.index("test_compute |") < out.index("test_rest |")  # the costliest first
    with pytest.raises(SystemExit):
        estimate.main([str(tmp_path / "default.log"), str(tmp_path / "sse41.log"), "--isa-slowdown", "1"])
