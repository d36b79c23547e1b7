#!/usr/bin/env python3
"""Convert torchvision's VGG19 ImageNet weights to a Keras VGG19 (no top) weight file for PIAD.

    python scripts/convert_torchvision_vgg19.py --state-dict vgg19-dcbb9e9d.pth --out vgg19_torchvision.weights.h5
    keras-ad train --config configs/piad_mnist.yaml --set detector.perceptual_weights=vgg19_torchvision.weights.h5

PIAD's released relu4_2 statistics belong to torchvision's weights (docs/methods/piad.md#1g-2); Keras' own
VGG19 is a different (Caffe) conversion. Reading a .pth file needs PyTorch (`pip install torch`, CPU
build); a .npz of the state dict's arrays (same keys) works without it. The download URL of the
.pth file is torchvision's (`torchvision.models.VGG19_Weights.IMAGENET1K_V1`).
Conv kernels go from PyTorch's [out, in, kh, kw] to Keras' [kh, kw, in, out]; both pad 3x3 convs by 1
(Keras 'same'), so the activations match.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

# torchvision vgg19.features indices of the 16 convolutions, in Keras' block order
TORCH_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
KERAS_CONV_NAMES = tuple(f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
                         for c in range(1, n + 1))


def read_state_dict(path) -> dict:
    """name -> numpy array, from a .pth (needs torch) or a .npz."""
    if path.endswith(".npz"):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    try:
        import torch
    except ImportError:
        raise SystemExit(f"error: {path}: reading a .pth file needs PyTorch (pip install torch); or save the "
                         f"state dict's arrays as .npz and pass that") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in state.items()}


def keras_weights(state: dict) -> dict:
    """Keras layer name -> [kernel, bias] for the 16 convolutions."""
    out = {}
    for index, name in zip(TORCH_CONV_INDICES, KERAS_CONV_NAMES):
        key = f"features.{index}"
        if f"{key}.weight" not in state:
            raise SystemExit(f"error: the state dict has no {key}.weight; expected torchvision's vgg19")
        out[name] = [np.transpose(state[f"{key}.weight"], (2, 3, 1, 0)).astype(np.float32),
                     np.asarray(state[f"{key}.bias"], np.float32)]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dict", required=True, help="torchvision vgg19 .pth (or .npz of its arrays)")
    parser.add_argument("--out", required=True, help="Keras weight file to write (.weights.h5)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if not args.out.endswith(".weights.h5"):
        print("error: --out must end in .weights.h5 (Keras' weight format)", file=sys.stderr)
        return 2
    if os.path.exists(args.out) and not args.overwrite:
        print(f"error: {args.out}: exists; pass --overwrite", file=sys.stderr)
        return 2
    if not os.path.isfile(args.state_dict):
        print(f"error: {args.state_dict}: no such file", file=sys.stderr)
        return 2
    weights = keras_weights(read_state_dict(args.state_dict))

    import keras

    model = keras.applications.VGG19(include_top=False, weights=None)
    for name, values in weights.items():
        model.get_layer(name).set_weights(values)
    model.save_weights(args.out)
    print(f"wrote {args.out}; use it with detector.perceptual_weights: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
