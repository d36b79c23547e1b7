"""A deterministic, MVTec-layout demo data set: a machined part ("object") and a woven surface ("texture").

Each category has train/good, test/good and five defect kinds with pixel masks in
ground_truth/<defect>/<stem>_mask.png: scratch, stain, hole, missing (a part is absent) and colour
(a hue shift). Images are 128x128 RGB PNGs, so configs that train at 64x64 exercise resizing.
Same seed, same bytes: tests and the demo's metrics are reproducible on any machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
from PIL import Image

CATEGORIES = ("object", "texture")
DEFECTS = ("scratch", "stain", "hole", "missing", "colour")
SIZE = 128
VERSION = 1  # bump when the generator changes, so cached copies are regenerated


def default_cache_dir() -> str:
    from keras_ad.data import cache_home

    return os.path.join(cache_home(), f"synthetic-v{VERSION}")


def ensure(category: str, cache_dir: str | None = None) -> str:
    """Path of the generated category folder, writing it first if it is not cached yet."""
    from keras_ad.errors import DataError

    if category not in CATEGORIES:
        raise DataError(f"synthetic:{category}: unknown demo category; use one of "
                        + ", ".join(f"synthetic:{c}" for c in CATEGORIES))
    cache_dir = cache_dir or default_cache_dir()
    folder = os.path.join(cache_dir, category)
    if not os.path.isdir(folder):
        write(cache_dir, [category])
    return folder


def write(out_dir: str, categories=CATEGORIES, n_train=200, n_test_good=30, n_per_defect=12, seed=0):
    """Write the data set under out_dir/<category>/; each category appears atomically (temp dir + rename)."""
    os.makedirs(out_dir, exist_ok=True)
    for ci, category in enumerate(categories):
        final = os.path.join(out_dir, category)
        if os.path.isdir(final):
            continue
        tmp = tempfile.mkdtemp(prefix=f".{category}-", dir=out_dir)
        try:
            _write_category(tmp, category, ci, n_train, n_test_good, n_per_defect, seed)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _write_category(folder, category, ci, n_train, n_test_good, n_per_defect, seed):
    render = _object if category == "object" else _texture
    for split, count in (("train", n_train), ("test", n_test_good)):
        for i in range(count):
            rng = np.random.default_rng([seed, ci, 0 if split == "train" else 1, i])
            _save(os.path.join(folder, split, "good", f"{i:03d}.png"), render(rng)[0])
    for di, defect in enumerate(DEFECTS):
        for i in range(n_per_defect):
            rng = np.random.default_rng([seed, ci, 2 + di, i])
            image, part = render(rng)
            image, mask = _DEFECTS[defect](rng, image, part)
            _save(os.path.join(folder, "test", defect, f"{i:03d}.png"), image)
            _save(os.path.join(folder, "ground_truth", defect, f"{i:03d}_mask.png"), mask.astype(np.uint8) * 255)


def _save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8)).save(path)


_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
BACKGROUND = np.array([42.0, 44.0, 48.0])


def _object(rng):
    """A bronze washer on a dark belt, with small shifts of position, size, tint and lighting."""
    cx, cy = SIZE / 2 + rng.uniform(-2, 2, size=2)
    r = np.hypot(_XX - cx, _YY - cy)
    outer, inner = 44 + rng.uniform(-1, 1), 16 + rng.uniform(-1, 1)
    ring = np.clip(outer - r + 0.5, 0, 1) * np.clip(r - inner + 0.5, 0, 1)
    theta = np.arctan2(_YY - cy, _XX - cx)
    shade = 1 + 0.08 * np.cos(theta - rng.uniform(0, 2 * np.pi)) + 0.03 * np.sin(r * 0.8)
    colour = np.array([190.0, 150.0, 95.0]) * (1 + rng.uniform(-0.04, 0.04))
    image = BACKGROUND + ring[..., None] * (colour * shade[..., None] - BACKGROUND)
    image += rng.normal(0, 2.0, image.shape)
    return image, ring > 0.5


def _texture(rng):
    """A woven surface: a regular cross pattern with random phase and fibre noise."""
    px, py = rng.uniform(0, 2 * np.pi, size=2)
    weave = 0.5 + 0.18 * np.sin(2 * np.pi * _XX / 8 + px) * np.sin(2 * np.pi * _YY / 8 + py)
    weave = weave + 0.04 * rng.standard_normal((SIZE, SIZE))
    colour = np.array([160.0, 140.0, 118.0]) * (1 + rng.uniform(-0.03, 0.03))
    image = colour * (0.6 + 0.8 * weave[..., None])
    return image, np.ones((SIZE, SIZE), bool)


def _point_on(rng, part, margin=6):
    ys, xs = np.nonzero(part[margin:-margin, margin:-margin])
    k = rng.integers(len(ys))
    return xs[k] + margin, ys[k] + margin


def _blob(rng, part, r_low, r_high):
    x0, y0 = _point_on(rng, part)
    a, b = rng.uniform(r_low, r_high, size=2)
    angle = rng.uniform(0, np.pi)
    u = (_XX - x0) * np.cos(angle) + (_YY - y0) * np.sin(angle)
    v = -(_XX - x0) * np.sin(angle) + (_YY - y0) * np.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _scratch(rng, image, part):
    x0, y0 = _point_on(rng, part)
    angle, length = rng.uniform(0, np.pi), rng.uniform(20, 35)
    t = (_XX - x0) * np.cos(angle) + (_YY - y0) * np.sin(angle)
    d = np.abs(-(_XX - x0) * np.sin(angle) + (_YY - y0) * np.cos(angle))
    mask = (np.abs(t) <= length / 2) & (d <= 1.2) & part
    factor = 0.45 if rng.random() < 0.5 else 1.5
    image = image.copy()
    image[mask] *= factor
    return image, mask


def _stain(rng, image, part):
    mask = _blob(rng, part, 5, 9) & part
    image = image.copy()
    image[mask] *= np.array([0.55, 0.5, 0.42])
    return image, mask


def _hole(rng, image, part):
    x0, y0 = _point_on(rng, part)
    mask = np.hypot(_XX - x0, _YY - y0) <= rng.uniform(4, 7)
    image = image.copy()
    image[mask] = BACKGROUND * 0.5
    return image, mask


def _missing(rng, image, part):
    """A piece of the part is absent: a sector of the washer, or a flat, pattern-free patch of the weave."""
    cy = cx = SIZE / 2
    image = image.copy()
    if part.all():
        x0, y0 = _point_on(rng, part, margin=16)
        w, h = rng.uniform(10, 18, size=2)
        mask = (np.abs(_XX - x0) <= w / 2) & (np.abs(_YY - y0) <= h / 2)
        image[mask] = image[mask].mean(axis=0)
        return image, mask
    start, width = rng.uniform(-np.pi, np.pi), np.deg2rad(rng.uniform(25, 45))
    theta = np.angle(np.exp(1j * (np.arctan2(_YY - cy, _XX - cx) - start)))
    mask = (theta >= 0) & (theta <= width) & part
    image[mask] = BACKGROUND
    return image, mask


def _colour(rng, image, part):
    mask = _blob(rng, part, 9, 14) & part
    image = image.copy()
    image[mask] = image[mask][:, ::-1] * 0.9  # swap red and blue: bronze turns steel-blue
    return image, mask


_DEFECTS = {"scratch": _scratch, "stain": _stain, "hole": _hole, "missing": _missing, "colour": _colour}
