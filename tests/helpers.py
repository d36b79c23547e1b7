"""What the tests share besides fixtures: the tiny models, config writers and the comparison of one
training step on one device and under MirroredStrategy. Import with `from helpers import ...`."""

import importlib.util
import json
import os
import select
import subprocess
import sys
import textwrap

import yaml

from keras_ad.specs import SPECS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script_module(name):
    """scripts/<name>.py imported as a module, so a test calls its main() and helpers in-process."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The tiny test model of every registered detector and variant (the detector section of its config),
# declared in each detector's spec (keras_ad/specs/). tests/test_export.py runs the export suite on each.
TINY_DETECTORS = {name: section for spec in SPECS.values() for name, section in spec.tiny.items()}
FEATURE_PASS_DETECTORS = tuple(n for n, d in TINY_DETECTORS.items() if not SPECS[d["name"]].trains_weights)
VIDEO_DETECTORS = tuple(n for n, d in TINY_DETECTORS.items() if SPECS[d["name"]].video)  # trained on tiny_video
# detectors whose paper defines the image score (postprocess.reduction: detector)
DETECTOR_SCORE = tuple(n for n, d in TINY_DETECTORS.items() if SPECS[d["name"]].own_score)

# Tiny runs that exercise the real-image protocol (docs/protocol.md) on top of a tiny detector: a
# non-square input, texture patches stitched in the graph, a region of interest with a border, and
# per-pixel map normalisation. The export suite runs on them as on every detector.
TINY_PROTOCOLS = {
    "cae_protocol": {"detector": "cae",
                     "data": {"image_size": [32, 64], "patch_size": 32, "patch_stride": 16},
                     "postprocess": {"normalize": "per_pixel", "border": 1, "smoothing_sigma": 1.0,
                                     "reduction": "topk_mean"}},
}
ROI_MASK_SHAPE = (64, 128)  # drawn at twice data.image_size, the same aspect ratio
TINY_MIN_AREA = 3  # the tiny runs' minimum defect area (conftest.train_tiny), which their exports carry


def one_sgd_step(strategy, cfg, initial, images, learning_rate, precision="float32", eager=False, loss_scale=None):
    """The detector after one fit() step on `images` from `initial` under `strategy`, with SGD for every
    optimiser it has (Adam's first step hides the gradient scale). `eager` runs the step op by op: one step
    costs a fraction of tracing it. `loss_scale` sets the float16 LossScaleOptimizers' scale."""
    import keras
    import tensorflow as tf

    from keras_ad.detectors import build

    with strategy.scope():
        model = build(cfg, precision)
        model.set_weights(initial)
        model.install_optimizers(lambda name: keras.optimizers.SGD(learning_rate))
    model.run_eagerly = eager
    if loss_scale is not None:
        for optimizer in model.training_optimizers():
            optimizer.dynamic_scale.assign(loss_scale)
    model.fit(tf.data.Dataset.from_tensor_slices(images).batch(len(images)), epochs=1, shuffle=False, verbose=0)
    return model


def check_mirrored_step(strategy, cfg, n_images, learning_rate, relative_floor=0.0, precision="float32",
                        weights_tolerance=1e-5):
    """Train one step from the same initial weights on one device and under `strategy` (two replicas)
    and assert the same update (`assert_same_update`); `relative_floor` of the largest update is the
    absolute tolerance for updates that are zero in exact arithmetic. Both steps in `precision`, the weights
    equal within `weights_tolerance`.

    The one-device step is traced and the two-replica step runs eagerly, so the pair crosses graph and eager
    as well as one and two replicas. Tracing under two replicas traces the step once per replica and costs
    2-3x a one-device trace; the two-replica graph itself is compared with one device in tests/test_training.py
    (CAE) and trained by every detector in tests/test_distribute.py."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_ad.detectors import build

    keras.utils.set_random_seed(0)
    initial = build(cfg).get_weights()
    images = np.random.default_rng(0).random((n_images, 32, 32, 3)).astype(np.float32)
    single = one_sgd_step(tf.distribute.get_strategy(), cfg, initial, images, learning_rate, precision).get_weights()
    mirrored = one_sgd_step(strategy, cfg, initial, images, learning_rate, precision, eager=True).get_weights()
    largest = max(float(np.abs(s - i).max()) for s, i in zip(single, initial))
    assert_same_update(initial, single, mirrored, floor=max(1e-7, relative_floor * largest),
                       weights_tolerance=weights_tolerance)


def train_on_digits(tmp_path, detector: dict, labels=(0, 1, 2), train=None, **data):
    """Train `detector` through the CLI on scikit-learn's 8x8 digits of `labels` as a one_class folder
    (32x32 grey, 1 epoch unless `train` says otherwise); returns (report.json, the digits bunch). `data`
    sets the protocol."""
    import json

    from click.testing import CliRunner
    from sklearn.datasets import load_digits

    from keras_ad.cli import main

    config = digits_config(tmp_path, detector, labels, train, **data)
    result = CliRunner().invoke(main, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / "run" / "report.json").read_text()), load_digits()


def digits_config(tmp_path, detector: dict, labels=(0, 1, 2), train=None, **data):
    """scikit-learn's 8x8 digits of `labels` as a one_class folder under tmp_path/digits and a config
    (32x32 grey, 1 epoch unless `train` says otherwise, run.dir tmp_path/run) at tmp_path/c.yaml."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        if label in labels:
            folder = tmp_path / "digits" / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * 16).clip(0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    cfg = {"run": {"dir": str(tmp_path / "run")},
           "data": {"layout": "one_class", "root": str(tmp_path / "digits"), "image_size": 32, "channels": 1, **data},
           "detector": detector, "train": {"epochs": 1, "batch_size": 32, "augment": False, **(train or {})}}
    return write_config(tmp_path / "c.yaml", cfg)


def assert_same_update(initial, single, mirrored, floor=1e-7, weights_tolerance=1e-5):
    """A training step under MirroredStrategy changed the weights as the one-device step did.

    Single weights to 5 % of their variable's largest update (float noise in ReLU kinks and batch sums
    moves a few), the size of the whole update to 1 %: a loss reduced with the wrong scale is off by
    100 %. `floor`: an absolute tolerance for updates that are float noise.
    """
    import numpy as np

    single_steps = [s - i for s, i in zip(single, initial)]
    mirrored_steps = [m - i for m, i in zip(mirrored, initial)]
    assert max(float(np.abs(d).max()) for d in single_steps) > 1e-4, "the step hardly changed anything"
    for s, m in zip(single_steps, mirrored_steps):
        np.testing.assert_allclose(m, s, atol=0.05 * float(np.abs(s).max()) + floor)
    ratio = np.sqrt(sum(float((m ** 2).sum()) for m in mirrored_steps)
                    / sum(float((s ** 2).sum()) for s in single_steps))
    assert abs(ratio - 1.0) <= 0.01, ratio
    for s, m in zip(single, mirrored):  # and the weights themselves within 1e-5 (relative for PIAD's
        np.testing.assert_allclose(m, s, rtol=weights_tolerance, atol=weights_tolerance)  # statistics, ~6)


def tiny_config_dict(data_root, run_dir, detector_name="cae", **sections):
    """A config that trains in seconds: 32x32 images, 2 epochs."""
    cfg = {
        "run": {"dir": str(run_dir)},
        "data": {"layout": "folder", "root": str(data_root), "image_size": 32, "channels": 3},
        "detector": dict(TINY_DETECTORS[detector_name]),
        "train": {"epochs": 2, "batch_size": 8, "sample_every": 1},
        "postprocess": {"reduction": "detector" if detector_name in DETECTOR_SCORE else "topk_mean"},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def write_roi_mask(path, shape=ROI_MASK_SHAPE):
    """A region of interest: white but for the left eighth of the image (black, never counts)."""
    import numpy as np
    from PIL import Image

    mask = np.full(shape, 255, np.uint8)
    mask[:, :shape[1] // 8] = 0
    Image.fromarray(mask).save(path)
    return path


def write_config(path, cfg_dict):
    path.write_text(yaml.safe_dump(cfg_dict))
    return path


def device_command(script, *args):
    """Run the device scorer with tensorflow, keras and keras_ad imports made impossible."""
    bootstrap = textwrap.dedent(f"""
        import runpy, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "keras_ad", "tf2onnx"):
                    raise ImportError("blocked on the device: " + name)
        sys.meta_path.insert(0, Block())
        sys.argv = {[str(script), *map(str, args)]!r}
        runpy.run_path(sys.argv[0], run_name="__main__")
    """)
    return subprocess.run([sys.executable, "-c", bootstrap], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(str(script)))


# The loop of CleanPython's process: one JSON-encoded snippet per line in, one JSON reply per line out
# (None, or the traceback of what failed); what a snippet prints goes to stderr, not into the replies.
_CLEAN_PYTHON_LOOP = """
import importlib, json, sys, traceback
for module in sys.argv[1:]:
    importlib.import_module(module)
replies, sys.stdout = sys.stdout, sys.stderr
for line in sys.stdin:
    try:
        exec(json.loads(line), {})
        reply = None
    except BaseException:
        reply = traceback.format_exc()
    replies.write(json.dumps(reply) + "\\n")
    replies.flush()
"""


class CleanPython:
    """A Python process that never imports keras_ad, kept for a whole test session: `run(code)` executes
    code there in a fresh namespace and returns None, or the traceback of what failed. `preload` is imported
    once at the start: one TensorFlow import per test worker instead of one per check (~5 s each)."""

    def __init__(self, preload=("tensorflow",)):
        self.process = subprocess.Popen([sys.executable, "-c", _CLEAN_PYTHON_LOOP, *preload], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def run(self, code: str, timeout: float = 300):
        self.process.stdin.write(json.dumps(textwrap.dedent(code)) + "\n")
        self.process.stdin.flush()
        if not select.select([self.process.stdout], [], [], timeout)[0]:
            self.process.kill()
            raise TimeoutError(f"the clean Python process gave no answer in {timeout} s")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the clean Python process exited with {self.process.wait()}")
        return json.loads(line)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)
