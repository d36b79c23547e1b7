"""Exports of the scoring graph: SavedModel, TFLite and ONNX, each verified against the Keras scorer.

`keras_ad.export.device` is the TF-free side (numpy + LiteRT or ONNX Runtime); this package's
`__init__` imports nothing heavy so that the device module can be used without TensorFlow.
"""

import contextlib
import os
import sys

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZE_MODES = ("none", "fp16", "dynamic", "int8")


class ExportError(Exception):
    """A scoring graph that cannot go to a format, or an artefact that fails its parity check."""


def check_choices(values, allowed, option) -> tuple:
    """`values` without repeats, or a UsageError naming the option and what it accepts."""
    from keras_ad.errors import UsageError

    values = tuple(dict.fromkeys(values))
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise UsageError(f"{option}: {', '.join(unknown) or 'nothing'} given; choose from {', '.join(allowed)}")
    return values


@contextlib.contextmanager
def native_output_silenced():
    """Native code's chatter on file descriptor 2 (LiteRT's "Created TensorFlow Lite XNNPACK delegate", the
    MLIR quantiser's "fully_quantize: 0, ...") kept out of the CLI's output; Python errors still raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
