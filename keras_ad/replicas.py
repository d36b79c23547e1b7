"""Sums and gathers over the replicas in sync that leave no traced graph behind with only one replica.

`ReplicaContext.all_reduce` and `all_gather` wrap their collectives in `tf.custom_gradient`. Traced, that
registers a gradient function in TensorFlow's process-wide registry which holds the traced graph for the rest
of the process (TensorFlow issue 97697, still in 2.21): every training step traced in a process stays in
memory. With one replica the sum or gather is the value itself, so nothing is collected
(docs/stack.md#3-replica-sums).
"""

import tensorflow as tf


def one_replica() -> bool:
    """True outside a replica context or with a single replica in sync: a cross-replica sum is the identity."""
    context = tf.distribute.get_replica_context()
    return context is None or context.num_replicas_in_sync == 1


def replica_sum(value):
    """`value` (a tensor or a nest of them) summed over the replicas in sync."""
    if one_replica():
        return value
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def replica_gather(value, axis: int = 0):
    """`value` (a tensor or a nest of them) of every replica in sync, concatenated along `axis` on each."""
    if one_replica():
        return value
    return tf.distribute.get_replica_context().all_gather(value, axis=axis)
