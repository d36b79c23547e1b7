"""Adam with TensorFlow's fused update kernel: Keras' Adam arithmetic in one graph op per variable
(docs/stack.md#5-fused-adam)."""

import keras
import tensorflow as tf

from keras_ad.replicas import one_replica


@keras.saving.register_keras_serializable(package="keras_ad")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose per-variable update is TensorFlow's `ResourceApplyAdam` kernel.

    Keras 3 writes each variable's update as about forty small ops (casts, powers, three assignments); the
    kernel computes the same update (Kingma & Ba's "epsilon hat" form, as Keras does) in one op, as legacy
    tf.keras did, and the step's scalars are computed once per step instead of once per variable. A GAN's
    training step then has a fraction of the ops to trace and optimise. The state (iterations, momentums,
    velocities), and so the checkpoints, are Keras Adam's. AMSGrad and sparse gradients keep Keras' update.
    """

    def _all_reduce_sum_gradients(self, grads_and_vars):
        """Keras' sum of the replicas' gradients, skipped with one replica, where it is the identity and leaves
        the traced step in memory for good (docs/stack.md#3-replica-sums)."""
        if one_replica():
            return list(grads_and_vars)
        return super()._all_reduce_sum_gradients(grads_and_vars)

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        """Every variable's update: Keras' TensorFlow backend calls this once per step, in cross-replica
        context (were it renamed, Keras' own per-variable update would run: correct, slower)."""
        if self.amsgrad:
            return super()._distributed_tf_update_step(distribution, grads_and_vars, learning_rate)
        scalars = {}  # made on the first replica's device, read by the others: the same values

        def update(variable, gradient, learning_rate):
            if isinstance(gradient, tf.IndexedSlices):
                return self.update_step(gradient, variable, learning_rate)
            if variable.dtype not in scalars:
                scalars[variable.dtype] = self._step_scalars(variable.dtype, learning_rate)
            return self._apply(gradient, variable, scalars[variable.dtype])

        for gradient, variable in grads_and_vars:
            distribution.extended.update(variable, update, args=(gradient, learning_rate), group=False)

    def _step_scalars(self, dtype, learning_rate) -> dict:
        """ResourceApplyAdam's scalar inputs for this step in `dtype` (Python floats straight to `dtype`,
        not rounded through float32 first)."""
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.constant(self.beta_1, dtype), tf.constant(self.beta_2, dtype)
        return {"beta1_power": tf.pow(beta_1, step), "beta2_power": tf.pow(beta_2, step), "beta1": beta_1,
                "beta2": beta_2, "lr": tf.cast(learning_rate, dtype), "epsilon": tf.constant(self.epsilon, dtype)}

    def _apply(self, gradient, variable, scalars):
        index = self._get_variable_index(variable)
        return tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
            grad=tf.cast(gradient, variable.dtype), **scalars)


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (inside a strategy's update: this replica's)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle
