"""TFLite conversion of the exported SavedModel: builtin ops only, optional quantisation.

int8 quantises the network's convolutions and activations only. Everything else (pre-processing,
SSIM or squared-error residuals, smoothing, the image score and the min-area decision) stays
float32: an int8 SSIM map is numerically unusable (docs/stack.md#4, map diff 0.16) and int8 labels would
break the connected-component decision.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import tensorflow as tf

from keras_ad.export import ExportError
from keras_ad.export.savedmodel import DEVICE_SIGNATURES

# The ops int8 may quantise: convolutions and their element-wise activations.
INT8_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "LEAKY_RELU", "RELU", "RELU6",
                      "LOGISTIC", "TANH", "HARD_SWISH"})


def _float_ops_for_int8():
    from tensorflow.lite.python import schema_py_generated as schema

    return sorted(name for name in vars(schema.BuiltinOperator) if name.isupper() and name not in INT8_OPS)


def convert(saved_model_dir: str, quantize: str = "none", representative_images=(), threshold: float = 0.0) -> bytes:
    """The SavedModel's device signatures as one .tflite flatbuffer.

    `representative_images`: uint8 [1, H, W, C] arrays of good images, and `threshold` the calibrated
    pixel threshold, for int8 calibration. Raises ExportError naming the ops when the graph needs anything beyond
    TFLite builtins (a Flex model cannot run on the device).
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=list(DEVICE_SIGNATURES))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize in ("fp16", "dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        if quantize != "int8":
            return converter.convert()
        return _selective_int8(converter, representative_images, threshold)
    except Exception as e:  # ConverterError and friends
        unsupported = sorted(set(re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", str(e))))
        reason = (f"it needs {', '.join(unsupported)}, which TFLite builtins lack (a Flex model cannot run on "
                  f"the device)" if unsupported else " ".join(str(e).split())[:400])
        raise ExportError(f"tflite ({quantize}): the scoring graph does not convert to TFLite builtins: "
                          f"{reason}") from None


def _selective_int8(converter, representative_images, threshold) -> bytes:
    """Calibrate on good images, then quantise only INT8_OPS.

    This is what tf.lite.experimental.QuantizationDebugger does for its `denylisted_ops` option; the
    debugger itself refuses models with a WHILE loop, so its two steps are called directly.
    """
    from tensorflow.lite.python import convert as lite_convert

    if not len(representative_images):
        raise ExportError("tflite (int8): no good images to calibrate the quantisation on")

    def samples():
        for image in representative_images:
            yield "serving_default", {"images": image}
            yield "score_with_threshold", {"images": image, "threshold": np.array([threshold], np.float32)}

    converter.representative_dataset = samples
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True  # noqa: SLF001 (as QuantizationDebugger does)
    with warnings.catch_warnings():  # the calibrator runs the deprecated tf.lite.Interpreter internally
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        calibrated = converter.convert()
    return lite_convert.mlir_quantize(calibrated, disable_per_channel=False, fully_quantize=False,
                                      enable_numeric_verify=False, denylisted_ops=_float_ops_for_int8())
