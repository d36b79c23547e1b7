"""A deterministic surveillance-like demo video set in the MNAD layout (UCSD Ped2's shape, small).

A fixed textured background seen from above; "pedestrians" (small bright squares) walk left or right
at walking speed. Test videos add one anomaly each for a span of frames: an unusual object (a large
dark disc, Ped2's cars and carts), a square at three times the speed (a cyclist), or a square walking
up or down (a wrong direction). Frame labels mark the frames where the anomaly is in view and pixel
masks its pixels.

    <root>/training/frames/<video>/<frame>.png
    <root>/testing/frames/<video>/<frame>.png
    <root>/testing/labels/<video>.npy          1 = anomalous frame
    <root>/testing/masks/<video>/<frame>.png   255 on the anomaly's pixels
Same seed, same bytes.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
from PIL import Image

SIZE = 64
ANOMALIES = ("object", "speed", "direction")
VERSION = 1


def _background(rng):
    """A smooth grey texture (paving), the same in every video of the scene."""
    coarse = rng.uniform(60, 110, (8, 8))
    image = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC), np.float32)
    return image + rng.normal(0, 4, (SIZE, SIZE))


class _Walker:
    """A square of side `side` moving at (vy, vx) pixels per frame, wrapping around the frame."""

    def __init__(self, rng, speed=1.0, vertical=False, side=5, value=200.0):
        self.y, self.x = rng.uniform(8, SIZE - 8), rng.uniform(0, SIZE)
        direction = rng.choice([-1.0, 1.0])
        self.vy, self.vx = (direction * speed, 0.0) if vertical else (rng.normal(0, 0.1), direction * speed)
        self.side, self.value = side, value

    def step(self):
        self.y, self.x = (self.y + self.vy) % SIZE, (self.x + self.vx) % SIZE

    def mask(self):
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        dy, dx = np.abs((yy - self.y + SIZE / 2) % SIZE - SIZE / 2), np.abs((xx - self.x + SIZE / 2) % SIZE - SIZE / 2)
        return (dy <= self.side / 2) & (dx <= self.side / 2)


class _Disc(_Walker):
    """The unusual object: a large dark disc driving through."""

    def __init__(self, rng):
        super().__init__(rng, speed=1.0, side=12, value=20.0)

    def mask(self):
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        dy, dx = (yy - self.y + SIZE / 2) % SIZE - SIZE / 2, (xx - self.x + SIZE / 2) % SIZE - SIZE / 2
        return dy ** 2 + dx ** 2 <= (self.side / 2) ** 2


def _video(rng, background, n_frames, anomaly=None, span=None):
    """(frames uint8 [n, H, W], labels [n], masks bool [n, H, W])."""
    walkers = [_Walker(rng) for _ in range(int(rng.integers(2, 5)))]
    intruder = {"object": _Disc, "speed": lambda r: _Walker(r, speed=3.0),
                "direction": lambda r: _Walker(r, vertical=True)}[anomaly](rng) if anomaly else None
    frames, labels, masks = [], np.zeros(n_frames, np.int64), np.zeros((n_frames, SIZE, SIZE), bool)
    for t in range(n_frames):
        frame = background.copy()
        for walker in walkers:
            frame[walker.mask()] = walker.value
            walker.step()
        if intruder is not None and span[0] <= t < span[1]:
            masks[t] = intruder.mask()
            frame[masks[t]] = intruder.value
            labels[t] = 1
            intruder.step()
        frames.append(np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8))
    return np.stack(frames), labels, masks


def write(out_dir, n_train=6, n_test=6, n_frames=60, seed=0):
    """Write the set under out_dir/video (atomically); returns that folder."""
    final = os.path.join(out_dir, "video")
    if os.path.isdir(final):
        return final
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".video-", dir=out_dir)
    try:
        rng = np.random.default_rng(seed)
        background = _background(rng)
        for split, count in (("training", n_train), ("testing", n_test)):
            for v in range(count):
                anomaly = ANOMALIES[v % len(ANOMALIES)] if split == "testing" else None
                start = int(rng.integers(n_frames // 4, n_frames // 2))
                frames, labels, masks = _video(rng, background, n_frames, anomaly, (start, start + n_frames // 3))
                name = f"{v + 1:02d}"
                _write_frames(os.path.join(tmp, split, "frames", name), frames)
                if split == "testing":
                    os.makedirs(os.path.join(tmp, split, "labels"), exist_ok=True)
                    np.save(os.path.join(tmp, split, "labels", f"{name}.npy"), labels)
                    _write_frames(os.path.join(tmp, split, "masks", name), masks.astype(np.uint8) * 255)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_frames(folder, frames):
    os.makedirs(folder, exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(os.path.join(folder, f"{t:04d}.png"))


def ensure(cache_dir=None):
    """The cached demo video set, written on first use."""
    from keras_ad.data import cache_home

    return write(cache_dir or os.path.join(cache_home(), f"synthetic-video-v{VERSION}"))
