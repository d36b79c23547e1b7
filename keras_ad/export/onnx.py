"""ONNX conversion with tf2onnx, checked by loading the result in ONNX Runtime.

tf2onnx logs unsupported ops and still writes a file (docs/stack.md#4c), so its error log is collected
and the model is checked with onnx.checker and an onnxruntime session before anything is written.
The threshold input gets the calibrated value as a default (an ONNX initializer of the same name),
so a caller may leave it out.
"""

from __future__ import annotations

import contextlib
import logging
import os
from unittest import mock

import numpy as np
import tensorflow as tf

from keras_ad.export import ExportError
from keras_ad.export.savedmodel import input_signature
from keras_ad.tracing import graph_function

OPSET = 17  # the opset verified with tf2onnx 1.17 and onnxruntime 1.32 (docs/stack.md#4c); TensorRT 8.6+ reads it


class _ErrorLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _without_transpose_optimizer():
    """tf2onnx's transpose optimiser walks sets of nodes, so its result depends on Python's hash seed:
    for the SSIM map's Concat of moments it sometimes leaves one input untransposed and writes an
    invalid model (measured: 256-px mvtec_capsule, 1 of 4 hash seeds). ONNX Runtime optimises the
    transposes itself when it loads the model, so the conversion skips that pass."""
    import tf2onnx.optimizer

    optimizers = getattr(tf2onnx.optimizer, "_optimizers", None)
    if optimizers is None or "optimize_transpose" not in optimizers:
        yield
        return
    with mock.patch.dict(optimizers):
        del optimizers["optimize_transpose"]
        yield


def _from_function(function, signature, log):
    """tf2onnx's conversion with its graph optimisers working in place, and only if that fails, as tf2onnx runs
    them by default: each on a deep copy of the whole graph, skipping one that fails. The copies are half of a
    small model's conversion; when no optimiser fails the two give the same operators (docs/stack.md#4c)."""
    import tf2onnx

    try:
        with mock.patch.dict(os.environ, {"TF2ONNX_CATCH_ERRORS": "FALSE"}):
            return tf2onnx.convert.from_function(function, input_signature=signature, opset=OPSET)[0]
    except Exception:
        log.messages.clear()
        return tf2onnx.convert.from_function(function, input_signature=signature, opset=OPSET)[0]


def convert(scorer, function=None) -> bytes:
    """The uint8 scoring graph with a `threshold` input (default: the calibrated one) as ONNX bytes.
    `function`: that graph as a tf.function of this signature already traced (the SavedModel's
    `score_with_threshold` endpoint), which saves tracing it again."""
    import onnx
    import onnxruntime

    signature = input_signature(scorer, tf.uint8, with_threshold=True)
    function = function or graph_function(scorer.graph, input_signature=signature)
    log, tf2onnx_logger = _ErrorLog(), logging.getLogger("tf2onnx")
    tf2onnx_logger.addHandler(log)
    try:
        with _without_transpose_optimizer():
            model = _from_function(function, signature, log)
    except Exception as e:
        raise ExportError(f"onnx: tf2onnx cannot convert the scoring graph: {' '.join(str(e).split())[:400]}") from None
    finally:
        tf2onnx_logger.removeHandler(log)
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([scorer.threshold], np.float32), "threshold"))
    data = model.SerializeToString()
    try:
        onnx.checker.check_model(model)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:
        reason = "; ".join(log.messages[:3]) or " ".join(str(e).split())[:400]
        raise ExportError(f"onnx: the converted scoring graph is not valid ONNX ({reason})") from None
    return data
