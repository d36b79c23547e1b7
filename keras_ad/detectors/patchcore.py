"""`patchcore`: PatchCore (Roth et al., CVPR 2022), nearest-neighbour distance to a memory bank of
pretrained patch features (docs/methods/patchcore.md).

Fitting is one pass over the good training images without gradients: every image's patch features
(two mid-level stages of an ImageNet network, each averaged over a 3x3 neighbourhood, the deeper one
up-sampled to the finer grid, concatenated) go to a `keras_ad.coreset.CoresetBuilder`, which keeps a
greedy k-centre coreset of them. At the end of the pass the coreset becomes the non-trainable
`memory_bank` weight, so checkpoints, `--resume` and every export carry it.

Scoring is a graph of matrix products: squared distances ||a||^2 - 2 a.b + ||b||^2 of every test patch
to every bank row, their minimum (the patch score), the map up-sampled to the image and smoothed with a
Gaussian of sigma 4 (the paper's); the image score is the largest patch score, re-weighted by how
unusual its nearest bank row's neighbourhood is (the paper's eq. 7).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from keras_ad import coreset, image_ops
from keras_ad.backbones import efficientnet_lite
from keras_ad.detectors.base import Detector, TrainingPhase, images_of
from keras_ad.losses.ssim import gaussian_blur
from keras_ad.replicas import replica_gather

BACKBONES = {"efficientnet_lite0": efficientnet_lite}


def feature_extractor(backbone, shape, channels, stages, neighbourhood: int = 3) -> keras.Model:
    """images [N, H, W, C] in [0, 1] -> patch features [N, H/s, W/s, D], s the stride of the first stage:
    each stage averaged over a `neighbourhood` x `neighbourhood` window (stride 1), the deeper ones
    up-sampled (bilinear) to the first stage's grid, concatenated."""
    module = BACKBONES[backbone]
    network = module.pretrained(channels, include_top=False, shape=shape)
    strides = [module.STAGE_STRIDES[s] for s in stages]
    finest = min(strides)
    parts = []
    for stage, stride in zip(stages, strides):
        x = layers.AveragePooling2D(neighbourhood, 1, padding="same", name=f"{stage}_neighbourhood")(
            network.output[stage])
        if stride > finest:
            x = layers.UpSampling2D(stride // finest, interpolation="bilinear", name=f"{stage}_to_grid")(x)
        parts.append(x)
    features = layers.Concatenate(name="patch_features")(parts) if len(parts) > 1 else parts[0]
    return keras.Model(network.input, features, name="patch_features")


class PatchCore(Detector):
    """Memory bank of patch features; the anomaly score is the distance to the nearest bank row."""

    def __init__(self, features, bank_size, coreset_ratio=0.1, projection_dim=128, reweight_neighbours=9,
                 map_sigma=4.0, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.features = features
        self.features.trainable = False
        dims = features.output_shape[-1]
        self.bank_size, self.coreset_ratio, self.map_sigma = bank_size, coreset_ratio, map_sigma
        self.memory_bank = self.add_weight(shape=(bank_size, dims), initializer="zeros", trainable=False,
                                           name="memory_bank")
        self.neighbours = self.add_weight(shape=(bank_size, reweight_neighbours), initializer="zeros",
                                          dtype="int32", trainable=False, name="bank_neighbours")
        self.coreset_radius = self.add_weight(shape=(), initializer="zeros", trainable=False, name="coreset_radius")
        self.unique_rows = self.add_weight(shape=(), initializer="zeros", dtype="int32", trainable=False,
                                           name="unique_rows")
        self.builder = coreset.CoresetBuilder(bank_size, coreset_ratio, projection_dim, seed=seed)
        self.trackers = {"patches": keras.metrics.Sum(name="patches")}

    # -- fitting: one feature pass, no gradients
    def training_phases(self, epochs, learning_rate, lr_decay):
        """One pass: the bank is built from every training patch once (the paper; more epochs would only
        repeat them)."""
        return [TrainingPhase(1, learning_rate, lr_decay, "feature pass", monitor=None)]

    def optimizer_variables(self) -> dict:
        return {"optimizer": []}

    def patch_features(self, images):
        """[N, h, w, D] features of [0, 1] images."""
        return self.features(images, training=False)

    def train_step(self, data):
        features = self.patch_features(images_of(data))
        flat = tf.reshape(features, [-1, features.shape[-1]])
        gathered = replica_gather(flat)  # every replica of the step, on every replica
        local = tf.distribute.get_replica_context().replica_id_in_sync_group % _replicas_per_worker(
            self.distribute_strategy)

        def collect():  # once per worker process: its first replica hands the step's features over
            tf.numpy_function(self._collect, [gathered], [], stateful=True)
            return tf.constant(0)

        tf.cond(tf.equal(local, 0), collect, lambda: tf.constant(0))
        self.trackers["patches"].update_state(tf.cast(tf.shape(flat)[0], tf.float32))
        return self.tracker_logs()

    def _collect(self, features):
        self.builder.add(features)

    def test_step(self, data):
        features = self.patch_features(images_of(data))
        self.trackers["patches"].update_state(tf.cast(tf.size(features) // features.shape[-1], tf.float32))
        return self.tracker_logs()

    def training_callbacks(self) -> list:
        """Start the coreset at the pass's start, set the bank at its end (before the checkpoint)."""
        return [_BuildBank()]

    def set_bank(self, bank, radius, unique_rows):
        self.memory_bank.assign(bank)
        self.neighbours.assign(coreset.bank_neighbours(bank, unique_rows, self.neighbours.shape[1]))
        self.coreset_radius.assign(radius)
        self.unique_rows.assign(unique_rows)

    # -- scoring: matrix products and a min, TFLite builtins and ONNX
    def nearest(self, features):
        """(distance [P], index [P]) of every feature row [P, D] to its nearest bank row."""
        bank = tf.convert_to_tensor(self.memory_bank)
        squared = (tf.reduce_sum(tf.square(features), axis=1, keepdims=True)
                   - 2.0 * tf.matmul(features, bank, transpose_b=True)
                   + tf.reduce_sum(tf.square(bank), axis=1)[None, :])
        # |x|, not max(x, 0), for the rounding noise around 0: TFLite lowers max(x, 0) to a RELU, which
        # int8 quantises like an activation and which then collapsed every distance (docs/methods/patchcore.md#int8)
        return tf.sqrt(tf.abs(tf.reduce_min(squared, axis=1))), tf.argmin(squared, axis=1, output_type=tf.int32)

    def score_and_map(self, images, variant="default"):
        features = self.patch_features(images)
        n, h, w, dims = tf.shape(features)[0], features.shape[1], features.shape[2], features.shape[3]
        flat = tf.reshape(features, [-1, dims])
        distance, index = self.nearest(flat)
        patch_scores = tf.reshape(distance, [n, h * w])
        worst = tf.argmax(patch_scores, axis=1, output_type=tf.int32)  # N
        rows = tf.range(n) * (h * w) + worst
        worst_score = tf.gather(distance, rows)
        # eq. 7: 1 - softmax over the distances of the worst patch to its nearest bank row's neighbourhood
        neighbourhood = tf.gather(self.neighbours, tf.gather(index, rows))  # N, b
        worst_feature = tf.gather(flat, rows)  # N, D
        support = tf.gather(self.memory_bank, neighbourhood)  # N, b, D
        support_distance = tf.sqrt(tf.reduce_sum(tf.square(support - worst_feature[:, None, :]), axis=-1))
        weight = 1.0 - tf.nn.softmax(support_distance, axis=1)[:, 0]
        maps = tf.reshape(distance, [n, h, w, 1])
        maps = image_ops.resize(maps, (images.shape[1], images.shape[2]), "bilinear")
        if self.map_sigma > 0:
            maps = gaussian_blur(maps, self.map_sigma)
        return weight * worst_score, maps[..., 0]

    def anomaly_map(self, images):
        return self.score_and_map(images)[1]

    def call(self, images, training=False):
        return self.patch_features(images)


def _replicas_per_worker(strategy) -> int:
    """Replicas in this process: a mirrored strategy's local devices, else 1."""
    mirrored = (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)
    return len(strategy.extended.worker_devices) if isinstance(strategy, mirrored) else 1


class _BuildBank(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.model.builder.reset()

    def on_epoch_end(self, epoch, logs=None):
        bank, radius, unique = self.model.builder.finish()
        self.model.set_bank(bank, radius, unique)
        print(f"memory bank: {unique} coreset rows of {self.model.builder.seen} patch features "
              f"(ratio {self.model.coreset_ratio:g}, capacity {self.model.bank_size}), cover radius "
              f"<= {radius:.4g}", flush=True)


def from_config(cfg):
    det, data = cfg.detector, cfg.data
    features = feature_extractor(det.backbone, data.model_shape, data.channels, tuple(det.stages), det.neighbourhood)
    model = PatchCore(features, det.memory_bank_size, det.coreset_ratio, det.projection_dim,
                      det.reweight_neighbours, det.map_sigma, seed=cfg.train.seed, name="patchcore")
    model(keras.ops.zeros((1, *data.model_shape, data.channels)))  # build
    return model
