"""keras_ad's BatchNormalization (TensorFlow's fused kernel in training) against Keras' own layer: the same
outputs, gradients and moving statistics; under two replicas, synchronised statistics (one all-reduce each
way) equal one device's on the whole batch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ad.detectors.blocks import BATCH_NORM, BatchNormalization
from keras_ad.tracing import graph_function

TOLERANCE = 1e-5  # float32 roundings
STEP_RESULTS = ["output", "d_x", "d_gamma", "d_beta", "moving mean", "moving variance"]  # _training_step's


def _layer(cls, shape, **options):
    layer = cls(**{**BATCH_NORM, **options})
    layer.build(shape)
    rng = np.random.default_rng(1)  # gamma and beta away from their initial 1 and 0
    layer.gamma.assign(rng.normal(1.0, 0.2, shape[-1]).astype(layer.gamma.dtype))
    layer.beta.assign(rng.normal(0.0, 0.2, shape[-1]).astype(layer.beta.dtype))
    return layer


def _graph_step(layer):
    """A traced training call: x -> [output, d loss / d [x, gamma, beta]], the loss summed over the batch."""
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.cos(tf.cast(y, tf.float32)))
        return [y, *tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])]

    return graph_function(step)


def _halves(strategy, x):
    """x split between the strategy's two replicas, first half to the first."""
    half = len(x) // 2
    return strategy.experimental_distribute_values_from_function(
        lambda context: x[context.replica_id_in_sync_group * half:][:half])


def _training_step(layer, x):
    """(output, d loss / d [x, gamma, beta], moving mean, moving variance) after one training call, and the
    graph's op types."""
    function = _graph_step(layer)
    outputs = [np.asarray(t, np.float64) for t in function(x)]
    ops = {op.type for op in function.get_concrete_function(x).graph.get_operations()}
    return outputs + [np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)], ops


@pytest.mark.parametrize("shape", [(8, 5, 5, 3), (2, 4, 3, 3, 2), (1, 1, 1, 4)], ids=["4d", "5d", "one-value"])
@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_fused_training_call_matches_keras_in_float64(shape, policy):
    """Against Keras' layer computing in float64 (its float32 E[x²] - E[x]² strays further, up to 3e-5 here)."""
    x = np.random.default_rng(0).normal(0.5, 2.0, shape)
    fused = _layer(BatchNormalization, shape, dtype=policy)
    got, ops = _training_step(fused, tf.constant(x, fused.compute_dtype))
    assert "FusedBatchNormV3" in ops
    want, _ = _training_step(_layer(keras.layers.BatchNormalization, shape, dtype="float64"), tf.constant(x))
    tolerance = TOLERANCE if policy == "float32" else 1e-2  # a few float16 roundings on the way
    for name, a, b in zip(STEP_RESULTS, got, want):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance, err_msg=name)


@pytest.mark.parametrize("fused, training", [(True, False), (False, True)], ids=["inference", "fused=False"])
def test_keras_own_call_where_not_fused(fused, training):
    """Inference (what the exports convert is unchanged) and `fused=False` run Keras' layer."""
    shape = (4, 3, 3, 2)
    layer = _layer(BatchNormalization, shape, fused=fused)
    graph = graph_function(lambda x: layer(x, training=training)).get_concrete_function(tf.TensorSpec(shape)).graph
    assert "FusedBatchNormV3" not in {op.type for op in graph.get_operations()}
    assert BatchNormalization.from_config(layer.get_config()).fused == fused


@pytest.mark.parametrize("synchronized", [True, False])
def test_two_replicas_normalise_as_configured(two_replicas, synchronized):
    """Synchronised: statistics of the whole batch across replicas (keras_ad's one-all-reduce form), so two
    replicas equal one device on the whole batch in output, input gradient, summed gamma and beta gradients
    and moving statistics. Not synchronised: each replica's own statistics, which the fused kernel computes."""
    shape = (8, 4, 4, 3)
    x = np.random.default_rng(0).normal(0.5, 2.0, shape).astype("float32")
    one_device, _ = _training_step(_layer(BatchNormalization, shape, synchronized=synchronized), tf.constant(x))
    with two_replicas.scope():
        layer = _layer(BatchNormalization, shape, synchronized=synchronized)
    per_replica = two_replicas.run(_graph_step(layer), args=(_halves(two_replicas, x),))
    output, d_x, d_gamma, d_beta = ([np.asarray(t, np.float64) for t in two_replicas.experimental_local_results(r)]
                                    for r in per_replica)
    both = np.concatenate(output)
    if synchronized:
        moving = [np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)]
        got = [both, np.concatenate(d_x), sum(d_gamma), sum(d_beta), *moving]
        for name, a, b in zip(STEP_RESULTS, got, one_device):
            np.testing.assert_allclose(a, b, rtol=TOLERANCE, atol=TOLERANCE, err_msg=name)
    else:
        halves_alone = [_layer(BatchNormalization, (4, *shape[1:]), synchronized=False)(x[i:i + 4], training=True)
                        for i in (0, 4)]
        np.testing.assert_allclose(both, np.concatenate(halves_alone), atol=TOLERANCE)
        assert np.abs(both - one_device[0]).max() > 1e-3  # the halves' statistics differ from the batch's


def test_synchronised_variance_of_data_far_from_zero_is_centred_on_the_moving_mean(two_replicas):
    """The all-reduced moments are sums of x - moving mean: data around 1000 with unit variance keeps its variance
    to 1e-4 once the moving mean is near 1000 (E[x²] - E[x]² about zero loses whole percents in float32)."""
    shape = (8, 4, 4, 2)
    x = np.random.default_rng(0).normal(1000.0, 1.0, shape).astype("float32")
    with two_replicas.scope():
        layer = _layer(BatchNormalization, shape, momentum=0.0)  # the moving variance is the batch's
    layer.moving_mean.assign(np.full(2, 999.0, "float32"))
    two_replicas.run(graph_function(lambda part: layer(part, training=True)), args=(_halves(two_replicas, x),))
    want = x.astype(np.float64).reshape(-1, 2).var(axis=0)
    np.testing.assert_allclose(np.asarray(layer.moving_variance), want, rtol=1e-4)
