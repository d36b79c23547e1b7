"""Exports of every registered detector: SavedModel, TFLite and ONNX against the Keras scorer.

Each detector's tiny run is recalibrated with a minimum defect area > 1 first, so the exported
graphs carry the connected-component loop of the decision rule.
"""

import csv
import functools
import json
import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from helpers import TINY_DETECTORS, TINY_MIN_AREA, TINY_PROTOCOLS, device_command
from PIL import Image

import keras_ad
from keras_ad.cli import main
from keras_ad.detectors import REGISTRY
from keras_ad.export import bundle, device, parity
from keras_ad.specs import SPECS


@functools.cache
def load(path, variant="default"):
    """keras_ad.load, once per folder and variant: the tests read the scorers they share and never change them."""
    return keras_ad.load(path, variant)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def random_inputs(run, n, height, width, seed):
    """n random uint8 images, or clips for a video detector, of the run's channels."""
    scorer = load(run)
    length = scorer.detector.clip_length
    shape = (n, *([length] if length else []), height, width, scorer.cfg.data.channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def saved_signatures(folder) -> set:
    """The signatures a SavedModel offers, read from its saved_model.pb without loading its functions (TensorFlow's
    own init op is not one)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
    return {name for graph in saved.meta_graphs for name in graph.signature_def} - {"__saved_model_init_op"}


def test_every_registered_detector_has_a_tiny_test_model():
    assert set(REGISTRY) <= {section["name"] for section in TINY_DETECTORS.values()}


@pytest.fixture(params=sorted(TINY_DETECTORS) + sorted(TINY_PROTOCOLS))
def exported(request, export_tiny):
    """(run folder, export folder, export report) of one detector (or protocol run), conftest.export_tiny."""
    return export_tiny(request.param)


def test_float_artefacts_match_keras_within_tolerance(exported):
    _, out, report = exported
    rows = {name: row for name, row in report["artefacts"].items() if row["quantize"] == "none"}
    assert set(rows) == {"saved_model", "model_fp32.tflite", "model.onnx"}
    for name in rows:
        assert rows[name]["passed"], rows[name]
        assert rows[name]["decision_agreement"] == 1.0
        # each artefact against the Keras scorer of the variant it carries (AnoGAN: SavedModel the full
        # search, TFLite and ONNX the edge variant; the other detectors have one variant)
        reference = report["references"][rows[name]["variant"]]
        assert rows[name]["image_auroc"] == pytest.approx(reference["image_auroc"], abs=1e-6)
    assert rows["saved_model"]["variant"] == "default"
    assert rows["saved_model"]["max_abs_diff"]["score"] <= parity.FLOAT_ATOL + parity.SCORE_RTOL * 1e4


def test_metadata_describes_the_artefacts(exported):
    run, out, _ = exported
    metadata = json.loads((out / "metadata.json").read_text())
    calibration = json.loads((run / "calibration.json").read_text())
    decision = {k: metadata["decision"][k] for k in ("pixel_threshold", "min_area")}
    assert decision == {"pixel_threshold": calibration["pixel_threshold"], "min_area": TINY_MIN_AREA}
    assert metadata["decision"].get("online_psnr_range") == calibration.get("online_psnr_range")  # video models
    assert metadata["input"]["dtype"] == "uint8"
    assert metadata["input"]["channels"] == load(run).cfg.data.channels
    assert metadata["keras_ad_version"] == keras_ad.__version__
    for name in ("model_fp32.tflite", "model.onnx"):
        assert metadata["artefacts"][name]["sha256"] == device.sha256(str(out / name))
    assert (out / "requirements.txt").read_text() == open(bundle.DEVICE_REQUIREMENTS).read()  # for the device
    assert set(metadata["signatures"]) == saved_signatures(out / "saved_model")
    assert len(metadata["artefacts"]["saved_model"]["sha256"]) == 64


def test_a_video_model_reports_its_online_score_from_the_graph(exported):
    """LNTRA's online score is a graph output: every export gives it, equal to the rule on -PSNR."""
    from keras_ad.detectors.lntra import online_score

    run, out, _ = exported
    scorer = load(run)
    if not scorer.detector.clip_length:
        assert "online_score" not in scorer(random_inputs(run, 1, 32, 32, seed=3))
        return
    clips = random_inputs(run, 3, 48, 40, seed=3)
    keras_out = {k: v.numpy() for k, v in scorer(clips).items()}
    low, high = scorer.online_psnr_range
    assert low < high
    np.testing.assert_allclose(keras_out["online_score"], online_score(-keras_out["score"].astype(np.float64),
                                                                       (low, high)), rtol=1e-5, atol=1e-5)
    for name in ("model_fp32.tflite", "model.onnx"):
        on_device = device.DeviceScorer(str(out / name))(clips)["online_score"]
        np.testing.assert_allclose(on_device, keras_out["online_score"], atol=1e-3, err_msg=name)


def test_int8_quantises_the_network_and_keeps_the_post_processing_in_float(exported, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    run, out, report = exported
    if load(run).detector.clip_length:  # 3D convolutions have no int8 kernels in TFLite
        result = invoke("export", "--run", run, "--format", "tflite", "--quantize", "int8", "--out", tmp_path / "q")
        assert result.exit_code == 2 and "CONV_3D" in result.output and not (tmp_path / "q").exists()
        return
    row = report["artefacts"]["model_int8.tflite"]
    assert row["tolerance"]["auroc_drop"] == parity.AUROC_DROP_TOLERANCE
    # Quantisation noise, not a broken graph: the mean int8 score stays within a factor 2.5 of the float
    # one (a kernel that int8 quantised as an activation once put them off by 4x). PIAD's tiny run, 39 int8
    # convs of a He-initialised random VGG after 2 GAN epochs that differ run to run on 2 threads, measured
    # int8/float 0.89-1.16 over train seeds 0-3 and 0.46 once (a Glorot-initialised VGG gave 0.48 once).
    images = np.stack(parity.load_parity_set(load(run).cfg).images[:8])
    variant = row["variant"]
    float_scores = load(run, variant)(images)["score"].numpy()
    int8_scores = device.DeviceScorer(str(out / "model_int8.tflite"))(images)["score"]
    assert 0.4 <= np.mean(int8_scores) / np.mean(float_scores) <= 2.5, (int8_scores, float_scores)
    if not SPECS[load(run).cfg.detector.name].trains_weights:
        # pretrained features keep their order under int8 (tiny run: correlation 0.86 over 8 images); a
        # RELU in PatchCore's distances once made int8 collapse every distance to one value (constant
        # scores, no correlation; demo image AUROC 0.55 instead of 1.00)
        assert np.corrcoef(int8_scores, float_scores)[0, 1] >= 0.5
    interpreter = Interpreter(model_path=str(out / "model_int8.tflite"))
    tensors = interpreter.get_tensor_details()
    details = interpreter._get_ops_details()
    ops = {(op["op_name"], np.dtype(tensors[op["outputs"][0]]["dtype"]).name) for op in details}
    # every convolution's weights are stored constants: a weight computed at run time gets quantised
    # with activation statistics, which broke the 1x1 -> 8x8 layer of the mvtec CAE once
    produced = {i for op in details for i in op["outputs"]}
    assert all(op["inputs"][1] not in produced for op in details if op["op_name"] in ("CONV_2D", "TRANSPOSE_CONV"))
    assert ("CONV_2D", "int8") in ops
    # the score and the map stay float (max-pools may be int8: PIAD's VGG19 has three; the decision's
    # label propagation runs in the WHILE subgraph on float labels)
    assert all(dtype != "int8" for name, dtype in ops if name in ("TOPK_V2", "SQUARED_DIFFERENCE"))


@pytest.mark.parametrize("model", ["model_fp32.tflite", "model.onnx"])
def test_device_scorer_without_tensorflow_matches_keras_ad_score(exported, tiny_data, tmp_path, model):
    """Image files scored on the device and by `keras-ad score` agree; the parity check passes there (a
    video model: the check on its stored clips)."""
    run, out, _ = exported
    check = device_command(out / "keras_ad_device.py", "--model", out / model, "--check")
    assert check.returncode == 0 and "parity: ok" in check.stdout, check.stdout + check.stderr
    if load(run).detector.clip_length:
        return
    folder = tiny_data / "test" / "stain"
    variant = json.loads((out / "metadata.json").read_text())["artefacts"][model]["variant"]
    host = invoke("score", "--run", run, folder, "--out", tmp_path / "host", "--variant", variant)
    assert host.exit_code == 0, host.output
    proc = device_command(out / "keras_ad_device.py", "--model", out / model, folder, "--format", "csv",
                           "--out", tmp_path / "device.csv", "--save-overlays", tmp_path / "overlays")
    assert proc.returncode == 0, proc.stderr
    host_rows = list(csv.DictReader(open(tmp_path / "host" / "scores.csv")))
    device_rows = list(csv.DictReader(open(tmp_path / "device.csv")))
    assert [r["path"] for r in device_rows] == [r["path"] for r in host_rows]
    np.testing.assert_allclose([float(r["score"]) for r in device_rows], [float(r["score"]) for r in host_rows],
                               atol=parity.FLOAT_ATOL, rtol=parity.SCORE_RTOL)
    for key in ("is_anomalous", "defect_area", "overlay"):
        assert [r[key] for r in device_rows] == [r[key] for r in host_rows]
    for row in host_rows:  # the same overlay: maps equal to ~1e-5 may round a colour or flip a boundary pixel
        on_host = np.asarray(Image.open(tmp_path / "host" / "overlays" / row["overlay"]), np.int16)
        on_device = np.asarray(Image.open(tmp_path / "overlays" / row["overlay"]), np.int16)
        assert on_host.shape == on_device.shape
        assert np.mean(np.abs(on_host - on_device).max(-1) > 2) <= 0.01, row["overlay"]


def test_device_scorer_refuses_a_model_that_is_not_the_exported_one(exported, tmp_path):
    """The SHA-256 in metadata.json is checked on load: the fp32 file with one byte appended
    (as a copied int8 model once scored silently) is one line and exit 2; --no-verify loads it."""
    _, out, _ = exported
    copy = tmp_path / "export"
    shutil.copytree(out, copy)
    with open(copy / "model_fp32.tflite", "ab") as f:
        f.write(b"\0")  # a flatbuffer with a trailing byte still loads: only the digest tells
    proc = device_command(copy / "keras_ad_device.py", "--model", copy / "model_fp32.tflite", "--check")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "SHA-256 differs" in line and "--no-verify" in line
    unverified = device_command(copy / "keras_ad_device.py", "--model", copy / "model_fp32.tflite", "--check",
                                 "--no-verify")
    assert unverified.returncode == 0 and "parity: ok" in unverified.stdout, unverified.stderr


@pytest.mark.parametrize("exported", ["cae"], indirect=True)  # the CAE export's int8 model
def test_device_check_compares_decisions_with_the_agreement_measured_at_export(exported, tmp_path):
    """int8's score tolerance can be near its threshold: --check also compares the calls (is_anomalous)
    with those stored at export, against the agreement measured then; flipped decisions fail it."""
    out = tmp_path / "q"
    shutil.copytree(exported[1], out)  # its parity file is changed below
    metadata = json.loads((out / "metadata.json").read_text())
    at_export = metadata["artefacts"]["model_int8.tflite"]["check_decision_agreement"]
    check = device_command(out / "keras_ad_device.py", "--model", out / "model_int8.tflite", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"(at export {at_export:.1%}) ok" in check.stdout
    stored = dict(np.load(out / device.PARITY_FILE))
    stored["is_anomalous"] = ~stored["is_anomalous"]  # Keras' calls, all flipped
    np.savez(out / device.PARITY_FILE, **stored)
    flipped = device_command(out / "keras_ad_device.py", "--model", out / "model_int8.tflite", "--check")
    assert flipped.returncode == 1 and "parity: FAILED (is_anomalous)" in flipped.stdout, flipped.stdout


@pytest.mark.parametrize("exported", ["cae"], indirect=True)
def test_a_corrupt_file_is_reported_and_the_others_are_scored(exported, tiny_data, tmp_path):
    """`keras-ad score` and the device scorer: every readable image scored, the corrupt one in the status
    column and on stderr, exit code 1 (some inputs failed)."""
    run, out, _ = exported
    folder = tmp_path / "images"
    shutil.copytree(tiny_data / "test" / "stain", folder)
    (folder / "broken.png").write_bytes(b"not a png")
    host = invoke("score", "--run", run, folder, "--out", tmp_path / "host", "--no-overlays")
    assert host.exit_code == 1, host.output
    proc = device_command(out / "keras_ad_device.py", "--model", out / "model.onnx", folder, "--format", "csv",
                           "--out", tmp_path / "device.csv")
    assert proc.returncode == 1 and f"error: {folder / 'broken.png'}: unreadable" in proc.stderr, proc.stderr
    for table in (tmp_path / "host" / "scores.csv", tmp_path / "device.csv"):
        records = {os.path.basename(r["path"]): r for r in csv.DictReader(open(table))}
        assert len(records) == len(os.listdir(folder))
        assert records["broken.png"]["status"].startswith("unreadable") and records["broken.png"]["score"] == ""
        assert all(r["status"] == "ok" and float(r["score"]) > 0 for n, r in records.items() if n != "broken.png")


def test_device_scorer_bad_input_is_one_line(exported, tmp_path):
    _, out, _ = exported
    proc = device_command(out / "keras_ad_device.py", "--model", out / "model.onnx", tmp_path / "missing.png")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.png'}: no such file or folder"]


def test_saved_model_loads_without_keras_ad(exported, clean_tensorflow, tmp_path):
    run, out, _ = exported
    images = random_inputs(run, 3, 50, 40, seed=0)
    expected = load(run)(images, 0.05)
    np.savez(tmp_path / "case.npz", images=images, **{k: v.numpy() for k, v in expected.items()})
    failure = clean_tensorflow.run(f"""
        import sys
        import numpy as np
        import tensorflow as tf
        case = np.load({str(tmp_path / 'case.npz')!r})
        model = tf.saved_model.load({str(out / 'saved_model')!r})
        out = model.signatures["score_with_threshold"](images=tf.constant(case["images"]),
                                                       threshold=tf.constant([0.05]))
        for name in ("score", "anomaly_map"):
            assert np.abs(out[name].numpy() - case[name]).max() <= 1e-4, name
        assert (out["defect_area"].numpy() == case["defect_area"]).all()
        default = model.signatures["serving_default"](images=tf.constant(case["images"]))
        assert set(default) == {set(expected)!r}  # a video model's online_score too
        assert not any(m.startswith("keras_ad") for m in sys.modules)
    """)
    assert failure is None, failure


@pytest.fixture(params=["run", "export"])
def loaded(request, exported):
    """(scorer from keras_ad.load, its eager outputs, the images, the run's map shape, the tolerance of
    equal maps): for the run folder and for the export."""
    run, out, _ = exported
    scorer = load(run if request.param == "run" else out)
    images = random_inputs(run, 4, 40, 40, seed=1)
    own = load(run)
    # per-pixel normalisation divides the raw map (equal to ~1e-8, 1e-6 of a 0.01 error) by its
    # denominator: the rounding grows by the same factor
    atol = 1e-6 * max(1.0, 0.01 / float(own.normalization[1].min())) if own.normalization else 1e-6
    return scorer, scorer(images), images, own.cfg.data.image_shape, atol


def _assert_same(outputs, expected, atol):
    """Equal up to float32 rounding: AnoGAN's score is a sum of ~10^3; PIAD's map comes through 10 VGG
    convolutions whose op order differs inside tf.data (measured 1.3e-6 relative)."""
    for name in ("score", "anomaly_map", "defect_area"):
        np.testing.assert_allclose(outputs[name], expected[name], atol=atol, rtol=1e-5)


def test_loaded_scorer_works_eagerly(loaded):
    scorer, eager, images, shape, _ = loaded
    video = {"online_score"} if images.ndim == 5 else set()  # clips [N, T, H, W, C]
    assert set(eager) == {"score", "anomaly_map", "is_anomalous", "defect_area"} | video
    assert eager["anomaly_map"].shape == (4, *shape)
    np.testing.assert_allclose(scorer(images.astype(np.float32) / 255.0)["score"], eager["score"], atol=1e-5, rtol=1e-6)
    assert scorer(images, 0.0)["is_anomalous"].numpy().all()  # every pixel above 0: every image anomalous


def test_run_and_export_scorers_share_one_interface(exported):
    """keras_ad.load on a run and on its export: the same threshold, map shape, channels and clip length."""
    run, out, _ = exported
    own, exported_scorer = load(run), load(out)
    for name in ("threshold", "image_shape", "channels", "clip_length"):
        assert getattr(exported_scorer, name) == getattr(own, name), name


def test_loaded_scorer_works_inside_tf_function(loaded):
    scorer, eager, images, _, atol = loaded
    _assert_same(tf.function(lambda x: scorer(x))(tf.constant(images)), eager, atol)


def test_loaded_scorer_works_inside_tf_data_map(loaded):
    scorer, eager, images, _, atol = loaded
    _assert_same(next(iter(tf.data.Dataset.from_tensor_slices(images).batch(4).map(lambda x: scorer(x)))), eager, atol)


def test_device_scorer_scores_camera_frames(exported, monkeypatch, capsys):
    """A stand-in for OpenCV's VideoCapture: BGR frames in, one JSON line per frame out (a video model:
    per frame from the first full clip on, for the centre frame of the last T)."""
    import types

    _, out, _ = exported
    scorer = device.DeviceScorer(str(out / "model_fp32.tflite"))
    length = scorer.clip_length or 1
    frames = np.random.default_rng(2).integers(0, 256, (length + 2, 48, 64, 3), dtype=np.uint8)

    class Capture:
        def __init__(self, source):
            self.left = list(frames)

        def isOpened(self):
            return True

        def read(self):
            return (True, self.left.pop(0)) if self.left else (False, None)

        def release(self):
            pass

    cv2 = types.SimpleNamespace(VideoCapture=Capture, COLOR_BGR2RGB=4, COLOR_BGR2GRAY=6,
                                cvtColor=lambda image, code: image[..., ::-1] if code == 4 else image[..., 0])
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    assert device.main(["--model", str(out / "model_fp32.tflite"), "--camera", "0"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["frame"] for line in lines] == [length // 2 + i for i in range(3)]
    images = frames[..., ::-1] if scorer.channels == 3 else frames[..., :1]
    inputs = np.stack([images[i:i + length] for i in range(3)]) if scorer.clip_length else images
    expected = scorer(inputs)
    np.testing.assert_allclose([line["score"] for line in lines], expected["score"], rtol=1e-6)


def test_export_refuses_to_overwrite_and_bad_choices(exported, tmp_path):
    run, out, _ = exported
    before = (out / "metadata.json").read_bytes()
    result = invoke("export", "--run", run, "--out", out)
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (out / "metadata.json").read_bytes() == before
    result = invoke("export", "--run", run, "--format", "tflite,coreml", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "coreml" in result.output and "choose from" in result.output
    assert not (tmp_path / "x").exists()


def test_unconvertible_graph_names_the_format_and_writes_nothing(trained_run, tmp_path, monkeypatch):
    from keras_ad.detectors.cae import CAE

    def ssim_from_tf_image(self, images):  # tf.image.ssim: ShapeN with a dynamic batch (docs/stack.md#4b)
        index_map = tf.image.ssim(images, self(images), 1.0, return_index_map=True)
        return 1.0 - tf.pad(index_map, [[0, 0], [5, 5], [5, 5]])

    monkeypatch.setattr(CAE, "anomaly_map", ssim_from_tf_image)
    result = invoke("export", "--run", trained_run, "--format", "tflite", "--out", tmp_path / "x")
    assert result.exit_code == 1
    assert "error: tflite (none): the scoring graph does not convert to TFLite builtins: it needs" \
        in result.output and "tf.ShapeN" in result.output
    assert os.listdir(tmp_path) == []


def test_parity_failure_exits_1_and_names_the_output(trained_run, tmp_path, monkeypatch):
    monkeypatch.setattr(parity, "FLOAT_ATOL", -1.0)
    result = invoke("export", "--run", trained_run, "--format", "onnx", "--out", tmp_path / "x")
    assert result.exit_code == 1
    assert "model.onnx (score, anomaly_map)" in result.output


def test_onnx_conversion_falls_back_to_tf2onnx_copies_when_an_optimiser_fails(monkeypatch):
    """The optimisers run in place first; one that raises there sends the conversion back to tf2onnx's way,
    which skips it (docs/stack.md#4c)."""
    import onnxruntime
    import tf2onnx.optimizer

    from keras_ad.export import onnx
    from keras_ad.tracing import graph_function

    calls = []

    class FailingOptimizer:
        graph_been_opt = False

        def optimize(self, graph, iteration):
            calls.append(os.environ.get("TF2ONNX_CATCH_ERRORS"))
            raise RuntimeError("an optimiser that fails")

    monkeypatch.setitem(tf2onnx.optimizer._optimizers, "failing", FailingOptimizer)
    signature = [tf.TensorSpec([None, 3], tf.float32, name="x")]
    model = onnx._from_function(graph_function(lambda x: x * 2.0 + 1.0, input_signature=signature), signature,
                                onnx._ErrorLog())
    assert calls[0] == "FALSE" and calls[1:] and set(calls[1:]) == {None}  # in place, then on tf2onnx's copies
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([[1.0, -2.0, 0.5]], np.float32)
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], x * 2.0 + 1.0)


@pytest.mark.parametrize("committed, packaged", [("keras_ad_device.py", device.__file__),
                                                 ("requirements.txt", bundle.DEVICE_REQUIREMENTS)])
def test_the_committed_device_files_are_the_packages(committed, packaged):
    """exports/keras_ad_device.py and exports/requirements.txt are what `keras-ad export` copies into
    every export: the same bytes."""
    with open(os.path.join(os.path.dirname(__file__), os.pardir, "exports", committed), "rb") as f:
        text = f.read()
    with open(packaged, "rb") as f:
        assert f.read() == text, f"copy {packaged} to exports/{committed}"
