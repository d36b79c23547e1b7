"""Shared fixtures: a tiny synthetic data set, a tiny config, and one tiny trained run.

A test that asks for a trained run or the two-replica strategy is marked `slow` here (so the fast tier,
`pytest -m "not slow"`, never trains through the CLI); tests that train in their own body carry the
mark themselves.

The suite runs in two pytest-xdist worker processes (setup.cfg). What is costly to make (the data sets,
the tiny trained runs and their exports) is made once for the whole session by whichever worker asks first
(`shared_folder`) and read by both; tests that share one export's loaded scorers run on one worker
(`xdist_group`).

TensorFlow sees two logical CPU devices (set here, before it initialises) so that MirroredStrategy
can be tested on a machine without GPUs.
"""

import fcntl
import gc
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def pytest_configure(config):
    """Two logical CPUs in every process that runs tests, before TensorFlow initialises and before any test
    module is imported. pytest-xdist's controller only hands tests out: it never imports TensorFlow (5 s here
    before the workers could start)."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


def pytest_collection_finish(session):
    """What the imports and the collection made lives as long as the test process: frozen, Python's full
    garbage collections stop walking it (0.4 million objects, walked by each of the sixty full collections
    of a suite before), and one comes after every hundred younger ones instead of every ten (a test process
    makes and drops whole graphs; TFLite's converter still forces one per model; docs/stack.md#5-suite-time)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*gc.get_threshold()[:2], 100)


SLOW_FIXTURES = {"train_tiny", "trained_run", "run_copy", "export_tiny", "two_replicas"}


# modules whose tests share one export's loaded scorers -> the detector whose export they all read (None: each
# test's `exported` parameter). A detector's tests run on one worker, so each scorer is loaded and traced once
# and no worker sits waiting for the other to make the export they both need.
GROUPED_MODULES = {"test_export.py": None, "test_bad_inputs.py": "cae"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(items):
    groups = []
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        group = item.nodeid
        if item.path.name in GROUPED_MODULES:
            params = getattr(getattr(item, "callspec", None), "params", {})
            group = f"export-{GROUPED_MODULES[item.path.name] or params.get('exported', '')}"
            item.add_marker(pytest.mark.xdist_group(group))
        groups.append(group)
    # a group's tests next to each other (a stable sort on the group's first place), so that one process
    # (`-n 0`) also makes each export once: a test that picks one export with indirect parametrisation
    # is collected apart from the others
    first = {}
    for index, group in enumerate(groups):
        first.setdefault(group, index)
    rank = {id(item): first[group] for item, group in zip(items, groups)}
    items.sort(key=lambda item: rank[id(item)])


def pytest_xdist_node_collection_finished(node, ids):
    """Grouped tests that lost their group would load and trace each exported scorer in both processes,
    silently (pytest 9.2 with pytest-xdist 3.8, docs/stack.md#6-xdist): stop instead."""
    grouped = [nodeid for nodeid in ids if nodeid.split("::")[0].rsplit("/", 1)[-1] in GROUPED_MODULES]
    if node.config.getoption("dist") == "loadgroup" and grouped and not any("@" in nodeid for nodeid in grouped):
        pytest.exit("pytest-xdist did not group the export tests (--dist loadgroup): install the pytest that "
                    "requirements.txt pins", returncode=2)


def shared_folder(tmp_path_factory, name, make):
    """The folder `name`, made by `make(folder)` once per test session: the first worker process to
    ask makes it under an exclusive lock, the others wait and reuse it (every worker's temporary root
    sits in one session folder). Tests read it; a test that writes copies it first."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / "shared" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder.parent / f"{name}.done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder.parent / f"{name}.done").touch()
    return folder


@pytest.fixture(scope="session")
def two_replicas():
    """One MirroredStrategy over the two logical CPUs for the whole session: a second strategy in the
    same process reuses collective instance keys, and synchronised batch norm then fails on shape."""
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) == 2, "conftest configures two logical CPUs"
    return tf.distribute.MirroredStrategy(devices)


@pytest.fixture(scope="session", autouse=True)
def keras_ad_home(tmp_path_factory):
    """Keep the demo-data cache out of the user's home during tests."""
    home = tmp_path_factory.mktemp("keras_ad_home")
    os.environ["KERAS_AD_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small copy of the synthetic 'object' category (MVTec layout with masks), 128x128 RGB."""
    from keras_ad.data import synthetic

    def make(folder):
        synthetic.write(str(folder), ["object"], n_train=40, n_test_good=6, n_per_defect=3)

    return shared_folder(tmp_path_factory, "data", make) / "object"


from helpers import (  # noqa: E402
    TINY_MIN_AREA,
    TINY_PROTOCOLS,
    VIDEO_DETECTORS,
    CleanPython,
    tiny_config_dict,
    write_config,
    write_roi_mask,
)


@pytest.fixture
def tiny_config(tiny_data, tmp_path):
    return write_config(tmp_path / "tiny.yaml", tiny_config_dict(tiny_data, tmp_path / "run"))


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory):
    """A small copy of the synthetic demo videos: 3 training and 2 test videos of 24 frames, 64x64 grey."""
    from keras_ad.data import synthetic_video

    def make(folder):
        synthetic_video.write(str(folder), n_train=3, n_test=2, n_frames=24)

    return str(shared_folder(tmp_path_factory, "videos", make) / "video")


@pytest.fixture(scope="session")
def train_tiny(tiny_data, tiny_video, tmp_path_factory):
    """train_tiny(detector) -> a tiny run of that detector trained through the CLI (train -> calibrate ->
    evaluate), trained once per session and shared read-only. Calibrated with a minimum defect area > 1
    (TINY_MIN_AREA), so that its exported graphs carry the connected-component loop of the decision rule."""
    from click.testing import CliRunner

    from keras_ad.cli import main

    def make(folder, detector):
        video = detector in VIDEO_DETECTORS
        data = {"layout": "video", "root": tiny_video, "channels": 1, "val_fraction": 0.3} if video else {}
        calibrate = {"min_area": TINY_MIN_AREA}
        if detector in TINY_PROTOCOLS:
            protocol = TINY_PROTOCOLS[detector]
            postprocess = {**protocol["postprocess"], "roi_mask": str(write_roi_mask(folder / "roi.png"))}
            cfg = tiny_config_dict(tiny_data, folder / "run", protocol["detector"], data=protocol["data"],
                                   postprocess=postprocess, calibrate=calibrate)
        else:
            cfg = tiny_config_dict(tiny_data, folder / "run", detector, data=data, calibrate=calibrate)
        config = write_config(folder / "tiny.yaml", cfg)
        result = CliRunner().invoke(main, ["train", "--config", str(config)])
        assert result.exit_code == 0, result.output

    def train(detector):
        return shared_folder(tmp_path_factory, f"trained-{detector}", lambda folder: make(folder, detector)) / "run"

    return train


@pytest.fixture(scope="session")
def export_tiny(train_tiny, tmp_path_factory):
    """export_tiny(detector) -> (run, export folder, export report): the tiny run (train_tiny) exported to
    every format, float, and int8 TFLite but for a video model (TFLite has no int8 3D
    convolutions), the CAE's with every TFLite mode (scripts/bench_export.py times them, tests/test_scripts.py);
    made once per session and shared read-only."""
    import json

    from click.testing import CliRunner

    from keras_ad.cli import main

    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args])

    def make(folder, detector):
        quantize = ("none" if detector in VIDEO_DETECTORS else
                    "none,fp16,dynamic,int8" if detector == "cae" else "none,int8")
        result = invoke("export", "--run", train_tiny(detector), "--format", "savedmodel,tflite,onnx",
                        "--quantize", quantize, "--out", folder / "export")
        report = json.loads((folder / "export" / "export_report.json").read_text())
        # The tiny 2-epoch model may lose more AUROC under int8 than allowed: the exit code must say so either
        # way (tests/test_export.py holds the float artefacts to passing).
        assert result.exit_code == (0 if report["passed"] else 1), result.output

    def export(detector):
        folder = shared_folder(tmp_path_factory, f"export-{detector}", lambda folder: make(folder, detector))
        report = json.loads((folder / "export" / "export_report.json").read_text())
        return train_tiny(detector), folder / "export", report

    return export


@pytest.fixture(scope="session")
def clean_tensorflow():
    """A process with TensorFlow imported and nothing of keras_ad (helpers.CleanPython), for checks that an
    export runs without the package."""
    process = CleanPython()
    yield process
    process.close()


@pytest.fixture(scope="session")
def trained_run(train_tiny):
    return train_tiny("cae")


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the trained run, for tests that write into it."""
    dest = tmp_path / "run"
    shutil.copytree(trained_run, dest)
    return dest
