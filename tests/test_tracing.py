"""keras_ad traces its graphs without AutoGraph (keras_ad/tracing.py): the graphs must be the ones AutoGraph
would make, for the control flow that needs it most: AnoGAN's latent search (a loop of gradient steps) and the
decision rule's connected-component loop (a minimum defect area over 1). Untrained tiny models."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import TINY_MIN_AREA, tiny_config_dict

from keras_ad import config
from keras_ad.detectors import build
from keras_ad.scoring import Scorer


@pytest.mark.parametrize("detector", ["cae", "anogan"])
def test_the_scoring_graph_is_the_one_autograph_would_trace(detector, tmp_path):
    cfg = config.validate(tiny_config_dict(tmp_path, tmp_path / "run", detector))
    scorer = Scorer(build(cfg), cfg, calibration={"pixel_threshold": 0.05, "min_area": TINY_MIN_AREA})
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8))
    with_autograph = tf.function(scorer.graph, autograph=True)(images)
    without = scorer(images)
    assert with_autograph.keys() == without.keys() and "defect_area" in without
    for key in without:
        np.testing.assert_allclose(without[key], with_autograph[key], rtol=1e-5, atol=1e-6, err_msg=key)
