"""keras_ad's FusedAdam against keras.optimizers.Adam: the same weights, the same optimiser state (so the
same checkpoints), one fused op per variable, on one device and on two replicas; and the replicas' sums that
leave no traced step behind with one replica."""

import gc

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ad.optimizers import FusedAdam
from keras_ad.replicas import replica_gather, replica_sum
from keras_ad.tracing import graph_function

STEPS = 4
# float32 roundings, against steps of ~0.05: the kernel and Keras' ops order the same arithmetic differently
TOLERANCE = 1e-5


def _trained(optimizer_class, strategy, **options):
    """A small model after STEPS Adam steps (inverse-time decay, GAN betas) from fixed weights and data."""
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(1)])
        schedule = keras.optimizers.schedules.InverseTimeDecay(0.05, decay_steps=1, decay_rate=0.1)
        model.compile(optimizer=optimizer_class(schedule, beta_1=0.5, epsilon=1e-8, **options), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8 * STEPS, 6)).astype("float32")
    y = np.tanh(x.sum(axis=1, keepdims=True))
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return model


def _role(variable):
    """What a variable is, without the model's and layer's numbered names: "kernel", "bias_velocity" ..."""
    return variable.path.rsplit("/", 1)[-1].split("_")[-2:]


def _assert_same_training(fused, reference):
    for name, got, want in [("weight", a, b) for a, b in zip(fused.weights, reference.weights)] + [
            ("optimizer", a, b) for a, b in zip(fused.optimizer.variables, reference.optimizer.variables)]:
        # the same state in the same order (a checkpoint's): kernel_momentum, bias_velocity, iteration ...
        assert _role(got) == _role(want) and got.shape == want.shape, (got.path, want.path)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=TOLERANCE,
                                   err_msg=f"{name} {got.path}")
    assert len(fused.optimizer.variables) == len(reference.optimizer.variables)
    assert int(np.asarray(fused.optimizer.iterations)) == STEPS


@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
def test_fused_adam_trains_like_keras_adam(amsgrad):
    strategy = tf.distribute.get_strategy()
    _assert_same_training(_trained(FusedAdam, strategy, amsgrad=amsgrad),
                          _trained(keras.optimizers.Adam, strategy, amsgrad=amsgrad))


def test_fused_adam_on_two_replicas_trains_like_keras_adam(two_replicas):
    _assert_same_training(_trained(FusedAdam, two_replicas), _trained(keras.optimizers.Adam, two_replicas))


def test_fused_adam_updates_each_variable_with_one_op():
    variables = [keras.Variable(np.ones(shape, "float32")) for shape in [(3, 2), (2,), (4,)]]
    optimizer = FusedAdam(0.01)
    optimizer.build(variables)
    step = graph_function(lambda: optimizer.apply([tf.ones_like(v) for v in variables], variables))
    ops = [op.type for op in step.get_concrete_function().graph.get_operations()]
    assert ops.count("ResourceApplyAdam") == len(variables)
    assert not {"AssignAddVariableOp", "AssignSubVariableOp"} & set(ops)  # Keras' Adam: three per variable
    assert ops.count("Pow") == 2  # β1^t and β2^t once per step, not once per variable


def _live_graphs():
    """How many traced graphs this process holds after a full garbage collection."""
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    return sum(isinstance(o, FuncGraph) for o in gc.get_objects())


def test_one_device_training_leaves_no_traced_step_behind():
    """Keras sums the replicas' gradients with ReplicaContext.all_reduce, whose traced custom gradient keeps the
    step's graph for the rest of the process (docs/stack.md#3-replica-sums); FusedAdam skips that sum with one
    replica, so the graph goes with the model."""
    before = _live_graphs()
    model = _trained(FusedAdam, tf.distribute.get_strategy())
    assert model.train_function is not None
    del model
    assert _live_graphs() == before


def test_replica_sum_is_the_value_on_one_replica_and_the_sum_on_two(two_replicas):
    before = _live_graphs()
    summed = graph_function(lambda x: replica_sum({"a": x, "b": [2 * x]}))
    result = summed(tf.constant([1.5, -2.0]))
    np.testing.assert_array_equal(result["a"], [1.5, -2.0])
    np.testing.assert_array_equal(result["b"][0], [3.0, -4.0])
    del summed
    assert _live_graphs() == before
    per_replica = two_replicas.run(graph_function(lambda: replica_sum(tf.constant([1.5, -2.0]))))
    for value in two_replicas.experimental_local_results(per_replica):
        np.testing.assert_array_equal(value, [3.0, -4.0])


def test_replica_gather_is_the_value_on_one_replica_and_every_replicas_on_two(two_replicas):
    before = _live_graphs()
    gathered = graph_function(lambda x: replica_gather([x, 2 * x]))
    result = gathered(tf.constant([[1.5, -2.0]]))
    np.testing.assert_array_equal(result[1], [[3.0, -4.0]])
    del gathered
    assert _live_graphs() == before
    per_replica = two_replicas.run(graph_function(lambda: replica_gather(tf.constant([[1.5, -2.0]]))))
    for value in two_replicas.experimental_local_results(per_replica):
        np.testing.assert_array_equal(value, [[1.5, -2.0], [1.5, -2.0]])
