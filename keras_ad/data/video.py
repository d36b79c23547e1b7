"""Videos as frame folders (the MNAD layout of UCSD Ped2, CUHK Avenue and ShanghaiTech, docs/methods/lntra.md#5a).

    <root>/training/frames/<video>/<frame>.jpg|png|tif     normal videos
    <root>/testing/frames/<video>/<frame>.jpg|png|tif
Frame labels of the test videos (1 = anomalous frame), the first found of:
    <root>/testing/labels/<video>.npy|.txt                  one value per frame (ours, and the demo's)
    <root>/testing/test_frame_mask/<video>.npy              ShanghaiTech
    <root>/frame_labels_<name>.npy or <root>/testing/frame_labels.npy
                                                            MNAD: shape (1, all test frames), videos in sorted order
Optional pixel masks: <root>/testing/masks/<video>/<frame>.png. Frames are listed by position in
sorted file order, never parsed from their names (docs/methods/lntra.md#5a).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np

from keras_ad.data.images import list_images, read_image, read_mask
from keras_ad.errors import DataError


def centre_index(length):
    """The frame a clip scores: index 8 of 0..15 (docs/methods/lntra.md#5e-2)."""
    return length // 2


@dataclass
class Video:
    name: str
    frames: list[str]
    labels: np.ndarray | None = None  # [n_frames] 0/1, test videos
    masks: list[str | None] | None = None  # per frame, None where absent


def _videos(folder):
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: missing; the video layout needs <root>/training/frames/<video>/ and "
                        f"<root>/testing/frames/<video>/ (README 'Data layouts')")
    videos = [Video(name, list_images(os.path.join(folder, name))) for name in sorted(os.listdir(folder))
              if os.path.isdir(os.path.join(folder, name))]
    videos = [v for v in videos if v.frames]
    if not videos:
        raise DataError(f"{folder}: no video folders with frames (.png, .jpg, .bmp, .tif)")
    return videos


def discover(root, val_fraction=0.0, seed=0, need_test=True):
    """(train, validation, test) videos; validation = a seeded `val_fraction` of the training videos, at
    least one when the fraction is positive and two or more exist."""
    train = _videos(os.path.join(root, "training", "frames"))
    val = []
    if val_fraction > 0 and len(train) > 1:
        n_val = min(len(train) - 1, max(1, int(round(val_fraction * len(train)))))
        chosen = set(np.random.default_rng(seed).permutation(len(train))[:n_val].tolist())
        val = [v for i, v in enumerate(train) if i in chosen]
        train = [v for i, v in enumerate(train) if i not in chosen]
    test = _videos(os.path.join(root, "testing", "frames")) if need_test else []
    if test:
        _attach_labels(root, test)
    return train, val, test


def _attach_labels(root, videos):
    concatenated = sorted(glob.glob(os.path.join(root, "frame_labels_*.npy"))) + \
        sorted(glob.glob(os.path.join(root, "testing", "frame_labels.npy")))
    offset = 0
    for video in videos:
        video.labels = _own_labels(root, video.name)
        if video.labels is None and concatenated:
            flat = np.load(concatenated[0]).reshape(-1)
            video.labels = flat[offset:offset + len(video.frames)]
        offset += len(video.frames)
        if video.labels is None:
            raise DataError(f"{root}/testing: no frame labels for video {video.name}; give testing/labels/"
                            f"{video.name}.npy (one 0/1 per frame) or MNAD's frame_labels_<name>.npy")
        if len(video.labels) != len(video.frames):
            raise DataError(f"{root}/testing: video {video.name} has {len(video.frames)} frames but "
                            f"{len(video.labels)} labels")
        video.labels = (np.asarray(video.labels) > 0).astype(np.int64)
        mask_dir = os.path.join(root, "testing", "masks", video.name)
        if os.path.isdir(mask_dir):
            masks = {os.path.splitext(os.path.basename(p))[0]: p for p in list_images(mask_dir)}
            video.masks = [masks.get(os.path.splitext(os.path.basename(f))[0]) for f in video.frames]


def _own_labels(root, name):
    for path in (os.path.join(root, "testing", "labels", f"{name}.npy"),
                 os.path.join(root, "testing", "test_frame_mask", f"{name}.npy")):
        if os.path.isfile(path):
            return np.load(path).reshape(-1)
    text = os.path.join(root, "testing", "labels", f"{name}.txt")
    if os.path.isfile(text):
        return np.loadtxt(text).reshape(-1)
    return None


def load_frames(video: Video, preprocess, as_uint8=False, chunk=64) -> np.ndarray:
    """Every frame of a video through the scoring pre-processing: float32 [n, S, S] in [0, 1] (grey), or
    uint8 0..255 (`as_uint8`: training holds every frame in memory, a quarter of the float size)."""
    out = []
    for start in range(0, len(video.frames), chunk):
        raw = [read_image(path, 1) for path in video.frames[start:start + chunk]]
        frames = prepare_frames(raw, preprocess, chunk)
        out.append(np.round(frames * 255.0).astype(np.uint8) if as_uint8 else frames)
    return np.concatenate(out)


def prepare_frames(raw, preprocess, chunk=64) -> np.ndarray:
    """Raw uint8 frames [H, W, 1] of one video (one size) -> float32 [n, S, S] in [0, 1], in chunks."""
    return np.concatenate([preprocess(np.stack(raw[i:i + chunk]))[..., 0].numpy().astype(np.float32)
                           for i in range(0, len(raw), chunk)])


def load_masks(video: Video, shape) -> np.ndarray | None:
    """Pixel masks [n, h, w] bool at `shape` (nearest resize), all-False where a frame has none; None
    without masks."""
    if video.masks is None:
        return None
    from PIL import Image

    out = np.zeros((len(video.frames), *shape), bool)
    for t, path in enumerate(video.masks):
        if path:
            mask = read_mask(path, Image.open(video.frames[t]).size[::-1])
            resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.NEAREST)
            out[t] = np.asarray(resized) > 127
    return out


def clips(frames, length, starts=None) -> np.ndarray:
    """Clips [k, T, ...] of consecutive frames starting at `starts` (default: every start, stride 1)."""
    starts = range(len(frames) - length + 1) if starts is None else starts
    return np.stack([frames[s:s + length] for s in starts])


def frame_preprocessor(data_cfg):
    """The scoring graph's pre-processing of one frame (grey, resized): what a device computes."""
    from keras_ad.scoring import preprocess

    return lambda frames: preprocess(frames, data_cfg.image_shape, 1, data_cfg.resize, data_cfg.center_crop)


def training_data(cfg, clip_length, batch_size):
    """(tf.data of (input clip, target clip) batches, clips per epoch, 8 sample clips, what the clips are,
    validation videos): every clip of the training videos once per epoch, each possibly a pseudo
    anomaly (docs/methods/lntra.md#5c)."""
    import tensorflow as tf

    from keras_ad.data import pseudo_anomalies
    from keras_ad.data.layouts import resolve_root
    from keras_ad.tracing import dataset_function

    det = cfg.detector
    train, val, _ = discover(resolve_root(cfg.data), cfg.data.val_fraction, cfg.train.seed, need_test=False)
    prepare = frame_preprocessor(cfg.data)
    print(f"loading {sum(len(v.frames) for v in train)} frames of {len(train)} training videos ...", flush=True)
    videos = [load_frames(v, prepare, as_uint8=True) for v in train]
    probabilities = {"skip_frame": det.skip_frame, det.patch_kind: det.patch}
    intruders = pseudo_anomalies.load_intruders(det.intruders) if det.patch > 0 else None
    sampler = pseudo_anomalies.ClipSampler(videos, clip_length, probabilities, det.jumps, intruders,
                                           det.max_size, det.max_move, seed=cfg.train.seed, stride=det.clip_stride)
    if len(sampler) < batch_size:
        raise DataError(f"only {len(sampler)} clips of {clip_length} frames in the training videos but a step "
                        f"takes {batch_size}; lower train.batch_size or add videos")
    spec = tf.TensorSpec((clip_length, *cfg.data.image_shape), tf.float32)
    dataset = tf.data.Dataset.from_generator(sampler.epoch, output_signature=(spec, spec))
    # one tensor [N, 2, T, H, W] (input, target), not an (x, y) pair: Keras cannot build from a
    # PerReplica pair under MultiWorkerMirroredStrategy (docs/stack.md#3)
    stacked = dataset_function(lambda inputs, targets: tf.stack([inputs, targets], 1))
    dataset = dataset.batch(batch_size, drop_remainder=True).map(stacked)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(sampler) // batch_size))
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    sample_videos = [load_frames(v, prepare) for v in val[:1]] or [videos[0] / np.float32(255.0)]
    samples = clips(sample_videos[0], clip_length, range(0, len(sample_videos[0]) - clip_length + 1, 4))[:8]
    return dataset, len(sampler), samples, f"clips of {len(train)} videos", len(val)
