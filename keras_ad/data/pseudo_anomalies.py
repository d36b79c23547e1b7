"""LNTRA's pseudo anomalies (Astrid et al. 2021, docs/methods/lntra.md#5c): what a training clip becomes, and
the normal clip it must still be reconstructed as.

Clips are float32 [T, H, W] (grey, [-1, 1]). Patch-based: x̃ = m·I + (1 - m)·x with an intruder I and
a mask m per frame; skip-frame: frames start + i·s of the same video. The target is always the normal
clip: the autoencoder learns to repair anomalies, not to reproduce them (docs/methods/lntra.md#5g-1).
Sizes in pixels (the 10-pixel minimum patch side, max_move) are the paper's at 256x256 and scale with
the frame width.
"""

from __future__ import annotations

import os

import numpy as np

PATCH_KINDS = ("smoothmix_c", "smoothmix_s", "cutmix", "mixup_patch")
KINDS = ("skip_frame",) + PATCH_KINDS  # the order of the source's probability intervals (docs/methods/lntra.md#5c)
PAPER_SIDE = 256  # the frame side the paper's pixel sizes refer to
MIN_PATCH = 10


def patch_size(rng, height, width, max_size):
    """(h_b, w_b) = max(10, floor(U(0, α)·side)) each, drawn independently (docs/methods/lntra.md#5c)."""
    floor = max(1, round(MIN_PATCH * width / PAPER_SIDE))
    return (max(floor, int(rng.uniform(0, max_size) * height)), max(floor, int(rng.uniform(0, max_size) * width)))


def box(center, size, limit, half_open_from_start=True):
    """[start, stop) of a box side: CutMix clips the start, then adds the full size (docs/methods/lntra.md#5c); the
    smooth square spans [c - size//2, c + size//2), clipped."""
    if half_open_from_start:
        start = max(0, center - size // 2)
        return start, min(limit, start + size)
    return max(0, center - size // 2), min(limit, center + size // 2)


def cutmix_mask(height, width, cy, cx, hb, wb):
    mask = np.zeros((height, width), np.float32)
    (y1, y2), (x1, x2) = box(cy, hb, height), box(cx, wb, width)
    mask[y1:y2, x1:x2] = 1.0
    return mask


def mixup_patch_mask(height, width, cy, cx, hb, wb):
    """The CutMix box, where x̃ = 0.5·I + 0.5·x."""
    return 0.5 * cutmix_mask(height, width, cy, cx, hb, wb)


def _trapezoid(length, start, stop, ramp):
    """1 on [start, stop), falling linearly to 0 over `ramp` pixels on either side."""
    position = np.arange(length, dtype=np.float32)
    outside = np.maximum(start - position, position - (stop - 1))  # 1 at the first pixel outside
    if ramp <= 0:
        return (outside <= 0).astype(np.float32)
    return np.clip(1.0 - outside / ramp, 0.0, 1.0).astype(np.float32)


def smoothmix_s_mask(height, width, cy, cx, hb, wb):
    """Square with a soft border: the box [c - ⌊size/2⌋, c + ⌊size/2⌋), ramps of 0.1·⌊size/2⌋ pixels."""
    (y1, y2), (x1, x2) = box(cy, hb, height, False), box(cx, wb, width, False)
    return np.outer(_trapezoid(height, y1, y2, 0.1 * (hb // 2)), _trapezoid(width, x1, x2, 0.1 * (wb // 2)))


def smoothmix_c_mask(height, width, cy, cx, hb, wb):
    """Unnormalised Gaussian, σ_y = h_b, σ_x = w_b, peak 1; built [y][x] (the source's [x][y] is only
    right for square frames, docs/methods/lntra.md#5g-8)."""
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    return (np.exp(-(y - cy) ** 2 / (2.0 * hb ** 2)) * np.exp(-(x - cx) ** 2 / (2.0 * wb ** 2))).astype(np.float32)


MASKS = {"cutmix": cutmix_mask, "mixup_patch": mixup_patch_mask, "smoothmix_s": smoothmix_s_mask,
         "smoothmix_c": smoothmix_c_mask}


def patch_masks(rng, kind, frames, height, width, max_size, max_move):
    """Masks [T, H, W] of one patch-based pseudo anomaly: one position for all frames (max_move 0) or a
    random walk of the centre by integer steps in [-β, β], clipped to the frame (docs/methods/lntra.md#5c)."""
    hb, wb = patch_size(rng, height, width, max_size)
    inclusive = 1 if kind == "smoothmix_c" else 0  # SmoothMixC draws its centre in [0, W] inclusive
    cy, cx = int(rng.integers(0, height + inclusive)), int(rng.integers(0, width + inclusive))
    step = int(round(max_move * width / PAPER_SIDE))
    masks = []
    for _ in range(frames):
        masks.append(MASKS[kind](height, width, cy, cx, hb, wb))
        if step == 0:
            return np.broadcast_to(masks[0], (frames, height, width))
        cy = int(np.clip(cy + rng.integers(-step, step + 1), 0, height))
        cx = int(np.clip(cx + rng.integers(-step, step + 1), 0, width))
    return np.stack(masks)


def paste(clip, intruder, masks):
    """x̃ = m·I + (1 - m)·x, per frame; the intruder is one still [H, W] or a clip [T, H, W]."""
    return (masks * intruder + (1.0 - masks) * clip).astype(np.float32)


def skip_frame_clip(rng, video, start, length, jumps, retries=10):
    """(skip clip, its normal target): frames start + i·s (s drawn from `jumps`, indices clipped to the
    last frame) and the consecutive frames start ... start + length - 1. A video too short for the jump
    re-draws the start up to `retries` times (docs/methods/lntra.md#5c)."""
    n = len(video)
    s = int(rng.choice(jumps))
    for _ in range(retries):
        if start + (length - 1) * s < n:
            break
        start = int(rng.integers(0, n - length + 1))
    indices = np.minimum(start + np.arange(length) * s, n - 1)
    return video[indices], video[start:start + length]


def choose_kind(rng, probabilities: dict):
    """At most one kind per clip: one u ~ U(0, 1) against consecutive intervals of width p_kind, in the
    source's order (docs/methods/lntra.md#5c, docs/methods/lntra.md#5g-4); None = the clip stays normal."""
    u, edge = rng.uniform(), 0.0
    for kind in KINDS:
        edge += probabilities.get(kind, 0.0)
        if u < edge:
            return kind
    return None


def stretch(image, height, width):
    """A grey uint8 image -> [-1, 1], bilinearly stretched (align_corners) over the whole frame: the
    patch then shows a window of a very smooth texture, not a miniature (docs/methods/lntra.md#5g-2,
    docs/methods/lntra.md#5g-10)."""
    image = image.astype(np.float32) / 127.5 - 1.0
    ys = np.linspace(0, image.shape[0] - 1, height)
    xs = np.linspace(0, image.shape[1] - 1, width)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, image.shape[0] - 1), np.minimum(x0 + 1, image.shape[1] - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = image[y0][:, x0] * (1 - fx) + image[y0][:, x1] * fx
    bottom = image[y1][:, x0] * (1 - fx) + image[y1][:, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


class ClipSampler:
    """Training pairs (input clip, target clip) [T, H, W] over every clip of every video, reshuffled each
    epoch; each clip turns into at most one pseudo anomaly (probabilities per kind, docs/methods/lntra.md#5c).

    videos: [n_frames, H, W] each, float32 in [0, 1] (the detectors' input range: the paper's [-1, 1]
    mapped linearly, which the paste commutes with) or uint8 0..255 (read as x / 255); intruders: grey
    uint8 stills (CIFAR-100, a folder) stretched to the frame, or None when no patch kind is enabled. A skip-frame
    clip is built from an independently shuffled second order of the clips, as the source zips two loaders. `stride`:
    clips start every `stride` frames (1: every clip, the paper's).
    """

    def __init__(self, videos, length, probabilities, jumps=(2, 3, 4, 5), intruders=None, max_size=0.2,
                 max_move=0, seed=0, stride=1):
        self.videos, self.length = videos, length
        self.probabilities, self.jumps = dict(probabilities), tuple(jumps)
        self.intruders, self.max_size, self.max_move = intruders, max_size, max_move
        self.clips = [(v, s) for v, video in enumerate(videos) for s in range(0, len(video) - length + 1, stride)]
        if not self.clips:
            raise ValueError(f"every video is shorter than a clip of {length} frames")
        if any(self.probabilities.get(k, 0) for k in PATCH_KINDS) and not intruders:
            raise ValueError("patch pseudo anomalies need intruder images")
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.clips)

    def epoch(self):
        """Yields (input, target) float32 [T, H, W] for every clip once, in a new random order."""
        order, second = self.rng.permutation(len(self.clips)), self.rng.permutation(len(self.clips))
        for i, j in zip(order, second):
            v, start = self.clips[i]
            clip = _unit(self.videos[v][start:start + self.length])
            kind = choose_kind(self.rng, self.probabilities)
            if kind == "skip_frame":
                v2, start2 = self.clips[j]
                skipped, target = skip_frame_clip(self.rng, self.videos[v2], start2, self.length, self.jumps)
                yield _unit(skipped), _unit(target)
            elif kind is not None:
                frames, height, width = clip.shape
                source = self.intruders[int(self.rng.integers(len(self.intruders)))]
                intruder = stretch(source, height, width) * 0.5 + 0.5
                masks = patch_masks(self.rng, kind, frames, height, width, self.max_size, self.max_move)
                yield paste(clip, intruder, masks), clip
            else:
                yield clip, clip


def _unit(frames):
    """float32 frames in [0, 1]; uint8 ones divided by 255."""
    return frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8 else frames


def load_intruders(source: str, limit: int = 5000) -> list[np.ndarray]:
    """Grey uint8 stills for patch pseudo anomalies: `cifar100` (keras.datasets, the paper's), a
    cifar-100-python.tar.gz, a folder of images, or `digits` (scikit-learn's 8x8 digits, offline)."""
    from keras_ad.errors import DataError

    if source == "digits":
        from sklearn.datasets import load_digits

        return [(d * 16).clip(0, 255).astype(np.uint8) for d in load_digits().images[:limit]]
    if os.path.isdir(source):
        from keras_ad.data.images import list_images, read_image

        paths = list_images(source)[:limit]
        if not paths:
            raise DataError(f"detector.intruders: {source}: no images (.png, .jpg, .bmp, .tif)")
        return [read_image(p, 1)[..., 0] for p in paths]
    if source == "cifar100":
        import keras

        try:
            (images, _), _ = keras.datasets.cifar100.load_data()
        except Exception as e:  # urllib / HTTP errors, raised as bare Exception by keras.utils.get_file
            reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            raise DataError(f"detector.intruders: cifar100: cannot download ({reason}); set it to a local "
                            f"cifar-100-python.tar.gz, a folder of images, or digits") from None
    elif os.path.isfile(source) and source.endswith((".tar.gz", ".tgz")):
        images = _cifar100_archive(source)
    else:
        raise DataError(f"detector.intruders: {source}: not cifar100, digits, a folder or a .tar.gz")
    return [_grey(image) for image in images[:limit]]


def _grey(rgb):
    """PIL's "L" conversion, as the source reads CIFAR intruders (docs/methods/lntra.md#5g-9)."""
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).convert("L"))


def _cifar100_archive(path):
    import pickle
    import tarfile

    from keras_ad.errors import DataError

    try:
        with tarfile.open(path) as archive:
            member = next(m for m in archive.getmembers() if os.path.basename(m.name) == "train")
            batch = pickle.load(archive.extractfile(member), encoding="bytes")
    except (StopIteration, tarfile.TarError, pickle.UnpicklingError, KeyError, OSError) as e:
        raise DataError(f"detector.intruders: {path}: not cifar-100-python.tar.gz ({e or 'no train file'})") from None
    return np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
