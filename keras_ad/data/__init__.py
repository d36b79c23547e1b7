"""Data: file layouts, labelled sources, the tf.data pipeline and the built-in demo set."""

import os


def cache_home() -> str:
    """Where keras_ad caches generated data: $KERAS_AD_HOME or ~/.cache/keras_ad."""
    return os.environ.get("KERAS_AD_HOME", os.path.join(os.path.expanduser("~"), ".cache", "keras_ad"))
