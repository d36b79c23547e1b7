"""SavedModel with named signatures, written through keras.export.ExportArchive.

The archive tracks the Keras detector itself, which keeps the TFLite conversion of this SavedModel
correct (a Keras 3 model inside a plain tf.Module converts to a .tflite that outputs NaN, docs/stack.md#4).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_ad.export.device import check_images
from keras_ad.tracing import graph_function

# endpoint name -> (input dtype, takes a threshold input)
ENDPOINTS = {
    "serving_default": (tf.uint8, False),
    "score_with_threshold": (tf.uint8, True),
    "score_float": (tf.float32, False),
    "score_float_with_threshold": (tf.float32, True),
}
DEVICE_SIGNATURES = ("serving_default", "score_with_threshold")  # what TFLite and ONNX carry


def input_signature(scorer, dtype, with_threshold: bool):
    """images [N, H, W, C] (a video detector's clips [N, T, H, W, C]) and, optionally, threshold [1]:
    LiteRT 2.3's aarch64 build segfaults on a 0-d signature input (reproduced under qemu-user), a
    one-element vector works everywhere."""
    images = tf.TensorSpec(input_shape(scorer), dtype, name="images")
    return [images, tf.TensorSpec([1], tf.float32, name="threshold")] if with_threshold else [images]


def input_shape(scorer) -> list:
    """[N, H, W, C], or [N, T, H, W, C] for a video detector; only T and C are fixed."""
    clip = [scorer.detector.clip_length] if scorer.detector.clip_length else []
    return [None, *clip, None, None, scorer.channels]


def write(scorer, path: str) -> dict:
    """Write the calibrated scoring graph with the endpoints of ENDPOINTS (uint8 0..255 or float 0..1 input);
    returns {endpoint name: its tf.function}, traced by the write, for converters that take a function.

    Each endpoint pre-processes its input and calls one shared `tf.function` of `Scorer.score_inputs`, the
    calibrated threshold as a constant where the endpoint takes none. TensorFlow traces every function again
    in its save context: four endpoints that each held the whole graph cost eight traces of it, the shared
    core two. Converters inline the call, so TFLite and ONNX see the same operations as before.
    """
    archive = keras.export.ExportArchive()
    archive.track(scorer.detector)
    core = graph_function(scorer.score_inputs)
    calibrated = scorer.threshold

    def score(images, threshold=None):
        if threshold is None and calibrated is not None:
            threshold = tf.constant([calibrated], tf.float32)
        return core(scorer.preprocess(images), threshold)

    endpoints = {}
    for name, (dtype, with_threshold) in ENDPOINTS.items():
        fn = score if with_threshold else (lambda images: score(images))
        endpoints[name] = archive.add_endpoint(name, fn, input_signature=input_signature(scorer, dtype, with_threshold))
    archive.write_out(path, verbose=False)
    return endpoints


class ExportedScorer:
    """A SavedModel written by `write`, loaded back: the same call as `keras_ad.scoring.Scorer`."""

    def __init__(self, path: str, metadata: dict | None = None):
        self.path, self.metadata = path, metadata
        self._module = tf.saved_model.load(path)
        # what the signatures take: [N, H, W, C] or a video model's [N, T, H, W, C], C fixed
        spec = self._module.signatures["serving_default"].structured_input_signature[1]["images"]
        self.clip_length = spec.shape[1] if spec.shape.rank == 5 else None
        self.channels = spec.shape[-1]

    @property
    def threshold(self) -> float | None:
        """The calibrated pixel threshold (metadata.json), as `Scorer.threshold`."""
        return float(self.metadata["decision"]["pixel_threshold"]) if self.metadata else None

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """(height, width) of the maps, as `Scorer.image_shape`."""
        return tuple(self.metadata["image_shape"]) if self.metadata else None

    def __call__(self, images, threshold=None) -> dict:
        if tf.executing_eagerly():  # the checks of Scorer.__call__; the signatures fix the channels
            images = check_images(images, self.clip_length, self.channels)
        images = tf.convert_to_tensor(images)
        uint8 = images.dtype == tf.uint8
        if not uint8:
            images = tf.cast(images, tf.float32)
        if threshold is None:
            return (self._module.serving_default if uint8 else self._module.score_float)(images)
        threshold = tf.reshape(tf.convert_to_tensor(threshold, tf.float32), [1])
        return (self._module.score_with_threshold if uint8 else self._module.score_float_with_threshold)(
            images, threshold)
