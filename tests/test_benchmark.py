"""keras-ad bench: the FLOP count it divides by, its table, its argument checks."""

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from keras_ad import benchmark, config
from keras_ad.cli import main
from keras_ad.detectors import build


def test_graph_flops_counts_what_runs_and_not_dead_ops():
    a, b = tf.TensorSpec([4, 8]), tf.TensorSpec([8, 3])

    def used_and_unused(x, y):
        tf.matmul(x, tf.ones([3, 100]) @ tf.ones([100, 8]), transpose_b=True)  # built, never used
        return tf.matmul(x, y)

    concrete = tf.function(used_and_unused).get_concrete_function(a, b)
    assert benchmark.graph_flops(concrete) == 2 * 4 * 8 * 3


@pytest.mark.slow
def test_training_flops_include_the_backward_pass():
    """A training step costs about three forward passes (forward, input and weight gradients)."""
    cfg = config.validate({"data": {"root": "/x", "image_size": 32, "channels": 1},
                           "detector": {"name": "cae", "loss": "l2"}, "train": {"batch_size": 4}})
    model = build(cfg)
    steps_per_s, step_flops = benchmark.measure_training(model, cfg, quick=True)
    spec = tf.TensorSpec([4, 32, 32, 1])
    forward = benchmark.graph_flops(tf.function(lambda x: model(x)).get_concrete_function(spec))
    assert steps_per_s > 0 and 2.5 * forward < step_flops < 3.5 * forward


def test_table_has_a_row_per_case_and_the_peak_share():
    result = benchmark.Result("cae", "small", "configs/demo.yaml", "64x64x3", train_steps_per_s=2.0,
                              train_images_per_s=32.0, train_flops_per_step=int(5e9), score_flops_per_image=int(1e8),
                              score_images_per_s={"Keras": 100.0, "ONNX": 200.0})
    table = benchmark.markdown([result], matmul=100e9, seconds=1.0)
    row = [line for line in table.splitlines() if line.startswith("| cae")][0]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[6] == "10.0"  # 5 GFLOP x 2 steps/s of 100 GFLOP/s
    assert cells[-2] == "20.0"  # 0.1 GFLOP x 200 images/s (the fastest runtime)
    assert "100.0 GFLOP/s" in table and np.isclose(float(cells[3]), 2.0)


def test_bench_arguments_are_checked_before_measuring(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--detectors", "cae,nope"])
    assert result.exit_code == 2 and "nope" in result.output
    (tmp_path / "bench.md").write_text("mine")
    result = CliRunner().invoke(main, ["bench", "--out", str(tmp_path / "bench.md")])
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (tmp_path / "bench.md").read_text() == "mine"


@pytest.mark.slow
def test_bench_scores_the_exports_it_writes(train_tiny, tmp_path):
    """`keras-ad bench` exports into a folder of its own and runs the device scorer on it."""
    import keras_ad

    scorer = keras_ad.load(train_tiny("cae"))
    inputs = benchmark.score_inputs(scorer, scorer.cfg)
    runtimes = benchmark.exported_runtimes(scorer, str(tmp_path), ("TFLite fp32",))
    assert list(runtimes) == ["TFLite fp32"]
    scores = runtimes["TFLite fp32"](inputs)["score"]
    np.testing.assert_allclose(scores, scorer(inputs)["score"].numpy(), rtol=1e-4, atol=1e-5)
