"""The region of the map that counts: `postprocess.roi_mask` and `postprocess.border` (docs/protocol.md).

A camera sees fixtures, background and the part's edges as well as the part; their errors should not
decide anything. Pixels outside the region never count: they are zero in the map, so they enter
neither the image score nor the defect decision.
"""

from __future__ import annotations

import os

import numpy as np

from keras_ad.errors import UsageError

ASPECT_TOLERANCE = 0.01  # a mask drawn on a camera frame may differ from image_size by rounding only


def region_of_interest(post_cfg, image_shape) -> np.ndarray | None:
    """float32 [H, W], 1 where the map counts and 0 where it never does; None when the whole map counts."""
    height, width = image_shape
    region = np.ones(image_shape, np.float32)
    if post_cfg.roi_mask:
        region *= read_roi_mask(post_cfg.roi_mask, image_shape)
    border = post_cfg.border
    if border:
        region[:border], region[height - border:], region[:, :border], region[:, width - border:] = 0, 0, 0, 0
    return None if region.all() else region


def read_roi_mask(path: str, image_shape) -> np.ndarray:
    """The mask file as 0/1 float32 at `image_shape` (white, > 127, = inside): the file has that size or
    the same aspect ratio (a camera frame), and something inside."""
    from PIL import Image, UnidentifiedImageError

    path = os.path.expanduser(path)
    try:
        with Image.open(path) as im:
            grey = im.convert("L")
            width, height = grey.size
            if (height, width) != tuple(image_shape):
                if abs((width / height) / (image_shape[1] / image_shape[0]) - 1) > ASPECT_TOLERANCE:
                    raise UsageError(f"postprocess.roi_mask: {path} is {width}x{height} (width x height), another "
                                     f"shape than data.image_size {image_shape[1]}x{image_shape[0]}; draw the mask "
                                     f"on an image of the data set or at data.image_size")
                grey = grey.resize((image_shape[1], image_shape[0]), Image.NEAREST)
            mask = (np.asarray(grey) > 127).astype(np.float32)
    except FileNotFoundError:
        raise UsageError(f"postprocess.roi_mask: {path}: no such file; give an image file, white where defects "
                         f"count") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UsageError(f"postprocess.roi_mask: {path}: cannot read it as an image ({e})") from None
    if not mask.any():
        raise UsageError(f"postprocess.roi_mask: {path} is black everywhere: nothing would be inspected; white "
                         f"(> 127) marks where defects count")
    return mask
