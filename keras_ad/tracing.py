"""How keras_ad's Python becomes TensorFlow graphs: traced as written, without AutoGraph.

keras_ad's graph code loops and branches with TensorFlow's own control flow (`tf.while_loop`, `tf.cond`) or
on Python values fixed when tracing, never on a tensor's value, so AutoGraph's rewriting of the source changes
no graph; it only costs time: rewriting each function and routing every call through its converter
(docs/stack.md#5-autograph). Without it, a Python `if` or `for` on a tensor fails loudly where it is traced.
"""

import tensorflow as tf


def graph_function(fn, **options):
    """`tf.function(fn, **options)` without AutoGraph."""
    return tf.function(fn, autograph=False, **options)


def dataset_function(fn):
    """`fn` for `tf.data.Dataset.map`, which would otherwise rewrite it with AutoGraph."""
    return tf.autograph.experimental.do_not_convert(fn)
