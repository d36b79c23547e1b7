"""Reading image and mask files into uint8 arrays, with errors that name the file."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, UnidentifiedImageError

from keras_ad.errors import DataError
from keras_ad.export.device import decode_image, list_images  # noqa: F401 (list_images re-exported)


def read_image(path: str, channels: int) -> np.ndarray:
    """Decode `path` to uint8 [H, W, channels] (grey 'L' or 'RGB'; palette, alpha and 16-bit handled by PIL).

    The decoding itself is the device scorer's, so host and device read a file to the same pixels.
    """
    try:
        return decode_image(path, channels)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({e}); replace or remove the file, "
                        f"or set data.skip_unreadable: true") from None


def read_mask(path: str, expected_shape: tuple[int, int]) -> np.ndarray:
    """Ground-truth mask as bool [H, W]: any non-zero pixel is defect (MVTec's 0/255 and the 0/1 of
    labelling tools alike); its size must equal the image's (MVTec convention)."""
    try:
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L") if im.mode not in ("L", "1", "I;16", "I", "F") else im) > 0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read mask ({e})") from None
    if mask.shape != tuple(expected_shape):
        raise DataError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                        f"{expected_shape[1]}x{expected_shape[0]}; masks must match their image size")
    return mask


def read_many(paths, reader, skip_unreadable=False, workers=None, failed=None):
    """Apply `reader(path)` to every path on a thread pool (PIL releases the GIL while decoding).

    Returns (results, kept_indices). A DataError stops everything unless `skip_unreadable`, in which
    case the file is skipped with a warning naming it, or `failed` (a dict) is given, which then gets
    {path: reason} for every file skipped (`keras-ad score` reports them in its status column).
    """
    def safe(path):
        try:
            return reader(path)
        except DataError as e:
            if failed is not None:
                failed[path] = f"unreadable: {str(e).removeprefix(f'{path}: ')}"
                return None
            if not skip_unreadable:
                raise
            what = str(e).split("; ", 1)[0]  # the file and the reason, without the fix it is already taking
            print(f"warning: skipped {what} (data.skip_unreadable)", file=sys.stderr, flush=True)
            return None

    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) * 2)) as pool:
        results = list(pool.map(safe, paths))
    kept = [i for i, r in enumerate(results) if r is not None]
    return [results[i] for i in kept], kept
