"""VGG19 up to relu4_2 for PIAD's perceptual loss, and the feature statistics that standardise it
(docs/methods/piad.md#1c-2, #1g-2): torchvision's weights converted to a Keras file, Keras' own
ImageNet download, or random features offline."""

from __future__ import annotations

import os

import keras
import numpy as np

from keras_ad.detectors.blocks import float32_output

STATS_FILE = "piad_vgg19_relu4_2_stats.json"  # torchvision VGG19's relu4_2 statistics, released with PIAD


def relu4_2(size, weights: str):
    """Frozen VGG19 up to relu4_2 (Keras' `block4_conv2` output: conv + ReLU, zero padding).

    weights: "none" (random, for offline runs and tests), "keras-imagenet" (Keras' download), or a
    .weights.h5/.h5 file of a full VGG19 without top, e.g. torchvision's written by
    scripts/convert_torchvision_vgg19.py ("torchvision" alone asks for that file).
    """
    from keras_ad.errors import UsageError

    if weights == "torchvision":
        raise UsageError("detector.perceptual_weights: torchvision's VGG19 is not downloaded by keras_ad; "
                         "convert its state dict with scripts/convert_torchvision_vgg19.py and set "
                         "detector.perceptual_weights to the .weights.h5 it writes (or to none for random features)")
    source = "imagenet" if weights == "keras-imagenet" else None
    try:
        full = keras.applications.VGG19(include_top=False, weights=source, input_shape=(size, size, 3))
    except Exception as e:  # offline: urllib / HTTP errors
        raise UsageError(f"detector.perceptual_weights: keras-imagenet could not download Keras' VGG19 ({e}); put "
                         f"vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 in ~/.keras/models/ or set "
                         f"detector.perceptual_weights to a weight file") from None
    if weights not in ("none", "keras-imagenet"):
        try:
            full.load_weights(weights)
        except (OSError, ValueError) as e:
            raise UsageError(f"detector.perceptual_weights: {weights}: cannot load VGG19 weights ({e}); give a "
                             f"VGG19 (no top) weight file") from None
    model = keras.Model(full.input, float32_output(full.get_layer("block4_conv2").output), name="vgg19_relu4_2")
    if weights == "none":  # He init keeps the random ReLU features' scale over ten convolutions
        for layer in model.layers:
            if hasattr(layer, "kernel"):
                layer.kernel.assign(keras.initializers.HeNormal()(layer.kernel.shape))
    model.trainable = False
    return model


def feature_statistics(weights: str, stats_file: str | None = None):
    """(mean, std) per relu4_2 channel for standardisation. The released file holds a standard deviation
    under the name "var": divide by it as it is (docs/methods/piad.md#1c-3, docs/methods/piad.md#1g-3)."""
    if weights == "none":  # random features: no released statistics apply
        return np.zeros(512, np.float32), np.ones(512, np.float32)
    path = stats_file or (None if weights == "keras-imagenet" else os.path.join(os.path.dirname(__file__), STATS_FILE))
    if path is None:
        from keras_ad.errors import UsageError

        raise UsageError("detector.perceptual_stats: Keras' ImageNet VGG19 differs from torchvision's, whose "
                         "released statistics do not apply (docs/methods/piad.md#1g-2); compute its own with "
                         "scripts/perceptual_stats.py "
                         "--weights keras-imagenet --images <folder> --out stats.json and set "
                         "detector.perceptual_stats to that file")
    return read_statistics(path)


def read_statistics(path):
    """(mean, std) from a perceptual_stats JSON file (scripts/perceptual_stats.py writes one)."""
    import json

    with open(path) as f:
        stats = json.load(f)
    return np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)


WEIGHT_CAVEATS = {
    "none": "perceptual_weights: none: the perceptual loss and the score use random VGG19 features, not "
            "ImageNet-trained ones; AUROCs are not comparable to PIAD's",
    "keras-imagenet": "perceptual_weights: keras-imagenet: Keras' VGG19 and its own feature statistics, not "
                      "torchvision's of the paper (docs/methods/piad.md#1g-2)",
}
