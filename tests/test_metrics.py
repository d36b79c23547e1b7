"""Metrics and calibration against hand-computed cases."""

import numpy as np
import pytest

from keras_ad import calibration, metrics


def test_image_auroc_hand_computed():
    # defective scores 0.4, 0.8; good 0.1, 0.5: pairs (d > g): 0.4>0.1, 0.8>0.1, 0.8>0.5 -> 3 of 4
    assert metrics.image_auroc([0, 0, 1, 1], [0.1, 0.5, 0.4, 0.8]) == pytest.approx(0.75)
    assert np.isnan(metrics.image_auroc([0, 0], [0.1, 0.2]))


def test_pixel_auroc_hand_computed():
    masks = np.array([[[0, 1], [0, 0]]], bool)
    maps = np.array([[[0.2, 0.9], [0.1, 0.95]]])
    # one defective pixel 0.9 above two of three normal pixels -> 2/3
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(2 / 3)


def test_f1_max_hand_computed():
    f1, threshold = metrics.f1_max([0, 0, 1, 1], [0.1, 0.5, 0.4, 0.8])
    # threshold 0.4 -> TP 2, FP 1 -> P 2/3, R 1 -> F1 0.8 (the best)
    assert f1 == pytest.approx(0.8)
    assert threshold == pytest.approx(0.4)


def test_aupro_perfect_and_inverted():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 2:4, 2:4] = True
    masks[1, 5:7, 1:3] = True
    good = np.random.default_rng(0).random((2, 8, 8)) * 0.5
    assert metrics.aupro(masks, np.where(masks, 1.0, good)) == pytest.approx(1.0)
    assert metrics.aupro(masks, np.where(masks, -1.0, good)) == pytest.approx(0.0)


def test_aupro_hand_computed():
    # Two regions of 2 pixels; four normal pixels with values 0.4, 0.3, 0.2, 0.1.
    masks = np.zeros((1, 1, 9), bool)
    masks[0, 0, [0, 1, 3, 4]] = True  # regions {0,1} and {3,4}
    maps = np.array([[[0.9, 0.35, 0.4, 0.8, 0.7, 0.3, 0.2, 0.1, 0.0]]])
    # Normal pixels: 0.4, 0.3, 0.2, 0.1, 0.0 (5). With limit 0.4, the curve points (FPR, PRO):
    # t=0.9 (0, 1/4), 0.8 (0, 2/4), 0.7 (0, 3/4), 0.4 (1/5, 3/4), 0.35 (1/5, 1), 0.3 (2/5, 1)
    # area = 0.2 * 0.75 + 0 + 0.2 * 1 = 0.35 -> normalised 0.35 / 0.4
    assert metrics.aupro(masks, maps, fpr_limit=0.4) == pytest.approx(0.35 / 0.4)


def test_decision_rates():
    rates = metrics.decision_rates([1, 1, 0, 0], [True, False, False, True])
    assert rates == {"tpr": 0.5, "tnr": 0.5, "balanced_accuracy": 0.5}


def test_calibration_stops_when_largest_region_is_below_min_area():
    maps = np.zeros((2, 6, 6), np.float32)
    maps[0, 0:2, 0:2] = 0.5  # a 4-pixel region at 0.5
    maps[1, 3, 3] = 0.8  # a single pixel at 0.8
    # min_area 2: at t = 0 the 4-pixel region (0.5) survives; at t = 0.5 only the single 0.8 pixel -> stop.
    # The threshold lies halfway to the next map value, away from any validation pixel.
    assert calibration.calibrate(maps, 2)["pixel_threshold"] == pytest.approx(0.65)
    # min_area 1: every region must vanish -> just above the maximum.
    assert 0.8 < calibration.calibrate(maps, 1)["pixel_threshold"] < 0.801
